"""Latency measurement and statistics; imports no backend (after torch.utils.benchmark).

`measure` times a zero-argument call: it warms up until the latency settles, then times
iterations (clock, call, sync, clock) until consecutive windows agree or the budget runs out.
A `Measurement` keeps every raw time; every statistic is derived from them, so nothing is lost
to early aggregation and a fake clock makes the statistics exactly testable.

Runners plug in through three hooks, so this module never imports torch:
`sync` (block until the device is idle, e.g. `torch.cuda.synchronize`), `clock` (host time in
seconds) and `device_timer` (a `DeviceTimer`, e.g. a pair of CUDA events).

The regression gate (`compare`) matches result rows on format, precision and batch (device and
threads when both rows carry them) and flags a p50 slower than the baseline by the threshold.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from toolkit.errors import CheckFailed, UsageError

RESULTS_SCHEMA = "toolkit.bench/1"

#: a coefficient of variation (std / mean) above this marks a measurement noisy
NOISY_CV = 0.10
#: an interquartile range above this fraction of the median marks it noisy (torch's rule)
NOISY_IQR = 0.10
#: below this many timed iterations p99 rests on one or two samples
FEW_ITERATIONS = 100

#: default knobs of `measure`; the CLI exposes them as options
DEFAULTS: dict[str, Any] = {
    "warmup_s": 2.0,
    "min_warmup_iters": 5,
    "budget_s": 10.0,
    "min_iters": 200,
    "max_iters": 20_000,
    "window": 50,
    "rel_tol": 0.03,
}

#: every field `Measurement.to_row` writes besides the labels
STAT_FIELDS = frozenset({
    "batch", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms",
    "iqr_ms", "cv", "throughput", "cold_start_ms", "iterations", "warmup_iters", "stable",
    "noisy", "gpu_p50_ms", "gpu_p90_ms", "gpu_p99_ms", "gpu_mean_ms", "times_ms", "gpu_times_ms",
})

#: fields that identify a result row; the first three must match, the rest when both have them
KEY_FIELDS = ("format", "precision", "batch")
OPTIONAL_KEY_FIELDS = ("device", "threads")


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

    def device_quantile(self, q: float) -> float | None:
        return None if self._d is None else float(np.quantile(self._d, q))

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


# -- measure -------------------------------------------------------------------------------
def _settled(times: Sequence[float], window: int, rel_tol: float) -> bool:
    """True when the medians of the last two windows agree within rel_tol (of the smaller)."""
    if len(times) < 2 * window:
        return False
    # statistics.median on a short list is ~15x cheaper than np.median's dispatch
    a = statistics.median(times[-2 * window : -window])
    b = statistics.median(times[-window:])
    if a == b:
        return True
    return abs(a - b) <= rel_tol * min(a, b)


def _timed(
    call: Callable[[], Any],
    sync: Callable[[], Any],
    clock: Callable[[], float],
    device_timer: DeviceTimer | None,
    n: int,
    times: list[float],
    device_times: list[float] | None,
    deadline: float,
) -> bool:
    """Time up to n iterations into `times`; True if the clock passed `deadline`.

    The loop body is kept to two clock reads, the call, the sync, an append and a compare,
    so the harness adds well under a microsecond per iteration.
    """
    append = times.append
    if device_timer is None:
        for _ in range(n):
            t0 = clock()
            call()
            sync()
            t1 = clock()
            append(t1 - t0)
            if t1 >= deadline:
                return True
        return False
    assert device_times is not None
    start, stop, elapsed = device_timer.start, device_timer.stop, device_timer.elapsed_s
    append_device = device_times.append
    for _ in range(n):
        t0 = clock()
        start()
        call()
        stop()
        sync()
        t1 = clock()
        append(t1 - t0)
        append_device(elapsed())  # after t1: reading the events stays out of the host span
        if t1 >= deadline:
            return True
    return False


def _check_knobs(
    batch: int, warmup_s: float, min_warmup_iters: int, budget_s: float,
    min_iters: int, max_iters: int, window: int, rel_tol: float,
) -> None:
    problems = [
        (batch < 1, f"batch must be >= 1, got {batch}"),
        (warmup_s < 0, f"warm-up time must be >= 0 s, got {warmup_s}"),
        (min_warmup_iters < 0, f"warm-up iterations must be >= 0, got {min_warmup_iters}"),
        (budget_s < 0, f"time budget must be >= 0 s, got {budget_s}"),
        (min_iters < 1, f"minimum iterations must be >= 1, got {min_iters}"),
        (max_iters < min_iters, f"max iterations ({max_iters}) < min iterations ({min_iters})"),
        (window < 1, f"stability window must be >= 1, got {window}"),
        (rel_tol < 0, f"stability tolerance must be >= 0, got {rel_tol}"),
    ]
    for bad, message in problems:
        if bad:
            raise UsageError(f"bench: {message}")


def measure(
    call: Callable[[], Any],
    *,
    batch: int = 1,
    sync: Callable[[], Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    device_timer: DeviceTimer | None = None,
    warmup_s: float = DEFAULTS["warmup_s"],
    min_warmup_iters: int = DEFAULTS["min_warmup_iters"],
    budget_s: float = DEFAULTS["budget_s"],
    min_iters: int = DEFAULTS["min_iters"],
    max_iters: int = DEFAULTS["max_iters"],
    window: int = DEFAULTS["window"],
    rel_tol: float = DEFAULTS["rel_tol"],
    cold_start_s: float | None = None,
    labels: Mapping[str, Any] | None = None,
) -> Measurement:
    """Warm up, then time `call` until its latency is stable; returns every raw time.

    Warm-up: at least `min_warmup_iters` iterations, then more until the medians of the last
    two `window`-sized windows agree within `rel_tol`, or `warmup_s` has passed.
    Timing: windows of iterations until (stable on the last two windows and `min_iters`
    reached) or `max_iters` reached or `budget_s` spent (always at least one iteration).
    `min_iters == max_iters` gives a fixed count. `cold_start_s` (load + first inference,
    measured by the caller) is carried through. `sync` blocks until queued device work is
    done and is timed; `device_timer` adds per-iteration device times.
    """
    _check_knobs(batch, warmup_s, min_warmup_iters, budget_s, min_iters, max_iters,
                 window, rel_tol)
    if device_timer is not None and sync is None:
        raise ValueError("a device_timer needs a sync: its elapsed time is read after sync()")
    sync = sync or _noop

    # warm-up: the floor first (lazy init, autotuning), then until stable or out of time
    warm: list[float] = []
    warm_device: list[float] | None = [] if device_timer else None
    if min_warmup_iters:
        _timed(call, sync, clock, device_timer, min_warmup_iters, warm, warm_device, math.inf)
    if warmup_s > 0:
        deadline = clock() + warmup_s
        while not _settled(warm, window, rel_tol):
            if _timed(call, sync, clock, device_timer, window, warm, warm_device, deadline):
                break

    times: list[float] = []
    device_times: list[float] | None = [] if device_timer else None
    deadline = clock() + budget_s
    stable = False
    while len(times) < max_iters:
        n = min(window, max_iters - len(times))
        out_of_time = _timed(call, sync, clock, device_timer, n, times, device_times, deadline)
        done = out_of_time or len(times) >= max_iters
        if done or len(times) >= min_iters:  # the check costs a median: skip it until useful
            stable = _settled(times, window, rel_tol)
        if done or (stable and len(times) >= min_iters):
            break

    return Measurement(
        times_s=times,
        batch=batch,
        cold_start_s=cold_start_s,
        warmup_iters=len(warm),
        stable=stable,
        device_times_s=device_times,
        labels=dict(labels or {}),
    )


def time_once(call: Callable[[], Any], *, sync: Callable[[], Any] | None = None,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds for one synchronised call: for the caller's cold-start measurement
    (time a load plus its first inference with one `time_once`)."""
    t0 = clock()
    call()
    (sync or _noop)()
    return clock() - t0


# -- results documents -----------------------------------------------------------------------
def results_document(
    rows: Iterable[Mapping[str, Any]], environment: Mapping[str, Any], **meta: Any
) -> dict[str, Any]:
    """The results JSON: `{"schema", "created", "results": [...], "environment": {...}, ...}`.
    `meta` adds top-level fields (bundle name, command line, knobs)."""
    from toolkit.bundle import now

    clash = sorted(set(meta) & {"schema", "results", "environment"})
    if clash:
        raise ValueError(f"meta fields {clash} are reserved")
    return {
        "schema": RESULTS_SCHEMA,
        "created": now(),
        **meta,
        "results": [dict(r) for r in rows],
        "environment": dict(environment),
    }


def save_results(path: str | os.PathLike[str], document: Mapping[str, Any]) -> None:
    """Write a results document atomically (no half-written JSON on a crash)."""
    from toolkit.bundle import write_json_atomic

    write_json_atomic(path, _finite(document))


def _finite(value: Any) -> Any:
    # JSON has no NaN/inf; json.dumps would write them anyway and break strict readers
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def load_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The `results` rows of a results JSON written by `toolkit bench --json`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: results file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read results file ({exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); "
            "pass a file written by 'toolkit bench --json'"
        ) from None
    rows = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise UsageError(
            f"{path}: no 'results' list; pass a file written by 'toolkit bench --json'"
        )
    for i, row in enumerate(rows):
        missing = [k for k in (*KEY_FIELDS, "p50_ms") if not isinstance(row, dict) or k not in row]
        if missing:
            raise UsageError(f"{path}: results[{i}] lacks {', '.join(missing)}")
    return rows


# -- regression gate -------------------------------------------------------------------------
def parse_threshold(text: str | float, option: str = "--fail-if-slower") -> float:
    """'5%' or '5' -> 5.0 (percent). Bare numbers are percent too: '0.05' means 0.05%."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*%?\s*", text)
        if not match:
            raise UsageError(f"{option}: expected a percentage like '5%', got {text!r}")
        value = float(match.group(1))
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{option}: expected a percentage >= 0, got {text!r}")
    return value


@dataclass(frozen=True)
class Comparison:
    """One configuration against its baseline. `status`: regressed · improved · same ·
    new (no baseline row) · missing (baseline row with no new result)."""

    labels: dict[str, Any]
    baseline_p50_ms: float | None
    new_p50_ms: float | None
    threshold_pct: float
    noisy: bool = False

    @property
    def ratio(self) -> float | None:
        """new / baseline p50; 2.0 means twice as slow."""
        if self.baseline_p50_ms is None or self.new_p50_ms is None or self.baseline_p50_ms <= 0:
            return None
        return self.new_p50_ms / self.baseline_p50_ms

    @property
    def change_pct(self) -> float | None:
        ratio = self.ratio
        return None if ratio is None else (ratio - 1.0) * 100.0

    @property
    def regressed(self) -> bool:
        change = self.change_pct
        return change is not None and change > self.threshold_pct

    @property
    def status(self) -> str:
        if self.baseline_p50_ms is None:
            return "new"
        if self.new_p50_ms is None:
            return "missing"
        change = self.change_pct
        if change is None:
            return "same"
        if change > self.threshold_pct:
            return "regressed"
        return "improved" if change < -self.threshold_pct else "same"

    @property
    def name(self) -> str:
        parts = [f"{self.labels.get('format')}/{self.labels.get('precision')}"]
        for key in OPTIONAL_KEY_FIELDS:
            if self.labels.get(key) is not None:
                parts.append(f"{key}={self.labels[key]}")
        parts.append(f"batch={self.labels.get('batch')}")
        return " ".join(parts)


def _same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if any(a.get(k) != b.get(k) for k in KEY_FIELDS):
        return False
    return all(
        a.get(k) is None or b.get(k) is None or a.get(k) == b.get(k) for k in OPTIONAL_KEY_FIELDS
    )


def _labels(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in (*KEY_FIELDS, *OPTIONAL_KEY_FIELDS) if row.get(k) is not None}


def compare(
    rows: Sequence[Mapping[str, Any]],
    baseline_rows: Sequence[Mapping[str, Any]],
    threshold_pct: float,
) -> list[Comparison]:
    """Match each new row to a baseline row of the same configuration and compare p50s.

    Rows without a baseline come back as status 'new', baseline rows nobody matched as
    'missing' (neither fails the gate). A row is regressed when its p50 is more than
    `threshold_pct` percent slower than the baseline's.
    """
    unused = list(range(len(baseline_rows)))
    out: list[Comparison] = []
    for row in rows:
        match = next((i for i in unused if _same_config(row, baseline_rows[i])), None)
        base = None if match is None else baseline_rows[match]
        if match is not None:
            unused.remove(match)
        out.append(
            Comparison(
                labels=_labels(row),
                baseline_p50_ms=None if base is None else float(base["p50_ms"]),
                new_p50_ms=float(row["p50_ms"]),
                threshold_pct=threshold_pct,
                noisy=bool(row.get("noisy")) or bool(base and base.get("noisy")),
            )
        )
    for i in unused:
        base = baseline_rows[i]
        out.append(
            Comparison(
                labels=_labels(base),
                baseline_p50_ms=float(base["p50_ms"]),
                new_p50_ms=None,
                threshold_pct=threshold_pct,
            )
        )
    return out


def check_regressions(comparisons: Sequence[Comparison]) -> None:
    """Raise CheckFailed (exit 1) naming every regressed configuration."""
    bad = [c for c in comparisons if c.regressed]
    if bad:
        worst = ", ".join(
            f"{c.name} p50 {c.baseline_p50_ms:.3f} -> {c.new_p50_ms:.3f} ms "
            f"(+{c.change_pct:.1f}%)"
            for c in bad
        )
        raise CheckFailed(
            f"latency regression over {bad[0].threshold_pct:g}% in {len(bad)} "
            f"configuration(s): {worst}"
        )
