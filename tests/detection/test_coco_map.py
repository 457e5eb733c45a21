"""COCO mAP through the real libraries (faster-coco-eval, pycocotools); no mocks."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from toolkit.detection.coco_map import BACKENDS, detection_map
from toolkit.detection.match import pairwise_iou
from toolkit.errors import BackendUnavailable, UsageError

MODULES = {"faster-coco-eval": "faster_coco_eval", "pycocotools": "pycocotools"}
INSTALLED = [b for b in BACKENDS if importlib.util.find_spec(MODULES[b]) is not None]
pytestmark = pytest.mark.skipif(not INSTALLED, reason="neither faster-coco-eval nor pycocotools "
                                                      "is installed (pip install faster-coco-eval)")
backends = pytest.mark.parametrize("backend", INSTALLED)

SQUARE = np.array([[0.0, 0.0, 10.0, 10.0]])


def gt(*images):
    return [(np.asarray(boxes, float).reshape(-1, 4), np.asarray(labels)) for boxes, labels
            in images]


def pred(boxes, scores, labels):
    return (np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float),
            np.asarray(labels))


def random_case(seed: int, images: int = 60, classes: int = 4):
    rng = np.random.default_rng(seed)
    truth, preds = [], []
    for _ in range(images):
        m = int(rng.integers(0, 6))
        xy = rng.uniform(0, 250, (m, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (m, 2))], 1)
        labels = rng.integers(0, classes, m)
        truth.append((boxes, labels))
        jitter = boxes + rng.normal(0, 4, boxes.shape)
        extra = rng.uniform(0, 250, (3, 2))
        pb = np.concatenate([jitter, np.concatenate([extra, extra + 30], 1)])
        pl = np.concatenate([np.where(rng.random(m) < 0.8, labels, (labels + 1) % classes),
                             rng.integers(0, classes, 3)])
        preds.append((pb, rng.random(m + 3), pl))
    return preds, truth


@backends
def test_perfect_predictions_score_100(backend):
    preds, truth = random_case(0)
    perfect = [(boxes, np.linspace(1, 0.5, len(labels)), labels) for boxes, labels in truth]
    result = detection_map(perfect, truth, backend=backend)
    assert result == pytest.approx({"map": 100.0, "map_50": 100.0, "map_75": 100.0,
                                    "mar": 100.0})


@backends
def test_one_box_at_iou_062_passes_3_of_10_thresholds(backend):
    # IoU 0.62 clears 0.50, 0.55 and 0.60 of COCO's ten thresholds 0.50:0.05:0.95.
    box = np.array([[0.0, 0.0, 10.0, 6.2]])
    assert pairwise_iou(box, SQUARE)[0, 0] == pytest.approx(0.62)
    result = detection_map([pred(box, [0.9], [3])], gt((SQUARE, [3])), backend=backend)
    assert result == pytest.approx({"map": 30.0, "map_50": 100.0, "map_75": 0.0, "mar": 30.0})


@backends
def test_a_confident_false_positive_on_an_image_without_objects_halves_precision(backend):
    preds = [pred(SQUARE, [0.9], [0]), pred(SQUARE, [0.95], [0])]
    result = detection_map(preds, gt((SQUARE, [0]), ([], [])), backend=backend)
    assert result["map"] == pytest.approx(50.0) and result["mar"] == pytest.approx(100.0)


@backends
def test_wrong_label_and_classes_without_ground_truth(backend):
    # The class-1 detection has no class-1 ground truth: COCO ignores that class.
    preds = [pred(np.concatenate([SQUARE, SQUARE]), [0.9, 0.95], [0, 1])]
    assert detection_map(preds, gt((SQUARE, [0])), backend=backend)["map"] == pytest.approx(100)
    wrong = [pred(SQUARE, [0.9], [1])]
    assert detection_map(wrong, gt((SQUARE, [0])), backend=backend)["map"] == 0.0


@backends
def test_max_detections_keeps_the_top_scores(backend):
    # Two confident false positives ahead of the true positive.
    boxes = np.concatenate([SQUARE + 50, SQUARE + 100, SQUARE])
    preds = [pred(boxes, [0.9, 0.8, 0.7], [0, 0, 0])]
    truth = gt((SQUARE, [0]))
    assert detection_map(preds, truth, max_detections=2, backend=backend)["map"] == 0.0
    assert detection_map(preds, truth, max_detections=3, backend=backend)["map"] == \
        pytest.approx(100 / 3)


@backends
def test_no_predictions_at_all_score_zero(backend):
    empty = [pred(np.zeros((0, 4)), [], []), pred(np.zeros((0, 4)), [], [])]
    result = detection_map(empty, gt((SQUARE, [0]), ([], [])), backend=backend)
    assert result == {"map": 0.0, "map_50": 0.0, "map_75": 0.0, "mar": 0.0}


@backends
def test_the_library_prints_nothing(backend, capsys):
    detection_map(*random_case(1), backend=backend)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.skipif(len(INSTALLED) < 2, reason="needs both faster-coco-eval and pycocotools")
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_the_two_libraries_agree(seed):
    preds, truth = random_case(seed)
    fast = detection_map(preds, truth, backend="faster-coco-eval")
    slow = detection_map(preds, truth, backend="pycocotools")
    assert 0 < fast["map"] < 100
    for key in fast:
        assert fast[key] == pytest.approx(slow[key], abs=1e-6)


def test_bad_inputs_are_usage_errors():
    truth = gt((SQUARE, [0]))
    with pytest.raises(UsageError, match="2 images of predictions but 1 of ground truth"):
        detection_map([pred(SQUARE, [1], [0])] * 2, truth)
    with pytest.raises(UsageError, match="ground truth has no box in any image"):
        detection_map([pred(SQUARE, [1], [0])], gt(([], [])))
    with pytest.raises(UsageError, match=r"predictions\[0\] boxes have shape \[1, 5\]"):
        detection_map([(np.zeros((1, 5)), np.ones(1), np.zeros(1))], truth)
    with pytest.raises(UsageError, match=r"predictions\[0\] have 2 scores and 1 labels"):
        detection_map([(SQUARE, np.ones(2), np.zeros(1))], truth)
    with pytest.raises(UsageError, match=r"ground truth\[0\] must be a tuple \(boxes, labels\)"):
        detection_map([pred(SQUARE, [1], [0])], [SQUARE])
    with pytest.raises(UsageError, match="unknown backend 'torchmetrics'"):
        detection_map([pred(SQUARE, [1], [0])], truth, backend="torchmetrics")


def test_a_missing_library_is_backend_unavailable(monkeypatch):
    # None in sys.modules makes `import` raise ImportError, as on a device without the package.
    for module in MODULES.values():
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(BackendUnavailable, match="pip install faster-coco-eval") as info:
        detection_map([pred(SQUARE, [1], [0])], gt((SQUARE, [0])))
    assert info.value.exit_code == 3
