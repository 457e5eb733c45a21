"""Detection eval data: real .npz files written to tmp_path."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from toolkit.detection.eval_data import (
    ground_truth_from_arrays,
    load_detection_eval_data,
    predictions_from_outputs,
)
from toolkit.errors import UsageError


def padded(n: int = 3, m: int = 4, seed: int = 0):
    """n images with 0..m objects each; boxes and labels padded with -1."""
    rng = np.random.default_rng(seed)
    boxes = -np.ones((n, m, 4), np.float32)
    labels = -np.ones((n, m), np.int64)
    for i in range(n):
        k = i % (m + 1)
        xy = rng.uniform(0, 200, (k, 2))
        boxes[i, :k] = np.concatenate([xy, xy + rng.uniform(4, 50, (k, 2))], 1)
        labels[i, :k] = rng.integers(0, 5, k)
    return boxes, labels


def write(tmp_path, **arrays):
    path = tmp_path / "eval.npz"
    np.savez(path, **arrays)
    return path


def test_padded_file_becomes_per_image_ground_truth(tmp_path):
    boxes, labels = padded(n=4, m=3)
    x = np.zeros((4, 3, 32, 32), np.float32)
    data = load_detection_eval_data(write(tmp_path, x=x, boxes=boxes, labels=labels), ["x"])
    assert len(data) == 4 and data.num_boxes == 0 + 1 + 2 + 3
    assert data.inputs["x"].shape == (4, 3, 32, 32)
    for i, (b, lab) in enumerate(data.ground_truth):
        assert b.shape == (i, 4) and lab.shape == (i,)
        assert b.dtype == np.float32 and lab.dtype == np.int64
        np.testing.assert_array_equal(b, boxes[i, :i])


def test_x_feeds_a_single_input_of_any_name_and_several_inputs_are_read(tmp_path):
    boxes, labels = padded()
    x = np.ones((3, 3, 8, 8), np.float32)
    path = write(tmp_path, x=x, boxes=boxes, labels=labels)
    assert list(load_detection_eval_data(path, ["images"]).inputs) == ["images"]
    path = write(tmp_path, a=x, b=x[:, :1], boxes=boxes, labels=labels)
    assert list(load_detection_eval_data(path, ["a", "b"]).inputs) == ["a", "b"]


@pytest.mark.parametrize("field", ["boxes", "labels"])
def test_missing_boxes_or_labels_name_the_file_field_and_layout(tmp_path, field):
    boxes, labels = padded()
    arrays = {"x": np.zeros((3, 1)), "boxes": boxes, "labels": labels}
    del arrays[field]
    path = write(tmp_path, **arrays)
    with pytest.raises(UsageError) as info:
        load_detection_eval_data(path, ["x"])
    message = str(info.value)
    assert str(path) in message and f"no '{field}' array" in message
    assert "boxes [n, M, 4]" in message and "\n" not in message
    assert info.value.exit_code == 2


@pytest.mark.parametrize("boxes, labels, expected", [
    (np.zeros((3, 4)), np.zeros((3, 4)), r"found boxes \[3, 4\] and labels \[3, 4\]"),
    (np.zeros((3, 4, 5)), np.zeros((3, 4)), r"found boxes \[3, 4, 5\]"),
    (np.zeros((3, 4, 4)), np.zeros((3, 2)), r"disagree on \[n, M\]"),
    (np.zeros((0, 4, 4)), np.zeros((0, 4)), "hold no image"),
])
def test_wrong_ranks_and_shapes(tmp_path, boxes, labels, expected):
    path = write(tmp_path, x=np.zeros((3, 1)), boxes=boxes, labels=labels)
    with pytest.raises(UsageError, match=expected):
        load_detection_eval_data(path, ["x"])


def test_images_and_boxes_must_agree_on_n(tmp_path):
    boxes, labels = padded(n=3)
    path = write(tmp_path, x=np.zeros((5, 3, 8, 8)), boxes=boxes, labels=labels)
    with pytest.raises(UsageError, match=r"input 'x' has shape \[5, 3, 8, 8\] but boxes and "
                                         "labels describe 3 images"):
        load_detection_eval_data(path, ["x"])


def test_a_missing_input_lists_what_the_file_holds(tmp_path):
    boxes, labels = padded()
    path = write(tmp_path, image=np.zeros((3, 1)), boxes=boxes, labels=labels)
    with pytest.raises(UsageError, match=r"no array for model input\(s\) x \(or 'x' for a "
                                         r"single-input model\); found: boxes, image, labels"):
        load_detection_eval_data(path, ["x"])
    with pytest.raises(UsageError, match=r"input\(s\) a, b; found"):
        load_detection_eval_data(path, ["a", "b"])


def test_label_values_are_checked():
    boxes, labels = padded()
    with pytest.raises(UsageError, match="labels hold -2; use class ids >= 0 and -1"):
        ground_truth_from_arrays(boxes, np.where(labels == -1, -2, labels))
    with pytest.raises(UsageError, match="non-integral values"):
        ground_truth_from_arrays(boxes, labels + 0.5)
    gt = ground_truth_from_arrays(boxes, labels.astype(np.float32))  # whole floats are fine
    assert gt[2][1].dtype == np.int64


def test_xywh_boxes_are_caught_with_a_hint():
    boxes = np.array([[[50, 60, 10, 20]]], np.float32)  # x, y, w, h
    with pytest.raises(UsageError, match=r"boxes\[0, 0\] = \[50.0, 60.0, 10.0, 20.0\] has "
                                         r"x2 < x1 or y2 < y1; boxes must be xyxy"):
        ground_truth_from_arrays(boxes, np.array([[1]]), where="data.npz")
    with pytest.raises(UsageError, match="boxes of image 0 are not all finite"):
        ground_truth_from_arrays(np.full((1, 1, 4), np.nan), np.array([[1]]))


def test_unreadable_files(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_detection_eval_data(tmp_path / "absent.npz", ["x"])
    text = tmp_path / "notes.npz"
    text.write_text("not numpy")
    with pytest.raises(UsageError, match="cannot read it as an .npz"):
        load_detection_eval_data(text, ["x"])
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(UsageError, match="holds a single array, not an .npz archive"):
        load_detection_eval_data(single, ["x"])
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UsageError, match="cannot read it as an .npz of plain arrays"):
        load_detection_eval_data(pickled, ["x"])


def contract_batch():
    out = {
        "num_detections": np.array([2, 0], np.int64),
        "boxes": np.zeros((2, 3, 4), np.float32),
        "scores": np.zeros((2, 3), np.float32),
        "labels": np.zeros((2, 3), np.int64),
    }
    out["boxes"][0, :2] = [[0, 0, 10, 10], [20, 20, 40, 40]]
    out["scores"][0, :2] = [0.9, 0.6]
    out["labels"][0, :2] = [1, 4]
    return out


def test_predictions_from_outputs_strip_rows_past_num_detections():
    (b0, s0, l0), (b1, s1, l1) = predictions_from_outputs(contract_batch())
    assert b0.shape == (2, 4) and s0.tolist() == pytest.approx([0.9, 0.6])
    assert l0.tolist() == [1, 4]
    assert b1.shape == (0, 4) and s1.size == 0 and l1.size == 0
    with pytest.raises(UsageError, match="missing num_detections"):
        predictions_from_outputs({k: v for k, v in contract_batch().items()
                                  if k != "num_detections"}, where="model.onnx")


@pytest.mark.skipif(importlib.util.find_spec("faster_coco_eval") is None
                    and importlib.util.find_spec("pycocotools") is None,
                    reason="no COCO evaluator installed (pip install faster-coco-eval)")
def test_eval_file_to_map_end_to_end(tmp_path):
    from toolkit.detection.coco_map import detection_map

    boxes, labels = padded(n=5, m=4)
    data = load_detection_eval_data(write(tmp_path, x=np.zeros((5, 1)), boxes=boxes,
                                          labels=labels), ["x"])
    # Outputs that reproduce the ground truth, in the contract with K = 6.
    out = {"num_detections": np.zeros(5, np.int64), "boxes": np.zeros((5, 6, 4), np.float32),
           "scores": np.zeros((5, 6), np.float32), "labels": np.zeros((5, 6), np.int64)}
    for i, (b, lab) in enumerate(data.ground_truth):
        out["num_detections"][i] = lab.size
        out["boxes"][i, : lab.size], out["labels"][i, : lab.size] = b, lab
        out["scores"][i, : lab.size] = 0.9
    result = detection_map(predictions_from_outputs(out), data.ground_truth)
    assert result["map"] == pytest.approx(100.0)
