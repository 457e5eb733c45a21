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
_KEYS = ("iou", "score", "max")
_EXAMPLE = "e.g. --nms iou=0.45,score=0.25,max=100"


@dataclass(frozen=True)
class NmsOptions:
    """Thresholds of class-aware NMS; `max_detections` is K of the output contract."""

    iou_threshold: float = DEFAULT_IOU
    score_threshold: float = DEFAULT_SCORE
    max_detections: int = DEFAULT_MAX_DETECTIONS

    def __post_init__(self) -> None:
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
        return (f"iou={self.iou_threshold!r},score={self.score_threshold!r},"
                f"max={self.max_detections}")


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
    return NmsOptions(
        iou_threshold=_float("iou", values["iou"]) if "iou" in values else DEFAULT_IOU,
        score_threshold=_float("score", values["score"]) if "score" in values else DEFAULT_SCORE,
        max_detections=_int("max", values["max"]) if "max" in values else default_max_detections,
    )


TASKS = ("auto", "detection", "none")


@dataclass(frozen=True)
class DetectionOptions:
    """The detection option group: what the user said with --task, --max-detections and
    --nms (given as its text, `iou=0.45,score=0.25`, or as NmsOptions)."""

    title: ClassVar[str] = "Detection"

    task: str = flag("auto", "--task", "auto (a detector following torchvision's convention is "
                     "found by itself), detection, or none.")
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
    the eager reference rebuilt later (verify --against, bench eager) is wrapped the same."""
    if not info:
        return DetectionOptions(task="none")
    nms = info.get("nms")
    k = int(info.get("max_detections", 100))
    return DetectionOptions(
        task="detection", max_detections=k,
        nms=NmsOptions(float(nms["iou"]), float(nms["score"]), k) if nms else None)
