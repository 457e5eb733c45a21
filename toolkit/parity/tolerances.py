"""Tolerances: how close an artifact's outputs must be, per precision and per output.

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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolkit.errors import UsageError, did_you_mean
from toolkit.parity.task_metrics import task_metric_keys
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
#   healthy fp32 graph  <= 2.7e-6       healthy fp16 graph     <= 8.5e-4
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


#: tolerance fields that are fractions: above 1 they ask for the impossible
UNIT_FIELDS = frozenset({"min_cosine", "max_fraction"})


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
                f"{did_you_mean(key, known)}"
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
                f"{did_you_mean(key, known)}"
            )
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"--tol '{text}': '{value}' is not a number") from None
        if not math.isfinite(number) or number < 0:
            raise UsageError(f"--tol '{text}': '{key}' must be a finite number >= 0")
        field_name = _TOL_KEYS.get(key, key)
        if field_name in (_TOL_KEYS.get(k, k) for k in overrides):
            raise UsageError(f"--tol '{text}': '{key}' is given more than once")
        if field_name in UNIT_FIELDS and number > 1:  # a gate nothing can pass
            raise UsageError(f"--tol '{text}': '{key}' is a fraction; give a number in 0..1")
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
