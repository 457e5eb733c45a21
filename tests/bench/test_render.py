"""toolkit.bench.render: tables, Markdown, plots and regression views of bench rows."""

from __future__ import annotations

import sys

import pytest
from rich.console import Console

from toolkit.bench import render as report
from toolkit.bench.gate import compare
from toolkit.bench.measurement import Measurement
from toolkit.errors import BackendUnavailable, UsageError

MS = 1e-3


def measurement(fmt: str, p50_ms: float, batch: int = 1, *, device: str = "cpu",
                precision: str = "fp32", spread: float = 0.01) -> Measurement:
    """A deterministic distribution around p50_ms (no clock involved)."""
    times = [p50_ms * MS * (1 + spread * ((i % 21) - 10) / 10) for i in range(201)]
    return Measurement(times_s=times, batch=batch, cold_start_s=1.5, stable=True,
                       labels={"format": fmt, "precision": precision, "device": device})


@pytest.fixture
def rows() -> list[dict]:
    return [
        measurement("eager", 4.0).to_row(),
        measurement("onnx", 2.0).to_row(),
        measurement("onnx", 1.0, precision="fp16", spread=0.9).to_row(),
        measurement("onnx", 10.0, batch=8).to_row(),
    ]


def render(renderable: object) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_speedups_against_eager_at_the_same_batch_and_device(rows: list[dict]) -> None:
    gpu_row = {**rows[1], "device": "cuda"}
    speeds = report.speedups([*rows, gpu_row])
    assert speeds[0] == pytest.approx(1.0)
    assert speeds[1] == pytest.approx(2.0)
    assert speeds[2] == pytest.approx(4.0)
    assert speeds[3] is None  # no eager row at batch 8
    assert speeds[4] is None  # no eager row on cuda


def test_bench_table_shows_latency_speedup_cold_start_and_noise(rows: list[dict]) -> None:
    text = render(report.bench_table(rows, title="resnet18"))
    assert "resnet18" in text
    assert "onnx/fp16" in text and "eager/fp32" in text
    assert "2.00×" in text and "4.00×" in text
    assert "1.50 s" in text  # cold start
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    assert "noisy" in lines["onnx/fp16"] and "noisy" not in lines["onnx/fp32"]


def test_bench_table_accepts_measurements() -> None:
    text = render(report.bench_table([measurement("trt", 0.5)]))
    assert "trt/fp32" in text and "0.500" in text


def test_markdown_has_the_rows_and_the_environment(rows: list[dict]) -> None:
    env = {"cpu": "Some CPU | 8 cores", "cores": 8, "gpu": None,
           "libraries": {"torch": "2.9.0", "onnxruntime": "1.20.0"}, "cpu_flags": ["avx2"]}
    md = report.bench_markdown(rows, env, title="resnet18 on cpu")
    assert md.startswith("# resnet18 on cpu\n")
    assert "| artifact | device | batch | p50 ms |" in md
    assert "| onnx/fp32 | cpu | 1 | 2.00 |" in md
    assert "2.00×" in md
    assert "- onnx/fp16 cpu batch 1: noisy (CV" in md
    assert "## Environment" in md
    assert "- **libraries**: torch 2.9.0, onnxruntime 1.20.0" in md
    assert "- **gpu**: —" in md
    table_lines = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table_lines) == 2 + len(rows)


def test_threads_and_gpu_columns_appear_only_when_rows_have_them(rows: list[dict]) -> None:
    assert "threads" not in render(report.bench_table(rows))
    gpu = Measurement(times_s=[2 * MS] * 3, device_times_s=[1.5 * MS] * 3,
                      labels={"format": "trt", "precision": "fp16", "device": "cuda"})
    text = render(report.bench_table([gpu.to_row(threads=4)]))
    assert "threads" in text and "GPU p50 ms" in text and "1.50" in text
    assert "GPU p50 is device time" in report.bench_markdown([gpu])


def test_speedup_prefers_the_eager_row_with_the_same_threads(rows: list[dict]) -> None:
    eager1, eager2 = ({**rows[0], "threads": 1}, {**rows[0], "threads": 2, "p50_ms": 3.0})
    onnx2 = {**rows[1], "threads": 2}
    onnx4 = {**rows[1], "threads": 4}
    speeds = report.speedups([eager1, eager2, onnx2, onnx4])
    assert speeds[2] == pytest.approx(1.5)
    assert speeds[3] is None  # two eager candidates, neither with 4 threads: no guess
    assert report.speedups([eager1, onnx4])[1] == pytest.approx(2.0)


def test_markdown_without_environment_has_no_section(rows: list[dict]) -> None:
    assert "Environment" not in report.bench_markdown(rows)


def test_comparison_views_name_regressions_and_unmatched_rows() -> None:
    new = [measurement("onnx", 2.0).to_row(), measurement("trt", 1.0).to_row()]
    old = [measurement("onnx", 1.0).to_row(), measurement("torchscript", 3.0).to_row()]
    comps = compare(new, old, 5.0)

    text = render(report.comparison_table(comps))
    assert "+5%" in text and "+100.0%" in text
    assert "regressed" in text and "new" in text and "missing" in text

    md = report.comparison_markdown(comps)
    assert "| onnx/fp32 device=cpu batch=1 | 1.00 | 2.00 | +100.0% | regressed |" in md
    assert "**1 regressed**" in md
    assert "No regression." in report.comparison_markdown(compare(old[:1], old[:1], 5.0))


def test_formatting_helpers() -> None:
    assert report.fmt_ms(123.4) == "123" and report.fmt_ms(0.01234) == "0.012"
    assert report.fmt_ms(None) == "—"
    assert report.fmt_cold(250.0) == "250 ms" and report.fmt_cold(2500.0) == "2.50 s"
    assert report.fmt_rate(12345.6) == "12,346"


def test_plot_writes_png_from_measurements_and_rows(tmp_path) -> None:
    pytest.importorskip("matplotlib", reason="plots need matplotlib (the 'plot' extra)")
    items = [measurement("eager", 4.0), measurement("onnx", 2.0),
             measurement("onnx", 6.0, batch=8),
             measurement("eager", 30.0, batch=8).to_row(include_times=True),
             measurement("trt", 0.1, batch=8).to_row()]  # no raw times: throughput only
    path = tmp_path / "bench.png"
    report.plot(items, path, title="resnet18")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["bench.png"]  # no temp file left


def test_plot_rows_without_raw_times_still_plot_throughput(tmp_path) -> None:
    pytest.importorskip("matplotlib", reason="plots need matplotlib (the 'plot' extra)")
    path = tmp_path / "rates.png"
    report.plot([measurement("onnx", 2.0, batch=b).to_row() for b in (1, 8, 32)], path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(UsageError, match="no benchmark results"):
        report.plot([], tmp_path / "empty.png")


def test_plot_without_matplotlib_is_backend_unavailable(tmp_path, monkeypatch) -> None:
    # a None entry in sys.modules makes the import fail, as if matplotlib weren't installed
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendUnavailable, match="pip install") as info:
        report.plot([measurement("onnx", 1.0)], tmp_path / "x.png")
    assert info.value.exit_code == 3
    assert not (tmp_path / "x.png").exists()
