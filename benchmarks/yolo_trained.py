"""A YOLOv8n TRAINED by Ultralytics' own trainer, then exported by the toolkit to every format and
precision, and scored: parity with eager by IoU matching, and COCO mAP on held-out images.

Random weights say little about fp16 and INT8 (an untrained network amplifies rounding, and its
scores crowd the threshold), so this trains one: the toolkit's generated shapes data (three
classes, 1-4 objects per image, nothing downloaded), written out in Ultralytics' dataset layout,
`YOLO("yolov8n.yaml").train(...)` on CPU, offline. The trained DetectionModel goes to
`toolkit export` as a user would hand it over (a factory that loads its weights), no wrapper:
the Detect head is recognised, decoded in the graph, NMS with Ultralytics' defaults.

    .venv/bin/python -m benchmarks.yolo_trained [--epochs 10] [--size 128] [--train 1000]
        [--eval 100] [--cache DIR]

Results: benchmarks/results/yolo_trained_<machine>.md and .json (the machine in the name and in
the file). Training takes a few minutes on 2 cores; the export a minute more.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.precision_bench import machine_tag
from toolkit.environment import describe

RESULTS = Path(__file__).parent / "results"
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")


def write_yolo_dataset(root: Path, size: int, n_train: int, n_val: int) -> Path:
    """The shapes data as Ultralytics reads it: images/{train,val}/*.png and labels/*.txt
    (class cx cy w h, normalised); returns the dataset YAML."""
    from PIL import Image

    from toolkit.demo.detection_data import CLASS_NAMES, make_detection_data

    for split, n in (("train", n_train), ("val", n_val)):
        data = make_detection_data(n, split, size=size)
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, (image, boxes, labels) in enumerate(zip(data["x"], data["boxes"],
                                                       data["labels"])):
            pixels = (image.transpose(1, 2, 0) * 255).round().clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / split / f"{i:05d}.png")
            rows = []
            for (x1, y1, x2, y2), label in zip(boxes, labels):
                if label < 0:
                    continue
                rows.append(f"{label} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} "
                            f"{(x2 - x1) / size:.6f} {(y2 - y1) / size:.6f}")
            (root / "labels" / split / f"{i:05d}.txt").write_text("\n".join(rows) + "\n")
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(CLASS_NAMES))
    yaml = root / "shapes.yaml"
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return yaml


def train(yaml: Path, work: Path, size: int, epochs: int) -> tuple[Path, float, dict[str, float]]:
    """Ultralytics' trainer on CPU; the trained DetectionModel's weights (fp32) saved for the
    factory below, the seconds it took, and Ultralytics' own validation mAP."""
    import torch
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    started = time.perf_counter()
    model.train(data=str(yaml), epochs=epochs, imgsz=size, batch=32, device="cpu", workers=0,
                plots=False, amp=False, project=str(work), name="train", exist_ok=True,
                seed=0, deterministic=True, verbose=False, mosaic=0.0, close_mosaic=0)
    seconds = time.perf_counter() - started
    metrics = model.val(data=str(yaml), imgsz=size, batch=32, device="cpu", plots=False,
                        workers=0, verbose=False)
    own = {"mAP50-95": float(metrics.box.map), "mAP50": float(metrics.box.map50)}
    weights = work / "yolov8n_shapes.pt"
    torch.save(model.model.float().eval().state_dict(), weights)
    return weights, seconds, own


def trained(path: str, classes: int = 3) -> Any:
    """The factory the toolkit calls: YOLOv8n's DetectionModel with the trained weights."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=classes, verbose=False)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.float().eval()


def export(weights: Path, work: Path, size: int, n_eval: int) -> dict[str, Any]:
    """Every format and precision into one bundle (INT8 with the default minmax calibration),
    then INT8 again with entropy and percentile calibration, each in a bundle of its own."""
    from toolkit.demo.detection_data import make_detection_data
    from toolkit.export.job import PrecisionOptions
    from toolkit.export.pipeline import SourceOptions
    from toolkit.export.pipeline import export as toolkit_export

    test = make_detection_data(n_eval, "test", size=size)
    calib = make_detection_data(256, "val", size=size)
    np.savez(work / "eval.npz", x=test["x"], boxes=test["boxes"], labels=test["labels"])
    np.savez(work / "calib.npz", images=calib["x"])
    source = f"{Path(__file__).resolve()}:trained"
    runs = [("all", ["onnx", "torchscript", "pt2"], ["fp32", "fp16", "int8"], "minmax")]
    runs += [(method, ["onnx"], ["fp32", "int8"], method) for method in ("entropy",
                                                                          "percentile")]
    steps, notes, seconds = [], [], {}
    for name, formats, precisions, method in runs:
        started = time.perf_counter()
        result = toolkit_export(
            source, formats, work / name, inputs=[f"images:1-8x3x{size}x{size}"],
            precisions=precisions,
            source_options=SourceOptions(model_args={"path": str(weights)}),
            precision_options=PrecisionOptions(calib_data=str(work / "calib.npz"),
                                               eval_data=str(work / "eval.npz"),
                                               calib_method=method))
        seconds[name] = round(time.perf_counter() - started, 1)
        notes += [n for n in result.notes if n not in notes]
        for step in result.steps:
            record = step.to_dict()
            if name == "all" or record["precision"] == "int8":
                steps.append({**record, "calib_method": method})
    return {"seconds": seconds, "notes": notes, "steps": steps}


def rows(exported: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per artifact: its verdict, matched detections against eager, and the mAP
    line of its accuracy gate."""
    out = []
    for step in exported["steps"]:
        detection = (step.get("parity") or {}).get("detection") or {}
        calib = f" ({step['calib_method']})" if step["precision"] == "int8" else ""
        out.append({"artifact": f"{step['target']}/{step['precision']}{calib}",
                    "status": step["status"], "seconds": step.get("seconds"),
                    "matched": detection.get("matched"), "of": detection.get("reference"),
                    "worst_iou": detection.get("worst_iou"), "detail": step.get("detail", "")})
    return out


def markdown(doc: dict[str, Any], tag: str) -> str:
    env, args = doc["machine"], doc["args"]
    own = doc["ultralytics_val"]
    lines = [
        f"# A trained YOLOv8n through the toolkit — {tag}",
        "",
        f"CPU: {env.get('cpu')}, {env.get('cores')} cores, flags "
        f"{', '.join(f for f in env.get('cpu_flags', []) if f.startswith(('avx', 'amx')))}; "
        f"{', '.join(f'{k} {v}' for k, v in env.get('libraries', {}).items())}, "
        f"ultralytics {doc['ultralytics']}.",
        "",
        f"Trained by Ultralytics' own trainer on the toolkit's shapes data ({args['train']} "
        f"images of {args['size']} px, {args['epochs']} epochs, CPU, {doc['train_seconds']} s); "
        f"Ultralytics' own validation: mAP@[.5:.95] {100 * own['mAP50-95']:.2f}, mAP@.5 "
        f"{100 * own['mAP50']:.2f}. Exported with `images:1-8x{args['size']}x{args['size']}`, "
        f"no wrapper; judged on {args['eval']} held-out images (`--eval-data`, COCO mAP) and "
        "by IoU matching against eager on the golden samples (fp32: every sample; reduced "
        "precisions: the real-data ones).",
        "",
        "| artifact | verdict | matched / eager | worst IoU | the accuracy gate |",
        "|---|---|---|---|---|",
    ]
    for row in doc["rows"]:
        matched = f"{row['matched']}/{row['of']}" if row["of"] is not None else "—"
        iou = f"{row['worst_iou']:.3f}" if row["worst_iou"] is not None else "—"
        parts = [part for part in row["detail"].split("; ") if "mAP" in part]
        gate = parts[0] if parts else ("fp32 reference" if row["status"] == "ok"
                                       else row["detail"][:160])
        lines.append(f"| {row['artifact']} | {row['status']} | {matched} | {iou} | {gate} |")
    lines += ["", "Export seconds per bundle: " + ", ".join(
        f"{k} {v}" for k, v in doc["export"]["seconds"].items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--eval", type=int, default=100)
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the trained weights here, and reuse them when the same "
                             "--epochs/--size/--train trained them")
    args = parser.parse_args()
    env = describe()
    tag = machine_tag(env)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        key = f"e{args.epochs}_s{args.size}_n{args.train}"
        cached = args.cache / f"yolov8n_shapes_{key}.pt" if args.cache else None
        if cached is not None and cached.is_file() and cached.with_suffix(".json").is_file():
            weights = cached
            trained_info = json.loads(cached.with_suffix(".json").read_text())
        else:
            yaml = write_yolo_dataset(work / "data", args.size, args.train, 200)
            weights, train_s, own = train(yaml, work, args.size, args.epochs)
            trained_info = {"train_seconds": round(train_s, 1), "ultralytics_val": own}
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_bytes(weights.read_bytes())
                cached.with_suffix(".json").write_text(json.dumps(trained_info))
        exported = export(weights, work, args.size, args.eval)
    from importlib.metadata import version

    doc = {"machine": env, "args": {k: str(v) for k, v in vars(args).items()},
           "ultralytics": version("ultralytics"),
           **trained_info, "export": exported, "rows": rows(exported)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"yolo_trained_{tag}.json").write_text(json.dumps(doc, indent=1, default=str))
    text = markdown(doc, tag)
    (RESULTS / f"yolo_trained_{tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
