"""YOLOv8n exported by the toolkit against Ultralytics' own export, in one run, interleaved:
latency of each ONNX in a plain ONNX Runtime CPU session, and agreement with eager PyTorch by
IoU matching (the same Ultralytics model, the same weights, the same images).

Peer path: `YOLO(...).export(format="onnx", nms=True)` (Ultralytics' NMS in the graph, its
defaults conf 0.25, iou 0.7, max_det 300, one label per box). Toolkit rows: `toolkit export
--to onnx --precision fp32,fp16,int8` of the same DetectionModel, no wrapper (decode and NMS
in the graph, Ultralytics' defaults taken). Random weights made non-degenerate as in the tests
(BatchNorm recalibrated on noise, a class prior that finds things); nothing downloads.

    .venv/bin/python benchmarks/yolo_peer.py [--runs 60] [--size 640]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.openvino_cpu import time_interleaved
from benchmarks.precision_bench import machine_tag, stats
from toolkit.environment import describe

RESULTS = Path(__file__).parent / "results"
os.environ.setdefault("YOLO_OFFLINE", "1")


def the_model() -> Any:
    from tests.detection.yolo_models import yolov8n

    return yolov8n()


def toolkit_bundle(root: Path, size: int) -> tuple[Path, dict[str, str]]:
    from toolkit.export.pipeline import PrecisionOptions, export

    calib = root / "calib.npz"
    np.savez(calib, images=np.random.default_rng(1).standard_normal(
        (16, 3, size, size)).astype(np.float32))
    out = root / "toolkit"
    result = export("benchmarks.yolo_peer:the_model", ["onnx"], out,
                    inputs=[f"images:1x3x{size}x{size}"], precisions=["fp32", "fp16", "int8"],
                    precision_options=PrecisionOptions(calib_data=str(calib), calib_batches=16))
    unmade = [s.to_dict() for s in result.steps if s.path is None]
    assert not unmade, unmade
    # a reduced precision that fails the toolkit's own gate is timed still, and marked
    return out, {f"toolkit onnx/{s.precision}": s.status.value for s in result.steps}


def ultralytics_onnx(root: Path, size: int) -> Path:
    """Ultralytics' own exporter on the same weights (its NMS in the graph)."""
    from ultralytics import YOLO

    yolo = YOLO("yolov8n.yaml", task="detect")
    yolo.model.load_state_dict(the_model().state_dict())  # the same weights and statistics
    with contextlib.chdir(root):
        written = yolo.export(format="onnx", nms=True, imgsz=size, simplify=False,
                              dynamic=False, batch=1, verbose=False)
    return Path(root / written) if not Path(written).is_absolute() else Path(written)


def to_contract(outputs: list[np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Ultralytics' [1, 300, 6] rows (x1, y1, x2, y2, conf, class) or the toolkit's contract,
    as the contract's four arrays, for IoU matching."""
    if "boxes" in names:
        return dict(zip(names, outputs, strict=True))
    rows = outputs[0]
    keep = rows[..., 4] > 0
    k = rows.shape[1]
    order = np.argsort(-rows[..., 4], axis=1)
    rows = np.take_along_axis(rows, order[..., None], axis=1)
    keep = np.take_along_axis(keep, order, axis=1)
    return {"num_detections": keep.sum(1).astype(np.int64),
            "boxes": (rows[..., :4] * keep[..., None]).astype(np.float32),
            "scores": (rows[..., 4] * keep).astype(np.float32),
            "labels": (rows[..., 5] * keep).astype(np.int64).reshape(1, k)}


def main() -> None:
    import onnxruntime as ort
    import torch

    from toolkit.detection.match import match_detections
    from toolkit.detection.options import DetectionOptions
    from toolkit.source.detector_contract import as_detector
    from toolkit.source.load import build_loaded_model
    from toolkit.spec import parse_input

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--size", type=int, default=640)
    args = parser.parse_args()
    env = describe()
    rng = np.random.default_rng(3)
    images = [rng.standard_normal((1, 3, args.size, args.size)).astype(np.float32)
              for _ in range(8)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle, verdicts = toolkit_bundle(root, args.size)
        peer = ultralytics_onnx(root, args.size)
        paths = {"Ultralytics export(nms=True)": peer,
                 "toolkit onnx/fp32": bundle / "model.onnx",
                 "toolkit onnx/fp16": bundle / "model.fp16.onnx",
                 "toolkit onnx/int8": bundle / "model.int8.onnx"}
        sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                    for k, p in paths.items()}
        named = {k: ((lambda s=s: s.run(None, {s.get_inputs()[0].name: images[0]})), s)
                 for k, s in sessions.items()}
        times = time_interleaved(named, args.warmup, args.runs)
        loaded = as_detector(build_loaded_model(
            the_model(), inputs=[parse_input(f"images:1x3x{args.size}x{args.size}")],
            static=True, source={"kind": "benchmark"}), DetectionOptions())
        agreement = {}
        for label, session in sessions.items():
            names = [o.name for o in session.get_outputs()]
            matched = reference = 0
            for x in images:
                with torch.no_grad():
                    want = loaded.run({"images": x})
                got = to_contract(session.run(None, {session.get_inputs()[0].name: x}), names)
                parity = match_detections(want, got, score_threshold=0.25)
                matched += parity.matched
                reference += parity.reference
            agreement[label] = {"matched": matched, "reference": reference}
    rows = {k: {**stats(v), **agreement[k]} for k, v in times.items()}
    base = rows["Ultralytics export(nms=True)"]["p50_ms"]
    tag = machine_tag(env)
    lines = [f"# YOLOv8n ONNX: the toolkit's export against Ultralytics' own — {tag}", "",
             f"CPU: {env.get('cpu')}, {env.get('cores')} cores, flags "
             f"{', '.join(f for f in env.get('cpu_flags', []) if 'avx' in f or 'amx' in f)}; "
             f"onnxruntime {env['libraries'].get('onnxruntime')}, torch "
             f"{env['libraries'].get('torch')}; batch 1, {args.size}x{args.size}, "
             f"{args.runs} runs per row in interleaved blocks of 10 after {args.warmup} warm-up.",
             "",
             "Agreement: detections of the eager model (its decode, Ultralytics' defaults: conf "
             "0.25, iou 0.7, max_det 300, one label per box) matched by IoU and label in 8 "
             "noise images.", "",
             "| path | p50 ms | p90 ms | vs Ultralytics | matched / eager | toolkit's gate |",
             "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | "
                     f"{base / row['p50_ms']:.2f}x | {row['matched']}/{row['reference']} | "
                     f"{verdicts.get(name, '—')} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"yolo_peer_{tag}.md").write_text(text)
    (RESULTS / f"yolo_peer_{tag}.json").write_text(json.dumps(
        {"environment": env, "rows": rows, "gate": verdicts, "size": args.size,
         "runs": args.runs}, indent=2))


if __name__ == "__main__":
    main()
