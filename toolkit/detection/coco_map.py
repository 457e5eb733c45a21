"""COCO-style detection mAP from a well-kept evaluator (numpy only; runs on the device side).

The evaluator is faster-coco-eval (a C++ port of pycocotools' COCOeval; same numbers, about 10x
faster: 84 ms against 880 ms for 500 images x 20 detections), with pycocotools as the fallback
when only it is installed. Both depend on numpy alone and ship aarch64 wheels for Jetsons;
torchmetrics would need torch. The library is imported inside `detection_map`, so the rest of
the toolkit works without it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from toolkit.errors import BackendUnavailable, UsageError

BACKENDS = ("faster-coco-eval", "pycocotools")  # in order of preference

# COCOeval.stats after summarize(): the same slots in both libraries for bbox evaluation.
_STATS = {"map": 0, "map_50": 1, "map_75": 2, "mar": 8}


def detection_map(
    predictions: Sequence[tuple[Any, Any, Any]],
    ground_truth: Sequence[tuple[Any, Any]],
    *,
    max_detections: int = 100,
    backend: str | None = None,
) -> dict[str, float]:
    """COCO mAP@[.5:.95], mAP@.5, mAP@.75 and mAR@[.5:.95], in percent points (0-100).

    `predictions[i]` is image i's (boxes [n, 4] xyxy, scores [n], labels [n]); `ground_truth[i]`
    its (boxes [m, 4] xyxy, labels [m]). Images without ground truth count their detections as
    false positives; classes that appear only in predictions are ignored, as in COCO.
    `max_detections` is COCO's maxDets (per image); `backend` picks a library from BACKENDS.
    """
    if len(predictions) != len(ground_truth):
        raise UsageError(f"detection mAP: {len(predictions)} images of predictions but "
                         f"{len(ground_truth)} of ground truth; give one entry per image each")
    if max_detections < 1:
        raise UsageError(f"detection mAP: max_detections={max_detections} must be >= 1")
    gt = [_gt_image(i, *_unpack(g, 2, "ground truth", i)) for i, g in enumerate(ground_truth)]
    dt = [_dt_image(i, *_unpack(p, 3, "predictions", i), max_detections)
          for i, p in enumerate(predictions)]
    if not any(labels.size for _, labels in gt):
        raise UsageError("detection mAP: the ground truth has no box in any image; evaluation "
                         "data needs at least one labelled box")
    dataset, detections = _coco_dicts(gt, dt)
    if not detections:
        # Nothing detected: every metric is 0 (the libraries cannot load an empty result).
        return dict.fromkeys(_STATS, 0.0)
    stats = _evaluate(_load_backend(backend), dataset, detections, max_detections)
    return {name: float(stats[i]) * 100.0 for name, i in _STATS.items()}


# -- input checks -----------------------------------------------------------------------------


def _unpack(item: Any, size: int, what: str, i: int) -> tuple[np.ndarray, ...]:
    if not isinstance(item, (tuple, list)) or len(item) != size:
        layout = "(boxes, scores, labels)" if size == 3 else "(boxes, labels)"
        raise UsageError(f"detection mAP: {what}[{i}] must be a tuple {layout}")
    return tuple(np.asarray(a) for a in item)


def _check_boxes(boxes: np.ndarray, n: int, what: str, i: int) -> np.ndarray:
    if boxes.shape != (n, 4) and not (n == 0 and boxes.size == 0):
        raise UsageError(f"detection mAP: {what}[{i}] boxes have shape {list(boxes.shape)}; "
                         f"expected [{n}, 4] (xyxy), one row per label")
    return boxes.reshape(n, 4).astype(np.float64)


def _gt_image(i: int, boxes: np.ndarray, labels: np.ndarray):
    labels = labels.reshape(-1).astype(np.int64)
    return _check_boxes(boxes, labels.size, "ground truth", i), labels


def _dt_image(i: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
              max_detections: int):
    labels = labels.reshape(-1).astype(np.int64)
    scores = scores.reshape(-1).astype(np.float64)
    if scores.size != labels.size:
        raise UsageError(f"detection mAP: predictions[{i}] have {scores.size} scores and "
                         f"{labels.size} labels; expected one of each per box")
    boxes = _check_boxes(boxes, labels.size, "predictions", i)
    # COCO's maxDets: the top detections by score; a stable sort, as COCOeval's own.
    keep = np.argsort(-scores, kind="stable")[:max_detections]
    return boxes[keep], scores[keep], labels[keep]


# -- the COCO structures ----------------------------------------------------------------------


def _xywh(box: np.ndarray) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def _coco_dicts(gt, dt) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    images, annotations, detections, classes = [], [], [], set()
    for i, (boxes, labels) in enumerate(gt):
        images.append({"id": i})
        for box, label in zip(boxes, labels):
            xywh = _xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": i,
                                "category_id": int(label), "bbox": xywh,
                                "area": xywh[2] * xywh[3], "iscrowd": 0})
            classes.add(int(label))
    for i, (boxes, scores, labels) in enumerate(dt):
        for box, score, label in zip(boxes, scores, labels):
            detections.append({"image_id": i, "category_id": int(label), "bbox": _xywh(box),
                               "score": float(score)})
            classes.add(int(label))
    categories = [{"id": c, "name": str(c)} for c in sorted(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


# -- the libraries ----------------------------------------------------------------------------

Evaluator = tuple[Callable[[dict], Any], Callable[[Any, Any], Any]]


def _load_backend(name: str | None) -> Evaluator:
    """(ground truth from a dataset dict, COCOeval for bbox) from the chosen library."""
    if name is not None and name not in BACKENDS:
        raise UsageError(f"detection mAP: unknown backend '{name}'; use one of "
                         f"{', '.join(BACKENDS)}")
    for candidate in [name] if name else list(BACKENDS):
        with contextlib.suppress(ImportError):
            return _FACTORIES[candidate]()
    wanted = name or BACKENDS[0]
    raise BackendUnavailable(f"detection mAP needs the '{wanted}' package; install it with "
                             f"pip install {wanted}")


def _faster_coco_eval() -> Evaluator:
    from faster_coco_eval import COCO, COCOeval_faster

    def evaluator(gt: Any, dt: Any) -> Any:
        return COCOeval_faster(gt, dt, "bbox", print_function=lambda *_: None)

    return COCO, evaluator


def _pycocotools() -> Evaluator:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def ground_truth(dataset: dict) -> Any:
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
        return coco

    return ground_truth, lambda gt, dt: COCOeval(gt, dt, "bbox")


_FACTORIES: dict[str, Callable[[], Evaluator]] = {
    "faster-coco-eval": _faster_coco_eval, "pycocotools": _pycocotools,
}


def _evaluate(backend: Evaluator, dataset: dict, detections: list, max_detections: int):
    make_gt, make_eval = backend
    # Both libraries print progress and the summary table; the caller reports the numbers.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = make_gt(dataset)
        coco_eval = make_eval(coco_gt, coco_gt.loadRes(detections))
        # Predictions are already cut to max_detections per image, so the last slot only
        # needs to be at least that (COCO's summary reads three slots).
        coco_eval.params.maxDets = [1, 10, max(100, max_detections)]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats
