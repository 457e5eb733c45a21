"""Measure healthy and broken detector exports, to choose the detection parity presets.

The demo raw-head detector is trained briefly, exported with NMS in the graph to fp32 ONNX,
and fp16 and INT8 (calibrated) ONNX are derived through the toolkit. Defects are planted in
the fp32 graph: the box-regression conv's weights x1.02 and x1.05, the class-score bias
+0.1 and +0.5, one class's score conv zeroed. Every variant runs in ONNX Runtime on test images
from the demo data; each is matched against eager PyTorch with `match_detections` under every
preset, and the figures behind the verdict are printed. Healthy rows must PASS their own
preset and broken rows must FAIL fp32; the distance between them is the margin.

    .venv/bin/python benchmarks/detection_tolerance_study.py  # -> results/detection_tolerance_*.md
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_cpu import slug

PRESETS = ("fp32", "fp16", "int8")
IMAGES = 64


def plant(src: Path, dst: Path, suffix: str, change: Any) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    (tensor,) = [t for t in model.graph.initializer if t.name.endswith(suffix)]
    tensor.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(tensor).copy()),
                                            tensor.name))
    onnx.save(model, str(dst))


def run_onnx(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"x": x})))


def main() -> int:
    from typer.testing import CliRunner

    from toolkit import runtime
    from toolkit.bundle import Bundle
    from toolkit.cli.app import app
    from toolkit.demo.detection_data import make_detection_data
    from toolkit.demo.detector import CHECKPOINT_NAME, train_detector
    from toolkit.detection.match import match_detections
    from toolkit.environment import describe
    from toolkit.source.rebuild import source_model

    work = Path(tempfile.mkdtemp(prefix="toolkit-det-tol-"))
    train_detector(epochs=6, n_train=1200, checkpoint_dir=work)
    np.savez(work / "calib.npz", x=make_detection_data(128, split="val", seed=5)["x"])
    bundle_dir = work / "bundle"
    result = CliRunner().invoke(app, [
        "export", str(work / CHECKPOINT_NAME), "--model", "toolkit.demo.detector:ShapesDetector",
        "--nms", "iou=0.5,score=0.1,max=20", "--to", "onnx", "--precision", "fp32,fp16,int8",
        "--calib-data", str(work / "calib.npz"), "--out", str(bundle_dir), "--no-verify"])
    assert result.exit_code == 0, result.output
    x = make_detection_data(IMAGES, split="test", seed=7)["x"]
    with runtime.model_runner(source_model(Bundle.open(bundle_dir)), "eager") as eager:
        reference = eager.infer({"x": x})

    fp32 = bundle_dir / "model.onnx"
    variants: list[tuple[str, str, Path]] = [
        ("healthy", "fp32", fp32), ("healthy", "fp16", bundle_dir / "model.fp16.onnx"),
        ("healthy", "int8", bundle_dir / "model.int8.onnx")]
    defects = {
        "box_head x1.02": ("box_head.weight", lambda w: w * 1.02),
        "box_head x1.05": ("box_head.weight", lambda w: w * 1.05),
        "cls_head bias +0.1": ("cls_head.bias", lambda b: b + np.float32(0.1)),
        "cls_head bias +0.5": ("cls_head.bias", lambda b: b + np.float32(0.5)),
        "class 0 zeroed": ("cls_head.weight", lambda w: np.concatenate([w[:1] * 0, w[1:]])),
    }
    for i, (name, (suffix, change)) in enumerate(defects.items()):
        path = work / f"defect{i}.onnx"
        plant(fp32, path, suffix, change)
        variants.append(("broken", name, path))

    import os

    flags = " ".join(f for f in describe().get("cpu_flags", []) if "vnni" in f or f == "avx2")
    lines = [f"# Detection parity presets — healthy and broken exports ({describe()['cpu']}, "
             f"{os.cpu_count()} cores, {flags or 'no VNNI'})", "",
             f"Demo shapes detector (6 epochs), NMS iou=0.5 score=0.1 K=20, {IMAGES} test "
             f"images, reference: eager PyTorch. `matched` is of the non-borderline reference "
             "detections; IoU and score diff are over matched pairs.", "",
             "| variant | matched | worst IoU | max score diff | missing | extra | "
             + " | ".join(f"{p} preset" for p in PRESETS) + " |",
             "|---|---:|---:|---:|---:|---:|" + "---|" * len(PRESETS)]
    for kind, name, path in variants:
        actual = run_onnx(path, x)
        verdicts = []
        figures = None
        for preset in PRESETS:
            parity = match_detections(reference, actual, tolerance=preset, score_threshold=0.1,
                                      nms_iou=0.5)
            verdicts.append("PASS" if parity.passed else "FAIL")
            if preset == "fp32":
                figures = parity
        assert figures is not None
        iou = f"{figures.worst_iou:.4f}" if figures.worst_iou is not None else "—"
        diff = f"{figures.max_score_diff:.2e}" if figures.max_score_diff is not None else "—"
        lines.append(f"| {kind}: {name} | {figures.matched}/{figures.reference} "
                     f"({figures.matched_fraction:.3f}) | {iou} | {diff} | {figures.missing} | "
                     f"{figures.extra} | " + " | ".join(verdicts) + " |")
        print(lines[-1], flush=True)
    out = Path(__file__).parent / "results" / f"detection_tolerance_{slug()}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
