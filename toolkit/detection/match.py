"""IoU-matched parity between two sets of detector outputs (numpy only; runs on the device side).

Detections are compared as objects, never element by element: two runtimes may order near-tied
scores differently, and a detection whose score sits on a cut (the score threshold, or the K-th
place of a full top-K) may fall off one side. Per image, reference detections are taken in
descending score order and greedily matched to the unmatched actual detection of the same label
with the highest IoU (ties broken toward the candidate that passes the tolerance, then the closest
score). Hungarian assignment is not needed: after NMS, boxes of one label overlap little, so at
most one candidate normally clears the matching IoU.

What is judged:
- a matched pair must overlap (IoU >= min_iou, or every corner within box_atol pixels and within
  a tenth of the box's size (its longer side, so a box clipped to zero width at the border
  still counts) for a box of at least MIN_BOX_SIZE pixels: a shift small for its box. A
  sub-pixel box is never excused by its shift, since every pair of such boxes lies within a
  fraction of a pixel whatever they are, as normalised boxes read as pixels do) and keep
  its score (|diff| <= max_score_diff). A pair that fails only on overlap while its scores are tied
  (|diff| <= score_margin) is counted as a *swap*: NMS kept a near-tied neighbour instead. Swaps
  are tolerated, but count as unmatched in `matched_fraction`, so a systematic shift still fails;
- an unmatched detection is *borderline*, and tolerated, when its score is within score_margin of
  a cut: the score threshold, or the lowest score of the other set when that set is full (K rows).
  Two different boxes that are both borderline are never judged as a pair (random-weight Faster
  R-CNN scores all 100 detections within 1e-8, so a runtime and PyTorch keep 1-7 different,
  overlapping boxes at the cut). Any other unmatched detection is a lost object (missing) or an
  extra one; a lost object with a same-place detection of another label is a changed label;
- nothing judged is `vacuous`: no reference detection, or only borderline ones (a random-weight
  SSDlite scores every anchor exactly 0.2, and the two runtimes keep disjoint sets of 100);
- rows past num_detections must be zero, as the output contract says.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.errors import UsageError

OUTPUT_NAMES = ("num_detections", "boxes", "scores", "labels")

# How many offending images to_dict() lists and how many problems one image keeps.
_MAX_IMAGES_REPORTED = 10
_MAX_PROBLEMS_PER_IMAGE = 5

# -- tolerances -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectionTolerance:
    """How far an artifact's detections may be from the reference's and still count as equal."""

    min_iou: float  # a matched box overlaps its reference at least this much ...
    max_score_diff: float  # ... and its score differs by at most this
    score_margin: float  # within this of a cut, a detection may fall off (or a tie may swap)
    min_matched_fraction: float  # of the non-borderline reference detections, matched in place
    box_atol: float = 0.0  # ... or every box coordinate within this many pixels
    # an unmatched detection overlapping a same-label one of the other set within this of the
    # NMS IoU threshold may have been suppressed on one side only: borderline, not lost
    iou_margin: float = 0.0

    def __post_init__(self) -> None:
        for name in ("min_iou", "min_matched_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"detection tolerance {name}={value} must lie in [0, 1]")
        for name in ("max_score_diff", "score_margin", "box_atol", "iou_margin"):
            value = getattr(self, name)
            if not value >= 0.0:  # written so that NaN is refused too
                raise UsageError(f"detection tolerance {name}={value} must be >= 0")

    def replace(self, **changes: float) -> DetectionTolerance:
        known = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise UsageError(f"unknown detection tolerance key '{unknown[0]}'; use one of "
                             f"{', '.join(known)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def _preset(min_iou: float, max_score_diff: float, fraction: float, box_atol: float,
            iou_margin: float):
    # A detection moves by at most max_score_diff and so does the cut it is compared with, so
    # two scores within 2x of each other can legitimately cross: that is the margin.
    return DetectionTolerance(min_iou=min_iou, max_score_diff=max_score_diff,
                              score_margin=2 * max_score_diff, min_matched_fraction=fraction,
                              box_atol=box_atol, iou_margin=iou_margin)


# Derived from the element presets in toolkit's parity tolerances (the scale-aware `satol`: fp32
# 1e-4, fp16 5e-3, int8 1.5e-1 of an output's range) and from the number formats, for inputs of a
# few hundred pixels; to be confirmed by the measured tolerance study on detectors:
# - scores live in [0, 1], so max_score_diff is about satol (fp32 1e-3 is 10x satol, still 25x
#   below what a 0.1-logit bias shift does to a sigmoid score);
# - box coordinates are pixels: fp32 error is ~1e-4 px, so IoU >= 0.99 and 0.05 px are loose yet
#   catch a 1 % box-regression change; fp16 has a 0.25 px spacing at 256-512 px (box_atol 1 px,
#   IoU 0.9 for boxes of 20 px and up); bf16 has 2 px there; int8 moves edges by a few % of a box;
# - tf32 rounds conv/matmul inputs to fp16's significand, so it takes fp16's preset (as parity).
PRESETS: dict[str, DetectionTolerance] = {
# iou_margin: the IoU of two boxes moves by about (1 - IoU) x their worst edge error / side,
# so the pixel error of each precision sets how close to the NMS threshold a decision may flip.
    "fp32": _preset(min_iou=0.99, max_score_diff=1e-3, fraction=0.95, box_atol=0.05,
                    iou_margin=0.01),
    "tf32": _preset(min_iou=0.9, max_score_diff=1e-2, fraction=0.9, box_atol=1.0,
                    iou_margin=0.05),
    "fp16": _preset(min_iou=0.9, max_score_diff=1e-2, fraction=0.9, box_atol=1.0,
                    iou_margin=0.05),
    "bf16": _preset(min_iou=0.75, max_score_diff=5e-2, fraction=0.8, box_atol=4.0,
                    iou_margin=0.1),
    "int8": _preset(min_iou=0.7, max_score_diff=1.5e-1, fraction=0.7, box_atol=4.0,
                    iou_margin=0.15),
}

_PRECISION_ALIASES = {
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "full": "fp32",
    "tf32": "tf32",
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "bf16": "bf16", "bfloat16": "bf16",
    "int8": "int8", "qint8": "int8", "quint8": "int8",
}


def detection_tolerance(precision: str = "fp32", **overrides: float) -> DetectionTolerance:
    """The preset for `precision` ('fp32', 'tf32', 'fp16', 'bf16', 'int8'), with overrides."""
    key = _PRECISION_ALIASES.get(precision.strip().lower())
    if key is None:
        raise UsageError(f"detection parity: unknown precision '{precision}'; use one of "
                         f"{', '.join(PRESETS)}")
    return PRESETS[key].replace(**overrides) if overrides else PRESETS[key]


# -- the output contract ----------------------------------------------------------------------


def _shape(a: np.ndarray) -> str:
    return "[" + ", ".join(str(d) for d in a.shape) + "]"


def check_outputs(outputs: Mapping[str, Any], where: str = "outputs") -> dict[str, np.ndarray]:
    """Validate one batch against the detection output contract; return it as numpy arrays.

    Raises UsageError naming what was found: a missing name, a wrong rank or shape, or a
    num_detections outside [0, K].
    """
    if not isinstance(outputs, Mapping):
        raise UsageError(f"{where}: expected a mapping of {', '.join(OUTPUT_NAMES)}; "
                         f"found {type(outputs).__name__}")
    missing = [name for name in OUTPUT_NAMES if name not in outputs]
    if missing:
        found = ", ".join(sorted(map(str, outputs))) or "nothing"
        raise UsageError(f"{where}: detection outputs need {', '.join(OUTPUT_NAMES)}; missing "
                         f"{', '.join(missing)} (found: {found}); export with --task detection")
    arrays = {name: np.asarray(outputs[name]) for name in OUTPUT_NAMES}
    _check_shapes(arrays, where)
    num = arrays["num_detections"]
    k = arrays["boxes"].shape[1]
    if num.size and (num.min() < 0 or num.max() > k):
        raise UsageError(f"{where}: num_detections must lie in [0, K={k}]; found "
                         f"{num.min()}..{num.max()}")
    return {
        "num_detections": _as_int(num, "num_detections", where),
        "boxes": arrays["boxes"].astype(np.float64),  # float64: IoU of near-equal boxes
        "scores": arrays["scores"].astype(np.float64),
        "labels": _as_int(arrays["labels"], "labels", where),
    }


def _check_shapes(arrays: dict[str, np.ndarray], where: str) -> None:
    num, boxes = arrays["num_detections"], arrays["boxes"]
    scores, labels = arrays["scores"], arrays["labels"]
    found = ", ".join(f"{name} {_shape(a)}" for name, a in arrays.items())
    layout = "num_detections [B], boxes [B, K, 4], scores [B, K], labels [B, K]"
    ok = (num.ndim == 1 and boxes.ndim == 3 and boxes.shape[2] == 4
          and scores.shape == boxes.shape[:2] and labels.shape == boxes.shape[:2]
          and num.shape[0] == boxes.shape[0])
    if not ok:
        raise UsageError(f"{where}: detection outputs must be {layout}; found {found}")


def _as_int(a: np.ndarray, name: str, where: str) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        return a.astype(np.int64)
    # Some runtimes hand labels back as floats; accept them only when they are whole numbers.
    if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.rint(a)):
        return a.astype(np.int64)
    raise UsageError(f"{where}: {name} must hold integers; found dtype {a.dtype} with "
                     "non-integral values")


#: an input this many pixels wide (or tall) whose boxes all lie in [0, 1] has normalised boxes
NORMALISED_INPUT_PX = 100


def check_pixel_boxes(outputs: Mapping[str, Any], image_size: tuple[int, int],
                      where: str = "outputs") -> None:
    """Refuse detections whose boxes are not input pixels: every coordinate in [0, 1] while
    the input (`image_size` H, W) is hundreds of pixels wide is a box convention read wrong
    (normalised cx, cy, w, h, RT-DETR's), and IoU in such units judges nothing."""
    arrays = check_outputs(outputs, where)
    boxes = [b for b, _, _, _ in _per_image(arrays) if b.size]
    if not boxes or max(image_size) < NORMALISED_INPUT_PX:
        return
    every = np.concatenate(boxes)
    # (all-zero boxes are degenerate, not normalised: they say nothing of the convention)
    if every.min() >= 0.0 and 0.0 < every.max() <= 1.0:
        h, w = image_size
        raise UsageError(
            f"{where}: every box coordinate lies in [0, 1] while the input is {h}x{w} px, so "
            "the boxes are normalised, not the contract's xyxy input pixels (most likely "
            "normalised cx, cy, w, h, RT-DETR's convention); for rows say so with --nms "
            "layout=rows,box=cxcywh-norm (or box=xyxy-norm)")


def split_outputs(
    outputs: Mapping[str, Any], where: str = "outputs"
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image (boxes [n, 4] float32, scores [n] float32, labels [n] int64), padding stripped."""
    arrays = check_outputs(outputs, where)
    return [
        (b.astype(np.float32), s.astype(np.float32), lab)
        for b, s, lab, _ in _per_image(arrays)
    ]


def _per_image(arrays: dict[str, np.ndarray]):
    """Yield (boxes, scores, labels, padding_is_zero) per image, cut at num_detections."""
    for i, n in enumerate(arrays["num_detections"]):
        n = int(n)
        b, s, lab = arrays["boxes"][i], arrays["scores"][i], arrays["labels"][i]
        padding_zero = not (b[n:].any() or s[n:].any() or lab[n:].any())
        yield b[:n], s[:n], lab[:n], padding_zero


# -- geometry ---------------------------------------------------------------------------------


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xyxy box in `a` [n, 4] with every box in `b` [m, 4] -> [n, m].

    Inverted boxes have zero area; a pair whose union is empty has IoU 0 (judge such boxes by
    their coordinates instead, as matching does with box_atol).
    """
    a = np.asarray(a, dtype=np.float64)[:, None, :]
    b = np.asarray(b, dtype=np.float64)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    out = np.zeros(inter.shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out


#: the shift rule excuses only boxes at least this many pixels in size ...
MIN_BOX_SIZE = 2.0
#: ... and a shift of at most this fraction of the box's size
MAX_RELATIVE_SHIFT = 0.1


def shift_excused(shift: np.ndarray | float, size: np.ndarray | float,
                  tol: DetectionTolerance) -> np.ndarray:
    """Whether a pair's largest corner shift (pixels) makes it the same box although its IoU
    is under min_iou: only for a box of a few pixels (`size`, the reference's longer side),
    and only a shift small for that box."""
    size = np.asarray(size, dtype=np.float64)
    return ((size >= MIN_BOX_SIZE) & (np.asarray(shift) <= tol.box_atol)
            & (np.asarray(shift) <= MAX_RELATIVE_SHIFT * size))


def box_size(boxes: np.ndarray) -> np.ndarray:
    """Each xyxy box's longer side (0 for an inverted box) -> [n]."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.shape[0] == 0:
        return np.zeros(0)
    return np.clip(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), 0, None)


def _max_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Largest absolute coordinate difference of every pair -> [n, m] (pixels)."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    return np.abs(a[:, None, :] - b[None, :, :]).max(axis=2)


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageParity:
    """What matching found in one image."""

    index: int
    reference: int  # detections in the reference (within num_detections)
    actual: int
    matched: int  # pairs that pass: same place, same label, same score
    swapped: int = 0  # tolerated: moved pairs whose scores are tied (NMS kept a neighbour)
    moved: int = 0  # failures from here on
    score_changed: int = 0
    label_changed: int = 0
    missing: int = 0
    extra: int = 0
    tolerated_missing: int = 0  # borderline: within score_margin of a cut
    tolerated_extra: int = 0
    confident: int = 0  # reference detections clear of every cut of the reference itself
    at_top_k: int = 0  # reference detections clear of the score threshold, tied at the top-K
    worst_iou: float | None = None  # over all IoU-matched pairs
    max_score_diff: float | None = None
    max_box_shift: float | None = None  # pixels
    padding_ok: bool = True
    problems: tuple[str, ...] = ()
    #: (reference row, actual row) of every pair matched in place: what the instance outputs
    #: (masks, keypoints, oriented boxes) are judged on
    pairs: tuple[tuple[int, int], ...] = ()

    @property
    def failed(self) -> bool:
        bad = self.moved + self.score_changed + self.label_changed + self.missing + self.extra
        return bad > 0 or not self.padding_ok

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["problems"] = list(self.problems)
        del data["pairs"]
        for name in ("worst_iou", "max_score_diff", "max_box_shift"):
            data[name] = _json(data[name])
        return data


_COUNTS = ("reference", "actual", "matched", "swapped", "moved", "score_changed",
           "label_changed", "missing", "extra", "tolerated_missing", "tolerated_extra",
           "confident", "at_top_k")


@dataclass(frozen=True)
class DetectionParity:
    """IoU-matched parity of a batch of detections; `passed` is the verdict.

    Check `vacuous` first: a reference without a single detection, or with only borderline
    ones, proves nothing, and `passed` is then False so that a forgotten check cannot turn into
    a pass. The counts are totals over images (see ImageParity); `images` keeps the per-image
    breakdown.
    """

    tolerance: DetectionTolerance
    iou_threshold: float
    score_threshold: float
    images: tuple[ImageParity, ...]
    reference: int
    actual: int
    matched: int
    swapped: int
    moved: int
    score_changed: int
    label_changed: int
    missing: int
    extra: int
    tolerated_missing: int
    tolerated_extra: int
    confident: int = 0
    at_top_k: int = 0

    @classmethod
    def from_images(cls, tolerance: DetectionTolerance, iou_threshold: float,
                    score_threshold: float, images: tuple[ImageParity, ...]) -> DetectionParity:
        totals = {name: sum(getattr(im, name) for im in images) for name in _COUNTS}
        return cls(tolerance, iou_threshold, score_threshold, images, **totals)

    @property
    def vacuous(self) -> bool:
        """Nothing can be judged: no reference detection, or every one is borderline (tied at
        a cut, like a random-weight detector whose scores are all equal). A property of the
        reference alone, so every artifact compared with it gets the same answer."""
        return self.confident <= 0

    def vacuity_reason(self) -> str:
        """Which cut left nothing to judge, and the option that moves it."""
        margin = self.tolerance.score_margin
        if self.reference == 0:
            return (f"has no detection above the score threshold {self.score_threshold} in any "
                    "image: lower it (--nms score=..., or the model's own threshold), or use "
                    "inputs (and weights) on which the model detects something")
        if self.at_top_k * 2 >= self.reference:
            return (f"has only detections tied at the top-K cut ({self.at_top_k} of "
                    f"{self.reference} within {margin} of the K-th score: the model's scores "
                    "saturate); keep more with --max-detections N (or --nms max=N), or use "
                    "inputs on which fewer boxes tie")
        return (f"has only detections at the score threshold ({self.reference} within "
                f"{margin} of {self.score_threshold}); lower it (--nms score=..., or the model's "
                "own threshold), or use inputs on which the model is confident")

    @property
    def matched_fraction(self) -> float:
        """Matched pairs / reference detections that are not borderline (1.0 when none are)."""
        confident = self.reference - self.tolerated_missing
        return 1.0 if confident <= 0 else self.matched / confident

    @property
    def worst_iou(self) -> float | None:
        return _extreme([im.worst_iou for im in self.images], min)

    @property
    def max_score_diff(self) -> float | None:
        return _extreme([im.max_score_diff for im in self.images], max)

    @property
    def max_box_shift(self) -> float | None:
        return _extreme([im.max_box_shift for im in self.images], max)

    @property
    def padding_violations(self) -> int:
        return sum(not im.padding_ok for im in self.images)

    @property
    def offending_images(self) -> list[ImageParity]:
        # Swaps are tolerated one by one; when there are too many, their images offend too.
        swaps_count = self._fraction_failed and not self.vacuous
        return [im for im in self.images if im.failed or (swaps_count and im.swapped)]

    def failures(self) -> list[str]:
        """Each reason the check fails, one short phrase each; empty when it passes."""
        if self.vacuous:
            return [f"vacuous: the reference {self.vacuity_reason()}, so nothing was compared"]
        tol, out = self.tolerance, []
        if self.moved:
            out.append(f"{self.moved} box(es) moved (worst IoU {_fmt(self.worst_iou)} < "
                       f"{tol.min_iou}, shift {_fmt(self.max_box_shift)} px over "
                       f"{tol.box_atol} px or {MAX_RELATIVE_SHIFT:g} of the box)")
        if self.score_changed:
            out.append(f"{self.score_changed} score(s) changed (max diff "
                       f"{_fmt(self.max_score_diff)} > {tol.max_score_diff})")
        if self.label_changed:
            out.append(f"{self.label_changed} label(s) changed")
        if self.missing:
            out.append(f"{self.missing} object(s) lost")
        if self.extra:
            out.append(f"{self.extra} extra object(s)")
        if self.padding_violations:
            out.append(f"rows past num_detections not zero in {self.padding_violations} image(s)")
        if self._fraction_failed:
            out.append(f"matched fraction {self.matched_fraction:.3f} < "
                       f"{tol.min_matched_fraction}"
                       + (f" ({self.swapped} box(es) moved with unchanged scores — more than "
                          f"NMS swapping tied neighbours explains; worst IoU "
                          f"{_fmt(self.worst_iou)})" if self.swapped else ""))
        return out

    @property
    def _fraction_failed(self) -> bool:
        return self.matched_fraction < self.tolerance.min_matched_fraction

    @property
    def passed(self) -> bool:
        return not self.failures()

    def summary(self) -> str:
        """One line: the verdict, the key numbers, and the first offending image if any."""
        head = (f"{self.matched}/{self.reference - self.tolerated_missing} matched "
                f"(fraction {self.matched_fraction:.3f}; {self.tolerated_missing} more "
                f"borderline), worst IoU {_fmt(self.worst_iou)}, "
                f"max score diff {_fmt(self.max_score_diff)}, missing {self.missing} "
                f"(+{self.tolerated_missing} borderline), extra {self.extra} "
                f"(+{self.tolerated_extra} borderline), swaps {self.swapped}")
        failures = self.failures()
        if not failures:
            return f"detections PASS: {head}"
        first = self.offending_images[:1]
        where = (f"; first offending image {first[0].index}: {first[0].problems[0]}"
                 if first and first[0].problems else "")
        return f"detections FAIL: {'; '.join(failures)}; {head}{where}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "passed": self.passed, "vacuous": self.vacuous, "failures": self.failures(),
            "matched_fraction": self.matched_fraction, "worst_iou": _json(self.worst_iou),
            "max_score_diff": _json(self.max_score_diff),
            "max_box_shift": _json(self.max_box_shift),
            "padding_violations": self.padding_violations, "images": len(self.images),
            "iou_threshold": self.iou_threshold, "score_threshold": self.score_threshold,
            "tolerance": self.tolerance.to_dict(),
        }
        data.update({name: getattr(self, name) for name in _COUNTS})
        offending = self.offending_images
        data["offending_images"] = [im.to_dict() for im in offending[:_MAX_IMAGES_REPORTED]]
        data["offending_images_total"] = len(offending)
        return data


def _extreme(values: list[float | None], pick) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if any(math.isnan(v) for v in present):
        return math.nan
    return pick(present)


def _json(value: float | None) -> float | None:
    # JSON has no NaN; a NaN statistic also shows up in failures().
    return None if value is None or math.isnan(value) else value


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


# Two detections of one label overlapping this much are paired, then judged. It sits below the
# IoU of every common NMS (0.45 to 0.7), so two boxes that suppressed each other are always
# paired (and a swap between them recognised), and a moved box is reported as moved, not as a
# lost object plus an extra one.
PAIRING_IOU = 0.3

# -- matching ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Set:
    """One image's detections from one side, and whether top-K truncation made a cut."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    full: bool

    @property
    def cut(self) -> float | None:
        # The lowest kept score of a full set: anything near it may have fallen off the end.
        return float(self.scores.min()) if self.full and self.scores.size else None


def match_detections(
    expected: Mapping[str, Any],
    actual: Mapping[str, Any],
    *,
    tolerance: DetectionTolerance | str = "fp32",
    iou_threshold: float = PAIRING_IOU,
    score_threshold: float = 0.0,
    nms_iou: float | None = None,
) -> DetectionParity:
    """Match `actual` detections to the `expected` (reference) ones, image by image.

    Both are one batch in the output contract (num_detections [B], boxes [B, K, 4] xyxy,
    scores [B, K], labels [B, K]). `iou_threshold` is the overlap that makes two detections of
    one label candidates for a pair; the tolerance then judges the pair. `score_threshold` is
    the detector's own score threshold: detections within score_margin above it are
    borderline. `nms_iou` is its NMS IoU threshold, when known: an unmatched detection that
    overlaps a same-label detection of the other set by nearly that IoU may have been
    suppressed on one side only, and is borderline too. `tolerance` is a DetectionTolerance
    or a precision name.
    """
    tol = detection_tolerance(tolerance) if isinstance(tolerance, str) else tolerance
    if not 0.0 < iou_threshold <= 1.0:
        raise UsageError(f"detection parity: iou_threshold={iou_threshold} must lie in (0, 1]")
    ref = check_outputs(expected, "reference detections")
    act = check_outputs(actual, "actual detections")
    if ref["boxes"].shape[0] != act["boxes"].shape[0]:
        raise UsageError(f"detection parity: the reference has {ref['boxes'].shape[0]} images "
                         f"and the actual outputs {act['boxes'].shape[0]}; compare equal batches")
    images = tuple(
        _match_image(i, _side(r, ref), _side(a, act), tol, iou_threshold, score_threshold,
                     padding_ok=r[3] and a[3], nms_iou=nms_iou)
        for i, (r, a) in enumerate(zip(_per_image(ref), _per_image(act)))
    )
    return DetectionParity.from_images(tol, iou_threshold, score_threshold, images)


def _side(image: tuple, arrays: dict[str, np.ndarray]) -> _Set:
    boxes, scores, labels, _ = image
    k = arrays["boxes"].shape[1]
    return _Set(boxes, scores, labels, full=k > 0 and boxes.shape[0] == k)


def _greedy_pairs(ref: _Set, act: _Set, iou: np.ndarray, shift: np.ndarray,
                  tol: DetectionTolerance, iou_threshold: float) -> list[tuple[int, int]]:
    """Reference detections by descending score take their best unmatched candidate."""
    same = ref.labels[:, None] == act.labels[None, :]
    near = shift_excused(shift, box_size(ref.boxes)[:, None], tol)
    candidate = same & ((iou >= iou_threshold) | near)
    ds = np.abs(ref.scores[:, None] - act.scores[None, :])
    good = candidate & ((iou >= tol.min_iou) | near) & (ds <= tol.max_score_diff)
    taken = np.zeros(act.scores.shape[0], dtype=bool)
    pairs = []
    for r in np.argsort(-ref.scores, kind="stable"):
        cands = np.flatnonzero(candidate[r] & ~taken)
        if cands.size == 0:
            continue
        # Prefer a candidate that passes, then the larger IoU, then the closer score.
        best = cands[np.lexsort((-ds[r, cands], iou[r, cands], good[r, cands]))[-1]]
        taken[best] = True
        pairs.append((int(r), int(best)))
    return pairs


def _borderline(score: float, other: _Set, tol: DetectionTolerance, threshold: float) -> bool:
    """Could this detection have fallen off the other side by a legitimate score wobble?"""
    if score < threshold + tol.score_margin:
        return True
    cut = other.cut
    return cut is not None and score <= cut + tol.score_margin


def _on_cuts(ref_score: float, act_score: float, ref: _Set, act: _Set,
             tol: DetectionTolerance, threshold: float) -> bool:
    return (_borderline(ref_score, act, tol, threshold)
            and _borderline(act_score, ref, tol, threshold))


def _describe(kind: str, s: _Set, i: int) -> str:
    box = ", ".join(f"{v:.1f}" for v in s.boxes[i])
    return f"{kind} label {s.labels[i]} score {s.scores[i]:.4f} box [{box}]"


def _match_image(index: int, ref: _Set, act: _Set, tol: DetectionTolerance,
                 iou_threshold: float, score_threshold: float, padding_ok: bool,
                 nms_iou: float | None = None) -> ImageParity:
    iou = pairwise_iou(ref.boxes, act.boxes)
    shift = _max_shift(ref.boxes, act.boxes)
    sizes = box_size(ref.boxes)
    pairs, kinds = [], []
    for r, a in _greedy_pairs(ref, act, iou, shift, tol, iou_threshold):
        kind = _judge_pair(iou[r, a], shift[r, a], abs(ref.scores[r] - act.scores[a]), tol,
                           sizes[r])
        # Two different boxes that both sit on a cut are two borderline detections that merely
        # overlap: judge them apart (tolerated) rather than as a pair.
        off_place = kind in ("swapped", "moved")
        if off_place and _on_cuts(ref.scores[r], act.scores[a], ref, act, tol, score_threshold):
            continue
        pairs.append((r, a))
        kinds.append(kind)
    counts = dict.fromkeys(("matched", "swapped", "moved", "score_changed"), 0)
    problems: list[str] = []
    for (r, a), kind in zip(pairs, kinds):
        counts[kind] += 1
        if kind != "matched":
            problems.append(f"{_describe(_PAIR_WORDS[kind], ref, r)}: IoU "
                            f"{iou[r, a]:.4f}, score now {act.scores[a]:.4f}")
    lone = _judge_unmatched(ref, act, pairs, iou, tol, iou_threshold, score_threshold, problems,
                            nms_iou)
    if not padding_ok:
        problems.append("rows past num_detections are not zero")
    confident = sum(not _borderline(float(s), ref, tol, score_threshold) for s in ref.scores)
    top_k = ref.cut
    at_top_k = 0 if top_k is None else sum(
        score_threshold + tol.score_margin <= float(s) <= top_k + tol.score_margin
        for s in ref.scores)
    return ImageParity(
        index=index, reference=ref.scores.size, actual=act.scores.size, **counts, **lone,
        confident=confident, at_top_k=at_top_k,
        worst_iou=_extreme([float(iou[r, a]) for r, a in pairs], min),
        max_score_diff=_extreme([float(abs(ref.scores[r] - act.scores[a])) for r, a in pairs],
                                max),
        max_box_shift=_extreme([float(shift[r, a]) for r, a in pairs], max),
        padding_ok=padding_ok, problems=tuple(problems[:_MAX_PROBLEMS_PER_IMAGE]),
        pairs=tuple((int(r), int(a)) for (r, a), kind in zip(pairs, kinds)
                    if kind in ("matched", "score_changed")),
    )


_PAIR_WORDS = {"moved": "moved", "score_changed": "score changed",
               "swapped": "off place, score tied"}


def _judge_pair(iou: float, shift: float, ds: float, tol: DetectionTolerance,
                side: float) -> str:
    """`side`: the reference box's size (longer side), in pixels."""
    in_place = iou >= tol.min_iou or bool(shift_excused(shift, side, tol))
    if in_place:
        return "matched" if ds <= tol.max_score_diff else "score_changed"
    # Off place with tied scores: NMS kept a near-tied neighbour of the reference's box.
    return "swapped" if ds <= tol.score_margin else "moved"


def _judge_unmatched(ref: _Set, act: _Set, pairs: list[tuple[int, int]], iou: np.ndarray,
                     tol: DetectionTolerance, iou_threshold: float, score_threshold: float,
                     problems: list[str], nms_iou: float | None = None) -> dict[str, int]:
    """Count unmatched detections: borderline (tolerated), relabelled, lost or extra."""
    lone_ref = sorted(set(range(ref.scores.size)) - {r for r, _ in pairs})
    lone_act = sorted(set(range(act.scores.size)) - {a for _, a in pairs})

    def nms_borderline(overlaps: np.ndarray, same_label: np.ndarray) -> bool:
        # suppressed on one side only: it overlaps a same-label box of the other set by
        # about the NMS threshold, where a tiny box error flips the decision
        if nms_iou is None or not same_label.any():
            return False
        return bool((np.abs(overlaps[same_label] - nms_iou) <= tol.iou_margin).any())

    bad_ref = [r for r in lone_ref
               if not _borderline(ref.scores[r], act, tol, score_threshold)
               and not nms_borderline(iou[r, :], act.labels == ref.labels[r])]
    bad_act = [a for a in lone_act
               if not _borderline(act.scores[a], ref, tol, score_threshold)
               and not nms_borderline(iou[:, a], ref.labels == act.labels[a])]
    relabelled = 0
    for r in list(bad_ref):
        # A confident reference object whose place is now held by another label.
        same_place = [a for a in lone_act
                      if act.labels[a] != ref.labels[r] and iou[r, a] >= iou_threshold]
        if same_place:
            a = same_place[0]
            relabelled += 1
            bad_ref.remove(r)
            if a in bad_act:
                bad_act.remove(a)
            lone_act.remove(a)
            problems.append(f"{_describe('label changed', ref, r)}: now label {act.labels[a]}")
    problems.extend(_describe("lost", ref, r) for r in bad_ref)
    problems.extend(_describe("extra", act, a) for a in bad_act)
    return {
        "label_changed": relabelled, "missing": len(bad_ref), "extra": len(bad_act),
        "tolerated_missing": len(lone_ref) - len(bad_ref) - relabelled,
        "tolerated_extra": len(lone_act) - len(bad_act),
    }
