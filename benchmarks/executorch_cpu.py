"""ExecuTorch against ONNX Runtime on this CPU: the same models, fp32 and INT8, each run the
way a user runs it without the toolkit, timed in one process, interleaved.

Paths (batch 1, 224x224, seeded random weights, random calibration: nothing downloads, so
only speed and agreement with fp32 eager are measured):
- "ORT fp32": `ort.InferenceSession(model.onnx)` with its defaults (the toolkit's ONNX, which
  is `torch.onnx.export(dynamo=True)` checked by parity);
- "ORT int8": the same session on the toolkit's CPU-layout Q/DQ ONNX (`model.int8.onnx`);
- "ExecuTorch fp32": `executorch.runtime.Runtime.get().load_program(model.pte)` and
  `method.execute`, the toolkit's XNNPACK-lowered program, the runtime's default threads;
- "ExecuTorch int8": the same on the PT2E-quantised program (`model.int8.pte`).
Each path is timed in rotated blocks of 10 calls in one process.

    .venv/bin/python -m benchmarks.executorch_cpu [--runs 200] [--models resnet18,...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.openvino_cpu import scored, time_interleaved
from benchmarks.precision_bench import machine_tag, stats
from toolkit.environment import describe

RESULTS = Path(__file__).parent / "results"
SIZE = 224


def seeded(name: str) -> Any:
    """A torchvision classifier with seeded random weights."""
    import torch
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def resnet18() -> Any:
    return seeded("resnet18")


def mobilenet_v3_small() -> Any:
    return seeded("mobilenet_v3_small")


def bundle_of(name: str, root: Path) -> tuple[Path, dict[str, float], dict[str, str]]:
    """The toolkit's export of the model to ONNX and ExecuTorch, fp32 and INT8, each step's
    seconds, and the toolkit's verdict on each (its parity gate)."""
    from toolkit.export.pipeline import export

    calib = root / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal(
        (32, 3, SIZE, SIZE)).astype(np.float32))
    out = root / name
    result = export(f"benchmarks.executorch_cpu:{name}", ["onnx", "executorch"], out,
                    inputs=[f"x:1x3x{SIZE}x{SIZE}"], precisions=["fp32", "int8"],
                    precision_options={"calib_data": str(calib)})
    # random weights: an INT8 file may miss parity; it is timed all the same
    made = {f"{s.target}/{s.precision}": round(s.seconds, 1) for s in result.steps
            if s.status in ("ok", "parity-failed")}
    assert len(made) == 4, result.to_dict()
    verdicts = {f"{s.target}/{s.precision}": str(s.status) for s in result.steps}
    return out, made, verdicts


def calls(bundle: Path, feed: dict[str, np.ndarray]) -> dict[str, Any]:
    """name -> (zero-argument call, what keeps it alive)."""
    import onnxruntime as ort
    import torch
    from executorch.runtime import Runtime

    out: dict[str, Any] = {}
    for label, file in (("ORT fp32", "model.onnx"), ("ORT int8", "model.int8.onnx")):
        session = ort.InferenceSession(str(bundle / file), providers=["CPUExecutionProvider"])
        out[label] = (lambda s=session: s.run(None, feed), session)
    tensor = torch.from_numpy(feed["x"])
    for label, file in (("ExecuTorch fp32", "model.pte"), ("ExecuTorch int8", "model.int8.pte")):
        method = Runtime.get().load_program(bundle / file).load_method("forward")
        out[label] = (lambda m=method: m.execute([tensor]), method)
    return out


def agreement(bundle: Path, model: Any, named: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each path's top-1 agreement with fp32 eager and worst relative error, on 16 inputs."""
    import onnxruntime as ort
    import torch
    from executorch.runtime import Runtime

    rng = np.random.default_rng(7)
    feeds = [rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32) for _ in range(16)]
    with torch.no_grad():
        eager = [model(torch.from_numpy(x)).numpy() for x in feeds]
    runs: dict[str, Any] = {}
    for label, file in (("ORT fp32", "model.onnx"), ("ORT int8", "model.int8.onnx")):
        session = ort.InferenceSession(str(bundle / file), providers=["CPUExecutionProvider"])
        runs[label] = lambda x, s=session: s.run(None, {"x": x})[0]
    for label, file in (("ExecuTorch fp32", "model.pte"), ("ExecuTorch int8", "model.int8.pte")):
        method = Runtime.get().load_program(bundle / file).load_method("forward")
        runs[label] = lambda x, m=method: m.execute([torch.from_numpy(x)])[0].numpy()
    return scored(runs, feeds, eager)


def threads() -> dict[str, Any]:
    import onnxruntime as ort
    from executorch.extension.pybindings import portable_lib

    return {"executorch": portable_lib._threadpool_get_thread_count(),
            "onnxruntime": "default (intra-op = physical cores)",
            "ort_version": ort.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--models", default="resnet18,mobilenet_v3_small")
    args = parser.parse_args()
    env = describe()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            bundle, seconds, verdicts = bundle_of(name, Path(tmp))
            feed = {"x": np.random.default_rng(3).standard_normal(
                (1, 3, SIZE, SIZE)).astype(np.float32)}
            named = calls(bundle, feed)
            times = time_interleaved(named, args.warmup, args.runs)
            fidelity = agreement(bundle, globals()[name](), named)
            sizes = {f: (bundle / f).stat().st_size for f in
                     ("model.onnx", "model.int8.onnx", "model.pte", "model.int8.pte")}
            base = stats(times["ORT fp32"])["p50_ms"]
            rows = {label: {**stats(ms), "vs_ort_fp32": base / stats(ms)["p50_ms"],
                            **fidelity[label]} for label, ms in times.items()}
            results.append({"model": name, "rows": rows, "export_seconds": seconds,
                            "file_bytes": sizes, "verdicts": verdicts})
            print(name, {k: round(v["p50_ms"], 2) for k, v in rows.items()})
    tag = machine_tag(env)
    report = {"machine": env, "threads": threads(), "runs": args.runs, "size": SIZE,
              "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"executorch_cpu_{tag}.json").write_text(json.dumps(report, indent=2))
    (RESULTS / f"executorch_cpu_{tag}.md").write_text(markdown(report, tag))
    print(markdown(report, tag))


def markdown(report: dict[str, Any], tag: str) -> str:
    env = report["machine"]
    lines = [f"# ExecuTorch against ONNX Runtime on the CPU — {tag}", "",
             f"CPU: {env['cpu']} ({env['cores']} cores, flags: {', '.join(env['cpu_flags'])}); "
             f"torch {env['libraries'].get('torch')}, executorch "
             f"{env['libraries'].get('executorch')}, onnxruntime "
             f"{env['libraries'].get('onnxruntime')}. ExecuTorch threads: "
             f"{report['threads']['executorch']}; ONNX Runtime: its default. Batch 1, "
             f"{report['size']}x{report['size']}, seeded random weights, random calibration; "
             f"{report['runs']} calls per path in rotated blocks of 10, one process "
             "(`benchmarks/executorch_cpu.py`).", ""]
    for result in report["results"]:
        lines += [f"## {result['model']}", "",
                  "| path | p50 ms | p90 ms | vs ORT fp32 | top-1 = eager (16) | max rel err "
                  "| file | toolkit's parity gate |", "|---|---|---|---|---|---|---|---|"]
        files = {"ORT fp32": "model.onnx", "ORT int8": "model.int8.onnx",
                 "ExecuTorch fp32": "model.pte", "ExecuTorch int8": "model.int8.pte"}
        steps = {"ORT fp32": "onnx/fp32", "ORT int8": "onnx/int8",
                 "ExecuTorch fp32": "executorch/fp32", "ExecuTorch int8": "executorch/int8"}
        for label, row in result["rows"].items():
            size = result["file_bytes"][files[label]] / 2**20
            lines.append(f"| {label} | {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | "
                         f"{row['vs_ort_fp32']:.2f}x | {row['top1_agree']:.0%} | "
                         f"{row['max_rel_err']:.3g} | {size:.1f} MiB | "
                         f"{result['verdicts'][steps[label]]} |")
        lines += ["", "Export seconds (toolkit, with parity): " + ", ".join(
            f"{k} {v}" for k, v in result["export_seconds"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
