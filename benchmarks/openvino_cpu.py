"""The fastest verified CPU path: what `toolkit select` picks for resnet18 at batch 1, against
the paths users take without the toolkit, timed in one process, interleaved.

Peer paths (what a user does by hand):
- "ORT fp32 (plain)": `torch.onnx.export(dynamo=True)` of the model, `ort.InferenceSession(path)`;
- "OpenVINO defaults on that ONNX": `ov.Core().compile_model(path, "CPU")`, no properties: on
  a CPU with AMX or AVX512_BF16 this silently computes in bf16;
- "OpenVINO defaults on the toolkit's INT8 ONNX": the same call on `model.int8.onnx`.
Toolkit rows: every artifact of a bundle exported with `--to onnx,openvino --precision
fp32,bf16,int8` (bf16 where the CPU has it), run by the toolkit's own runners (OpenVINO with
its inference precision set), and the one `toolkit select --batch 1` picks after `toolkit
bench`. Every call is timed in rotated blocks in one process. Random weights and random
calibration (nothing downloads): only speed and agreement with fp32 eager are measured.

    .venv/bin/python benchmarks/openvino_cpu.py [--runs 200] [--size 224]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.precision_bench import machine_tag, stats
from toolkit.backends.openvino.runner import _short
from toolkit.environment import describe

RESULTS = Path(__file__).parent / "results"


def resnet18_seeded() -> Any:
    """resnet18 with seeded random weights: the toolkit and the plain paths get the same."""
    import torch
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def plain_onnx(path: Path, size: int) -> Any:
    """What a user writes without the toolkit: the model, its ONNX, nothing else."""
    import torch

    model = resnet18_seeded()
    torch.onnx.export(model, (torch.randn(1, 3, size, size),), str(path), dynamo=True,
                      input_names=["x"], output_names=["logits"], verbose=False,
                      report=False)
    return model


def toolkit_bundle(root: Path, size: int, precisions: str) -> Path:
    from toolkit.export.pipeline import export

    rng = np.random.default_rng(1)
    calib = root / "calib.npz"
    np.savez(calib, x=rng.standard_normal((32, 3, size, size)).astype(np.float32))
    out = root / "bundle"
    result = export("benchmarks.openvino_cpu:resnet18_seeded", ["onnx", "openvino"], out,
                    inputs=[f"x:1-8x3x{size}x{size}"], precisions=precisions.split(","),
                    precision_options={"calib_data": str(calib)})
    assert result.exit_code == 0, result.to_dict()
    return out


def toolkit_pick(bundle: Path) -> tuple[str, dict[str, float]]:
    """`toolkit bench --batch 1` then `toolkit select --batch 1`: the pick, and the p50 each
    candidate had in that bench (artifacts timed one after another, as bench does)."""
    from toolkit.bench.driver import bench_bundle
    from toolkit.bench.options import BenchOptions
    from toolkit.deploy.select import select

    bench_bundle(bundle, timing=BenchOptions(batches=(1,), budget_s=3.0, warmup_s=0.5),
                 save=True)
    selection = select(bundle, batch=1)
    assert selection.winner is not None
    return selection.winner.label, {c.label: c.row["p50_ms"] for c in selection.candidates
                                    if c.row is not None}


def calls(bundle: Path, plain: Path, feed: dict[str, np.ndarray]) -> dict[str, Any]:
    """name -> (zero-argument call, keep-alive) for every path timed."""
    import onnxruntime as ort
    import openvino as ov

    from toolkit import runtime
    from toolkit.bundle import Bundle

    out: dict[str, Any] = {}
    session = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"])
    out["ORT fp32 (plain)"] = (lambda: session.run(None, feed), session)
    core = ov.Core()
    for name, path in (("OpenVINO defaults on that ONNX", plain),
                       ("OpenVINO defaults on the toolkit's INT8 ONNX",
                        bundle / "model.int8.onnx")):
        compiled = core.compile_model(str(path), "CPU")
        request = compiled.create_infer_request()
        request.set_tensor(compiled.inputs[0], ov.Tensor(feed["x"]))
        out[name] = (request.infer, compiled,
                     _short(str(compiled.get_property("INFERENCE_PRECISION_HINT"))))
    opened = Bundle.open(bundle)
    for record in opened.artifacts:
        label = f"toolkit {record['format']}/{record['precision']}"
        if record.get("layout") not in (None, "cpu"):
            continue
        runner = runtime.load_artifact(opened, record).activate()
        out[label] = (runner.prepare(feed), runner)
    return out


def time_interleaved(named: dict[str, Any], warmup: int, runs: int,
                     block: int = 10) -> dict[str, list[float]]:
    for call, *_ in named.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {k: [] for k in named}
    for _ in range(max(1, runs // block)):
        for name, (call, *_) in named.items():
            call()  # wake this path's threads; not timed
            for _ in range(block):
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def agreement(bundle: Path, model: Any, plain: Path, size: int) -> dict[str, dict[str, float]]:
    """Each path's top-1 agreement with fp32 eager and worst relative error, on 16 inputs."""
    import onnxruntime as ort
    import openvino as ov
    import torch

    from toolkit import runtime
    from toolkit.bundle import Bundle

    rng = np.random.default_rng(7)
    feeds = [rng.standard_normal((1, 3, size, size)).astype(np.float32) for _ in range(16)]
    with torch.no_grad():
        eager = [model(torch.from_numpy(x)).numpy() for x in feeds]
    runs: dict[str, Any] = {}
    session = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"])
    runs["ORT fp32 (plain)"] = lambda x: session.run(None, {"x": x})[0]
    core = ov.Core()
    default = core.compile_model(str(plain), "CPU")
    runs["OpenVINO defaults on that ONNX"] = lambda x: default(x)[0]
    int8 = core.compile_model(str(bundle / "model.int8.onnx"), "CPU")
    runs["OpenVINO defaults on the toolkit's INT8 ONNX"] = lambda x: int8(x)[0]
    opened = []
    held = Bundle.open(bundle)
    for record in held.artifacts:
        if record.get("layout") not in (None, "cpu"):
            continue
        runner = runtime.load_artifact(held, record).activate()
        opened.append(runner)
        name = runner.outputs[0].name
        runs[f"toolkit {record['format']}/{record['precision']}"] = (
            lambda x, r=runner, n=name: r.infer({"x": x})[n])
    result = scored(runs, feeds, eager)
    for runner in opened:
        runner.deactivate()
    return result


def scored(runs: dict[str, Any], feeds: list[np.ndarray],
           eager: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Each path's worst error relative to the eager output's peak, and how often its top-1
    class is eager's, over the same inputs."""
    result = {}
    for label, run in runs.items():
        errors, agree = [], 0
        for x, want in zip(feeds, eager):
            got = np.asarray(run(x))
            errors.append(float(np.abs(got - want).max() / np.abs(want).max()))
            agree += int(got.argmax() == want.argmax())
        result[label] = {"max_rel_err": max(errors), "top1_agree": agree / len(feeds)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    env = describe()
    bf16 = any(f in env["cpu_flags"] for f in ("amx_bf16", "avx512_bf16"))
    precisions = "fp32,bf16,int8" if bf16 else "fp32,int8"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = plain_onnx(root / "plain.onnx", args.size)
        bundle = toolkit_bundle(root, args.size, precisions)
        pick, bench_p50 = toolkit_pick(bundle)
        feed = {"x": np.random.default_rng(3).standard_normal(
            (1, 3, args.size, args.size)).astype(np.float32)}
        named = calls(bundle, root / "plain.onnx", feed)
        times = time_interleaved(named, args.warmup, args.runs)
        hints = {k: v[2] for k, v in named.items() if len(v) > 2}
        for _, keep, *_ in named.values():
            if hasattr(keep, "deactivate"):
                keep.deactivate()
        fidelity = agreement(bundle, model, root / "plain.onnx", args.size)
    base = stats(times["ORT fp32 (plain)"])["p50_ms"]
    rows = {}
    for name, ms in times.items():
        row = stats(ms)
        row.update(fidelity.get(name, {}), speedup_vs_ort_fp32=base / row["p50_ms"])
        if name in hints:
            row["openvino_inference_precision"] = hints[name]
        rows[name] = row
    peers = [n for n in rows if not n.startswith("toolkit")]
    best_peer = min(peers, key=lambda n: rows[n]["p50_ms"])
    picked = f"toolkit {pick}"
    doc = {"machine": env, "runs": args.runs, "warmup": args.warmup, "size": args.size,
           "selected": pick, "select_bench_p50_ms": bench_p50, "rows": rows,
           "best_peer": best_peer,
           "pick_vs_best_peer": rows[best_peer]["p50_ms"] / rows[picked]["p50_ms"]}
    tag = machine_tag(env) + ("-bf16" if bf16 else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"openvino_cpu_{tag}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / f"openvino_cpu_{tag}.md").write_text(markdown(doc, tag))
    print(markdown(doc, tag))


def markdown(doc: dict[str, Any], tag: str) -> str:
    env, rows = doc["machine"], doc["rows"]
    lines = [
        f"# The fastest verified CPU path, resnet18 batch 1 — {tag}", "",
        f"CPU: {env['cpu']} ({env['cores']} cores, flags: {', '.join(env['cpu_flags'])}); "
        f"onnxruntime {env['libraries'].get('onnxruntime')}, openvino "
        f"{env['libraries'].get('openvino')}; input 1x3x{doc['size']}x{doc['size']}; "
        f"{doc['runs']} runs per path in rotated blocks of 10 after {doc['warmup']} warm-up "
        "runs, one process; random weights.", "",
        "| path | p50 ms | p90 ms | min ms | vs ORT fp32 (p50) | top-1 vs eager | max rel err |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        mark = " **(select's pick)**" if name == f"toolkit {doc['selected']}" else ""
        hint = row.get("openvino_inference_precision")
        label = f"{name}{mark}" + (f" (ran in {hint})" if hint else "")
        lines.append(f"| {label} | {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | "
                     f"{row['min_ms']:.2f} | {row['speedup_vs_ort_fp32']:.2f}x | "
                     f"{row.get('top1_agree', float('nan')):.0%} | "
                     f"{row.get('max_rel_err', float('nan')):.4f} |")
    lines += ["", f"`toolkit select --batch 1` picked **{doc['selected']}**: "
              f"{doc['pick_vs_best_peer']:.2f}x the best peer path ({doc['best_peer']}), in "
              "the same run.", "",
              "The `toolkit bench` p50s select ranked on (each artifact timed alone, one after "
              "another): " + ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(
                  doc["select_bench_p50_ms"].items(), key=lambda kv: kv[1])) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
