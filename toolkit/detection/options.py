"""Detection options: `--task`, `--max-detections` and `--nms iou=0.45,score=0.25[,max=100]`,
the NMS a raw-head detector gets appended.

Pure Python (no torch) so the CLI can validate the option before anything heavy is imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from toolkit.errors import UsageError
from toolkit.groups import flag

DEFAULT_IOU = 0.45
DEFAULT_SCORE = 0.25
DEFAULT_MAX_DETECTIONS = 100
#: Ultralytics' own prediction defaults (its `predict`: conf 0.25, iou 0.7, max_det 300, one
#: label per box), taken for a YOLO head when --nms doesn't say
YOLO_DEFAULTS = {"iou": 0.7, "score": 0.25, "max": 300, "multi_label": False}
#: how the raw head's outputs are laid out: `boxes` [B,N,4] xyxy + `scores` [B,N,C], or
#: Ultralytics' one tensor [B,4+C,N] (or [B,N,4+C]) of cx, cy, w, h and class scores, or
#: `rows` [B,K,6] (x1, y1, x2, y2, score, class) a model post-processed itself (no NMS added)
LAYOUTS = ("boxes", "yolo", "rows")
#: how `rows` hold their box: corners or centre + size, in input pixels or normalised to 0-1
#: by the input's width and height (RT-DETR: cxcywh-norm)
BOX_FORMATS = ("xyxy", "cxcywh", "xyxy-norm", "cxcywh-norm")
_KEYS = ("iou", "score", "max", "layout", "box", "multi_label", "agnostic", "classes")
_EXAMPLE = ("e.g. --nms iou=0.45,score=0.25,max=100[,layout=yolo,multi_label=0,agnostic=0] "
            "or --nms layout=rows,box=cxcywh-norm")


@dataclass(frozen=True)
class NmsOptions:
    """Thresholds of class-aware NMS; `max_detections` is K of the output contract."""

    iou_threshold: float = DEFAULT_IOU
    score_threshold: float = DEFAULT_SCORE
    max_detections: int = DEFAULT_MAX_DETECTIONS
    layout: str = "boxes"
    #: keep every (box, class) pair above the score (torchvision's NMS, a GPU runtime's) or only
    #: each box's best class (Ultralytics' predictions); None: the model family's own
    multi_label: bool | None = None
    agnostic: bool = False  # one NMS across classes instead of one per class
    #: layout=rows only: the rows' box format (BOX_FORMATS); None: the model's own (RT-DETR's
    #: recognised), else xyxy pixels
    box_format: str | None = None
    #: layout=yolo with --task pose: how many of the prediction's channels are class scores
    #: (the rest are keypoints); an Ultralytics head says it itself
    classes: int | None = None

    def __post_init__(self) -> None:
        if self.classes is not None and self.classes < 1:
            raise UsageError(f"--nms: classes must be >= 1, got {self.classes}")
        if self.layout not in LAYOUTS:
            raise UsageError(f"--nms: layout must be {' or '.join(LAYOUTS)}, got "
                             f"{self.layout!r}; {_EXAMPLE}")
        if self.box_format is not None and self.box_format not in BOX_FORMATS:
            raise UsageError(f"--nms: box must be one of {', '.join(BOX_FORMATS)}, got "
                             f"{self.box_format!r}; {_EXAMPLE}")
        if self.box_format is not None and self.layout != "rows":
            raise UsageError(f"--nms: box={self.box_format} describes layout=rows; with "
                             f"layout={self.layout} the boxes are read as that layout says")
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise UsageError(f"--nms: iou must be in [0, 1], got {self.iou_threshold}; {_EXAMPLE}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise UsageError(
                f"--nms: score must be in [0, 1], got {self.score_threshold}; {_EXAMPLE}"
            )
        if self.max_detections < 1:
            raise UsageError(f"--nms: max must be >= 1, got {self.max_detections}; {_EXAMPLE}")

    def to_option(self) -> str:
        """The canonical text form; `parse_nms_option(o.to_option()) == o`."""
        text = (f"iou={self.iou_threshold!r},score={self.score_threshold!r},"
                f"max={self.max_detections}")
        if self.layout != "boxes":
            text += f",layout={self.layout}"
        if self.box_format is not None:
            text += f",box={self.box_format}"
        if self.multi_label is not None:
            text += f",multi_label={int(self.multi_label)}"
        return text + (",agnostic=1" if self.agnostic else "")

    @property
    def keeps_one_label_per_box(self) -> bool:
        """The convention in force: Ultralytics' single label for a YOLO head, else
        torchvision's multi-label, unless the user said."""
        if self.multi_label is not None:
            return not self.multi_label
        return self.layout == "yolo"


def _float(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--nms: {key}={text!r} is not a number; {_EXAMPLE}") from None
    if not math.isfinite(value):
        raise UsageError(f"--nms: {key}={text!r} is not a finite number; {_EXAMPLE}")
    return value


def _int(key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--nms: {key}={text!r} is not an integer; {_EXAMPLE}") from None


def parse_nms_option(
    text: str, default_max_detections: int = DEFAULT_MAX_DETECTIONS
) -> NmsOptions:
    """Parse `iou=F,score=F[,max=N]`; keys in any order, each at most once, missing ones default.

    `default_max_detections` is used when `max` is absent (the CLI's `--max-detections`).
    Raises UsageError with one line naming the bad part.
    """
    values: dict[str, str] = {}
    stripped = text.strip()
    if not stripped:
        raise UsageError(f"--nms: empty value; {_EXAMPLE}")
    for part in stripped.split(","):
        item = part.strip()
        if not item:
            raise UsageError(f"--nms: empty item in {text!r}; {_EXAMPLE}")
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise UsageError(f"--nms: {item!r} is not KEY=VALUE; {_EXAMPLE}")
        if key not in _KEYS:
            raise UsageError(
                f"--nms: unknown key {key!r} (known: {', '.join(_KEYS)}); {_EXAMPLE}"
            )
        if key in values:
            raise UsageError(f"--nms: {key} given twice in {text!r}")
        values[key] = value
    yolo = values.get("layout", "").lower() == "yolo"
    defaults = (YOLO_DEFAULTS if yolo else
                {"iou": DEFAULT_IOU, "score": DEFAULT_SCORE, "max": default_max_detections})
    return NmsOptions(
        iou_threshold=_float("iou", values["iou"]) if "iou" in values else defaults["iou"],
        score_threshold=(_float("score", values["score"]) if "score" in values
                         else defaults["score"]),
        max_detections=_int("max", values["max"]) if "max" in values else defaults["max"],
        layout=values.get("layout", "boxes").lower(),
        multi_label=_switch("multi_label", values["multi_label"]) if "multi_label" in values
        else None,
        agnostic=_switch("agnostic", values["agnostic"]) if "agnostic" in values else False,
        box_format=values["box"].lower() if "box" in values else None,
        classes=_int("classes", values["classes"]) if "classes" in values else None,
    )


def _switch(key: str, text: str) -> bool:
    if text not in ("0", "1"):
        raise UsageError(f"--nms: {key}={text!r}: use 0 or 1; {_EXAMPLE}")
    return text == "1"


#: detection, and the instance tasks that add an output to its contract (masks, keypoints,
#: oriented boxes)
INSTANCE_TASKS = ("segmentation", "pose", "obb")
TASKS = ("auto", "detection", *INSTANCE_TASKS, "none")


@dataclass(frozen=True)
class DetectionOptions:
    """The detection option group: what the user said with --task, --max-detections and
    --nms (given as its text, `iou=0.45,score=0.25`, or as NmsOptions)."""

    title: ClassVar[str] = "Detection"

    task: str = flag("auto", "--task", "auto (a detector following torchvision's convention is "
                     "found by itself), detection, segmentation, pose, obb, or none.")
    max_detections: int = flag(DEFAULT_MAX_DETECTIONS, "--max-detections",
                               "Detection: K, the rows of boxes/scores/labels per image.")
    nms: NmsOptions | None = flag(
        None, "--nms", "Detection, raw-head models (boxes [B,N,4], scores [B,N,C]): append "
        "class-aware NMS, e.g. iou=0.45,score=0.25[,max=100].", cli_type=str | None)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UsageError(f"--task {self.task}: use one of {', '.join(TASKS)}")
        if self.max_detections < 1:
            raise UsageError(f"--max-detections must be >= 1, got {self.max_detections}")
        if self.nms is not None and self.task == "none":
            raise UsageError("--nms appends detection post-processing; it can't go with "
                             "--task none")
        if isinstance(self.nms, str):
            object.__setattr__(self, "nms", parse_nms_option(self.nms, self.max_detections))

    @property
    def k(self) -> int:
        return self.nms.max_detections if self.nms is not None else self.max_detections


def options_from_record(info: Mapping[str, Any] | None) -> DetectionOptions:
    """The options that made a bundle's detector, from its manifest's `detection` record, so
    the reference rebuilt later (verify --against, bench's reference row) is wrapped the same."""
    if not info:
        return DetectionOptions(task="none")
    nms = info.get("nms")
    k = int(info.get("max_detections", 100))
    if info.get("convention") == "rows":
        return DetectionOptions(task="detection", max_detections=k, nms=NmsOptions(
            score_threshold=float(info.get("score_threshold") or 0.0), max_detections=k,
            layout="rows", box_format=info.get("box")))
    task = str(info.get("task") or "detection")
    if task not in INSTANCE_TASKS:
        task = "detection"
    return DetectionOptions(
        task=task, max_detections=k,
        nms=NmsOptions(float(nms["iou"]), float(nms["score"]), k,
                       layout=str(nms.get("layout", "boxes")),
                       multi_label=nms.get("multi_label"),
                       agnostic=bool(nms.get("agnostic", False)),
                       classes=nms.get("classes")) if nms else None)
