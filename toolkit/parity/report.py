"""The parity report over every sample of one artifact, and `check`, its one-call form."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolkit.errors import CheckFailed
from toolkit.parity.compare import WORST_FIRST, OutputResult, OutputStatus, compare_sample
from toolkit.parity.metrics import HISTOGRAM_LABELS, WorstElement, _f
from toolkit.parity.tolerances import Tolerance, Tolerances, canonical_precision, tolerance_for

# -- report -----------------------------------------------------------------------------------


@dataclass
class OutputSummary:
    """One output across every sample: the worst of each statistic."""

    output: str
    samples: int
    failed_samples: list[int]
    status: OutputStatus
    max_abs: float
    p99_abs: float
    mean_abs: float
    max_rel: float
    min_cosine: float
    required_atol: float
    violations: int
    numel: int
    nan_actual: int
    inf_actual: int
    worst_sample: int | None
    worst: WorstElement | None
    histogram: list[int]
    task: dict[str, float]
    tolerance: Tolerance

    def __post_init__(self) -> None:
        self.status = OutputStatus(self.status)

    @property
    def passed(self) -> bool:
        return self.status is OutputStatus.PASS

    def to_dict(self) -> dict[str, Any]:
        data = {k: _f(v) for k, v in dataclasses.asdict(self).items()
                if k not in ("worst", "histogram", "tolerance", "task", "failed_samples")}
        data["status"] = self.status.value
        data["failed_samples"] = list(self.failed_samples)
        data["passed"] = self.passed
        data["worst"] = self.worst.to_dict() if self.worst else None
        data["histogram"] = dict(zip(HISTOGRAM_LABELS, self.histogram, strict=True))
        data["task"] = {k: _f(v) for k, v in self.task.items()}
        data["tolerance"] = self.tolerance.to_dict()
        return data


def _nanmax(values: Iterable[float], default: float = 0.0) -> float:
    vals = list(values)
    if not vals:
        return default
    return float("nan") if any(math.isnan(v) for v in vals) else max(vals)


def _summarise(name: str, results: list[OutputResult], task_fail: list[str]) -> OutputSummary:
    measured = [r for r in results if r.metrics is not None]
    failed = sorted({r.sample for r in results if not r.passed})
    worst_r = max(measured, key=lambda r: (r.metrics.violations, r.metrics.max_abs),
                  default=None) if measured else None
    task: dict[str, float] = {}
    for key in {k for r in results for k in r.task}:
        pairs = [r.task[key] for r in results if key in r.task]
        rows = sum(w for _, w in pairs)
        task[key] = sum(v * w for v, w in pairs) / rows if rows else float("nan")
    statuses = {r.status for r in results}
    status = next((s for s in WORST_FIRST if s in statuses), OutputStatus.PASS)
    if status is OutputStatus.PASS and task_fail:
        status = OutputStatus.FAIL
    cosines = [r.metrics.cosine for r in measured]
    return OutputSummary(
        output=name, samples=len({r.sample for r in results}), failed_samples=failed,
        status=status,
        max_abs=_nanmax(r.metrics.max_abs for r in measured),
        p99_abs=_nanmax(r.metrics.p99_abs for r in measured),
        mean_abs=float(np.mean([r.metrics.mean_abs for r in measured])) if measured else 0.0,
        max_rel=_nanmax(r.metrics.max_rel for r in measured),
        min_cosine=(float("nan") if any(math.isnan(c) for c in cosines)
                    else min(cosines, default=float("nan"))),
        required_atol=_nanmax(r.metrics.required_atol for r in measured),
        violations=sum(r.metrics.violations for r in measured),
        numel=sum(r.metrics.numel for r in measured),
        nan_actual=sum(r.metrics.nan_actual for r in measured),
        inf_actual=sum(r.metrics.inf_actual for r in measured),
        worst_sample=worst_r.sample if worst_r else None,
        worst=worst_r.metrics.worst if worst_r else None,
        histogram=[int(sum(c)) for c in zip(*(r.metrics.histogram for r in measured), strict=True)]
        if measured else [0] * len(HISTOGRAM_LABELS),
        task=task, tolerance=results[0].tolerance,
    )


@dataclass
class ParityReport:
    """Every output of every sample for one artifact, and the verdict."""

    artifact: str
    precision: str
    tolerances: Tolerances
    results: list[OutputResult] = field(default_factory=list)
    date: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    reference: str = "golden"
    samples: int = 0
    #: which samples judged it: every golden sample, or (reduced precisions) the real ones
    judged_on: str = "golden samples"
    # samples the artifact could not run at all (e.g. a shape its graph baked in)
    errors: list[str] = field(default_factory=list)
    #: which samples were compared (their golden indices): `samples` counts them
    compared: list[int] = field(default_factory=list, repr=False)
    #: what the runner said of this machine (bf16 compiled for another CPU, a file tuned
    #: on another GPU model)
    warnings: list[str] = field(default_factory=list)
    #: the input shapes the artifact was judged at, each once (the range's corners among them)
    shapes: list[dict[str, list[int]]] = field(default_factory=list)

    def judged_at(self, feed: Mapping[str, Any]) -> None:
        shape = {name: [int(d) for d in np.shape(value)] for name, value in feed.items()}
        if shape not in self.shapes:
            self.shapes.append(shape)

    def count_sample(self, index: int) -> None:
        if index not in self.compared:
            self.compared.append(index)
        self.samples = len(self.compared)

    def add_sample(self, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray],
                   sample_index: int | None = None) -> list[OutputResult]:
        index = self.samples if sample_index is None else sample_index
        found = compare_sample(expected, actual, self.tolerances, index)
        self.results.extend(found)
        self.count_sample(index)
        return found

    @property
    def outputs(self) -> list[str]:
        return list(dict.fromkeys(r.output for r in self.results))

    def task_failures(self) -> dict[str, list[str]]:
        """Per output, the task thresholds (tolerance.task_min) its aggregate misses."""
        fails: dict[str, list[str]] = {}
        for name in self.outputs:
            rs = [r for r in self.results if r.output == name]
            tol = rs[0].tolerance
            agg = _summarise(name, rs, []).task
            for key, minimum in tol.task_min.items():
                value = agg.get(key)
                if value is None:
                    fails.setdefault(name, []).append(
                        f"{key}>={minimum:g} configured but no task metric applies")
                elif not value >= minimum:
                    fails.setdefault(name, []).append(f"{key} {value:.4f} < {minimum:g}")
        return fails

    def summaries(self) -> list[OutputSummary]:
        """Worst per output, across samples (task thresholds included in the status)."""
        task_fail = self.task_failures()
        return [_summarise(name, [r for r in self.results if r.output == name],
                           task_fail.get(name, [])) for name in self.outputs]

    def worst(self) -> dict[str, OutputSummary]:
        return {s.output: s for s in self.summaries()}

    @property
    def failures(self) -> list[OutputResult]:
        """Every failing (output, sample), in order; task-threshold failures come from
        `task_failures()` since they are judged over all samples together."""
        return [r for r in self.results if not r.passed]

    @property
    def passed(self) -> bool:
        return (bool(self.results) and not self.errors and not self.failures
                and not self.task_failures())

    def summary_line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        sums = self.summaries()
        if not sums:
            return (f"{verdict} {self.artifact} [{self.precision}]: nothing compared"
                    + (f"; {self.errors[0]}" if self.errors else ""))
        worst_abs = _nanmax(s.max_abs for s in sums)
        cos = [s.min_cosine for s in sums if not math.isnan(s.min_cosine)]
        text = (f"{verdict} {self.artifact} [{self.precision}] {len(sums)} output(s) x "
                f"{self.samples} sample(s): max abs {worst_abs:.3g}")
        if cos:
            text += f", min cosine {min(cos):.6f}"
        if self.errors:
            text += f"; failed to run {len(self.errors)} sample(s): {self.errors[0]}"
        bad = [s for s in sums if not s.passed]
        if bad:
            text += "; failing: " + ", ".join(
                f"{s.output} ({s.status}, samples {format_ranges(s.failed_samples) or 'all'})"
                for s in bad)
        return text

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise CheckFailed(self.summary_line())

    def to_dict(self, details: bool = False) -> dict[str, Any]:
        """JSON-serialisable: the manifest's `parity` record; `details` adds every
        (output, sample) result with its metrics (for --json)."""
        data: dict[str, Any] = {
            "artifact": self.artifact, "precision": self.precision,
            "reference": self.reference, "judged_on": self.judged_on,
            "passed": self.passed, "date": self.date,
            "samples": self.samples, "shapes": list(self.shapes),
            "tolerance": self.tolerances.to_dict(),
            "outputs": {s.output: s.to_dict() for s in self.summaries()},
            "task_failures": self.task_failures(),
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "failures": [
                {"output": r.output, "sample": r.sample, "status": r.status,
                 "reasons": r.reasons} for r in self.failures
            ],
            "summary": self.summary_line(),
        }
        if details:
            data["results"] = [r.to_dict() for r in self.results]
        return data


def format_ranges(values: Sequence[int]) -> str:
    """[0,1,2,5] -> '0-2,5'."""
    out: list[str] = []
    for v in sorted(values):
        if out and out[-1].split("-")[-1] == str(v - 1):
            out[-1] = out[-1].split("-")[0] + f"-{v}"
        else:
            out.append(str(v))
    return ",".join(out)


def check(
    pairs: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    *,
    precision: str = "fp32",
    tolerance: Tolerance | Tolerances | None = None,
    artifact: str = "artifact",
    reference: str = "golden",
) -> ParityReport:
    """Compare (expected, actual) output dicts, one pair per sample, into a ParityReport.

    `tolerance` defaults to the preset of `precision`; a single Tolerance applies to every
    output. Samples are compared as they arrive, so `pairs` may be a generator that runs
    the artifact lazily.
    """
    if tolerance is None:
        tols = tolerance_for(precision)
    elif isinstance(tolerance, Tolerance):
        tols = Tolerances(tolerance, precision=canonical_precision(precision))
    else:
        tols = tolerance
    report = ParityReport(artifact, canonical_precision(precision), tols, reference=reference)
    for expected, actual in pairs:
        report.add_sample(expected, actual)
    return report


def elementwise_report(section: Mapping[str, Any] | None, *, artifact: str, precision: str,
                       tolerances: Tolerances, reference: str, preset: str) -> ParityReport:
    """An empty report of the classification task (outputs compared element by element); the
    task table's `report` hook (`section` and `preset` are the detection task's concern)."""
    return check((), precision=precision, tolerance=tolerances, artifact=artifact,
                 reference=reference)
