"""INT8 and fp16 ONNX on ONNX Runtime CPU at batch 1, each file in a *default* InferenceSession.

What a user or a server does with the file the toolkit writes: `ort.InferenceSession(path)`,
no session options. For resnet18 and mobilenet_v3_small: fp32, fp16, INT8 in the CPU layout
(the default for `--to onnx`), INT8 in the TensorRT layout, and the TensorRT layout in the
toolkit's own runner (CSE off) for comparison. Random weights (no downloads): accuracy can't
be measured here; the script reports how far each variant's logits move from fp32 and whether
top-1 agrees, on held-out random inputs. Sessions are timed interleaved (rotated blocks).

    .venv/bin/python benchmarks/precision_bench.py [--runs 200] [--models resnet18,...]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.backends.onnx.precision.fp16 import convert_float16
from toolkit.backends.onnx.precision.graph import op_counts
from toolkit.backends.onnx.precision.int8 import quantize_int8
from toolkit.backends.onnx.runner import ORT_QDQ_DISABLED_OPTIMIZERS
from toolkit.environment import describe

RESULTS = Path(__file__).parent / "results"


def export_model(name: str, path: Path) -> None:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.onnx.export(
        model, (torch.randn(1, 3, 224, 224),), None, dynamo=True, input_names=["x"],
        output_names=["logits"], dynamic_shapes={"x": {0: batch}}, verbose=False, report=False,
    )
    program.save(str(path))


def session(path: Path, disabled: tuple[str, ...] = ()) -> Any:
    """A default session (ORT picks threads and optimisations), unless `disabled` names
    optimizers to turn off, as the toolkit's runner does for the TensorRT layout."""
    import onnxruntime as ort

    if not disabled:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled))


def fidelity(sess: Any, ref: Any, inputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
    errs, agree = [], 0
    for feed in inputs:
        want = ref.run(None, feed)[0]
        got = sess.run(None, feed)[0]
        errs.append(float(np.abs(got - want).max() / np.abs(want).max()))
        agree += int((got.argmax(-1) == want.argmax(-1)).all())
    return {"max_rel_err": max(errs), "top1_agree": agree / len(inputs)}


def stats(ms: list[float]) -> dict[str, float]:
    q = np.percentile(ms, [10, 25, 50, 75, 90, 99])
    return {"p50_ms": float(q[2]), "p90_ms": float(q[4]), "p99_ms": float(q[5]),
            "mean_ms": statistics.fmean(ms), "std_ms": statistics.pstdev(ms),
            "iqr_ms": float(q[3] - q[1]), "min_ms": min(ms)}


def time_interleaved(sessions: dict[str, Any], feed: dict[str, np.ndarray], warmup: int,
                     runs: int, block: int = 10) -> dict[str, list[float]]:
    """Rotate over the sessions in blocks of `block` consecutive calls, so that machine drift
    spreads over every variant. Not call by call: each ORT session's worker threads spin for
    a while after a run, and on a 2-core machine they would steal the next session's cores
    (call-by-call rotation measured fp32 resnet18 at ~80 ms p50 against ~28 ms alone)."""
    for sess in sessions.values():
        for _ in range(warmup):
            sess.run(None, feed)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(max(1, runs // block)):
        for name, sess in sessions.items():
            sess.run(None, feed)  # wake this session's thread pool; not timed
            for _ in range(block):
                start = time.perf_counter()
                sess.run(None, feed)
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def machine_tag(env: dict[str, Any]) -> str:
    """e.g. amd-epyc-avx512-vnni-2c: results files name the CPU they were measured on."""
    flags = env.get("cpu_flags") or []
    isa = "avx512-vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else \
        "avx2" if "avx2" in flags else "cpu"
    cpu = "-".join(str(env.get("cpu") or platform.machine()).lower().split()[:2])
    return f"{cpu}-{isa}-{env.get('cores')}c"


def markdown(results: list[dict[str, Any]], env: dict[str, Any], runs: int,
             warmup: int) -> str:
    lines = [
        f"# INT8 / fp16 ONNX in a default ONNX Runtime session — {machine_tag(env)}",
        "",
        f"CPU: {env['cpu']} ({env['cores']} cores, flags: {', '.join(env['cpu_flags'])}); "
        f"onnxruntime {env['libraries'].get('onnxruntime')}; default InferenceSession (no "
        f"options); batch 1; {runs} runs per variant in rotated blocks of 10 after {warmup} "
        "warm-up runs; random weights.",
    ]
    for result in results:
        lines += ["", f"## {result['model']}", "",
                  "| variant | p50 ms | p90 ms | min ms | speed-up vs fp32 (p50) | max rel err "
                  "| top-1 agree |", "|---|---|---|---|---|---|---|"]
        for name, row in result["variants"].items():
            lines.append(
                f"| {name} | {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | {row['min_ms']:.2f} | "
                f"{row['speedup_p50']:.2f}x | {row['max_rel_err']:.4f} | "
                f"{row['top1_agree']:.0%} |")
        lines += ["", f"CPU-layout INT8 in a default session: {result['target']}"]
    lines += ["", "Variants:"]
    lines += [f"- {name}: {note}" for name, (_, _, note) in VARIANT_NOTES.items()]
    return "\n".join(lines) + "\n"


VARIANT_NOTES = {
    "fp32": ("fp32", (), "torch.onnx dynamo export"),
    "fp16": ("fp16", (), "ORT CPU runs fp16 graphs in fp32 between Casts"),
    "int8 cpu layout": ("int8_cpu", (), "what `--to onnx --precision int8` writes: uint8 "
                        "activations (7-bit weights without VNNI)"),
    "int8 trt layout": ("int8_trt", (), "what `--to trt` builds engines from: symmetric int8 "
                        "Q/DQ; not meant for ORT CPU"),
    "int8 trt layout, toolkit runner": ("int8_trt", ORT_QDQ_DISABLED_OPTIMIZERS,
                                        "same file, CSE disabled as the toolkit's runner does "
                                        "(bench says so in the row's note)"),
}


def bench_model(name: str, work: Path, args: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((1, 3, 224, 224), dtype=np.float32)}
             for _ in range(args.calib)]
    held_out = [{"x": rng.standard_normal((1, 3, 224, 224), dtype=np.float32)} for _ in range(8)]
    paths = {"fp32": work / f"{name}.onnx"}
    export_model(name, paths["fp32"])
    paths["fp16"] = work / f"{name}.fp16.onnx"
    summaries = {"fp16": convert_float16(paths["fp32"], paths["fp16"])}
    for layout in ("cpu", "trt"):
        paths[f"int8_{layout}"] = work / f"{name}.int8-{layout}.onnx"
        summaries[f"int8_{layout}"] = quantize_int8(paths["fp32"], paths[f"int8_{layout}"],
                                                    calib, profile=layout)
    sessions = {k: session(paths[file], disabled) for k, (file, disabled, _)
                in VARIANT_NOTES.items()}
    ref = sessions["fp32"]
    times = time_interleaved(sessions, held_out[0], args.warmup, args.runs)
    rows: dict[str, dict[str, Any]] = {}
    for variant, (file, disabled, _) in VARIANT_NOTES.items():
        rows[variant] = {**stats(times[variant]), **fidelity(sessions[variant], ref, held_out),
                         "disabled_optimizers": list(disabled), "ops": op_counts(paths[file]),
                         "size_mb": paths[file].stat().st_size / 2**20}
    base = rows["fp32"]["p50_ms"]
    for row in rows.values():
        row["speedup_p50"] = base / row["p50_ms"]
    cpu = rows["int8 cpu layout"]["speedup_p50"]
    return {"model": name, "variants": rows, "summaries": summaries,
            "target": f"{cpu:.2f}x fp32 (targets: >= 1.6x on AVX2, >= 2x with VNNI)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--calib", type=int, default=32, help="calibration samples")
    parser.add_argument("--models", default="resnet18,mobilenet_v3_small")
    args = parser.parse_args()
    env = describe()
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_model(name, Path(tmp), args) for name in args.models.split(",")]
    tag = machine_tag(env)
    doc = {"benchmark": "int8_default_session_ort_cpu", "machine": tag,
           "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": args.runs,
           "warmup": args.warmup, "batch": 1, "calib_samples": args.calib,
           "environment": env, "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"precision_{tag}.json").write_text(json.dumps(doc, indent=2, default=str))
    text = markdown(results, env, args.runs, args.warmup)
    (RESULTS / f"precision_{tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
