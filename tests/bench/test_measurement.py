"""toolkit.bench: statistics, the stability logic, the regression gate, results files.

Timing logic runs against a fake clock that advances only when the measured call runs, so
every count and statistic below is exact; one short real measurement checks the wiring.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterable

import numpy as np
import pytest

from toolkit.bench.gate import Comparison, check_regressions, compare, parse_threshold
from toolkit.bench.measurement import Measurement
from toolkit.bench.options import DEFAULTS
from toolkit.bench.results import load_results, results_document, save_results
from toolkit.bench.timer import measure
from toolkit.errors import CheckFailed, UsageError

MS = 2.0**-10  # ~1 ms, exact in binary so sums of durations carry no rounding error


class FakeClock:
    """Host time that advances only by the scripted duration of each call."""

    def __init__(self, durations: Iterable[float]) -> None:
        self.now = 0.0
        self.durations = iter(durations)
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def call(self) -> None:
        self.now += next(self.durations)
        self.calls += 1


NO_WARMUP = {"warmup_s": 0.0, "min_warmup_iters": 0}


def fixed(n: int, **kw: object) -> dict[str, object]:
    """Knobs for exactly n timed iterations and no warm-up."""
    return {**NO_WARMUP, "min_iters": n, "max_iters": n, "budget_s": 1e9, **kw}


# -- statistics -------------------------------------------------------------------------------
def test_statistics_match_numpy_on_timed_data() -> None:
    rng = np.random.default_rng(0)
    durations = (rng.lognormal(mean=0.0, sigma=0.3, size=500) * 1e-3).tolist()
    clock = FakeClock(durations)

    m = measure(clock.call, clock=clock, batch=8, **fixed(500))

    t = np.asarray(durations)
    assert m.iterations == 500
    np.testing.assert_allclose(m.times_s, t, rtol=1e-9)
    for q, value in [(0.5, m.p50), (0.9, m.p90), (0.95, m.p95), (0.99, m.p99)]:
        assert value == pytest.approx(np.percentile(t, q * 100), rel=1e-9)
    assert m.min == pytest.approx(t.min(), rel=1e-9)
    assert m.max == pytest.approx(t.max(), rel=1e-9)
    assert m.mean == pytest.approx(t.mean(), rel=1e-9)
    assert m.std == pytest.approx(t.std(ddof=1), rel=1e-9)
    q25, q75 = np.percentile(t, [25, 75])
    assert m.iqr == pytest.approx(q75 - q25, rel=1e-9)
    assert m.cv == pytest.approx(t.std(ddof=1) / t.mean(), rel=1e-9)
    assert m.throughput == pytest.approx(8 / t.mean(), rel=1e-9)

    row = m.to_row()
    assert row["p50_ms"] == pytest.approx(np.median(t) * 1e3, rel=1e-9)
    assert row["p99_ms"] == pytest.approx(np.percentile(t, 99) * 1e3, rel=1e-9)
    assert row["iqr_ms"] == pytest.approx((q75 - q25) * 1e3, rel=1e-9)
    assert row["batch"] == 8 and row["iterations"] == 500


def test_statistics_on_small_known_data() -> None:
    m = Measurement(times_s=[0.001, 0.002, 0.003, 0.004, 0.005], batch=2)
    assert m.p50 == pytest.approx(0.003)
    assert m.min == pytest.approx(0.001) and m.max == pytest.approx(0.005)
    assert m.mean == pytest.approx(0.003)
    assert m.std == pytest.approx(math.sqrt(2.5) * 1e-3)
    assert m.iqr == pytest.approx(0.002)
    assert m.throughput == pytest.approx(2 / 0.003)


def test_single_iteration_has_zero_spread() -> None:
    m = Measurement(times_s=[0.01])
    assert m.std == 0.0 and m.cv == 0.0 and m.iqr == 0.0
    with pytest.raises(ValueError):
        Measurement(times_s=[])


def test_noise_flags_and_warnings() -> None:
    steady = Measurement(times_s=[MS] * 300, stable=True)
    assert not steady.noisy and steady.warnings == []

    spiky = Measurement(times_s=[MS] * 290 + [30 * MS] * 10, stable=True)
    assert spiky.noisy
    assert any("CV" in w for w in spiky.warnings)

    short = Measurement(times_s=[MS] * 10, stable=False)
    assert any("not stable" in w for w in short.warnings)
    assert any("only 10 iterations" in w for w in short.warnings)


# -- the measure loop ---------------------------------------------------------------------------
def test_warmup_waits_for_settling_then_timing_stops_when_stable() -> None:
    # first calls 8x slower, decaying 5% per call (caches, autotuning) to a steady 1 ms from
    # call 41 on: consecutive 10-call windows differ by ~40% until then
    durations = [MS * max(1.0, 8 * 0.95**i) for i in range(42)]
    assert durations[-1] == MS and durations[-2] > MS
    clock = FakeClock(itertools.chain(durations, itertools.repeat(MS)))

    m = measure(clock.call, clock=clock, warmup_s=10.0, min_warmup_iters=5, window=10,
                rel_tol=0.02, min_iters=100, max_iters=10_000, budget_s=10.0)

    # floor of 5, then windows of 10: at 55 the window [35:45) still holds slow calls,
    # at 65 both windows [45:55) and [55:65) are steady
    assert m.warmup_iters == 65
    assert m.iterations == 100
    assert m.stable
    assert m.max == MS  # no warm-up iteration leaked into the timed ones
    assert clock.calls == 165


def test_never_settling_runs_to_max_iters_and_warmup_to_its_time_cap() -> None:
    durations = [MS * 1.01**i for i in range(5000)]  # each window ~10% slower than the last
    clock = FakeClock(durations)

    m = measure(clock.call, clock=clock, warmup_s=0.05, min_warmup_iters=5, window=10,
                rel_tol=0.05, min_iters=20, max_iters=200, budget_s=1e9)

    k = m.warmup_iters
    assert sum(durations[5:k]) >= 0.05 > sum(durations[5 : k - 1])  # stopped at the cap
    assert m.iterations == 200
    assert not m.stable
    assert any("not stable" in w for w in m.warnings)


def test_time_budget_stops_timing_before_min_iters() -> None:
    step = 8 * MS
    clock = FakeClock(itertools.repeat(step))
    m = measure(clock.call, clock=clock, budget_s=8 * step, min_iters=100, max_iters=1000,
                window=10, **NO_WARMUP)
    assert m.iterations == 8
    assert not m.stable

    clock = FakeClock(itertools.repeat(step))
    once = measure(clock.call, clock=clock, budget_s=0.0, **NO_WARMUP)
    assert once.iterations == 1  # a zero budget still yields one timed iteration


def test_fixed_iteration_count_and_sync_every_iteration() -> None:
    clock = FakeClock(itertools.repeat(MS))
    synced = []
    m = measure(clock.call, clock=clock, sync=lambda: synced.append(1), **fixed(37))
    assert m.iterations == 37
    assert len(synced) == clock.calls == 37


def test_device_timer_protocol_order_and_device_times() -> None:
    log: list[str] = []
    host = FakeClock(itertools.repeat(MS))

    class Clock:
        def __call__(self) -> float:
            log.append("clock")
            return host()

    class Events:
        def __init__(self) -> None:
            self.n = 0

        def start(self) -> None:
            log.append("start")

        def stop(self) -> None:
            log.append("stop")

        def elapsed_s(self) -> float:
            log.append("elapsed")
            self.n += 1
            return self.n * 1e-4

    def call() -> None:
        log.append("call")
        host.call()

    m = measure(call, clock=Clock(), sync=lambda: log.append("sync"), device_timer=Events(),
                **fixed(5))
    first = log[log.index("start") - 1 :][:7]
    assert first == ["clock", "start", "call", "stop", "sync", "clock", "elapsed"]
    assert m.has_device_times
    np.testing.assert_allclose(m.device_times_s, [1e-4, 2e-4, 3e-4, 4e-4, 5e-4])
    row = m.to_row()
    assert row["gpu_p50_ms"] == pytest.approx(0.3)
    assert row["p50_ms"] == pytest.approx(MS * 1e3)
    assert "gpu_p50_ms" not in Measurement(times_s=[MS]).to_row()
    with pytest.raises(ValueError, match="needs a sync"):
        measure(call, clock=Clock(), device_timer=Events(), **fixed(1))


@pytest.mark.parametrize(
    "knob", [{"batch": 0}, {"window": 0}, {"min_iters": 0}, {"budget_s": -1.0},
             {"min_iters": 10, "max_iters": 5}, {"rel_tol": -0.1}],
)
def test_bad_knobs_are_usage_errors(knob: dict[str, object]) -> None:
    with pytest.raises(UsageError, match="bench:"):
        measure(lambda: None, **knob)


def test_real_numpy_call_is_measured_sanely() -> None:
    a = np.random.default_rng(1).random((64, 64), dtype=np.float32)
    started = time.perf_counter()
    m = measure(lambda: a @ a, batch=1, warmup_s=0.05, budget_s=0.3, min_iters=50,
                cold_start_s=0.5, labels={"format": "numpy", "precision": "fp32"})
    assert time.perf_counter() - started < DEFAULTS["budget_s"]
    assert m.iterations > 0 and m.warmup_iters >= 5
    assert 0 < m.min <= m.p50 <= m.p90 <= m.p99 <= m.max
    row = m.to_row(device="cpu")
    assert row["format"] == "numpy" and row["device"] == "cpu"
    assert row["cold_start_ms"] == pytest.approx(500.0)


# -- rows -------------------------------------------------------------------------------------
REQUIRED = {"batch", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms", "min_ms",
            "max_ms", "iqr_ms", "cv", "throughput", "cold_start_ms", "iterations", "stable"}


def test_to_row_is_flat_labelled_and_round_trips() -> None:
    m = Measurement(times_s=[MS, 2 * MS, 3 * MS], batch=4, cold_start_s=None, stable=True,
                    labels={"format": "onnx"})
    row = m.to_row(precision="fp16", device="cpu", threads=2)
    assert set(row) >= REQUIRED
    assert row["format"] == "onnx" and row["threads"] == 2 and row["cold_start_ms"] is None
    assert all(not isinstance(v, (dict, list)) for v in row.values())
    json.dumps(row)  # plain Python types only
    with pytest.raises(ValueError, match="p50_ms"):
        m.to_row(p50_ms=1.0)

    full = m.to_row(include_times=True, precision="fp16")
    back = Measurement.from_row(full)
    assert back.labels == {"format": "onnx", "precision": "fp16"}
    np.testing.assert_allclose(back.times_s, m.times_s)
    assert back.batch == 4 and back.stable
    with pytest.raises(UsageError, match="raw times"):
        Measurement.from_row(row)


# -- regression gate --------------------------------------------------------------------------
def row(fmt: str, p50: float, batch: int = 1, **extra: object) -> dict[str, object]:
    return {"format": fmt, "precision": "fp32", "batch": batch, "p50_ms": p50, **extra}


def test_twice_as_slow_as_baseline_is_flagged_at_5_percent() -> None:
    [c] = compare([row("onnx", 2.0)], [row("onnx", 1.0)], 5.0)
    assert c.regressed and c.status == "regressed"
    assert c.ratio == pytest.approx(2.0) and c.change_pct == pytest.approx(100.0)
    with pytest.raises(CheckFailed, match=r"onnx/fp32 batch=1.*\+100\.0%"):
        check_regressions([c])


def test_equal_or_within_threshold_is_not_flagged() -> None:
    comps = compare([row("onnx", 1.0), row("trt", 1.04)], [row("onnx", 1.0), row("trt", 1.0)],
                    5.0)
    assert [c.status for c in comps] == ["same", "same"]
    assert not any(c.regressed for c in comps)
    check_regressions(comps)  # no raise
    [faster] = compare([row("onnx", 0.5)], [row("onnx", 1.0)], 5.0)
    assert faster.status == "improved" and not faster.regressed


def test_unmatched_rows_are_reported_not_failed() -> None:
    comps = compare([row("onnx", 1.0, batch=8), row("onnx", 1.0)],
                    [row("onnx", 1.0), row("torchscript", 1.0)], 5.0)
    by_status = {c.status: c for c in comps}
    assert set(by_status) == {"new", "same", "missing"}
    assert by_status["new"].labels["batch"] == 8 and by_status["new"].baseline_p50_ms is None
    assert by_status["missing"].labels["format"] == "torchscript"
    assert by_status["missing"].new_p50_ms is None and not by_status["missing"].regressed


def test_device_and_threads_match_only_when_both_rows_have_them() -> None:
    new = [row("onnx", 3.0, device="cuda"), row("onnx", 1.0, device="cpu")]
    base = [row("onnx", 1.0, device="cpu"), row("onnx", 1.0, device="cuda")]
    comps = compare(new, base, 5.0)
    assert [c.status for c in comps] == ["regressed", "same"]
    assert comps[0].labels["device"] == "cuda"

    [c] = compare([row("onnx", 1.0, device="cpu")], [row("onnx", 1.0)], 5.0)
    assert c.status == "same"  # an older baseline without a device still matches
    comps = compare([row("onnx", 1.0, threads=1)], [row("onnx", 1.0, threads=4)], 5.0)
    assert {c.status for c in comps} == {"new", "missing"}


def test_comparison_of_a_noisy_row_says_so() -> None:
    [c] = compare([row("onnx", 2.0, noisy=True)], [row("onnx", 1.0)], 5.0)
    assert isinstance(c, Comparison) and c.noisy and c.regressed


@pytest.mark.parametrize(("text", "value"),
                         [("5%", 5.0), ("5", 5.0), (" 2.5 % ", 2.5), ("0%", 0.0), (10, 10.0)])
def test_parse_threshold(text: str | float, value: float) -> None:
    assert parse_threshold(text) == value


@pytest.mark.parametrize("text", ["abc", "-5%", "5%%", "", "five percent", -1.0])
def test_parse_threshold_rejects(text: str | float) -> None:
    with pytest.raises(UsageError, match="--fail-if-slower"):
        parse_threshold(text)


# -- results files ----------------------------------------------------------------------------
def test_results_json_round_trip(tmp_path) -> None:
    rows = [
        Measurement(times_s=[MS, 2 * MS], batch=b).to_row(format="onnx", precision="fp32")
        for b in (1, 8)
    ]
    doc = results_document(rows, {"cpu": "test cpu", "cores": 2}, bundle="resnet")
    assert doc["schema"] == "toolkit.bench/1" and doc["bundle"] == "resnet"
    path = tmp_path / "bench.json"
    save_results(path, doc)

    assert load_results(path) == rows
    saved = json.loads(path.read_text())
    assert saved["environment"] == {"cpu": "test cpu", "cores": 2}
    assert not list(tmp_path.glob(".bench.json.*"))  # no temp file left behind
    with pytest.raises(ValueError, match="reserved"):
        results_document(rows, {}, results=[])


def test_non_finite_numbers_are_written_as_null(tmp_path) -> None:
    path = tmp_path / "inf.json"
    save_results(path, results_document([row("onnx", float("inf"))], {}))
    assert "Infinity" not in path.read_text()
    assert load_results(path)[0]["p50_ms"] is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        ('{"rows": []}', "no 'results' list"),
        ('[1, 2]', "no 'results' list"),
        ('{"results": [{"format": "onnx", "batch": 1}]}', r"results\[0\] lacks precision, p50"),
    ],
)
def test_load_results_errors_name_the_file(tmp_path, content: str | None, message: str) -> None:
    path = tmp_path / "old.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=message) as info:
        load_results(path)
    assert str(path) in str(info.value)
