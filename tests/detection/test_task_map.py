"""COCO mAP of masks, keypoints and oriented boxes through the real libraries (faster-coco-eval,
pycocotools); no mocks. Cross-checked against coco_map's box mAP where the tasks coincide."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from toolkit.detection.coco_map import BACKENDS, detection_map
from toolkit.detection.instances import keypoint_sigmas, oks
from toolkit.detection.task_map import keypoint_map, obb_map, segmentation_map
from toolkit.errors import UsageError

MODULES = {"faster-coco-eval": "faster_coco_eval", "pycocotools": "pycocotools"}
INSTALLED = [b for b in BACKENDS if importlib.util.find_spec(MODULES[b]) is not None]
pytestmark = pytest.mark.skipif(not INSTALLED, reason="neither faster-coco-eval nor pycocotools "
                                                      "is installed (pip install faster-coco-eval)")
backends = pytest.mark.parametrize("backend", INSTALLED)
PERFECT = {"map": 100.0, "map_50": 100.0, "map_75": 100.0, "mar": 100.0}
SIZE = (64, 96)  # H, W


def box_case(seed: int, images: int = 25, classes: int = 3, grid: int = 1):
    """Integer xyxy boxes (multiples of `grid`) inside SIZE, with jittered predictions and a
    few false positives: (predictions, ground truth) in coco_map's layout."""
    rng = np.random.default_rng(seed)
    truth, preds = [], []
    for _ in range(images):
        m = int(rng.integers(0, 5))
        xy = rng.integers(0, 40 // grid, (m, 2)) * grid
        boxes = np.concatenate([xy, xy + rng.integers(1, 24 // grid, (m, 2)) * grid], 1)
        labels = rng.integers(0, classes, m)
        jitter = np.clip(boxes + rng.integers(-2, 3, boxes.shape) * grid, 0, 60)
        jitter[:, 2:] = np.maximum(jitter[:, 2:], jitter[:, :2] + grid)
        extra = rng.integers(0, 40 // grid, (2, 2)) * grid
        pb = np.concatenate([jitter, np.concatenate([extra, extra + 8 * grid], 1)])
        pl = np.concatenate([labels, rng.integers(0, classes, 2)])
        truth.append((boxes.astype(float), labels))
        preds.append((pb.astype(float), rng.random(m + 2), pl))
    return preds, truth


def box_masks(boxes: np.ndarray, stride: int = 1) -> np.ndarray:
    """Boolean masks [n, H/stride, W/stride] that are exactly the (stride-aligned) boxes."""
    h, w = -(-SIZE[0] // stride), -(-SIZE[1] // stride)
    masks = np.zeros((len(boxes), h, w), bool)
    for mask, (x0, y0, x1, y1) in zip(masks, (boxes / stride).astype(int)):
        mask[y0:y1, x0:x1] = True
    return masks


def as_masks(preds, truth, stride: int = 1, probabilities: bool = False):
    gt = [(box_masks(boxes), labels) for boxes, labels in truth]
    out = []
    for boxes, scores, labels in preds:
        masks = box_masks(boxes, stride)
        out.append((np.where(masks, 0.9, 0.2) if probabilities else masks, scores, labels))
    return out, gt


# -- instance masks ---------------------------------------------------------------------------


@backends
def test_masks_that_are_their_boxes_score_what_the_boxes_score(backend):
    preds, truth = box_case(0)
    masks, gt = as_masks(preds, truth, probabilities=True)
    expected = detection_map(preds, truth, backend=backend)
    assert 5.0 < expected["map"] < 95.0  # a case that is neither trivial nor hopeless
    assert segmentation_map(masks, gt, backend=backend) == pytest.approx(expected)


@backends
def test_stride_4_masks_are_upsampled_by_repeating_pixels(backend):
    preds, truth = box_case(1, grid=4)
    masks, gt = as_masks(preds, truth, stride=4)
    assert masks[0][0].shape[1:] == (16, 24)
    expected = detection_map(preds, truth, backend=backend)
    assert segmentation_map(masks, gt, stride=4, backend=backend) == pytest.approx(expected)


@backends
def test_perfect_masks_score_100_and_a_shifted_one_less(backend):
    _, truth = box_case(2)
    gt = [(box_masks(boxes), labels) for boxes, labels in truth]
    perfect = [(m, np.linspace(1, 0.5, len(labels)), labels) for m, labels in gt]
    assert segmentation_map(perfect, gt, backend=backend) == pytest.approx(PERFECT)
    shifted = [(np.roll(m, 3, axis=2), s, labels) for m, s, labels in perfect]
    assert segmentation_map(shifted, gt, backend=backend)["map"] < 90.0


@backends
def test_a_mask_past_the_input_edge_is_cut_to_it(backend):
    # H = 10 at stride 4: 3 mask rows cover 12 input rows; the last 2 fall outside
    truth = np.zeros((1, 10, 8), bool)
    truth[0, 8:10, 0:4] = True
    pred = np.zeros((1, 3, 2))
    pred[0, 2, 0] = 0.8  # input rows 8..11, columns 0..3
    result = segmentation_map([(pred, [0.9], [0])], [(truth, [0])], stride=4, backend=backend)
    assert result == pytest.approx(PERFECT)


def test_segmentation_input_errors_are_one_line():
    gt = [(np.zeros((1, 8, 8), bool), [0])]
    cases = [
        ([(np.zeros((1, 8, 8)), [0.5], [0])], [], "images of predictions"),
        ([(np.zeros((1, 4, 4)), [0.5], [0])], gt, r"expected \[1, 8, 8\]"),
        ([(np.zeros((2, 8, 8)), [0.5], [0])], gt, r"1 scores and 1 labels|expected \[1, 8, 8\]"),
        ([(np.zeros((1, 8, 8)), [0.5, 0.4], [0])], gt, "2 scores and 1 labels"),
        ([(np.zeros((1, 8, 8)), [0.5], [0])], [(np.zeros((8, 8), bool), [0])], r"\[1, H, W\]"),
        ([(np.zeros((1, 8, 8)), [0.5])], gt, r"\(masks, scores, labels\)"),
        ([([], [], [])], [(np.zeros((0, 8, 8), bool), [])], "no mask in any image"),
    ]
    for preds, truth, message in cases:
        with pytest.raises(UsageError, match=message) as info:
            segmentation_map(preds, truth)
        assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="stride=0"):
        segmentation_map(gt, gt, stride=0)


@backends
def test_no_detection_at_all_scores_zero(backend):
    gt = [(np.ones((1, 8, 8), bool), [0])]
    result = segmentation_map([(np.zeros((0, 8, 8)), [], [])], gt, backend=backend)
    assert result == dict.fromkeys(PERFECT, 0.0)


# -- keypoints --------------------------------------------------------------------------------


def keypoint_case(seed: int, points: int = 17, images: int = 12):
    """Ground truth (boxes, keypoints with v in {0, 1, 2}, labels) per image."""
    rng = np.random.default_rng(seed)
    truth = []
    for _ in range(images):
        m = int(rng.integers(1, 4))
        xy = rng.uniform(0, 200, (m, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(20, 80, (m, 2))], 1)
        inside = boxes[:, None, :2] + rng.random((m, points, 2)) * (boxes[:, None, 2:] -
                                                                   boxes[:, None, :2])
        v = rng.choice([0.0, 1.0, 2.0], (m, points, 1), p=[0.2, 0.3, 0.5])
        truth.append((boxes, np.concatenate([inside, v], -1), rng.integers(0, 2, m)))
    return truth


def perfect_keypoints(truth):
    out = []
    for boxes, kpts, labels in truth:
        scored = kpts.copy()
        scored[..., 2] = 0.9  # a model's keypoint scores; COCO does not read them
        out.append((boxes, scored, np.linspace(1, 0.5, len(labels)), labels))
    return out


@backends
@pytest.mark.parametrize("points", [17, 5])
def test_perfect_keypoints_score_100_and_shifted_ones_less(backend, points):
    truth = keypoint_case(3, points)
    preds = perfect_keypoints(truth)
    assert keypoint_map(preds, truth, backend=backend) == pytest.approx(PERFECT)
    scores = []
    for shift in (6.0, 12.0):
        shifted = [(b, k + [shift, 0.0, 0.0], s, labels) for b, k, s, labels in preds]
        scores.append(keypoint_map(shifted, truth, backend=backend)["map"])
    assert 100.0 > scores[0] > scores[1] and scores[1] < 90.0


@backends
def test_one_object_at_oks_062_passes_3_of_10_thresholds_with_custom_sigmas(backend):
    # P = 5 (uniform sigmas 1/5): the libraries must use them, not COCO's 17
    box = np.array([[0.0, 0.0, 20.0, 20.0]])
    kpts = np.array([[[2.0, 2.0, 2], [10, 4, 2], [15, 15, 1], [4, 16, 2], [10, 10, 0]]])
    sigmas, _ = keypoint_sigmas(5)
    # the x shift that puts every labelled keypoint at OKS 0.62: exp(-d^2/(2 A (2s)^2)) = 0.62
    d = math.sqrt(-math.log(0.62) * 2 * 400.0 * (2 * sigmas[0]) ** 2)
    moved = kpts + [d, 0.0, 0.0]
    assert oks(kpts, moved, [400.0], sigmas)[0, 0] == pytest.approx(0.62)
    result = keypoint_map([(box, moved, [0.9], [0])], [(box, kpts, [0])], backend=backend)
    assert result == pytest.approx({"map": 30.0, "map_50": 100.0, "map_75": 0.0, "mar": 30.0})
    # COCO's own sigmas for five points would score the same shift differently
    wider = keypoint_map([(box, moved, [0.9], [0])], [(box, kpts, [0])],
                         sigmas=np.full(5, 0.5), backend=backend)
    assert wider["map"] > 30.0


@backends
def test_objects_without_a_labelled_keypoint_are_ignored(backend):
    truth = keypoint_case(4, images=1)
    boxes, kpts, labels = truth[0]
    unlabelled = kpts[:1] + [100.0, 100.0, 0.0]  # a copy of the first object, further on
    unlabelled[..., 2] = 0
    gt = [(np.concatenate([boxes, boxes[:1] + 100]), np.concatenate([kpts, unlabelled]),
           np.concatenate([labels, labels[:1]]))]
    # a confident detection on the unlabelled object is neither a hit nor a false positive
    preds = perfect_keypoints(gt)
    b, k, s, labelled = preds[0]
    preds = [(b, k, np.concatenate([s[:-1], [2.0]]), labelled)]
    assert keypoint_map(preds, gt, backend=backend) == pytest.approx(PERFECT)
    # and without a detection there it is not a miss
    missed = [(b[:-1], k[:-1], s[:-1], labelled[:-1])]
    assert keypoint_map(missed, gt, backend=backend) == pytest.approx(PERFECT)


def test_keypoint_input_errors_are_one_line():
    truth = keypoint_case(5, images=1)
    boxes, kpts, labels = truth[0]
    good = perfect_keypoints(truth)[0]
    cases = [
        ([(boxes, kpts[..., :2], good[2], labels)], truth, r"keypoints have shape"),
        ([(boxes[:, :3], kpts, good[2], labels)], truth, r"boxes have shape"),
        ([good], [(boxes, kpts[:, :5], labels)],
         r"predictions\[0\] has 17 keypoints per object, entries before it 5"),
        ([good], [(boxes, np.concatenate([kpts[..., :2], 0 * kpts[..., 2:]], -1), labels)],
         "no ground-truth object has a labelled keypoint"),
    ]
    for preds, gt, message in cases:
        with pytest.raises(UsageError, match=message) as info:
            keypoint_map(preds, gt)
        assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="3 sigmas for 17 keypoints"):
        keypoint_map([good], truth, sigmas=[0.1, 0.1, 0.1])


# -- oriented boxes ---------------------------------------------------------------------------


def as_obb(boxes: np.ndarray, theta: float = 0.0) -> np.ndarray:
    centre, size = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([centre, size, np.full((len(boxes), 1), theta)], 1)


@backends
def test_at_angle_zero_obb_map_is_the_box_map(backend):
    preds, truth = box_case(6)
    expected = detection_map(preds, truth, backend=backend)
    oriented = [(as_obb(b), s, labels) for b, s, labels in preds]
    gt = [(as_obb(b), labels) for b, labels in truth]
    assert obb_map(oriented, gt, backend=backend) == pytest.approx(expected)


@backends
def test_obb_map_matches_by_the_rotated_iou_not_the_enclosing_boxes(backend):
    # a square against itself turned 45 degrees: rotated IoU 0.707 clears 5 of the 10
    # thresholds; the enclosing boxes' IoU (0.5) would clear only one
    gt = [(np.array([[50.0, 50.0, 20.0, 20.0, math.pi / 4]]), [1])]
    upright = [(np.array([[50.0, 50.0, 20.0, 20.0, 0.0]]), [0.8], [1])]
    assert obb_map(upright, gt, backend=backend) == pytest.approx(
        {"map": 50.0, "map_50": 100.0, "map_75": 0.0, "mar": 50.0})
    same = [(gt[0][0] + [0, 0, 0, 0, math.pi], [0.8], [1])]  # theta + pi: the same box
    assert obb_map(same, gt, backend=backend) == pytest.approx(PERFECT)


@backends
def test_rotated_boxes_with_random_angles_score_100_when_perfect(backend):
    preds, truth = box_case(7)
    rng = np.random.default_rng(7)
    gt = [(as_obb(b, rng.uniform(-math.pi / 4, 3 * math.pi / 4)), labels) for b, labels in truth]
    perfect = [(o, np.linspace(1, 0.5, len(labels)), labels) for o, labels in gt]
    assert obb_map(perfect, gt, backend=backend) == pytest.approx(PERFECT)
    turned = [(o + [0, 0, 0, 0, 0.3], s, labels) for o, s, labels in perfect]
    assert obb_map(turned, gt, backend=backend)["map"] < 80.0


def test_obb_input_errors_are_one_line():
    gt = [(np.array([[5.0, 5.0, 4.0, 4.0, 0.0]]), [0])]
    cases = [
        ([(np.zeros((1, 4)), [0.5], [0])], gt, r"expected \[1, 5\]"),
        ([(np.zeros((1, 5)), [0.5], [0])], [(np.zeros((1, 4)), [0])], r"expected \[1, 5\]"),
        ([(np.zeros((1, 5)), [0.5], [0])], [(np.zeros((0, 5)), [])], "no box in any image"),
    ]
    for preds, truth, message in cases:
        with pytest.raises(UsageError, match=message) as info:
            obb_map(preds, truth)
        assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="unknown backend"):
        obb_map([(gt[0][0], [0.5], [0])], gt, backend="detectron2")
    with pytest.raises(UsageError, match="max_detections=0"):
        obb_map([(gt[0][0], [0.5], [0])], gt, max_detections=0)
