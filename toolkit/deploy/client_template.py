"""Check the served model: send the bundle's golden samples to Triton Inference Server and
judge the replies by the bundle's parity preset, as `toolkit verify` judges the file.

Written by `toolkit deploy --triton` beside config.pbtxt; needs `pip install 'toolkit[triton]'`.

    python client_example.py [--url localhost:8001]

Exit 0 when the served model matches, 1 when it doesn't, 2 when the server can't be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
Infer = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def judge(infer: Infer, here: Path = HERE) -> Any:
    """Run every judging golden sample through `infer` (bundle names in and out) and return
    the toolkit's parity report for the served artifact."""
    from toolkit.bundle import Bundle
    from toolkit.parity.tolerances import tolerances_from_options
    from toolkit.parity.verify import new_report, preset_for

    bundle = Bundle.open(here / "client_bundle")
    (record,) = bundle.artifacts
    report = new_report(bundle, record, tolerances_from_options(preset_for(record)),
                        "golden (served by Triton)")
    indices, report.judged_on = bundle.judging_samples(record)
    for index, sample in enumerate(bundle.golden()):
        if indices is None or index in indices:
            report.add_sample(sample.outputs, infer(sample.inputs), sample_index=index)
    return report


def triton_infer(spec: Mapping[str, Any], url: str) -> Infer:
    """Requests in Triton's tensor names; a model served without batching gets one request
    per sample when it takes batch 1 only (torch_aoti)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    client = grpcclient.InferenceServerClient(url=url)

    def once(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = []
        for name, triton_name in spec["inputs"].items():
            value = np.ascontiguousarray(feed[name])
            tensor = grpcclient.InferInput(triton_name, list(value.shape),
                                           np_to_triton_dtype(value.dtype))
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        wanted = [grpcclient.InferRequestedOutput(t) for t in spec["outputs"].values()]
        reply = client.infer(spec["model"], inputs, model_version=spec["version"],
                             outputs=wanted)
        return {name: reply.as_numpy(t) for name, t in spec["outputs"].items()}

    def infer(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(next(iter(feed.values())))
        limit = spec["max_batch_size"] or (1 if spec.get("batch_one") else batch)
        if batch <= limit:
            return once(feed)
        parts = [once({k: v[i:i + limit] for k, v in feed.items()})
                 for i in range(0, batch, limit)]
        return {name: np.concatenate([p[name] for p in parts]) for name in spec["outputs"]}

    return infer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="localhost:8001", help="Triton's gRPC endpoint")
    args = parser.parse_args()
    spec = json.loads((HERE / "client.json").read_text())
    try:
        report = judge(triton_infer(spec, args.url))
    except Exception as err:  # the server is down, or doesn't serve this model
        print(f"error: {spec['model']} at {args.url}: {str(err).splitlines()[0]}",
              file=sys.stderr)
        return 2
    print(report.summary_line())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
