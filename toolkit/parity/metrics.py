"""Per-output error metrics: absolute, relative and scale-aware errors, cosine, histogram."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.parity.tolerances import Tolerance

# -- per-output metrics -----------------------------------------------------------------------

# Decades of absolute error: "<1e-7", "1e-7..1e-6", ..., "1e-1..1", ">=1".
HISTOGRAM_EDGES: tuple[float, ...] = (0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, math.inf)
HISTOGRAM_LABELS: tuple[str, ...] = (
    "<1e-7", "1e-7", "1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1", ">=1",
)
# Relative error divides by max(|expected|, REL_FLOOR * max|expected|): elements three decades
# below the output's peak are judged as if they sat at that floor, so a near-zero reference
# does not turn a tiny absolute error into a 1e6 relative one.
REL_FLOOR = 1e-3


@dataclass
class WorstElement:
    index: tuple[int, ...]
    expected: float
    actual: float
    abs_error: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": list(self.index), "expected": _f(self.expected),
                "actual": _f(self.actual), "abs_error": _f(self.abs_error)}


@dataclass
class ErrorMetrics:
    """Error statistics of one output of one sample."""

    numel: int
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    cosine: float
    peak: float                    # max|expected|, the scale `satol` multiplies
    nan_expected: int
    inf_expected: int
    nan_actual: int
    inf_actual: int
    nonfinite_mismatch: int        # NaN/Inf in actual where expected is finite (or differs)
    violations: int                # elements outside the bound (non-finite mismatches included)
    histogram: list[int]
    required_atol: float           # smallest atol (at this rtol and satol) that passes all
    worst: WorstElement | None

    @property
    def violation_fraction(self) -> float:
        return self.violations / self.numel if self.numel else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = {k: _f(v) for k, v in dataclasses.asdict(self).items()
                if k not in ("histogram", "worst")}
        data["violation_fraction"] = _f(self.violation_fraction)
        data["histogram"] = dict(zip(HISTOGRAM_LABELS, self.histogram, strict=True))
        data["worst"] = self.worst.to_dict() if self.worst else None
        return data


def _f(value: Any) -> Any:
    """JSON-safe float: NaN/Inf become strings, numpy scalars become Python ones."""
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


def error_metrics(expected: np.ndarray, actual: np.ndarray, tol: Tolerance) -> ErrorMetrics:
    """Every statistic for one pair of same-shape arrays (expected is the reference)."""
    if expected.dtype == np.bool_ or actual.dtype == np.bool_:
        exp = expected.astype(np.float64).ravel()
        act = actual.astype(np.float64).ravel()
    else:
        exp = np.asarray(expected, dtype=np.float64).ravel()
        act = np.asarray(actual, dtype=np.float64).ravel()
    n = exp.size
    exp_fin, act_fin = np.isfinite(exp), np.isfinite(act)
    both = exp_fin & act_fin
    # Non-finite values agree only when identical (NaN with NaN, +inf with +inf).
    same_nonfinite = ~exp_fin & ~act_fin & ((np.isnan(exp) & np.isnan(act)) | (exp == act))
    mismatch = ~both & ~same_nonfinite
    peak = float(np.max(np.abs(exp[exp_fin]))) if exp_fin.any() else 0.0

    diff = np.zeros(n)
    diff[both] = np.abs(act[both] - exp[both])
    diff[mismatch] = np.inf
    bound = tol.bound(np.where(exp_fin, exp, 0.0), peak)
    violating = (diff > bound) | mismatch
    finite_diff = diff[both]
    rel = finite_diff / np.maximum(np.abs(exp[both]), max(REL_FLOOR * peak, 1e-30))

    counts, _ = np.histogram(np.minimum(finite_diff, 1e300), bins=np.array(HISTOGRAM_EDGES[:-1]
                             + (1e301,)))
    excess = diff - tol.satol * peak - tol.rtol * np.abs(np.where(exp_fin, exp, 0.0))
    required = float(max(0.0, np.max(excess))) if n else 0.0
    worst = None
    if n:
        i = int(np.argmax(diff - bound)) if violating.any() else int(np.argmax(diff))
        index = tuple(int(x) for x in np.unravel_index(i, expected.shape)) if expected.ndim else ()
        worst = WorstElement(index, float(exp[i]), float(act[i]), float(diff[i]))
    return ErrorMetrics(
        numel=n,
        max_abs=float(diff.max()) if n else 0.0,
        mean_abs=float(finite_diff.mean()) if finite_diff.size else 0.0,
        p99_abs=float(np.quantile(finite_diff, 0.99)) if finite_diff.size else 0.0,
        max_rel=float(rel.max()) if rel.size else 0.0,
        cosine=_cosine(exp[both], act[both]) if not mismatch.any() else float("nan"),
        peak=peak,
        nan_expected=int(np.isnan(exp).sum()), inf_expected=int(np.isinf(exp).sum()),
        nan_actual=int(np.isnan(act).sum()), inf_actual=int(np.isinf(act).sum()),
        nonfinite_mismatch=int(mismatch.sum()),
        violations=int(violating.sum()),
        histogram=[int(c) for c in counts],
        required_atol=required,
        worst=worst,
    )
