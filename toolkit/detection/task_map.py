"""COCO-style mAP for instance masks, keypoints and oriented boxes (numpy only; device side).

The evaluators are coco_map's: faster-coco-eval first, pycocotools as the fallback, imported
inside the call; the numbers are in percent points, from the same slots of COCOeval's
precision/recall arrays that its summary reads (area 'all', the last maxDets).

- `segmentation_map`: COCO `segm`. Prediction masks are probabilities (or booleans) at
  1/stride of the input resolution; each mask pixel covers a stride x stride block of input
  pixels, so a mask is upsampled by repeating pixels (nearest) and cut to the input size, then
  binarised at > 0.5 and run-length encoded by the library's own encoder.
- `keypoint_map`: COCO `keypoints` (OKS). COCO takes an object's `area` from its segment; we
  have boxes, so the ground-truth area is its box's area. Objects without a labelled keypoint
  (no v > 0) are ignored by COCOeval (they neither count as missed nor take a detection).
  Sigmas: COCO's 17 when P == 17, else 1/P each (instances.keypoint_sigmas says which).
- `obb_map`: COCO's AP with the rotated boxes' exact IoU (instances.rotated_iou) in place of
  the axis-aligned one: the libraries' own matching and 101-point interpolated AP, given the
  IoUs through a COCOeval subclass whose computeIoU returns them (both libraries compute every
  image's IoU matrix through self.computeIoU before matching).

Category ids are the labels themselves, as in coco_map.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.detection.coco_map import BACKENDS
from toolkit.detection.instances import (
    MASK_THRESHOLD,
    binarise,
    keypoint_sigmas,
    obb_to_xyxy,
    rotated_iou,
)
from toolkit.errors import BackendUnavailable, UsageError

METRICS = ("map", "map_50", "map_75", "mar")


# -- the libraries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Library:
    """What one COCO library gives: ground truth from a dataset dict, an evaluator for an IoU
    type (with rotated IoUs when asked), and a binary-mask RLE encoder."""

    ground_truth: Callable[[dict], Any]
    evaluator: Callable[[Any, Any, str, bool], Any]
    encode: Callable[[np.ndarray], list[dict]]


def _rotated_ious(gts: list[dict], dts: list[dict], max_dets: int) -> Any:
    """COCOeval.computeIoU's result for oriented boxes: [detections by score, ground truth]."""
    if not gts or not dts:
        return []
    order = np.argsort([-d["score"] for d in dts], kind="mergesort")[:max_dets]
    return rotated_iou(np.array([dts[k]["obb"] for k in order]),
                       np.array([g["obb"] for g in gts]))


def _faster_coco_eval() -> _Library:
    from faster_coco_eval import COCO, COCOeval_faster
    from faster_coco_eval.core import mask

    class Rotated(COCOeval_faster):
        def computeIoU(self, imgId: int, catId: int) -> Any:  # pycocotools names it so
            return _rotated_ious(self.gt_dataset.get(imgId, catId),
                                 self.dt_dataset.get(imgId, catId), self.params.maxDets[-1])

    def evaluator(gt: Any, dt: Any, iou_type: str, rotated: bool) -> Any:
        kind = Rotated if rotated else COCOeval_faster
        return kind(gt, dt, iou_type, print_function=lambda *_: None)

    return _Library(COCO, evaluator, mask.encode)


def _pycocotools() -> _Library:
    from pycocotools import mask
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    class Rotated(COCOeval):
        def computeIoU(self, imgId: int, catId: int) -> Any:  # pycocotools names it so
            return _rotated_ious(self._gts[imgId, catId], self._dts[imgId, catId],
                                 self.params.maxDets[-1])

    def ground_truth(dataset: dict) -> Any:
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
        return coco

    def evaluator(gt: Any, dt: Any, iou_type: str, rotated: bool) -> Any:
        return (Rotated if rotated else COCOeval)(gt, dt, iou_type)

    return _Library(ground_truth, evaluator, mask.encode)


_FACTORIES: dict[str, Callable[[], _Library]] = {
    "faster-coco-eval": _faster_coco_eval, "pycocotools": _pycocotools,
}


def _library(name: str | None, what: str) -> _Library:
    if name is not None and name not in BACKENDS:
        raise UsageError(f"{what}: unknown backend '{name}'; use one of {', '.join(BACKENDS)}")
    for candidate in [name] if name else list(BACKENDS):
        with contextlib.suppress(ImportError):
            return _FACTORIES[candidate]()
    wanted = name or BACKENDS[0]
    raise BackendUnavailable(f"{what} needs the '{wanted}' package; install it with "
                             f"pip install {wanted}")


def _stats(coco_eval: Any) -> dict[str, float]:
    """mAP@[.5:.95], @.5, @.75 and mAR@[.5:.95] (area 'all', last maxDets) in percent."""
    thresholds = np.asarray(coco_eval.params.iouThrs)
    precision = np.asarray(coco_eval.eval["precision"])[:, :, :, 0, -1]  # [T, R, K]
    recall = np.asarray(coco_eval.eval["recall"])[:, :, 0, -1]  # [T, K]

    def mean(values: np.ndarray) -> float:
        values = values[values > -1]  # -1: a class without ground truth
        return float(values.mean()) * 100.0 if values.size else 0.0

    at = {t: int(np.argmin(np.abs(thresholds - t))) for t in (0.5, 0.75)}
    return {"map": mean(precision), "map_50": mean(precision[at[0.5]]),
            "map_75": mean(precision[at[0.75]]), "mar": mean(recall)}


def _run(lib: _Library, dataset: dict, detections: list[dict], iou_type: str, max_dets: int,
         *, rotated: bool = False, sigmas: np.ndarray | None = None) -> dict[str, float]:
    if not detections:
        # Nothing detected: every metric is 0 (pycocotools cannot load an empty result).
        return dict.fromkeys(METRICS, 0.0)
    # Both libraries print progress; the caller reports the numbers.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = lib.ground_truth(dataset)
        coco_eval = lib.evaluator(coco_gt, coco_gt.loadRes(detections), iou_type, rotated)
        coco_eval.params.maxDets = [max_dets]  # detections are already cut to max_dets
        if sigmas is not None:
            coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        coco_eval.evaluate()
        coco_eval.accumulate()
    return _stats(coco_eval)


# -- input checks -----------------------------------------------------------------------------


def _check_lists(what: str, predictions: Sequence, ground_truth: Sequence,
                 max_detections: int) -> None:
    if len(predictions) != len(ground_truth):
        raise UsageError(f"{what}: {len(predictions)} images of predictions but "
                         f"{len(ground_truth)} of ground truth; give one entry per image each")
    if max_detections < 1:
        raise UsageError(f"{what}: max_detections={max_detections} must be >= 1")


def _unpack(item: Any, layout: str, what: str, where: str) -> tuple[np.ndarray, ...]:
    size = layout.count(",") + 1
    if not isinstance(item, (tuple, list)) or len(item) != size:
        raise UsageError(f"{what}: {where} must be a tuple {layout}")
    return tuple(np.asarray(a) for a in item)


def _labels(labels: np.ndarray) -> np.ndarray:
    return labels.reshape(-1).astype(np.int64)


def _top(scores: np.ndarray, n: int, max_dets: int, what: str, where: str) -> np.ndarray:
    """Indices of the top max_dets detections by score (stable, as COCOeval's own sort)."""
    scores = scores.reshape(-1).astype(np.float64)
    if scores.size != n:
        raise UsageError(f"{what}: {where} has {scores.size} scores and {n} labels; expected "
                         "one of each per detection")
    return np.argsort(-scores, kind="stable")[:max_dets]


def _rows(a: np.ndarray, n: int, tail: tuple[int, ...], what: str, where: str,
          name: str) -> np.ndarray:
    """`a` as [n, *tail] floats (an empty array of any shape is taken for n == 0)."""
    if n == 0 and a.size == 0:
        return a.reshape(0, *tail).astype(np.float64)
    if a.shape != (n, *tail):
        shape = ", ".join(str(d) for d in (n, *tail))
        raise UsageError(f"{what}: {where} {name} have shape {list(a.shape)}; expected "
                         f"[{shape}], one row per label")
    return a.astype(np.float64)


def _xywh(box: np.ndarray) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def _dataset(images: list[dict], annotations: list[dict], detections: list[dict]) -> dict:
    classes = {a["category_id"] for a in annotations} | {d["category_id"] for d in detections}
    categories = [{"id": c, "name": str(c)} for c in sorted(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _annotation(annotations: list[dict], image: int, label: int, **fields: Any) -> None:
    annotations.append({"id": len(annotations) + 1, "image_id": image,
                        "category_id": int(label), "iscrowd": 0, **fields})


# -- instance masks ---------------------------------------------------------------------------


def _upsample(masks: np.ndarray, keep: np.ndarray, n: int, stride: int, size: tuple[int, int],
              where: str) -> np.ndarray:
    """Prediction masks [n, h, w] -> the kept ones as booleans [k, H, W]: binarised at > 0.5,
    each pixel repeated stride x stride (nearest), cut to the input size."""
    height, width = size
    want = (n, -(-height // stride), -(-width // stride))
    if masks.shape != want:
        raise UsageError(f"segmentation mAP: {where} masks have shape {list(masks.shape)}; "
                         f"expected {list(want)} (one per label; the {height}x{width} input "
                         f"at stride {stride})")
    up = binarise(masks[keep], MASK_THRESHOLD)
    if stride > 1:
        up = np.repeat(np.repeat(up, stride, axis=1), stride, axis=2)
    return up[:, :height, :width]


def _mask_box(mask: np.ndarray) -> list[float]:
    """COCO's xywh box around a boolean mask [H, W] (zeros for an empty mask)."""
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if not rows.size:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]),
            float(rows[-1] + 1 - rows[0])]


def _encode(lib: _Library, masks: np.ndarray) -> list[dict]:
    """RLEs of boolean masks [n, H, W] (the encoders want Fortran-ordered uint8 [H, W, n])."""
    if not len(masks):
        return []
    return lib.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def segmentation_map(
    predictions: Sequence[tuple[Any, Any, Any]],
    ground_truth: Sequence[tuple[Any, Any]],
    *,
    stride: int = 1,
    max_detections: int = 100,
    backend: str | None = None,
) -> dict[str, float]:
    """COCO `segm` mAP@[.5:.95], mAP@.5, mAP@.75 and mAR@[.5:.95], in percent points.

    `predictions[i]` is image i's (masks [n, h, w] probabilities or booleans, scores [n],
    labels [n]), the masks at h = ceil(H / stride), w = ceil(W / stride); `ground_truth[i]` is
    (masks [m, H, W] booleans at the input resolution, labels [m]); H, W come from it.
    """
    what = "segmentation mAP"
    _check_lists(what, predictions, ground_truth, max_detections)
    if stride < 1:
        raise UsageError(f"{what}: stride={stride} must be a positive integer")
    lib = _library(backend, what)
    images, annotations, detections = [], [], []
    for i, (pred, truth) in enumerate(zip(predictions, ground_truth)):
        gt_masks, gt_labels = _unpack(truth, "(masks, labels)", what, f"ground_truth[{i}]")
        gt_labels = _labels(gt_labels)
        if gt_masks.ndim != 3 or gt_masks.shape[0] != gt_labels.size:
            raise UsageError(f"{what}: ground_truth[{i}] masks have shape "
                             f"{list(gt_masks.shape)}; expected [{gt_labels.size}, H, W], one "
                             "mask per label")
        size = gt_masks.shape[1:]
        images.append({"id": i, "height": size[0], "width": size[1]})
        gt_masks = binarise(gt_masks)
        for mask, rle, label in zip(gt_masks, _encode(lib, gt_masks), gt_labels):
            _annotation(annotations, i, label, segmentation=rle, area=float(mask.sum()),
                        bbox=_mask_box(mask))
        masks, scores, labels = _unpack(pred, "(masks, scores, labels)", what,
                                        f"predictions[{i}]")
        labels = _labels(labels)
        keep = _top(scores, labels.size, max_detections, what, f"predictions[{i}]")
        if labels.size == 0:
            continue
        masks = _upsample(masks, keep, labels.size, stride, size, f"predictions[{i}]")
        for rle, k in zip(_encode(lib, masks), keep):
            detections.append({"image_id": i, "category_id": int(labels[k]),
                               "segmentation": rle, "score": float(scores.reshape(-1)[k])})
    if not annotations:
        raise UsageError(f"{what}: the ground truth has no mask in any image; evaluation data "
                         "needs at least one labelled mask")
    return _run(lib, _dataset(images, annotations, detections), detections, "segm",
                max_detections)


# -- keypoints --------------------------------------------------------------------------------


def keypoint_map(
    predictions: Sequence[tuple[Any, Any, Any, Any]],
    ground_truth: Sequence[tuple[Any, Any, Any]],
    *,
    sigmas: Any = None,
    max_detections: int = 20,
    backend: str | None = None,
) -> dict[str, float]:
    """COCO `keypoints` (OKS) mAP@[.5:.95], mAP@.5, mAP@.75 and mAR@[.5:.95], in percent.

    `predictions[i]` is image i's (boxes [n, 4] xyxy, keypoints [n, P, 3], scores [n],
    labels [n]) (the boxes are checked but COCO's OKS does not use them; the keypoints' third
    column neither); `ground_truth[i]` is (boxes [m, 4], keypoints [m, P, 3] with COCO's v:
    0 not labelled, 1 occluded, 2 visible, labels [m]). The ground-truth area is its box's.
    `sigmas` [P] defaults to instances.keypoint_sigmas(P); `max_detections` to COCO's 20.
    """
    what = "keypoint mAP"
    _check_lists(what, predictions, ground_truth, max_detections)
    lib = _library(backend, what)
    images, annotations, detections, points = [], [], [], None
    for i, (pred, truth) in enumerate(zip(predictions, ground_truth)):
        images.append({"id": i})
        boxes, kpts, labels = _unpack(truth, "(boxes, keypoints, labels)", what,
                                      f"ground_truth[{i}]")
        labels = _labels(labels)
        points = _points(kpts, labels.size, points, what, f"ground_truth[{i}]")
        kpts = _rows(kpts, labels.size, (points or 0, 3), what, f"ground_truth[{i}]", "keypoints")
        boxes = _rows(boxes, labels.size, (4,), what, f"ground_truth[{i}]", "boxes")
        for box, kp, label in zip(boxes, kpts, labels):
            xywh = _xywh(box)
            _annotation(annotations, i, label, bbox=xywh, area=xywh[2] * xywh[3],
                        keypoints=kp.reshape(-1).tolist(),
                        num_keypoints=int((kp[:, 2] > 0).sum()))
        boxes, kpts, scores, labels = _unpack(pred, "(boxes, keypoints, scores, labels)", what,
                                              f"predictions[{i}]")
        labels = _labels(labels)
        keep = _top(scores, labels.size, max_detections, what, f"predictions[{i}]")
        points = _points(kpts, labels.size, points, what, f"predictions[{i}]")
        kpts = _rows(kpts, labels.size, (points or 0, 3), what, f"predictions[{i}]", "keypoints")
        _rows(boxes, labels.size, (4,), what, f"predictions[{i}]", "boxes")
        for k in keep:
            detections.append({"image_id": i, "category_id": int(labels[k]),
                               "keypoints": kpts[k].reshape(-1).tolist(),
                               "score": float(scores.reshape(-1)[k])})
    if not any(a["num_keypoints"] for a in annotations):
        raise UsageError(f"{what}: no ground-truth object has a labelled keypoint (v > 0); "
                         "evaluation data needs at least one")
    sigmas = keypoint_sigmas(points)[0] if sigmas is None else np.asarray(sigmas, float)
    if sigmas.shape != (points,):
        raise UsageError(f"{what}: {sigmas.size} sigmas for {points} keypoints per object")
    return _run(lib, _dataset(images, annotations, detections), detections, "keypoints",
                max_detections, sigmas=sigmas)


def _points(kpts: np.ndarray, n: int, known: int | None, what: str, where: str) -> int | None:
    """The number of keypoints per object, the same across every image."""
    if n == 0:
        return known
    if kpts.ndim != 3 or kpts.shape[-1] != 3:
        raise UsageError(f"{what}: {where} keypoints have shape {list(kpts.shape)}; expected "
                         f"[{n}, P, 3] (x, y, v), one object per label")
    if known is not None and kpts.shape[1] != known:
        raise UsageError(f"{what}: {where} has {kpts.shape[1]} keypoints per object, entries "
                         f"before it {known}; every object needs the same number")
    return int(kpts.shape[1])


# -- oriented boxes ---------------------------------------------------------------------------


def obb_map(
    predictions: Sequence[tuple[Any, Any, Any]],
    ground_truth: Sequence[tuple[Any, Any]],
    *,
    max_detections: int = 100,
    backend: str | None = None,
) -> dict[str, float]:
    """COCO mAP@[.5:.95], mAP@.5, mAP@.75 and mAR@[.5:.95] of oriented boxes by their exact
    rotated IoU, in percent points.

    `predictions[i]` is image i's (oriented boxes [n, 5] cx, cy, w, h, theta, scores [n],
    labels [n]); `ground_truth[i]` its (oriented boxes [m, 5], labels [m]).
    """
    what = "oriented-box mAP"
    _check_lists(what, predictions, ground_truth, max_detections)
    lib = _library(backend, what)
    images, annotations, detections = [], [], []
    for i, (pred, truth) in enumerate(zip(predictions, ground_truth)):
        images.append({"id": i})
        obb, labels = _unpack(truth, "(oriented_boxes, labels)", what, f"ground_truth[{i}]")
        labels = _labels(labels)
        obb = _rows(obb, labels.size, (5,), what, f"ground_truth[{i}]", "oriented boxes")
        for box, xyxy, label in zip(obb, obb_to_xyxy(obb), labels):
            _annotation(annotations, i, label, bbox=_xywh(xyxy), area=float(box[2] * box[3]),
                        obb=box.tolist())
        obb, scores, labels = _unpack(pred, "(oriented_boxes, scores, labels)", what,
                                      f"predictions[{i}]")
        labels = _labels(labels)
        keep = _top(scores, labels.size, max_detections, what, f"predictions[{i}]")
        obb = _rows(obb, labels.size, (5,), what, f"predictions[{i}]", "oriented boxes")
        for k, xyxy in zip(keep, obb_to_xyxy(obb[keep])):
            detections.append({"image_id": i, "category_id": int(labels[k]),
                               "bbox": _xywh(xyxy), "obb": obb[k].tolist(),
                               "score": float(scores.reshape(-1)[k])})
    if not annotations:
        raise UsageError(f"{what}: the ground truth has no box in any image; evaluation data "
                         "needs at least one labelled box")
    return _run(lib, _dataset(images, annotations, detections), detections, "bbox",
                max_detections, rotated=True)
