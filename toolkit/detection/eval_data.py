"""Detection evaluation data: model inputs plus ground-truth boxes and labels (numpy only).

The file layout is an `.npz` holding the model's inputs under their names (a single-input model
may use `x`), `boxes` [n, M, 4] (xyxy, input pixels) and `labels` [n, M], where images with
fewer than M objects are padded with label -1. It becomes per-image ground truth, the shape
`toolkit.detection.coco_map.detection_map` takes; `predictions_from_outputs` does the same for a
batch of outputs in the detection contract.

Optional, for instance tasks (rows aligned with `labels`; padding rows are never read):
`masks` [n, M, H, W] (bool or 0/1, at the image input's H x W), `keypoints` [n, M, P, 3]
(x, y in input pixels, then COCO's v: 0 not labelled, 1 labelled but occluded, 2 visible),
`obb` [n, M, 5] (cx, cy, w, h, theta: the w side runs along (cos theta, sin theta), x right,
y down) and `angles` [n, M] (radians). `angles` without `obb` turns each `boxes` rectangle about
its centre; with `obb`, `angles` must agree with its theta (up to a half turn, the same box).
With `obb`, `boxes` may be left out: they are then the axis-aligned boxes enclosing the rotated
ones.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.detection.match import split_outputs
from toolkit.errors import UsageError

LAYOUT = ("boxes [n, M, 4] (xyxy, input pixels) and labels [n, M] (integers, padded with -1)")
PAD_LABEL = -1
# A single-input model may find its input under this name, as the documented layout says.
DEFAULT_INPUT = "x"

GroundTruth = list[tuple[np.ndarray, np.ndarray]]
Predictions = list[tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class DetectionEvalData:
    """Model inputs (by input name, n images each) and per-image (boxes [m, 4], labels [m]).

    The optional per-image lists hold the same m objects in the same order: `masks` bool
    [m, H, W], `keypoints` float32 [m, P, 3] (x, y, v), `obb` float32 [m, 5] (cx, cy, w, h,
    theta); None when the file gives none.
    """

    path: str
    inputs: dict[str, np.ndarray]
    ground_truth: GroundTruth
    masks: list[np.ndarray] | None = None
    keypoints: list[np.ndarray] | None = None
    obb: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ground_truth)

    @property
    def num_boxes(self) -> int:
        return sum(labels.size for _, labels in self.ground_truth)

    # What the data can judge besides boxes: instance masks, keypoints (pose), oriented boxes.
    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    @property
    def has_keypoints(self) -> bool:
        return self.keypoints is not None

    @property
    def has_obb(self) -> bool:
        return self.obb is not None


def load_detection_eval_data(path: str | Path, input_names: Sequence[str]) -> DetectionEvalData:
    """Read and validate a detection `.npz`; every problem is a one-line UsageError."""
    where = str(path)
    arrays = _read_npz(Path(path))
    inputs = _pick_inputs(arrays, list(input_names), where)
    for field in ("boxes", "labels"):
        if field not in arrays and not (field == "boxes" and "obb" in arrays):
            also = " (or obb [n, M, 5] for oriented boxes)" if field == "boxes" else ""
            raise UsageError(f"{where}: no '{field}' array (found: {_names(arrays)}); detection "
                             f"eval data needs {LAYOUT}{also}")
    labels = np.asarray(arrays["labels"])
    if "boxes" in arrays:
        gt = ground_truth_from_arrays(arrays["boxes"], labels, where=where)
        obb = _read_obb(arrays, labels, where)
    else:  # oriented boxes only: the axis-aligned boxes are the ones enclosing them
        if labels.ndim != 2:
            raise UsageError(f"{where}: found labels {_shape(labels)}; detection eval data "
                             f"needs {LAYOUT}")
        obb = _read_obb(arrays, _integral_labels(labels, where), where)
        assert obb is not None  # "obb" is in arrays
        gt = ground_truth_from_arrays(enclosing_boxes(obb), labels, where=where)
    for name, value in inputs.items():
        if value.ndim == 0 or value.shape[0] != len(gt):
            raise UsageError(f"{where}: input '{name}' has shape {_shape(value)} but boxes and "
                             f"labels describe {len(gt)} images; the first dimension of every "
                             "array is the image")
    keep = np.asarray(labels) != PAD_LABEL
    masks = _read_masks(arrays, keep, inputs, where)
    keypoints = _read_keypoints(arrays, keep, where)
    return DetectionEvalData(path=where, inputs=inputs, ground_truth=gt,
                             masks=_per_image(masks, keep), keypoints=_per_image(keypoints, keep),
                             obb=_per_image(obb, keep))


def check_classes(data: DetectionEvalData, classes: int | None) -> None:
    """Labels the detector can output: a label past its class count can never be matched, and
    would only drag both sides' mAP down alike (exit 2, naming the image and the label)."""
    if not classes:
        return
    for index, (_, labels) in enumerate(data.ground_truth):
        bad = labels[labels >= classes]
        if bad.size:
            raise UsageError(f"{data.path}: labels of image {index} include {int(bad[0])}; the "
                             f"detector has {classes} classes (0-{classes - 1})")


def ground_truth_from_arrays(boxes: Any, labels: Any, *, where: str = "eval data") -> GroundTruth:
    """Padded `boxes` [n, M, 4] and `labels` [n, M] (-1 = no object) -> per-image lists."""
    boxes, labels = np.asarray(boxes), np.asarray(labels)
    if boxes.ndim != 3 or boxes.shape[2] != 4 or labels.ndim != 2:
        raise UsageError(f"{where}: found boxes {_shape(boxes)} and labels {_shape(labels)}; "
                         f"detection eval data needs {LAYOUT}")
    if boxes.shape[:2] != labels.shape:
        raise UsageError(f"{where}: boxes {_shape(boxes)} and labels {_shape(labels)} disagree "
                         f"on [n, M]; detection eval data needs {LAYOUT}")
    if labels.shape[0] == 0:
        raise UsageError(f"{where}: boxes and labels hold no image; add at least one")
    labels = _integral_labels(labels, where)
    boxes = boxes.astype(np.float32)
    return [_one_image(boxes[i], labels[i], i, where) for i in range(labels.shape[0])]


def _one_image(boxes: np.ndarray, labels: np.ndarray, i: int, where: str):
    keep = labels != PAD_LABEL
    b, lab = boxes[keep], labels[keep]
    if not np.all(np.isfinite(b)):
        raise UsageError(f"{where}: boxes of image {i} are not all finite; fix the file")
    inverted = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if inverted.any():
        # The usual cause is boxes written as xywh, where x2 < x1 whenever w < x.
        row = int(np.flatnonzero(keep)[np.argmax(inverted)])
        raise UsageError(f"{where}: boxes[{i}, {row}] = {b[np.argmax(inverted)].tolist()} has "
                         "x2 < x1 or y2 < y1; boxes must be xyxy (x1, y1, x2, y2), not xywh")
    return b, lab


def _integral_labels(labels: np.ndarray, where: str) -> np.ndarray:
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise UsageError(f"{where}: labels have dtype {labels.dtype}; they must be integers "
                         "(class ids, -1 for padding)")
    if np.issubdtype(labels.dtype, np.floating) and not (
        np.all(np.isfinite(labels)) and np.all(labels == np.rint(labels))
    ):
        raise UsageError(f"{where}: labels hold non-integral values; they must be class ids, "
                         "-1 for padding")
    labels = labels.astype(np.int64)
    if (labels < PAD_LABEL).any():
        raise UsageError(f"{where}: labels hold {int(labels.min())}; use class ids >= 0 and -1 "
                         "for padding")
    return labels


def enclosing_boxes(obb: np.ndarray) -> np.ndarray:
    """Oriented boxes [..., 5] (cx, cy, w, h, theta) -> the xyxy boxes [..., 4] enclosing them."""
    cx, cy, w, h, theta = np.moveaxis(np.asarray(obb, dtype=np.float64), -1, 0)
    cos, sin = np.abs(np.cos(theta)), np.abs(np.sin(theta))
    half_x, half_y = (w * cos + h * sin) / 2, (w * sin + h * cos) / 2
    return np.stack([cx - half_x, cy - half_y, cx + half_x, cy + half_y], -1).astype(np.float32)


# -- optional instance arrays: masks, keypoints, oriented boxes ------------------------------


def _extra(arrays: Mapping[str, Any], name: str, nm: tuple[int, ...],
           tail: tuple[str | int, ...], where: str) -> np.ndarray | None:
    """The array `name` [n, M, *tail] checked against labels' [n, M] and a numeric dtype
    (a str in `tail` names a free axis, an int fixes its length)."""
    if name not in arrays:
        return None
    value = np.asarray(arrays[name])
    if value.ndim != 2 + len(tail) or value.shape[:2] != nm or any(
            isinstance(t, int) and value.shape[2 + j] != t for j, t in enumerate(tail)):
        dims = ", ".join(str(d) for d in nm)
        layout = "[" + ", ".join(["n", "M", *map(str, tail)]) + "]"
        raise UsageError(f"{where}: {name} has shape {_shape(value)} but labels are [{dims}]; "
                         f"{name} must be {layout} with the labels' n and M")
    if not (value.dtype == np.bool_ or np.issubdtype(value.dtype, np.integer)
            or np.issubdtype(value.dtype, np.floating)):
        raise UsageError(f"{where}: {name} have dtype {value.dtype}; they must be numbers")
    return value


def _check_finite(name: str, value: np.ndarray, keep: np.ndarray, where: str) -> None:
    """Only real objects' rows: padding rows are never read."""
    bad = keep & ~np.isfinite(value).reshape(*keep.shape, -1).all(-1)
    if bad.any():
        i, k = (int(j) for j in np.argwhere(bad)[0])
        raise UsageError(f"{where}: {name}[{i}, {k}] is not all finite (NaN or inf); fix the "
                         "file")


def _read_obb(arrays: Mapping[str, Any], labels: np.ndarray, where: str) -> np.ndarray | None:
    """Oriented boxes [n, M, 5] from `obb`, or from `boxes` turned by `angles`; None if neither."""
    nm, keep = labels.shape, labels != PAD_LABEL
    obb = _extra(arrays, "obb", nm, (5,), where)
    angles = _extra(arrays, "angles", nm, (), where)
    if angles is not None:
        _check_finite("angles", angles, keep, where)
    if obb is None:
        if angles is None:
            return None
        boxes = np.asarray(arrays["boxes"], dtype=np.float64)
        centre, size = (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]
        return np.concatenate([centre, size, angles[..., None]], -1).astype(np.float32)
    obb = obb.astype(np.float32)
    _check_finite("obb", obb, keep, where)
    negative = keep & ((obb[..., 2] < 0) | (obb[..., 3] < 0))
    if negative.any():
        i, k = (int(j) for j in np.argwhere(negative)[0])
        raise UsageError(f"{where}: obb[{i}, {k}] = {obb[i, k].tolist()} has a negative w or h; "
                         "obb rows are (cx, cy, w, h, theta)")
    if angles is not None:
        # A half turn gives the same rectangle, so theta and theta + pi agree.
        gap = np.abs(np.remainder(angles - obb[..., 4] + np.pi / 2, np.pi) - np.pi / 2)
        off = keep & (gap > 1e-4)
        if off.any():
            i, k = (int(j) for j in np.argwhere(off)[0])
            raise UsageError(f"{where}: angles[{i}, {k}] = {float(angles[i, k]):.6g} but "
                             f"obb[{i}, {k}] has theta {float(obb[i, k, 4]):.6g}; give obb "
                             "alone, or angles equal to its theta")
    return obb


def _image_sizes(inputs: Mapping[str, np.ndarray]) -> set[tuple[int, int]]:
    """(H, W) of every 4-D input, read as NCHW and, when its last axis looks like channels,
    as NHWC."""
    sizes = set()
    for value in inputs.values():
        if value.ndim == 4:
            sizes.add((int(value.shape[2]), int(value.shape[3])))
            if value.shape[3] in (1, 3, 4):
                sizes.add((int(value.shape[1]), int(value.shape[2])))
    return sizes


def _read_masks(arrays: Mapping[str, Any], keep: np.ndarray, inputs: Mapping[str, np.ndarray],
                where: str) -> np.ndarray | None:
    masks = _extra(arrays, "masks", keep.shape, ("H", "W"), where)
    if masks is None:
        return None
    size = tuple(int(d) for d in masks.shape[2:])
    sizes = _image_sizes(inputs)
    if size not in sizes:
        found = ", ".join(f"'{n}' {_shape(v)}" for n, v in inputs.items())
        raise UsageError(f"{where}: masks are {size[0]}x{size[1]} (H x W) but no image input "
                         f"has that size (inputs: {found}); masks must be at the input's "
                         "resolution")
    rows = masks[keep]
    if masks.dtype != np.bool_:
        bad = ~((rows == 0) | (rows == 1))
        if bad.any():
            i, k = (int(j) for j in np.argwhere(keep)[np.argmax(bad.reshape(len(rows),
                                                                             -1).any(1))])
            value = rows.reshape(len(rows), -1)[bad.reshape(len(rows), -1)][0]
            raise UsageError(f"{where}: masks[{i}, {k}] holds {float(value):g}; masks must be "
                             "bool or 0/1")
    return masks.astype(bool)


def _read_keypoints(arrays: Mapping[str, Any], keep: np.ndarray,
                    where: str) -> np.ndarray | None:
    keypoints = _extra(arrays, "keypoints", keep.shape, ("P", 3), where)
    if keypoints is None:
        return None
    if keypoints.shape[2] == 0:
        raise UsageError(f"{where}: keypoints have shape {_shape(keypoints)}; they must be "
                         "[n, M, P, 3] (x, y, v) with P >= 1")
    keypoints = keypoints.astype(np.float32)
    _check_finite("keypoints", keypoints, keep, where)
    v = keypoints[..., 2]
    bad = keep[..., None] & ~np.isin(v, (0, 1, 2))
    if bad.any():
        i, k, p = (int(j) for j in np.argwhere(bad)[0])
        raise UsageError(f"{where}: keypoints[{i}, {k}, {p}] has visibility {float(v[i, k, p]):g}"
                         "; v must be 0 (not labelled), 1 (labelled, occluded) or 2 (visible), "
                         "as in COCO")
    return keypoints


def _per_image(value: np.ndarray | None, keep: np.ndarray) -> list[np.ndarray] | None:
    return None if value is None else [value[i][keep[i]] for i in range(len(keep))]


def predictions_from_outputs(outputs: Mapping[str, Any], where: str = "outputs") -> Predictions:
    """A batch in the detection output contract -> per image (boxes, scores, labels).

    Rows past num_detections are dropped; UsageError names a missing output or a wrong shape.
    """
    return split_outputs(outputs, where)


# -- file reading -----------------------------------------------------------------------------


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise UsageError(f"{path}: no such file; detection eval data is an .npz with the model "
                         f"inputs, {LAYOUT}")
    # allow_pickle=False: an eval file must never run code; object arrays are refused below.
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path}: cannot read it as an .npz ({exc}); save it with "
                         "numpy.savez") from exc
    if not hasattr(loaded, "files"):
        raise UsageError(f"{path}: holds a single array, not an .npz archive; save the inputs, "
                         "boxes and labels together with numpy.savez")
    with loaded as npz:
        try:
            return {name: npz[name] for name in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise UsageError(f"{path}: cannot read it as an .npz of plain arrays ({exc}); save "
                             "it with numpy.savez") from exc


def _pick_inputs(arrays: dict[str, np.ndarray], names: list[str], where: str):
    if not names:
        raise UsageError(f"{where}: no model input names were given to read")
    if len(names) == 1 and names[0] not in arrays and DEFAULT_INPUT in arrays:
        return {names[0]: arrays[DEFAULT_INPUT]}
    missing = [n for n in names if n not in arrays]
    if missing:
        hint = f" (or '{DEFAULT_INPUT}' for a single-input model)" if len(names) == 1 else ""
        raise UsageError(f"{where}: no array for model input(s) {', '.join(missing)}{hint}; "
                         f"found: {_names(arrays)}")
    return {n: arrays[n] for n in names}


def _names(arrays: Mapping[str, Any]) -> str:
    return ", ".join(sorted(arrays)) or "nothing"


def _shape(a: np.ndarray) -> str:
    return "[" + ", ".join(str(d) for d in a.shape) + "]"
