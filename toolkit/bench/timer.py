"""Timing: warm up until stable, then time until the budget or the spread settles.
The clock and the device timer are injectable, so the statistics are testable."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from toolkit.bench.measurement import DeviceTimer, Measurement, _noop
from toolkit.bench.options import DEFAULTS
from toolkit.errors import UsageError


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
