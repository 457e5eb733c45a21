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


# -- instance ground truth: masks, keypoints, oriented boxes ----------------------------------


@pytest.fixture(scope="module")
def instances():
    from toolkit.demo.instance_data import make_instance_data

    return make_instance_data(4, split="test", seed=2)


def test_instance_arrays_become_per_image_ground_truth(tmp_path, instances):
    data = load_detection_eval_data(write(tmp_path, **instances), ["images"])
    assert data.has_masks and data.has_keypoints and data.has_obb
    assert data.masks is not None and data.keypoints is not None and data.obb is not None
    for i, (boxes, _) in enumerate(data.ground_truth):
        keep = instances["labels"][i] >= 0
        np.testing.assert_array_equal(boxes, instances["boxes"][i][keep])
        assert data.masks[i].dtype == np.bool_ and data.masks[i].shape == (keep.sum(), 64, 64)
        np.testing.assert_array_equal(data.masks[i], instances["masks"][i][keep])
        np.testing.assert_array_equal(data.keypoints[i], instances["keypoints"][i][keep])
        np.testing.assert_array_equal(data.obb[i], instances["obb"][i][keep])
        assert data.keypoints[i].dtype == data.obb[i].dtype == np.float32
    plain = load_detection_eval_data(write(tmp_path, x=instances["x"], boxes=instances["boxes"],
                                           labels=instances["labels"]), ["x"])
    assert not (plain.has_masks or plain.has_keypoints or plain.has_obb)


def test_masks_may_be_0_1_and_match_an_nhwc_input(tmp_path, instances):
    nhwc = instances["x"].transpose(0, 2, 3, 1)
    path = write(tmp_path, x=nhwc, boxes=instances["boxes"], labels=instances["labels"],
                 masks=instances["masks"].astype(np.uint8))
    data = load_detection_eval_data(path, ["x"])
    assert data.masks is not None and data.masks[0].dtype == np.bool_
    np.testing.assert_array_equal(data.masks[0], instances["masks"][0][instances["labels"][0] >= 0])


def test_obb_alone_gives_the_enclosing_axis_aligned_boxes(tmp_path):
    obb = np.array([[[10, 20, 8, 4, np.pi / 2], [30, 30, 10, 10, np.pi / 4], [0, 0, 0, 0, 0]]],
                   np.float32)
    labels = np.array([[0, 1, -1]])
    data = load_detection_eval_data(write(tmp_path, x=np.zeros((1, 3, 8, 8)), obb=obb,
                                          labels=labels), ["x"])
    half = 10 * np.sqrt(2) / 2
    np.testing.assert_allclose(data.ground_truth[0][0], [[8, 16, 12, 24],
                               [30 - half, 30 - half, 30 + half, 30 + half]], atol=1e-4)
    assert data.obb is not None and data.obb[0].shape == (2, 5) and not data.has_masks


def test_generated_obb_alone_encloses_the_tight_boxes(tmp_path, instances):
    data = load_detection_eval_data(write(tmp_path, x=instances["x"], obb=instances["obb"],
                                          labels=instances["labels"]), ["x"])
    for i, (boxes, labels) in enumerate(data.ground_truth):
        tight = instances["boxes"][i][instances["labels"][i] >= 0]
        # pixel centres lie in the rotated box, so pixel edges stick out by at most half a pixel
        assert (boxes[:, :2] <= tight[:, :2] + 0.5).all()
        assert (boxes[:, 2:] >= tight[:, 2:] - 0.5).all()
        # a rectangle fills its oriented box: both boxes agree to within a pixel
        np.testing.assert_allclose(boxes[labels == 0], tight[labels == 0], atol=1.0)


def test_angles_turn_the_boxes_and_must_agree_with_obb(tmp_path):
    boxes = np.array([[[0, 0, 10, 4], [-1, -1, -1, -1]]], np.float32)
    labels = np.array([[2, -1]])
    angles = np.array([[0.3, np.nan]], np.float32)  # padding rows are never read
    x = np.zeros((1, 3, 16, 16))
    data = load_detection_eval_data(write(tmp_path, x=x, boxes=boxes, labels=labels,
                                          angles=angles), ["x"])
    assert data.obb is not None
    np.testing.assert_allclose(data.obb[0], [[5, 2, 10, 4, 0.3]], atol=1e-6)
    obb = np.array([[[5, 2, 10, 4, 0.3 + np.pi], [0, 0, 0, 0, 0]]], np.float32)  # a half turn
    load_detection_eval_data(write(tmp_path, x=x, labels=labels, obb=obb, angles=angles), ["x"])
    path = write(tmp_path, x=x, labels=labels, obb=obb, angles=angles + 0.5)
    with pytest.raises(UsageError, match=r"angles\[0, 0\] = 0.8 but obb\[0, 0\] has theta "
                                         "3.44159; give obb alone"):
        load_detection_eval_data(path, ["x"])


BAD_INSTANCES = {
    "masks rank": (lambda a: a.update(masks=a["masks"][..., 0]),
                   r"masks has shape \[4, 4, 64\] but labels are \[4, 4\]; masks must be "
                   r"\[n, M, H, W\]"),
    "masks n": (lambda a: a.update(masks=a["masks"][:3]), r"masks has shape \[3, 4, 64, 64\]"),
    "masks M": (lambda a: a.update(masks=a["masks"][:, :2]), r"masks has shape \[4, 2, 64, 64\]"),
    "masks size": (lambda a: a.update(masks=a["masks"][:, :, :32, :32]),
                   r"masks are 32x32 \(H x W\) but no image input has that size \(inputs: "
                   r"'x' \[4, 3, 64, 64\]\)"),
    "masks values": (lambda a: a.update(masks=np.where(a["masks"], 0.5, 0.0)),
                     r"masks\[0, 0\] holds 0.5; masks must be bool or 0/1"),
    "masks nan": (lambda a: a.update(masks=np.where(a["masks"], np.nan, 0.0)),
                  r"masks\[0, 0\] holds nan"),
    "keypoints rank": (lambda a: a.update(keypoints=a["keypoints"][..., 0, :]),
                       r"keypoints has shape \[4, 4, 3\] but labels are \[4, 4\]; keypoints "
                       r"must be \[n, M, P, 3\]"),
    "keypoints xy": (lambda a: a.update(keypoints=a["keypoints"][..., :2]),
                     r"keypoints has shape \[4, 4, 5, 2\]"),
    "keypoints v": (lambda a: a["keypoints"].__setitem__((0, 0, 3, 2), 3),
                    r"keypoints\[0, 0, 3\] has visibility 3; v must be 0 \(not labelled\), 1 "
                    r"\(labelled, occluded\) or 2 \(visible\)"),
    "keypoints nan": (lambda a: a["keypoints"].__setitem__((1, 0, 2, 0), np.nan),
                      r"keypoints\[1, 0\] is not all finite"),
    "obb shape": (lambda a: a.update(obb=a["obb"][..., :4]),
                  r"obb has shape \[4, 4, 4\] but labels are \[4, 4\]; obb must be \[n, M, 5\]"),
    "obb nan": (lambda a: a["obb"].__setitem__((2, 0, 4), np.inf), r"obb\[2, 0\] is not all "
                                                                   "finite"),
    "obb negative": (lambda a: a["obb"].__setitem__((0, 0, 3), -2.0),
                     r"obb\[0, 0\] = \[.*\] has a negative w or h"),
    "angles shape": (lambda a: a.update(angles=a["angles"][:, :3]),
                     r"angles has shape \[4, 3\] but labels are \[4, 4\]; angles must be "
                     r"\[n, M\]"),
    "angles nan": (lambda a: a["angles"].__setitem__((3, 0), np.nan),
                   r"angles\[3, 0\] is not all finite"),
    "keypoints text": (lambda a: a.update(keypoints=np.full(a["keypoints"].shape, "a")),
                       "keypoints have dtype <U1; they must be numbers"),
}


@pytest.mark.parametrize("case", sorted(BAD_INSTANCES))
def test_each_bad_instance_array_is_one_line_naming_file_and_array(tmp_path, instances, case):
    arrays = {key: value.copy() for key, value in instances.items()}
    spoil, expected = BAD_INSTANCES[case]
    spoil(arrays)
    path = write(tmp_path, **arrays)
    with pytest.raises(UsageError, match=expected) as info:
        load_detection_eval_data(path, ["x"])
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert info.value.exit_code == 2


def test_nan_in_padding_rows_is_never_read(tmp_path, instances):
    arrays = {key: value.copy() for key, value in instances.items()}
    pad = arrays["labels"] < 0
    assert pad.any()
    arrays["keypoints"][pad] = np.nan
    arrays["obb"][pad] = np.nan
    arrays["angles"][pad] = np.nan
    data = load_detection_eval_data(write(tmp_path, **arrays), ["x"])
    assert data.has_keypoints and data.has_obb
