"""A Measurement: the raw times of one configuration, statistics derived from them, and
the noise warnings (after torch.utils.benchmark's common.Measurement); numpy only."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from toolkit.errors import UsageError

RESULTS_SCHEMA = "toolkit.bench/1"

#: a coefficient of variation (std / mean) above this marks a measurement noisy
NOISY_CV = 0.10
#: an interquartile range above this fraction of the median marks it noisy (torch's rule)
NOISY_IQR = 0.10
#: below this many timed iterations p99 rests on one or two samples
FEW_ITERATIONS = 100

#: every field `Measurement.to_row` writes besides the labels
STAT_FIELDS = frozenset({
    "batch", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms",
    "iqr_ms", "cv", "throughput", "cold_start_ms", "iterations", "warmup_iters", "stable",
    "noisy", "gpu_p50_ms", "gpu_p90_ms", "gpu_p99_ms", "gpu_mean_ms", "times_ms", "gpu_times_ms",
})

#: fields that identify a result row; the first three must match, the rest when both have them
KEY_FIELDS = ("format", "precision", "batch")
OPTIONAL_KEY_FIELDS = ("device", "threads", "layout")


class DeviceTimer(Protocol):
    """Device-side timing of one iteration, e.g. two CUDA events on the current stream.

    `start` is called right before the call and `stop` right after it (both only enqueue
    markers); `elapsed_s` is read after `sync`, outside the host-timed span.
    """

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def elapsed_s(self) -> float: ...


def _noop() -> None:
    return None


# -- Measurement ---------------------------------------------------------------------------
@dataclass(eq=False)
class Measurement:
    """Raw per-iteration latencies of one configuration and the statistics derived from them.

    Quantiles use numpy's default linear interpolation. Throughput is `batch / mean`: the
    sustained rate over the whole run (items processed / time spent), tail included; p50 is
    the typical single-request latency.
    """

    times_s: Sequence[float]
    batch: int = 1
    cold_start_s: float | None = None
    warmup_iters: int = 0
    stable: bool = False
    device_times_s: Sequence[float] | None = None
    labels: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.times_s) == 0:
            raise ValueError("a Measurement needs at least one timed iteration")

    # -- raw data as arrays (cached: statistics are read many times) -----------------------
    @cached_property
    def _t(self) -> np.ndarray:
        return np.asarray(self.times_s, dtype=np.float64)

    @cached_property
    def _d(self) -> np.ndarray | None:
        if self.device_times_s is None or len(self.device_times_s) == 0:
            return None
        return np.asarray(self.device_times_s, dtype=np.float64)

    # -- statistics, all in seconds ----------------------------------------------------------
    @property
    def iterations(self) -> int:
        return int(self._t.size)

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1) of the per-iteration latency, seconds."""
        return float(np.quantile(self._t, q))

    @property
    def min(self) -> float:
        return float(self._t.min())

    @property
    def max(self) -> float:
        return float(self._t.max())

    @property
    def mean(self) -> float:
        return float(self._t.mean())

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); 0 for a single iteration."""
        return float(self._t.std(ddof=1)) if self._t.size > 1 else 0.0

    @property
    def p50(self) -> float:
        return self.quantile(0.50)

    median = p50

    @property
    def p90(self) -> float:
        return self.quantile(0.90)

    @property
    def p95(self) -> float:
        return self.quantile(0.95)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    @property
    def iqr(self) -> float:
        q25, q75 = np.quantile(self._t, [0.25, 0.75])
        return float(q75 - q25)

    @property
    def cv(self) -> float:
        """Coefficient of variation, std / mean (0 when the mean is 0)."""
        mean = self.mean
        return self.std / mean if mean > 0 else 0.0

    @property
    def throughput(self) -> float:
        """Items per second: batch / mean latency (see the class docstring)."""
        mean = self.mean
        return self.batch / mean if mean > 0 else math.inf

    @property
    def has_device_times(self) -> bool:
        return self._d is not None

    # -- noise -------------------------------------------------------------------------------
    @property
    def warnings(self) -> list[str]:
        """Reasons not to trust these numbers blindly, each one line; empty when clean."""
        found = []
        if self.cv > NOISY_CV:
            found.append(
                f"high variance: CV {self.cv:.0%} (std/mean) > {NOISY_CV:.0%}; other load, "
                "frequency scaling or throttling may be skewing the mean and tail"
            )
        median = self.p50
        if median > 0 and self.iqr / median > NOISY_IQR:
            found.append(
                f"wide spread: IQR is {self.iqr / median:.0%} of the median "
                f"(> {NOISY_IQR:.0%}); the median itself may not reproduce"
            )
        if not self.stable:
            found.append(
                "not stable: window medians still moved when the time budget or iteration "
                "cap ran out; raise the budget or look for throttling"
            )
        if self.iterations < FEW_ITERATIONS:
            found.append(
                f"only {self.iterations} iterations: p99 rests on the slowest one or two"
            )
        return found

    @property
    def noisy(self) -> bool:
        """Variance too high to trust small differences (CV or IQR/median above 10%)."""
        median = self.p50
        return self.cv > NOISY_CV or (median > 0 and self.iqr / median > NOISY_IQR)

    # -- export ------------------------------------------------------------------------------
    def to_row(self, *, include_times: bool = False, **labels: Any) -> dict[str, Any]:
        """A flat, JSON-ready dict: labels (`self.labels`, then keyword labels) and statistics
        in milliseconds. `include_times` adds the raw `times_ms` (and `gpu_times_ms`) lists,
        which `report.plot` needs to draw distributions from a saved JSON."""
        merged = {**self.labels, **labels}
        stats = self._stats_row()
        clash = sorted(set(merged) & STAT_FIELDS)
        if clash:
            raise ValueError(f"labels {clash} collide with statistics of the same name")
        row: dict[str, Any] = {**merged, **stats}
        if include_times:
            row["times_ms"] = [t * 1e3 for t in self.times_s]
            if self._d is not None:
                row["gpu_times_ms"] = [t * 1e3 for t in self._d.tolist()]
        return row

    def _stats_row(self) -> dict[str, Any]:
        q = np.quantile(self._t, [0.25, 0.5, 0.75, 0.9, 0.95, 0.99]) * 1e3
        row: dict[str, Any] = {
            "batch": int(self.batch),
            "p50_ms": float(q[1]),
            "p90_ms": float(q[3]),
            "p95_ms": float(q[4]),
            "p99_ms": float(q[5]),
            "mean_ms": self.mean * 1e3,
            "std_ms": self.std * 1e3,
            "min_ms": self.min * 1e3,
            "max_ms": self.max * 1e3,
            "iqr_ms": float(q[2] - q[0]),
            "cv": self.cv,
            "throughput": self.throughput,
            "cold_start_ms": None if self.cold_start_s is None else self.cold_start_s * 1e3,
            "iterations": self.iterations,
            "warmup_iters": int(self.warmup_iters),
            "stable": bool(self.stable),
            "noisy": self.noisy,
        }
        if self._d is not None:
            g = np.quantile(self._d, [0.5, 0.9, 0.99]) * 1e3
            row.update(
                gpu_p50_ms=float(g[0]),
                gpu_p90_ms=float(g[1]),
                gpu_p99_ms=float(g[2]),
                gpu_mean_ms=float(self._d.mean() * 1e3),
            )
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Measurement:
        """Rebuild from a row written with `include_times=True` (labels kept as labels)."""
        if not row.get("times_ms"):
            raise UsageError(
                "this result row has no raw times ('times_ms'); re-run the benchmark with "
                "raw times kept to plot distributions"
            )
        gpu = row.get("gpu_times_ms")
        cold = row.get("cold_start_ms")
        return cls(
            times_s=[t / 1e3 for t in row["times_ms"]],
            batch=int(row.get("batch", 1)),
            cold_start_s=None if cold is None else cold / 1e3,
            warmup_iters=int(row.get("warmup_iters", 0)),
            stable=bool(row.get("stable", False)),
            device_times_s=None if not gpu else [t / 1e3 for t in gpu],
            labels={k: v for k, v in row.items() if k not in STAT_FIELDS},
        )

    def __repr__(self) -> str:
        name = "/".join(str(v) for v in self.labels.values()) or "Measurement"
        return (
            f"<{name} batch={self.batch} p50={self.p50 * 1e3:.3f}ms "
            f"p99={self.p99 * 1e3:.3f}ms n={self.iterations}{' noisy' if self.noisy else ''}>"
        )
