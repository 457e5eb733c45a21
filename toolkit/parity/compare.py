"""Compare one sample's outputs: names, then shapes and dtypes, then values (after
Polygraphy's comparator and Optimum's `validate_model_outputs`); every failure is collected."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from toolkit.errors import did_you_mean
from toolkit.parity.metrics import ErrorMetrics, _f, error_metrics
from toolkit.parity.task_metrics import _TASK_METRICS, OutputInfo
from toolkit.parity.tolerances import Tolerance, Tolerances

# -- results ----------------------------------------------------------------------------------


class OutputStatus(str, Enum):
    """What one output's comparison found (a str, so JSON and reports show the word)."""

    PASS = "pass"
    FAIL = "fail"
    MISSING = "missing"  # the artifact didn't produce it
    EXTRA = "extra"  # the artifact produced an output the reference hasn't
    SHAPE = "shape"
    DTYPE = "dtype"

    def __str__(self) -> str:
        return self.value


#: the status an output's summary takes, the first of these its samples have
WORST_FIRST = (OutputStatus.MISSING, OutputStatus.EXTRA, OutputStatus.SHAPE,
               OutputStatus.DTYPE, OutputStatus.FAIL)


@dataclass
class OutputResult:
    """One output of one sample: passed or not, why, and the numbers behind it."""

    output: str
    sample: int
    status: OutputStatus
    reasons: list[str]
    tolerance: Tolerance
    expected_shape: tuple[int, ...] | None = None
    actual_shape: tuple[int, ...] | None = None
    expected_dtype: str | None = None
    actual_dtype: str | None = None
    metrics: ErrorMetrics | None = None
    task: dict[str, tuple[float, int]] = field(default_factory=dict)   # key -> (value, rows)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = OutputStatus(self.status)

    @property
    def passed(self) -> bool:
        return self.status is OutputStatus.PASS

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output, "sample": self.sample, "status": self.status.value,
            "passed": self.passed, "reasons": list(self.reasons), "notes": list(self.notes),
            "expected_shape": list(self.expected_shape) if self.expected_shape else None,
            "actual_shape": list(self.actual_shape) if self.actual_shape else None,
            "expected_dtype": self.expected_dtype, "actual_dtype": self.actual_dtype,
            "metrics": self.metrics.to_dict() if self.metrics else None,
            "task": {k: _f(v) for k, (v, _) in self.task.items()},
        }


def _dtype_kind(dtype: np.dtype) -> str:
    if dtype == np.bool_:
        return "bool"
    if np.issubdtype(dtype, np.integer):
        return "int"
    if np.issubdtype(dtype, np.floating):
        return "float"
    return dtype.kind


def value_failures(m: ErrorMetrics, tol: Tolerance) -> list[str]:
    reasons: list[str] = []
    if m.nonfinite_mismatch:
        reasons.append(
            f"{m.nonfinite_mismatch} non-finite value(s) where the reference differs "
            f"(NaN {m.nan_actual}, Inf {m.inf_actual} in actual)"
        )
    out_of_tol = m.violations - m.nonfinite_mismatch
    if m.violation_fraction > tol.max_fraction and out_of_tol:
        reasons.append(
            f"{m.violations}/{m.numel} elements ({m.violation_fraction:.2%}) outside tolerance; "
            f"max abs {m.max_abs:.3g}, would pass with atol>={m.required_atol:.3g}"
        )
    if tol.min_cosine is not None and not (m.cosine >= tol.min_cosine):
        reasons.append(f"cosine {m.cosine:.6f} < {tol.min_cosine}")
    return reasons


def compare_output(
    name: str, expected: np.ndarray, actual: np.ndarray, tol: Tolerance, sample: int = 0
) -> OutputResult:
    """Compare one named output: shape, then dtype kind, then values and task metrics."""
    expected, actual = np.asarray(expected), np.asarray(actual)
    result = OutputResult(
        name, sample, "pass", [], tol, tuple(expected.shape), tuple(actual.shape),
        str(expected.dtype), str(actual.dtype),
    )
    if expected.shape != actual.shape:
        result.status = OutputStatus.SHAPE
        result.reasons.append(
            f"shape {list(actual.shape)} differs from the reference's {list(expected.shape)}"
        )
        return result
    if _dtype_kind(expected.dtype) != _dtype_kind(actual.dtype):
        result.status = OutputStatus.DTYPE
        result.reasons.append(f"dtype {actual.dtype} differs in kind from the reference's "
                              f"{expected.dtype}")
        return result
    if expected.dtype != actual.dtype:
        result.notes.append(f"dtype {actual.dtype} vs reference {expected.dtype}")
    result.metrics = error_metrics(expected, actual, tol)
    result.reasons.extend(value_failures(result.metrics, tol))
    info = OutputInfo(name, str(expected.dtype), tuple(expected.shape))
    for metric in _TASK_METRICS.values():
        if metric.applies(info, expected):
            values, rows = metric.fn(expected, actual)
            result.task.update({k: (float(v), rows) for k, v in values.items()})
    if result.reasons:
        result.status = OutputStatus.FAIL
    return result


def _swap_hints(
    results: list[OutputResult], expected: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
) -> None:
    """Name the likely cause when a failing output matches a *different* reference output."""
    failing = [r for r in results if r.status is OutputStatus.FAIL]
    for r in failing:
        for other, ref in expected.items():
            if other == r.output or np.shape(ref) != np.shape(actual[r.output]):
                continue
            m = error_metrics(np.asarray(ref), np.asarray(actual[r.output]), r.tolerance)
            if m.violations == 0:
                r.notes.append(f"actual '{r.output}' matches reference '{other}': "
                               "outputs swapped or misnamed?")
                break


def compare_sample(
    expected: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    tolerances: Tolerance | Tolerances,
    sample_index: int = 0,
) -> list[OutputResult]:
    """Compare every output of one sample; names must match exactly.

    A reference output the artifact lacks is "missing", an output the reference lacks is
    "extra"; both fail, as do shape or dtype-kind mismatches and value failures.
    """
    tols = tolerances if isinstance(tolerances, Tolerances) else Tolerances(tolerances)
    results: list[OutputResult] = []
    for name, ref in expected.items():
        tol = tols.for_output(name)
        if name not in actual:
            close = did_you_mean(name, actual)
            results.append(OutputResult(
                name, sample_index, "missing",
                [f"output '{name}' is missing from the artifact's outputs "
                 f"({', '.join(actual) or 'none'}){close}"], tol,
                expected_shape=tuple(np.shape(ref)), expected_dtype=str(np.asarray(ref).dtype),
            ))
            continue
        results.append(compare_output(name, ref, actual[name], tol, sample_index))
    for name in actual:
        if name not in expected:
            arr = np.asarray(actual[name])
            results.append(OutputResult(
                name, sample_index, "extra",
                [f"output '{name}' is not in the reference ({', '.join(expected)})"
                 f"{did_you_mean(name, expected)}"], tols.for_output(name),
                actual_shape=tuple(arr.shape), actual_dtype=str(arr.dtype),
            ))
    _swap_hints(results, expected, actual)
    return results
