"""YOLO11n-seg, -pose and -obb TRAINED by Ultralytics' own trainer, exported by the toolkit to
every format and precision and scored; then the seg and pose exports against Ultralytics' own
`export(format="onnx", nms=True)` of the same weights, in one run, interleaved.

Random weights say little about fp16 and INT8, so each model is trained: the toolkit's generated
instance data (`toolkit.demo.instance_data`: three shapes with exact masks, five keypoints, a
rotated rectangle; nothing downloaded) written as Ultralytics datasets (`benchmarks.
yolo_dataset`), `YOLO("yolo11n-<task>.yaml").train(...)` on CPU, offline. Ultralytics' own
validation (`model.val()`: mask mAP, pose mAP, rotated-box mAP) is reported beside the toolkit's
task metric of every artifact, on the same validation images (8-bit, as the PNGs hold them).

The trained weights go to `toolkit export` as a user hands them over: a factory that builds the
model from its YAML and loads a state dict, no wrapper. Every artifact row gives its verdict,
the detections matched against eager, the worst mask IoU / OKS / rotated IoU of those, and the
task metric on the validation images.

Peer rows (segment and pose): Ultralytics' exporter with its NMS in the graph (conf 0.25, iou
0.7, max_det 300) against the toolkit's ONNX at every precision, timed in a plain ONNX Runtime
CPU session at batch 1, interleaved; agreement with the eager model (Ultralytics' defaults,
through the toolkit's decode) by IoU matching, then mask IoU (Ultralytics' coefficients and
prototypes assembled as its `process_mask` does: sigmoid of their product, cropped to the box)
or OKS.

    .venv/bin/python -m benchmarks.yolo_instances [--tasks segment pose obb] [--epochs 30]
        [--size 64] [--train 600] [--val 100] [--runs 60] [--cache DIR]

Results: benchmarks/results/yolo_instances_<machine>.md and .json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.openvino_cpu import time_interleaved
from benchmarks.precision_bench import machine_tag, stats
from benchmarks.yolo_dataset import MODELS, offline_trainer, write_yolo_dataset
from toolkit.environment import describe

RESULTS = Path(__file__).parent / "results"
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

CLASSES = 3
KEYPOINTS = 5
EXTRA = {"segment": "masks", "pose": "keypoints", "obb": "oriented_boxes"}
TOOLKIT_TASK = {"segment": "segmentation", "pose": "pose", "obb": "obb"}
GROUND_TRUTH = {"segment": "masks", "pose": "keypoints", "obb": "obb"}
WORST = {"segment": "mask_iou", "pose": "oks", "obb": "rotated_iou"}
PEER = "Ultralytics export(nms=True)"
PEER_MASKS = "Ultralytics export(nms=True) + masks assembled in numpy"


@dataclass
class Trained:
    """One task's model after Ultralytics' trainer: its weights and Ultralytics' own scores."""

    task: str
    weights: str  # the state dict the factory loads
    checkpoint: str  # Ultralytics' best.pt, for its own exporter
    seconds: float
    task_map: float  # Ultralytics' val: mask / pose / rotated-box mAP@[.5:.95], in points
    task_map50: float
    box_map: float


@dataclass
class ArtifactRow:
    task: str
    artifact: str
    status: str
    matched: int | None
    reference: int | None
    worst: float | None  # mask IoU, OKS or rotated IoU of the matched pairs against eager
    task_map: float | None  # the toolkit's task metric on the validation images, in points
    box_map: float | None
    gate: str


def trained(task: str, path: str) -> Any:
    """The factory the toolkit calls: the task's YOLO11n from its YAML, the trained weights."""
    import torch
    from ultralytics.nn import tasks

    kind = {"segment": tasks.SegmentationModel, "pose": tasks.PoseModel, "obb": tasks.OBBModel}
    extra = {"data_kpt_shape": (KEYPOINTS, 3)} if task == "pose" else {}
    model = kind[task](MODELS[task], nc=CLASSES, verbose=False, **extra)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.float().eval()


def train(task: str, root: Path, args: argparse.Namespace) -> Trained:
    """Ultralytics' trainer on CPU, offline; its validation on the val split."""
    import torch
    from ultralytics import YOLO

    yaml = write_yolo_dataset(root / "data" / task, task, args.size, args.train, args.val)
    with offline_trainer():
        model = YOLO(MODELS[task])
        started = time.perf_counter()
        model.train(data=str(yaml), epochs=args.epochs, imgsz=args.size, batch=32,
                    device="cpu", workers=0, pretrained=False, amp=False, plots=False,
                    project=str(root / "runs"), name=task, exist_ok=True, seed=0,
                    deterministic=True, verbose=False)
        seconds = time.perf_counter() - started
        best = root / "runs" / task / "weights" / "best.pt"
        own = YOLO(str(best))
        metrics = own.val(data=str(yaml), imgsz=args.size, batch=32, device="cpu",
                          plots=False, workers=0, verbose=False)
    part = getattr(metrics, {"segment": "seg", "pose": "pose", "obb": "box"}[task])
    weights = root / f"yolo11n_{task}.pt"
    torch.save(own.model.float().eval().state_dict(), weights)
    return Trained(task, str(weights), str(best), round(seconds, 1), 100 * float(part.map),
                   100 * float(part.map50), 100 * float(metrics.box.map))


def validation_data(path: Path, args: argparse.Namespace, split: str = "val") -> None:
    """The validation images as Ultralytics saw them (8-bit), with every kind of ground
    truth, as `--eval-data`."""
    from toolkit.demo.instance_data import make_instance_data

    data = make_instance_data(args.val, split, seed=0, size=args.size)
    images = np.round(data.pop("x") * 255) / 255
    np.savez(path, images=images.astype(np.float32), **data)


def export_task(model: Trained, work: Path, args: argparse.Namespace) -> tuple[Path, Any]:
    from toolkit.detection.options import DetectionOptions
    from toolkit.export.job import PrecisionOptions
    from toolkit.export.pipeline import SourceOptions
    from toolkit.export.pipeline import export as toolkit_export

    calib = work / "calib.npz"
    from toolkit.demo.instance_data import make_instance_data

    np.savez(calib, images=make_instance_data(64, "train", seed=7, size=args.size)["x"])
    out = work / f"bundle_{model.task}"
    result = toolkit_export(
        f"{Path(__file__).resolve()}:trained", args.formats, out,
        inputs=[f"images:1-4x3x{args.size}x{args.size}"], precisions=["fp32", "fp16", "int8"],
        source_options=SourceOptions(model_args={"task": model.task, "path": model.weights}),
        detection=DetectionOptions(task=TOOLKIT_TASK[model.task]),
        precision_options=PrecisionOptions(calib_data=str(calib),
                                           eval_data=str(work / "eval.npz")))
    return out, result


def score_artifacts(task: str, out: Path, eval_path: Path) -> list[ArtifactRow]:
    """Each artifact's verdict and worst instance measure from the manifest, and its task
    metric on the validation images, run through the toolkit's own runner for its format."""
    from toolkit.bundle import Bundle
    from toolkit.parity.task_eval import detection_evaluation
    from toolkit.runtime import runner_for

    bundle = Bundle.open(out)
    evaluation = detection_evaluation(str(eval_path), bundle.inputs,
                                      bundle.manifest["detection"])
    rows = []
    for record, raw in zip(bundle.artifacts, bundle.manifest["artifacts"], strict=True):
        parity = raw.get("parity") or {}
        detection = parity.get("detection") or {}
        worst = ((parity.get("instances") or {}).get("worst") or {}).get(WORST[task])
        accuracy = raw.get("accuracy") or {}
        score = {}
        if raw.get("path"):
            with runner_for(bundle, record) as runner:
                score = evaluation(runner.infer)
        gate = accuracy.get("message") or ("fp32 reference" if raw["precision"] == "fp32"
                                           else "")
        verdict = "pass" if parity.get("passed") else "FAIL"
        if accuracy and not accuracy.get("passed"):
            verdict = "FAIL (accuracy gate)"
        rows.append(ArtifactRow(
            task, f"{raw['format']}/{raw['precision']}", verdict,
            detection.get("matched"), detection.get("reference"),
            worst["value"] if worst else None, score.get("map"), score.get("box_map"), gate))
    return rows


def ultralytics_onnx(model: Trained, work: Path, size: int) -> Path:
    """Ultralytics' own exporter on the trained checkpoint, its NMS in the graph."""
    from ultralytics import YOLO

    folder = work / f"peer_{model.task}"
    folder.mkdir()
    checkpoint = folder / "best.pt"
    checkpoint.write_bytes(Path(model.checkpoint).read_bytes())
    with contextlib.chdir(folder), offline_trainer():
        written = YOLO(str(checkpoint)).export(format="onnx", nms=True, imgsz=size,
                                               simplify=False, dynamic=False, batch=1,
                                               verbose=False)
    return folder / written if not Path(written).is_absolute() else Path(written)


def peer_contract(task: str, outputs: list[np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Ultralytics' rows [1, 300, 6 + extra] (x1, y1, x2, y2, conf, class, coefficients or
    keypoints) as the toolkit's contract, masks assembled at the prototypes' stride."""
    import torch

    from toolkit.detection.yolo_instances import assemble_masks

    rows = outputs[0]
    order = np.argsort(-rows[..., 4], axis=1)
    rows = np.take_along_axis(rows, order[..., None], axis=1)
    keep = rows[..., 4] > 0
    k = rows.shape[1]
    boxes = (rows[..., :4] * keep[..., None]).astype(np.float32)
    got = {"num_detections": keep.sum(1).astype(np.int64), "boxes": boxes,
           "scores": (rows[..., 4] * keep).astype(np.float32),
           "labels": (rows[..., 5] * keep).astype(np.int64).reshape(1, k)}
    if task == "segment":
        prototypes = torch.from_numpy(outputs[1])
        stride = size // prototypes.shape[-1]
        masks = assemble_masks(torch.from_numpy(rows[..., 6:].astype(np.float32)), prototypes,
                               torch.from_numpy(boxes), stride)
        got["masks"] = (masks * torch.from_numpy(keep)[..., None, None]).numpy()
    else:
        got["keypoints"] = rows[..., 6:].reshape(1, k, -1, 3).astype(np.float32)
    return got


def peer(model: Trained, out: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from toolkit.detection.instance_parity import instance_tolerance, judge_instances
    from toolkit.detection.match import match_detections
    from toolkit.detection.options import DetectionOptions
    from toolkit.source.detector_contract import as_detector
    from toolkit.source.load import build_loaded_model
    from toolkit.spec import parse_input

    paths = {PEER: ultralytics_onnx(model, work, args.size)}
    for precision, name in (("fp32", "model.onnx"), ("fp16", "model.fp16.onnx"),
                            ("int8", "model.int8.onnx")):
        if (out / name).is_file():
            paths[f"toolkit onnx/{precision}"] = out / name
    sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for k, p in paths.items()}
    images = np.load(work / "eval.npz")["images"][:16]
    first = images[:1]
    named = {k: ((lambda s=s: s.run(None, {s.get_inputs()[0].name: first})), s)
             for k, s in sessions.items()}
    if model.task == "segment":  # what its client must still do: assemble the masks
        ultralytics = sessions[PEER]
        named[PEER_MASKS] = ((lambda: numpy_masks(ultralytics.run(
            None, {ultralytics.get_inputs()[0].name: first}), args.size)), ultralytics)
    times = time_interleaved(named, args.warmup, args.runs)
    spec = parse_input(f"images:1x3x{args.size}x{args.size}")
    loaded = as_detector(build_loaded_model(
        trained(model.task, model.weights), inputs=[spec], static=True,
        source={"kind": "benchmark"}), DetectionOptions(task=TOOLKIT_TASK[model.task]))
    extra = EXTRA[model.task]
    rows = {}
    for label, session in sessions.items():
        preset = label.rsplit("/", 1)[1] if label.startswith("toolkit") else "fp32"
        names = [o.name for o in session.get_outputs()]
        matched = reference = 0
        worst = None
        for x in images:
            with torch.no_grad():
                want = {k: np.asarray(v) for k, v in loaded.run({"images": x[None]}).items()}
            raw = session.run(None, {session.get_inputs()[0].name: x[None]})
            got = dict(zip(names, raw, strict=True)) if "boxes" in names else \
                peer_contract(model.task, raw, args.size)
            parity = match_detections(want, got, tolerance=preset, score_threshold=0.25)
            matched += parity.matched
            reference += parity.reference
            judged = judge_instances(extra, want, got, parity, instance_tolerance(preset),
                                     crop_stride=4 if extra == "masks" else 0)
            found = judged.worst.get(WORST[model.task])
            if found is not None:
                worst = found.value if worst is None else min(worst, found.value)
        rows[label] = {**stats(times[label]), "matched": matched, "reference": reference,
                       "worst": worst, "preset": preset}
    if PEER_MASKS in times:
        rows[PEER_MASKS] = {**stats(times[PEER_MASKS]), **{k: rows[PEER][k] for k in (
            "matched", "reference", "worst", "preset")}}
    return rows


def numpy_masks(outputs: list[np.ndarray], size: int) -> np.ndarray:
    """Ultralytics' rows and prototypes to cropped mask probabilities in numpy, as a client
    without torch does (its `process_mask`: sigmoid of coefficients x prototypes, cropped)."""
    rows, prototypes = outputs[0][0], outputs[1][0]
    rows = rows[rows[:, 4] > 0]
    m, h, w = prototypes.shape
    stride = size // w
    logits = rows[:, 6:] @ prototypes.reshape(m, h * w)
    masks = (1 / (1 + np.exp(-logits))).reshape(-1, h, w)
    cols, lines = np.arange(w) * stride, np.arange(h) * stride
    x1, y1, x2, y2 = (rows[:, i, None] for i in range(4))
    inside = (((lines >= y1) & (lines < y2))[:, :, None]
              & ((cols >= x1) & (cols < x2))[:, None, :])
    return masks * inside


def markdown(doc: dict[str, Any], tag: str) -> str:
    env, args = doc["machine"], doc["args"]
    lines = [
        f"# YOLO11n-seg, -pose and -obb trained, through the toolkit — {tag}", "",
        f"CPU: {env.get('cpu')}, {env.get('cores')} cores, flags "
        f"{', '.join(f for f in env.get('cpu_flags', []) if f.startswith(('avx', 'amx')))}; "
        f"{', '.join(f'{k} {v}' for k, v in env.get('libraries', {}).items())}, "
        f"ultralytics {doc['ultralytics']}.", "",
        f"Trained by Ultralytics' own trainer on the toolkit's instance data ({args['train']} "
        f"images of {args['size']} px, {args['epochs']} epochs, CPU); scored on {args['val']} "
        "validation images (the ones Ultralytics validates on). Parity: detections matched "
        "against eager by IoU and label on the golden samples, then the worst mask IoU / OKS "
        "/ rotated IoU of the matched pairs, each precision on its own preset. Task metric: "
        "mask mAP (COCO segm: masks at stride 4 upsampled by nearest, against the exact "
        "input-resolution ground truth), keypoint mAP (OKS with uniform sigmas 1/5 = 0.2, the "
        "box area as COCO's area), rotated-box mAP (exact polygon IoU), all @[.5:.95]. "
        "Ultralytics' own val differs by construction: it scores masks at 1/4 resolution "
        "against ground truth downsampled to it (`mask_ratio` 4), takes 0.53 x the box area "
        "for OKS, and matches rotated boxes by probabilistic IoU, which forgives a shift more "
        "than polygon IoU does. Box mAP of obb compares the enclosing axis-aligned boxes with "
        "each shape's tight box, not its rotated rectangle's.", "",
        "Peer rows: agreement with eager on 16 validation images (score over 0.25), each row "
        "under the preset of its precision; the toolkit's masks are assembled in the graph, "
        "Ultralytics' are coefficients and prototypes its client assembles (timed in the "
        "`+ masks assembled in numpy` row).", "",
    ]
    for model in doc["trained"]:
        task = model["task"]
        measure = WORST[task].replace("_", " ")
        lines += [f"## {task}: trained in {model['seconds']} s; Ultralytics' val: task mAP "
                  f"{model['task_map']:.2f} (@.5 {model['task_map50']:.2f}), box mAP "
                  f"{model['box_map']:.2f}", "",
                  f"| artifact | verdict | matched / eager | worst {measure} | toolkit task "
                  "mAP | box mAP | the accuracy gate |", "|---|---|---|---|---|---|---|"]
        for row in doc["rows"]:
            if row["task"] != task:
                continue
            matched = f"{row['matched']}/{row['reference']}" if row["reference"] else "—"
            lines.append(
                f"| {row['artifact']} | {row['status']} | {matched} | {_num(row['worst'], 3)} "
                f"| {_num(row['task_map'], 2)} | {_num(row['box_map'], 2)} | {row['gate']} |")
        lines.append("")
    for task, rows in doc["peer"].items():
        measure = WORST[task].replace("_", " ")
        base = rows[PEER]["p50_ms"]
        lines += [f"## {task}: the toolkit's ONNX against Ultralytics' export(nms=True), batch "
                  f"1, {args['runs']} runs interleaved", "",
                  f"| path | p50 ms | p90 ms | vs Ultralytics | matched / eager (preset) | "
                  f"worst {measure} |", "|---|---|---|---|---|---|"]
        for name, row in rows.items():
            lines.append(f"| {name} | {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | "
                         f"{base / row['p50_ms']:.2f}x | {row['matched']}/{row['reference']} "
                         f"({row['preset']}) | {_num(row['worst'], 3)} |")
        lines.append("")
    lines.append("Export seconds per task: " + ", ".join(
        f"{k} {v}" for k, v in doc["export_seconds"].items()))
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--formats", nargs="+", default=["onnx", "torchscript", "openvino"])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the trained weights here; reused when the same --epochs, "
                             "--size, --train and --val trained them")
    args = parser.parse_args()
    env = describe()
    tag = machine_tag(env)
    doc: dict[str, Any] = {"machine": env, "args": {k: str(v) for k, v in vars(args).items()},
                           "trained": [], "rows": [], "peer": {}, "export_seconds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        validation_data(work / "eval.npz", args)
        for task in args.tasks:
            model = _cached_or_trained(task, work, args)
            doc["trained"].append(asdict(model))
            started = time.perf_counter()
            out, result = export_task(model, work, args)
            doc["export_seconds"][task] = round(time.perf_counter() - started, 1)
            doc.setdefault("notes", {})[task] = list(result.notes)
            doc["rows"] += [asdict(r) for r in score_artifacts(task, out, work / "eval.npz")]
            if task in ("segment", "pose"):
                doc["peer"][task] = peer(model, out, work, args)
    from importlib.metadata import version

    doc["ultralytics"] = version("ultralytics")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"yolo_instances_{tag}.json").write_text(json.dumps(doc, indent=1, default=str))
    text = markdown(doc, tag)
    (RESULTS / f"yolo_instances_{tag}.md").write_text(text)
    print(text)


def _cached_or_trained(task: str, work: Path, args: argparse.Namespace) -> Trained:
    key = f"{task}_e{args.epochs}_s{args.size}_n{args.train}_v{args.val}"
    if args.cache is not None and (args.cache / f"{key}.json").is_file():
        return Trained(**json.loads((args.cache / f"{key}.json").read_text()))
    model = train(task, work, args)
    if args.cache is None:
        return model
    args.cache.mkdir(parents=True, exist_ok=True)
    weights, checkpoint = args.cache / f"{key}.pt", args.cache / f"{key}.best.pt"
    weights.write_bytes(Path(model.weights).read_bytes())
    checkpoint.write_bytes(Path(model.checkpoint).read_bytes())
    model.weights, model.checkpoint = str(weights), str(checkpoint)
    (args.cache / f"{key}.json").write_text(json.dumps(asdict(model)))
    return model


if __name__ == "__main__":
    main()
