"""The detection demo: deterministic synthetic data, a Lightning raw-head detector trained on
it (to a useful mAP), and its NMS-appended export to ONNX / TorchScript with a dynamic batch."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from toolkit.backends.onnx import nms as _onnx_nms  # noqa: F401 - registers ONNX's NMS node
from toolkit.demo.detection_data import NUM_CLASSES, make_detection_data
from toolkit.detection.match import pairwise_iou as _iou
from toolkit.detection.postprocess import (
    OUTPUT_NAMES,
    RawHeadNMS,
    contract_dynamic_axes,
    find_raw_head_outputs,
)

K = 50



def _average_precision(out: Any, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                       iou_min: float) -> float:
    """COCO-style 101-point AP at one IoU threshold, averaged over classes (a rough local
    check; the toolkit's evaluator is elsewhere)."""
    num, boxes, scores, labels = (np.asarray(t) for t in out)
    aps = []
    for c in range(NUM_CLASSES):
        records: list[tuple[float, int]] = []
        positives = 0
        for i in range(len(num)):
            gt = gt_boxes[i][gt_labels[i] == c]
            positives += len(gt)
            keep = labels[i, : num[i]] == c
            pb, ps = boxes[i, : num[i]][keep], scores[i, : num[i]][keep]
            used = np.zeros(len(gt), dtype=bool)
            for j in np.argsort(-ps):
                hit = 0
                if len(gt):
                    ious = np.where(used, -1.0, _iou(pb[j : j + 1], gt)[0])
                    if ious.max() >= iou_min:
                        used[ious.argmax()] = True
                        hit = 1
                records.append((float(ps[j]), hit))
        records.sort(key=lambda r: -r[0])
        hits = np.cumsum([r[1] for r in records])
        recall = hits / max(positives, 1)
        precision = hits / np.arange(1, len(records) + 1)
        aps.append(np.mean([precision[recall >= t].max(initial=0) for t in np.linspace(0, 1, 101)]))
    return float(np.mean(aps))


# ------------------------------------------------------------------------------ data


def test_data_is_deterministic_padded_and_split() -> None:
    a = make_detection_data(16, split="train", seed=3)
    b = make_detection_data(16, split="train", seed=3)
    for key in ("x", "boxes", "labels"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["x"].shape == (16, 3, 64, 64) and a["x"].dtype == np.float32
    assert a["x"].min() >= 0.0 and a["x"].max() <= 1.0
    assert a["boxes"].shape == (16, 4, 4) and a["labels"].shape == (16, 4)
    valid = a["labels"] >= 0
    assert valid.sum(1).min() >= 1 and valid.sum(1).max() <= 4
    assert set(np.unique(a["labels"][valid])) <= set(range(NUM_CLASSES))
    assert (a["boxes"][~valid] == -1).all() and (a["labels"][~valid] == -1).all()
    real = a["boxes"][valid]
    assert (real[:, 2:] > real[:, :2]).all() and real.min() >= 0 and real.max() <= 64
    val = make_detection_data(16, split="val", seed=3)
    assert not np.array_equal(val["x"], a["x"])


def test_boxes_frame_shapes_of_their_class_colour() -> None:
    data = make_detection_data(32, split="val")
    agree = total = 0
    for i in range(32):
        for box, label in zip(data["boxes"][i], data["labels"][i]):
            if label in (0, 1):  # rectangles and ellipses fill most of their box
                x1, y1, x2, y2 = box.astype(int)
                mean = data["x"][i][:, y1:y2, x1:x2].mean(axis=(1, 2))
                agree += int(mean.argmax() == label)  # red rectangles, green ellipses
                total += 1
    assert total > 20 and agree / total > 0.9


# ---------------------------------------------------------------------- the detector


@pytest.mark.slow
def test_detector_trains_to_a_useful_map(trained: dict[str, Any]) -> None:
    model, val = trained["model"], trained["val"]
    with torch.no_grad():
        out = RawHeadNMS(model, iou_threshold=0.5, score_threshold=0.05, max_detections=K)(
            trained["x"])
    ap50 = _average_precision(out, val["boxes"], val["labels"], 0.5)
    ap = np.mean([_average_precision(out, val["boxes"], val["labels"], t)
                  for t in np.arange(0.5, 0.96, 0.05)])
    print(f"trained in {trained['seconds']:.1f} s: mAP@.5 {ap50:.3f}, mAP@[.5:.95] {ap:.3f}")
    assert ap50 > 0.8 and ap > 0.4


def test_detector_is_a_lightning_module_with_raw_head_outputs(trained: dict[str, Any]) -> None:
    from toolkit.demo.detector import ShapesDetector

    model = trained["model"]
    assert model.hparams["num_classes"] == NUM_CLASSES
    example = model.example_input_array
    out = model(example)
    assert set(out) == {"boxes", "scores"}
    assert tuple(out["boxes"].shape) == (example.shape[0], 64, 4)
    assert tuple(out["scores"].shape) == (example.shape[0], 64, NUM_CLASSES)
    flat = [(name, tuple(t.shape)) for name, t in out.items()]
    assert [flat[i][0] for i in find_raw_head_outputs(flat)] == ["boxes", "scores"]
    reloaded = ShapesDetector.load_from_checkpoint(
        Path(trained["dir"]) / "shapes_detector.ckpt", map_location="cpu").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(example), model(example))


def test_training_is_deterministic() -> None:
    from toolkit.demo.detector import train_detector

    a = train_detector(epochs=1, n_train=64, n_val=8, seed=7, batch_size=16)
    b = train_detector(epochs=1, n_train=64, n_val=8, seed=7, batch_size=16)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_detector_with_nms_exports_to_onnx_with_a_dynamic_batch(trained: dict[str, Any]) -> None:
    module = RawHeadNMS(trained["model"], iou_threshold=0.5, score_threshold=0.05,
                        max_detections=K).eval()
    x = trained["x"]
    buffer = io.BytesIO()
    torch.onnx.export(module, (x[:2],), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=list(OUTPUT_NAMES),
                      dynamic_axes=contract_dynamic_axes(["x"]))
    proto = onnx.load_from_string(buffer.getvalue())
    assert [n.op_type for n in proto.graph.node].count("NonMaxSuppression") == 1
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    from toolkit.export.common import lightning_export_mode

    with lightning_export_mode(module):  # as every exporter scripts a LightningModule
        scripted = torch.jit.script(module)
    for batch in (1, 3, 16):
        with torch.no_grad():
            want = module(x[:batch])
            from_script = scripted(x[:batch])
        got = session.run(None, {"x": x[:batch].numpy()})
        assert got[1].shape == (batch, K, 4)
        assert (want[0] > 0).all(), "trained detector finds objects in every image"
        np.testing.assert_array_equal(got[0], want[0].numpy())
        np.testing.assert_array_equal(got[3], want[3].numpy())
        np.testing.assert_allclose(got[1], want[1].numpy(), atol=1e-3)
        np.testing.assert_allclose(got[2], want[2].numpy(), atol=1e-5)
        for s, w in zip(from_script, want):
            torch.testing.assert_close(s, w)
