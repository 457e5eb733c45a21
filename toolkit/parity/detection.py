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

    def add_sample(self, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray],
                   sample_index: int | None = None) -> list[OutputResult]:
        index = self.samples if sample_index is None else sample_index
        missing = [n for n in OUTPUT_NAMES if n not in actual]
        if missing:
            self.errors.append(f"sample {index}: the artifact lacks detection outputs "
                               f"{missing} (has {sorted(actual)})")
            self.count_sample(index)
            return []
        parity = match_detections({n: expected[n] for n in OUTPUT_NAMES},
                                  {n: actual[n] for n in OUTPUT_NAMES},
                                  tolerance=self.detection, score_threshold=self.score_threshold,
                                  nms_iou=self.nms_iou)
        self.per_sample.append((index, parity))
        others = [n for n in expected if n not in OUTPUT_NAMES]
        found = super().add_sample({n: expected[n] for n in others},
                                   {n: actual[n] for n in actual if n not in OUTPUT_NAMES},
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
                and elementwise_ok)

    def detection_failures(self) -> list[str]:
        combined = self.combined
        return combined.failures() if combined is not None else ["no sample was compared"]

    def summary_line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        combined = self.combined
        head = f"{verdict} {self.artifact} [{self.precision}] detections x {self.samples} sample(s)"
        if combined is None:
            return f"{head}: nothing compared" + (f"; {self.errors[0]}" if self.errors else "")
        text = f"{head}: {combined.summary().split(': ', 1)[1]}"
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
        if details:
            data["detection_samples"] = {str(i): p.to_dict() for i, p in self.per_sample}
        return data


def detection_report(*, artifact: str, precision: str, tolerances: Any, reference: str,
                     preset: str, score_threshold: float = 0.0, nms_iou: float | None = None,
                     overrides: Mapping[str, float] | None = None) -> DetectionParityReport:
    """An empty report for one artifact of a detection bundle."""
    return DetectionParityReport(
        artifact=artifact, precision=precision, tolerances=tolerances, reference=reference,
        detection=detection_tolerance(preset, **dict(overrides or {})),
        score_threshold=score_threshold, nms_iou=nms_iou)


def contract_report(section: Mapping[str, Any] | None, *, artifact: str, precision: str,
                    tolerances: Any, reference: str, preset: str) -> DetectionParityReport:
    """The detection task's `report` hook: thresholds from the bundle's detection section."""
    section = section or {}
    return detection_report(
        artifact=artifact, precision=precision, tolerances=tolerances, reference=reference,
        preset=preset, score_threshold=float(section.get("score_threshold") or 0.0),
        nms_iou=section.get("nms_iou") or (section.get("nms") or {}).get("iou"))
