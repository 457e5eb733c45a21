"""Detection evaluation data: model inputs plus ground-truth boxes and labels (numpy only).

The file layout is an `.npz` holding the model's inputs under their names (a single-input model
may use `x`), `boxes` [n, M, 4] (xyxy, input pixels) and `labels` [n, M], where images with
fewer than M objects are padded with label -1. It becomes per-image ground truth, the shape
`toolkit.detection.coco_map.detection_map` takes; `predictions_from_outputs` does the same for a
batch of outputs in the detection contract.
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
    """Model inputs (by input name, n images each) and per-image (boxes [m, 4], labels [m])."""

    path: str
    inputs: dict[str, np.ndarray]
    ground_truth: GroundTruth

    def __len__(self) -> int:
        return len(self.ground_truth)

    @property
    def num_boxes(self) -> int:
        return sum(labels.size for _, labels in self.ground_truth)


def load_detection_eval_data(path: str | Path, input_names: Sequence[str]) -> DetectionEvalData:
    """Read and validate a detection `.npz`; every problem is a one-line UsageError."""
    where = str(path)
    arrays = _read_npz(Path(path))
    inputs = _pick_inputs(arrays, list(input_names), where)
    for field in ("boxes", "labels"):
        if field not in arrays:
            raise UsageError(f"{where}: no '{field}' array (found: {_names(arrays)}); detection "
                             f"eval data needs {LAYOUT}")
    gt = ground_truth_from_arrays(arrays["boxes"], arrays["labels"], where=where)
    for name, value in inputs.items():
        if value.ndim == 0 or value.shape[0] != len(gt):
            raise UsageError(f"{where}: input '{name}' has shape {_shape(value)} but boxes and "
                             f"labels describe {len(gt)} images; the first dimension of every "
                             "array is the image")
    return DetectionEvalData(path=where, inputs=inputs, ground_truth=gt)


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
