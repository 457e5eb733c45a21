"""Parity for detectors: detections matched per image by IoU and label, never elementwise.

A `DetectionParityReport` is a ParityReport whose four contract outputs (num_detections,
boxes, scores, labels) are judged together by `toolkit.detection.match`; any other output of
the model is still compared element by element. The verdict is taken over every image of
every sample together, so one sample without detections is fine, but a reference without a
single confident detection anywhere proves nothing and fails as vacuous.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolkit.detection.instance_parity import (
    InstanceParity,
    extra_output,
    instance_tolerance,
    judge_instances,
)
from toolkit.detection.match import (
    OUTPUT_NAMES,
    DetectionParity,
    DetectionTolerance,
    detection_tolerance,
    match_detections,
)
from toolkit.parity.compare import OutputResult
from toolkit.parity.report import ParityReport


@dataclass
class DetectionParityReport(ParityReport):
    detection: DetectionTolerance = field(default_factory=lambda: detection_tolerance("fp32"))
    score_threshold: float = 0.0
    nms_iou: float | None = None
    per_sample: list[tuple[int, DetectionParity]] = field(default_factory=list)
    #: the instance output judged per matched detection (masks, keypoints, oriented_boxes)
    instances: InstanceParity | None = None
    mask_threshold: float = 0.5
    #: masks at input resolution (stride 1, pasted into a box rounded to whole pixels): the
    #: pixels within one of the reference mask's edge are borderline
    mask_edge_band: int = 0
    mask_crop_stride: int = 0  # masks cropped to their box in cells of this many pixels

    def add_sample(self, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray],
                   sample_index: int | None = None) -> list[OutputResult]:
        index = self.samples if sample_index is None else sample_index
        missing = [n for n in OUTPUT_NAMES if n not in actual]
        if missing:
            self.errors.append(f"sample {index}: the artifact lacks detection outputs "
                               f"{missing} (has {sorted(actual)})")
            self.count_sample(index)
            return []
        extra = self.instances.output if self.instances is not None else None
        if extra is not None and extra not in actual:
            self.errors.append(f"sample {index}: the artifact lacks the {extra} output "
                               f"(has {sorted(actual)})")
            self.count_sample(index)
            return []
        parity = match_detections({n: expected[n] for n in OUTPUT_NAMES},
                                  {n: actual[n] for n in OUTPUT_NAMES},
                                  tolerance=self.detection, score_threshold=self.score_threshold,
                                  nms_iou=self.nms_iou)
        if self.instances is not None and extra in expected:
            offset = sum(len(p.images) for _, p in self.per_sample)
            judge_instances(extra, expected, actual, parity, self.instances.tolerance,
                            image_offset=offset, mask_threshold=self.mask_threshold,
                            edge_band=self.mask_edge_band,
                            crop_stride=self.mask_crop_stride, into=self.instances)
        self.per_sample.append((index, parity))
        judged_apart = (*OUTPUT_NAMES, extra)
        others = [n for n in expected if n not in judged_apart]
        found = super().add_sample({n: expected[n] for n in others},
                                   {n: actual[n] for n in actual if n not in judged_apart},
                                   index) if others else []
        self.count_sample(index)
        return found

    @property
    def combined(self) -> DetectionParity | None:
        """Every image of every sample judged as one set (indices run on across samples)."""
        if not self.per_sample:
            return None
        images, offset = [], 0
        for _, parity in self.per_sample:
            images += [dataclasses.replace(im, index=offset + im.index) for im in parity.images]
            offset += len(parity.images)
        first = self.per_sample[0][1]
        return DetectionParity.from_images(first.tolerance, first.iou_threshold,
                                           first.score_threshold, tuple(images))

    @property
    def passed(self) -> bool:
        combined = self.combined
        elementwise_ok = not self.failures and not self.task_failures()
        return (combined is not None and combined.passed and not self.errors
                and elementwise_ok and not self.instance_failures())

    def instance_failures(self) -> list[str]:
        return self.instances.failures() if self.instances is not None else []

    def detection_failures(self) -> list[str]:
        combined = self.combined
        if combined is None:
            return ["no sample was compared"]
        return combined.failures() + self.instance_failures()

    def summary_line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        combined = self.combined
        head = f"{verdict} {self.artifact} [{self.precision}] detections x {self.samples} sample(s)"
        if combined is None:
            return f"{head}: nothing compared" + (f"; {self.errors[0]}" if self.errors else "")
        text = f"{head}: {combined.summary().split(': ', 1)[1]}"
        if self.instances is not None:
            text += f"; {self.instances.summary()}"
            text += "".join(f"; {f}" for f in self.instance_failures())
        if self.errors:
            text += f"; failed to run {len(self.errors)} sample(s): {self.errors[0]}"
        bad = [s for s in self.summaries() if not s.passed]
        if bad:
            text += "; failing: " + ", ".join(s.output for s in bad)
        return text

    def to_dict(self, details: bool = False) -> dict[str, Any]:
        data = super().to_dict(details)
        combined = self.combined
        data["passed"] = self.passed
        data["summary"] = self.summary_line()
        data["detection"] = combined.to_dict() if combined is not None else None
        if self.instances is not None:
            data["instances"] = self.instances.to_dict()
        if details:
            data["detection_samples"] = {str(i): p.to_dict() for i, p in self.per_sample}
        return data


def detection_report(*, artifact: str, precision: str, tolerances: Any, reference: str,
                     preset: str, score_threshold: float = 0.0, nms_iou: float | None = None,
                     overrides: Mapping[str, float] | None = None,
                     instance_output: str | None = None,
                     mask_threshold: float = 0.5, mask_stride: int = 4
                     ) -> DetectionParityReport:
    """An empty report for one artifact of a detection bundle; `instance_output` names the
    extra output (masks, keypoints, oriented_boxes) judged per matched detection."""
    instances = None
    if instance_output is not None:
        instances = InstanceParity(instance_output, instance_tolerance(preset))
    return DetectionParityReport(
        artifact=artifact, precision=precision, tolerances=tolerances, reference=reference,
        detection=detection_tolerance(preset, **dict(overrides or {})),
        score_threshold=score_threshold, nms_iou=nms_iou, instances=instances,
        mask_threshold=mask_threshold, mask_edge_band=1 if mask_stride == 1 else 0,
        mask_crop_stride=mask_stride if mask_stride > 1 else 0)


def contract_report(section: Mapping[str, Any] | None, *, artifact: str, precision: str,
                    tolerances: Any, reference: str, preset: str) -> DetectionParityReport:
    """The detection task's `report` hook: thresholds from the bundle's detection section."""
    section = section or {}
    return detection_report(
        artifact=artifact, precision=precision, tolerances=tolerances, reference=reference,
        preset=preset, score_threshold=float(section.get("score_threshold") or 0.0),
        nms_iou=section.get("nms_iou") or (section.get("nms") or {}).get("iou"),
        instance_output=extra_output(section),
        mask_threshold=float((section.get("instances") or {}).get("mask_threshold") or 0.5),
        mask_stride=int((section.get("instances") or {}).get("mask_stride") or 4))
