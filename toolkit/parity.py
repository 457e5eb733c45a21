"""Output comparison: does an artifact compute what the model computes?

Backend-free (numpy only), after Polygraphy's comparator and Optimum's `validate_model_outputs`:
names are checked first, then shapes and dtypes, then values; every failing output of every
sample is collected, never only the first.

The element rule is the familiar one, with one extra, scale-aware term:

    |actual - expected| <= atol + satol * max|expected| + rtol * |expected|

`atol` is an absolute floor, `rtol` scales with each element, and `satol` scales with the
output's peak magnitude. The last term exists because reduced-precision error grows with the
magnitude of the activations that produced an element, not with the element itself: an fp16
logit near zero in an output that peaks at 40 carries the error of a value of about 40. A plain
atol is therefore scale-dependent (right for outputs near 1, wrong for outputs near 100), while
`satol` means "a fraction of this output's range" for any scale. Cosine similarity, also
scale-free, catches a changed direction that small element errors can hide.

The presets were chosen by measurement: see benchmarks/tolerance_study.py and its results.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolkit.errors import CheckFailed, UsageError
from toolkit.spec import canonical_precision as _canonical_precision

# -- tolerances -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """How far an output may stray from the reference and still pass.

    atol:         absolute floor of the per-element bound
    rtol:         fraction of |expected| per element
    min_cosine:   cosine similarity of the flattened outputs must reach this (None: not checked)
    satol:        fraction of max|expected| (the output's peak magnitude) per element
    max_fraction: fraction of elements allowed outside the bound (0: every element must pass)
    task_min:     minimum aggregate value of task metrics, e.g. {"top1": 0.99} (see below)
    """

    atol: float = 1e-5
    rtol: float = 1e-5
    min_cosine: float | None = None
    satol: float = 0.0
    max_fraction: float = 0.0
    task_min: Mapping[str, float] = field(default_factory=dict)

    def bound(self, expected: np.ndarray, peak: float) -> np.ndarray:
        """The per-element allowed absolute error."""
        return self.atol + self.satol * peak + self.rtol * np.abs(expected)

    def replace(self, **changes: Any) -> Tolerance:
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        parts = [f"atol={self.atol:g}", f"rtol={self.rtol:g}"]
        if self.satol:
            parts.append(f"satol={self.satol:g}")
        if self.min_cosine is not None:
            parts.append(f"cos>={self.min_cosine:g}")
        if self.max_fraction:
            parts.append(f"frac<={self.max_fraction:g}")
        parts += [f"{k}>={v:g}" for k, v in sorted(self.task_min.items())]
        return ",".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "atol": self.atol, "rtol": self.rtol, "satol": self.satol,
            "min_cosine": self.min_cosine, "max_fraction": self.max_fraction,
            "task_min": dict(self.task_min),
        }


# Chosen by measurement (benchmarks/results/tolerance_study_*.md; small CNN, ResNet-18 and
# MobileNetV3-small, random weights), errors as max|a-b| / max|reference|:
#   healthy fp32 ONNX   <= 2.7e-6       healthy fp16 ONNX      <= 8.5e-4
#   one conv x1.03      >= 1.7e-2       int8 QDQ (random calib) 1.9e-2 .. 1.0e-1, cosine >= 0.987
# satol sits between: fp32 1e-4 (37x above healthy, 170x below a 3 % defect), fp16 5e-3 (6x
# above healthy, 3x below the defect). The absolute floor `atol` is 0: the randomly initialised
# MobileNetV3 has logits near 1e-11, where any fixed floor (even 1e-7) hides a 5 % defect;
# give an output an atol by --tol when its units make one meaningful (near-cancelling values).
# bf16 (8-bit significand, 3 bits fewer than fp16: ~8x the error) and tf32 (fp16's significand
# on matmul/conv inputs, fp32 accumulation) are derived from fp16, not measured here.
PRESETS: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=0.0, rtol=1e-4, satol=1e-4, min_cosine=0.999999),
    "tf32": Tolerance(atol=0.0, rtol=1e-3, satol=5e-3, min_cosine=0.9999),
    "fp16": Tolerance(atol=0.0, rtol=1e-3, satol=5e-3, min_cosine=0.9999),
    "bf16": Tolerance(atol=0.0, rtol=8e-3, satol=4e-2, min_cosine=0.999),
    # int8 error is quantization noise of a few % of the range: judge the direction (cosine)
    # and allow 1 % of elements past the bound; top-1 agreement is reported, not gated.
    "int8": Tolerance(atol=0.0, rtol=5e-2, satol=1.5e-1, min_cosine=0.98, max_fraction=1e-2),
}

# `--tol` keys -> Tolerance fields
_TOL_KEYS = {
    "atol": "atol", "rtol": "rtol", "satol": "satol",
    "cos": "min_cosine", "cosine": "min_cosine", "min_cosine": "min_cosine",
    "frac": "max_fraction", "max_fraction": "max_fraction",
}


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def canonical_precision(precision: str) -> str:
    return _canonical_precision(precision, where="parity")


@dataclass(frozen=True)
class Tolerances:
    """A default tolerance plus per-output overrides (exact output names)."""

    default: Tolerance
    per_output: Mapping[str, Tolerance] = field(default_factory=dict)
    precision: str | None = None

    def for_output(self, name: str) -> Tolerance:
        return self.per_output.get(name, self.default)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "default": self.default.to_dict(),
            "per_output": {k: v.to_dict() for k, v in self.per_output.items()},
        }

    def describe(self) -> str:
        text = self.default.describe()
        for name, tol in self.per_output.items():
            text += f"; {name}: {tol.describe()}"
        return text


def _apply_overrides(base: Tolerance, overrides: Mapping[str, Any]) -> Tolerance:
    changes: dict[str, Any] = {}
    task = dict(base.task_min)
    for key, value in overrides.items():
        if key in _TOL_KEYS:
            changes[_TOL_KEYS[key]] = None if value is None else float(value)
        elif key == "task_min":
            task.update({k: float(v) for k, v in dict(value).items()})
        elif key in task_metric_keys():
            task[key] = float(value)
        else:
            known = sorted(set(_TOL_KEYS) | task_metric_keys())
            raise UsageError(
                f"unknown tolerance key '{key}'; use one of {', '.join(known)}"
                f"{_did_you_mean(key, known)}"
            )
    return base.replace(**changes, task_min=task)


def tolerance_for(
    precision: str = "fp32",
    atol: float | None = None,
    rtol: float | None = None,
    min_cosine: float | None = None,
    per_output: Mapping[str, Mapping[str, Any]] | None = None,
    **more: float,
) -> Tolerances:
    """The preset for `precision`, with global overrides and per-output partial overrides.

    `per_output` maps an output name to a partial dict, e.g. {"boxes": {"atol": 1e-2}};
    `more` takes further keys (satol, max_fraction, top1 ...).
    """
    name = canonical_precision(precision)
    overrides = {k: v for k, v in (("atol", atol), ("rtol", rtol), ("min_cosine", min_cosine))
                 if v is not None}
    default = _apply_overrides(PRESETS[name], {**overrides, **more})
    per = {out: _apply_overrides(default, partial) for out, partial in (per_output or {}).items()}
    return Tolerances(default, per, precision=name)


def parse_tolerance_option(text: str) -> tuple[str | None, dict[str, float]]:
    """Parse one `--tol` value: `NAME:atol=1e-3,rtol=1e-2` or `atol=1e-3` (every output).

    Returns (output name or None, overrides); `tolerance_for(per_output=...)` applies them.
    """
    name: str | None = None
    body = text.strip()
    if ":" in body:
        name, body = (part.strip() for part in body.split(":", 1))
        if not name:
            raise UsageError(f"--tol '{text}': empty output name before ':'")
    overrides: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise UsageError(f"--tol '{text}': '{item}' is not KEY=VALUE, e.g. atol=1e-3")
        known = set(_TOL_KEYS) | task_metric_keys()
        if key not in known:
            raise UsageError(
                f"--tol '{text}': unknown key '{key}'; use one of {', '.join(sorted(known))}"
                f"{_did_you_mean(key, known)}"
            )
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"--tol '{text}': '{value}' is not a number") from None
        if not math.isfinite(number) or number < 0:
            raise UsageError(f"--tol '{text}': '{key}' must be a finite number >= 0")
        overrides[key] = number
    if not overrides:
        raise UsageError(f"--tol '{text}': no KEY=VALUE given, e.g. logits:atol=1e-3,rtol=1e-2")
    return name, overrides


def tolerances_from_options(
    precision: str, options: Sequence[str] = (), base: Tolerances | None = None
) -> Tolerances:
    """`base` (default: the precision's preset) plus every `--tol` option.

    Options without a name apply to every output and are applied first; named ones then
    refine their output, so `--tol rtol=1e-2 --tol logits:atol=1e-3` gives logits both.
    """
    global_over: dict[str, float] = {}
    per: dict[str, dict[str, float]] = {}
    for option in options:
        name, overrides = parse_tolerance_option(option)
        (global_over if name is None else per.setdefault(name, {})).update(overrides)
    base = base or tolerance_for(precision)
    default = _apply_overrides(base.default, global_over)
    per_tol = {name: _apply_overrides(tol, global_over) for name, tol in base.per_output.items()}
    for name, overrides in per.items():
        per_tol[name] = _apply_overrides(per_tol.get(name, default), overrides)
    return Tolerances(default, per_tol, precision=base.precision or canonical_precision(precision))


# -- task metrics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputInfo:
    """What a task metric may look at to decide whether it applies to an output."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class TaskMetric:
    name: str
    keys: tuple[str, ...]
    applies: Callable[[OutputInfo, np.ndarray], bool]
    fn: Callable[[np.ndarray, np.ndarray], tuple[dict[str, float], int]]
    description: str = ""


_TASK_METRICS: dict[str, TaskMetric] = {}


def register_task_metric(
    name: str,
    applies: Callable[[OutputInfo, np.ndarray], bool],
    fn: Callable[[np.ndarray, np.ndarray], tuple[dict[str, float], int]],
    *,
    keys: Sequence[str],
    description: str = "",
    replace: bool = False,
) -> None:
    """Register a task metric.

    `applies(info, expected)` says whether it fits an output; `fn(expected, actual)` returns
    ({key: value}, weight) for one sample, where each value is a mean over `weight` rows, so
    the report can aggregate samples exactly. Metrics only inform unless a tolerance sets a
    minimum for one of their keys (`task_min`, or `--tol NAME:top1=0.99`).
    """
    if name in _TASK_METRICS and not replace:
        raise ValueError(f"task metric '{name}' is already registered")
    taken = task_metric_keys() - set(_TASK_METRICS[name].keys if name in _TASK_METRICS else ())
    clash = taken & set(keys)
    if clash:
        raise ValueError(f"task metric '{name}': keys {sorted(clash)} are already taken")
    _TASK_METRICS[name] = TaskMetric(name, tuple(keys), applies, fn, description)


def get_task_metric(name: str) -> TaskMetric:
    if name not in _TASK_METRICS:
        raise UsageError(
            f"unknown task metric '{name}'; registered: {', '.join(sorted(_TASK_METRICS))}"
            f"{_did_you_mean(name, _TASK_METRICS)}"
        )
    return _TASK_METRICS[name]


def task_metrics() -> list[str]:
    return sorted(_TASK_METRICS)


def task_metric_keys() -> set[str]:
    return {key for metric in _TASK_METRICS.values() for key in metric.keys}


def _is_class_scores(info: OutputInfo, expected: np.ndarray) -> bool:
    return len(info.shape) == 2 and info.shape[0] > 0 and info.shape[1] > 1 and np.issubdtype(
        expected.dtype, np.floating
    )


def _topk_agreement(expected: np.ndarray, actual: np.ndarray) -> tuple[dict[str, float], int]:
    # top1: the arg-max class agrees; top5: mean overlap of the two top-5 sets.
    k = min(5, expected.shape[1])
    exp = np.nan_to_num(expected.astype(np.float64), nan=-np.inf)
    act = np.nan_to_num(actual.astype(np.float64), nan=-np.inf)
    top1 = float(np.mean(exp.argmax(axis=1) == act.argmax(axis=1)))
    exp_k = np.argsort(-exp, axis=1, kind="stable")[:, :k]
    act_k = np.argsort(-act, axis=1, kind="stable")[:, :k]
    pairs = zip(exp_k.tolist(), act_k.tolist(), strict=True)
    overlap = [len(set(e) & set(a)) / k for e, a in pairs]
    return {"top1": top1, "top5": float(np.mean(overlap))}, int(expected.shape[0])


register_task_metric(
    "topk", _is_class_scores, _topk_agreement, keys=("top1", "top5"),
    description="class scores [batch, classes]: top-1 agreement and top-5 set overlap",
)


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


# -- results ----------------------------------------------------------------------------------


@dataclass
class OutputResult:
    """One output of one sample: passed or not, why, and the numbers behind it."""

    output: str
    sample: int
    status: str                      # pass | fail | missing | extra | shape | dtype
    reasons: list[str]
    tolerance: Tolerance
    expected_shape: tuple[int, ...] | None = None
    actual_shape: tuple[int, ...] | None = None
    expected_dtype: str | None = None
    actual_dtype: str | None = None
    metrics: ErrorMetrics | None = None
    task: dict[str, tuple[float, int]] = field(default_factory=dict)   # key -> (value, rows)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output, "sample": self.sample, "status": self.status,
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
        result.status = "shape"
        result.reasons.append(
            f"shape {list(actual.shape)} differs from the reference's {list(expected.shape)}"
        )
        return result
    if _dtype_kind(expected.dtype) != _dtype_kind(actual.dtype):
        result.status = "dtype"
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
        result.status = "fail"
    return result


def _swap_hints(
    results: list[OutputResult], expected: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
) -> None:
    """Name the likely cause when a failing output matches a *different* reference output."""
    failing = [r for r in results if r.status == "fail"]
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
            close = _did_you_mean(name, actual)
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
                 f"{_did_you_mean(name, expected)}"], tols.for_output(name),
                actual_shape=tuple(arr.shape), actual_dtype=str(arr.dtype),
            ))
    _swap_hints(results, expected, actual)
    return results


# -- report -----------------------------------------------------------------------------------


@dataclass
class OutputSummary:
    """One output across every sample: the worst of each statistic."""

    output: str
    samples: int
    failed_samples: list[int]
    status: str
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

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        data = {k: _f(v) for k, v in dataclasses.asdict(self).items()
                if k not in ("worst", "histogram", "tolerance", "task", "failed_samples")}
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
    statuses = [r.status for r in results]
    status = next((s for s in ("missing", "extra", "shape", "dtype", "fail") if s in statuses),
                  "pass")
    if status == "pass" and task_fail:
        status = "fail"
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
    # samples the artifact could not run at all (e.g. a shape its graph baked in)
    errors: list[str] = field(default_factory=list)

    def add_sample(self, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray],
                   sample_index: int | None = None) -> list[OutputResult]:
        index = self.samples if sample_index is None else sample_index
        found = compare_sample(expected, actual, self.tolerances, index)
        self.results.extend(found)
        self.samples = max(self.samples, index + 1)
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
            return f"{verdict} {self.artifact} [{self.precision}]: nothing compared"
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
            "reference": self.reference, "passed": self.passed, "date": self.date,
            "samples": self.samples, "tolerance": self.tolerances.to_dict(),
            "outputs": {s.output: s.to_dict() for s in self.summaries()},
            "task_failures": self.task_failures(),
            "errors": list(self.errors),
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
