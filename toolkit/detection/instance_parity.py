"""Parity of instance outputs (masks, keypoints, oriented boxes), judged per matched detection.

Detections are first matched by IoU and label (`toolkit.detection.match`); each pair matched
in place is then judged on its task's output (numpy only; runs on the device side):

- masks: mask IoU of the binarised masks (probability > the bundle's threshold, 0.5), the
  pixels whose reference probability lies within `mask_margin` of the threshold left out
  (borderline, as borderline detections are), and the mean absolute probability difference
  over the pixels either mask covers. Masks pasted at input resolution (torchvision's, into
  the box rounded to whole pixels) have the pixels within one of the reference mask's edge
  left out too, and only their IoU is judged: a box edge crossing an integer by 1e-4 px
  moves a row and resamples every value;
- keypoints: OKS between the two detections' keypoints (the reference box's area, COCO's
  sigmas for 17 keypoints, else 1/P each; every keypoint judged) and the largest change of a
  keypoint's score;
- oriented boxes: the exact rotated IoU (polygon) of the two boxes.

The report names the worst pair of each, with its detection. A reference whose masks have no
pixel clear of the threshold proves nothing about masks (vacuous), as a reference without a
confident detection proves nothing about boxes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.detection.match import DetectionParity
from toolkit.errors import UsageError

#: the extra output of each instance task
INSTANCE_OUTPUTS = ("masks", "keypoints", "oriented_boxes")


@dataclass(frozen=True)
class InstanceTolerance:
    min_mask_iou: float
    mask_margin: float  # reference pixels this close to the threshold are borderline
    max_mask_diff: float  # mean |probability difference| over the pixels either mask covers
    min_oks: float
    max_keypoint_score_diff: float
    min_rotated_iou: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


# fp32 error is ~1e-5 in a probability and ~1e-4 px in a coordinate; fp16 moves mask logits
# by ~1e-2 and coordinates by a fraction of a pixel; INT8 by a few percent of a box (the
# detection presets' reasoning, toolkit.detection.match.PRESETS).
PRESETS: dict[str, InstanceTolerance] = {
    "fp32": InstanceTolerance(0.98, 1e-3, 1e-3, 0.99, 1e-3, 0.99),
    "tf32": InstanceTolerance(0.9, 1e-2, 1e-2, 0.95, 1e-2, 0.9),
    "fp16": InstanceTolerance(0.9, 1e-2, 1e-2, 0.95, 1e-2, 0.9),
    "bf16": InstanceTolerance(0.8, 5e-2, 5e-2, 0.9, 5e-2, 0.8),
    "int8": InstanceTolerance(0.7, 0.15, 0.1, 0.8, 1.5e-1, 0.7),
}


def instance_tolerance(precision: str) -> InstanceTolerance:
    key = precision.strip().lower()
    key = {"float16": "fp16", "half": "fp16", "bfloat16": "bf16", "float32": "fp32"}.get(key, key)
    if key not in PRESETS:
        raise UsageError(f"instance parity: unknown precision '{precision}'; use one of "
                         f"{', '.join(PRESETS)}")
    return PRESETS[key]


@dataclass(frozen=True)
class Worst:
    """The worst judged pair of one measure: its value and the reference detection."""

    value: float
    image: int
    label: int
    score: float
    box: tuple[float, ...]

    def describe(self) -> str:
        box = ", ".join(f"{v:.1f}" for v in self.box)
        return f"image {self.image}, label {self.label}, score {self.score:.3f}, box [{box}]"

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "image": self.image, "label": self.label,
                "score": self.score, "box": list(self.box)}


@dataclass
class InstanceParity:
    """What judging one task's extra output over matched pairs found."""

    output: str
    tolerance: InstanceTolerance
    judged: int = 0  # pairs judged
    informative: int = 0  # pairs whose reference says something (a mask clear of the cut)
    failed_pairs: int = 0
    worst: dict[str, Worst] = dataclasses.field(default_factory=dict)
    note: str = ""

    def offer(self, measure: str, value: float, lower_is_worse: bool, where: Worst) -> None:
        if math.isnan(value):
            return
        held = self.worst.get(measure)
        if held is None or (value < held.value if lower_is_worse else value > held.value):
            self.worst[measure] = dataclasses.replace(where, value=float(value))

    @property
    def vacuous(self) -> bool:
        return self.judged > 0 and self.informative == 0

    def failures(self) -> list[str]:
        tol, out = self.tolerance, []
        if self.vacuous:
            return [f"vacuous {self.output}: no reference mask has a pixel clear of the "
                    f"threshold by {tol.mask_margin}, so nothing was compared"]
        checks = {"mask_iou": (tol.min_mask_iou, True), "mask_diff": (tol.max_mask_diff, False),
                  "oks": (tol.min_oks, True),
                  "keypoint_score_diff": (tol.max_keypoint_score_diff, False),
                  "rotated_iou": (tol.min_rotated_iou, True)}
        for measure, (bound, lower_is_worse) in checks.items():
            worst = self.worst.get(measure)
            if worst is None:
                continue
            bad = worst.value < bound if lower_is_worse else worst.value > bound
            if bad:
                word = "<" if lower_is_worse else ">"
                out.append(f"{self.output}: {self.failed_pairs} of {self.judged} matched "
                           f"detection(s) differ; worst {measure.replace('_', ' ')} "
                           f"{worst.value:.4g} {word} {bound} ({worst.describe()})")
        return out

    def summary(self) -> str:
        parts = [f"{m.replace('_', ' ')} {w.value:.4g}" for m, w in self.worst.items()]
        return f"{self.output} worst: " + (", ".join(parts) if parts else "nothing judged")

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "passed": not self.failures(), "judged": self.judged,
                "vacuous": self.vacuous, "failures": self.failures(),
                "worst": {m: w.to_dict() for m, w in self.worst.items()},
                "tolerance": self.tolerance.to_dict(), "note": self.note}


def judge_instances(output: str, expected: Mapping[str, np.ndarray],
                    actual: Mapping[str, np.ndarray], detections: DetectionParity,
                    tolerance: InstanceTolerance, *, image_offset: int = 0,
                    mask_threshold: float = 0.5, edge_band: int = 0, crop_stride: int = 0,
                    into: InstanceParity | None = None) -> InstanceParity:
    """Judge `output` of every pair `detections` matched in place, image by image.
    `edge_band`: mask pixels within this many of the reference mask's edge are borderline
    (masks pasted at input resolution into a box rounded to whole pixels: a box edge that
    moves by 1e-4 px across an integer moves a whole row of the mask). `crop_stride`: masks
    cropped to their own box in cells of this many pixels (Ultralytics'); only the cells both
    boxes agree on are judged, since a box edge that moves within the box tolerance across a
    cell's corner takes a whole column of the mask in or out, and the boxes are judged apart."""
    from toolkit.detection import instances

    result = into or InstanceParity(output, tolerance)
    ref_all, act_all = np.asarray(expected[output]), np.asarray(actual[output])
    _check_extra(output, ref_all, np.asarray(expected["boxes"]), "reference")
    _check_extra(output, act_all, np.asarray(actual["boxes"]), "actual")
    for image in detections.images:
        i = image.index
        for r, a in image.pairs:
            ref, act = ref_all[i, r], act_all[i, a]
            box = np.asarray(expected["boxes"][i, r], dtype=np.float64)
            where = Worst(0.0, image_offset + i, int(expected["labels"][i, r]),
                          float(expected["scores"][i, r]), tuple(float(v) for v in box))
            result.judged += 1
            ok = True
            if output == "masks":
                if crop_stride:
                    agree = _crop_agreement(ref.shape, box, np.asarray(
                        actual["boxes"][i, a], dtype=np.float64), crop_stride)
                    ref, act = ref * agree, act * agree
                if edge_band:
                    keep = ~_edge_band(ref > mask_threshold, edge_band)
                    ref, act = ref * keep, act * keep
                clear = np.abs(ref.astype(np.float64) - mask_threshold) > tolerance.mask_margin
                if not (clear & (ref > mask_threshold)).any():
                    continue  # nothing but borderline pixels: proves nothing
                result.informative += 1
                iou = float(instances.mask_iou(ref[None], act[None], mask_threshold,
                                               tolerance.mask_margin)[0, 0])
                covered = (ref > 0) | (act > 0)
                diff = float(np.abs(ref[covered] - act[covered]).mean()) if covered.any() \
                    else 0.0
                result.offer("mask_iou", iou, True, where)
                ok = iou >= tolerance.min_mask_iou
                if not edge_band:  # pasted masks are resampled to a box's whole pixels:
                    # one pixel more of box rescales every value, so only their IoU is judged
                    result.offer("mask_diff", diff, False, where)
                    ok = ok and diff <= tolerance.max_mask_diff
            elif output == "keypoints":
                result.informative += 1
                sigmas, result.note = instances.keypoint_sigmas(ref.shape[0])
                area = max(float((box[2] - box[0]) * (box[3] - box[1])), 1.0)
                judged = ref.copy()
                judged[:, 2] = 1.0  # every keypoint is judged, whatever its score
                value = float(instances.oks(judged[None], act[None], np.array([area]),
                                            sigmas)[0, 0])
                diff = float(np.abs(ref[:, 2] - act[:, 2]).max()) if ref.size else 0.0
                result.offer("oks", value, True, where)
                result.offer("keypoint_score_diff", diff, False, where)
                ok = value >= tolerance.min_oks and diff <= tolerance.max_keypoint_score_diff
            else:
                result.informative += 1
                value = float(instances.rotated_iou(ref[None], act[None])[0, 0])
                result.offer("rotated_iou", value, True, where)
                ok = value >= tolerance.min_rotated_iou
            result.failed_pairs += not ok
    return result


def _crop_agreement(shape: tuple[int, ...], a: np.ndarray, b: np.ndarray,
                    stride: int) -> np.ndarray:
    """Cells both xyxy boxes put on the same side of their crop: a cell is inside a box when
    its top-left input pixel is (yolo_instances.assemble_masks)."""
    h, w = shape[-2:]
    cols, rows = np.arange(w) * stride, np.arange(h) * stride

    def inside(box: np.ndarray) -> np.ndarray:
        return (((rows >= box[1]) & (rows < box[3]))[:, None]
                & ((cols >= box[0]) & (cols < box[2]))[None, :])

    return inside(a) == inside(b)


def _edge_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` (Chebyshev) of a boolean mask's edge, on either side."""
    grown, shrunk = mask.copy(), mask.copy()
    for _ in range(width):
        padded = np.pad(grown, 1)
        grown = np.max([padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx]
                        for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
        padded = np.pad(shrunk, 1, constant_values=True)
        shrunk = np.min([padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx]
                         for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    return grown & ~shrunk


def _check_extra(output: str, values: np.ndarray, boxes: np.ndarray, side: str) -> None:
    rank = {"masks": 4, "keypoints": 4, "oriented_boxes": 3}[output]
    if values.ndim != rank or values.shape[:2] != boxes.shape[:2] or (
            output == "keypoints" and values.shape[3] != 3) or (
            output == "oriented_boxes" and values.shape[2] != 5):
        layout = {"masks": "[B,K,h,w]", "keypoints": "[B,K,P,3]",
                  "oriented_boxes": "[B,K,5]"}[output]
        raise UsageError(f"{side} {output} {list(values.shape)} don't follow the contract "
                         f"{layout} beside boxes {list(boxes.shape)}")


#: the measure a table shows for each instance output, and its short name
HEADLINE = {"masks": ("mask_iou", "mask IoU"), "keypoints": ("oks", "OKS"),
            "oriented_boxes": ("rotated_iou", "rotated IoU")}


def headline(instances: Mapping[str, Any] | None) -> str | None:
    """'mask IoU 0.9981' from a report's `instances` record (its to_dict), or None."""
    if not instances or instances.get("output") not in HEADLINE:
        return None
    measure, name = HEADLINE[instances["output"]]
    worst = (instances.get("worst") or {}).get(measure)
    if instances.get("vacuous"):
        return f"{name} vacuous"
    return f"worst {name} " + (f"{worst['value']:.4f}" if worst else "—")


def extra_output(section: Mapping[str, Any] | None) -> str | None:
    """The instance output a bundle's detection section declares, or None."""
    instances = (section or {}).get("instances") or {}
    name = instances.get("output")
    return name if name in INSTANCE_OUTPUTS else None


def names(outputs: Sequence[str]) -> list[str]:
    return [n for n in outputs if n in INSTANCE_OUTPUTS]
