"""`toolkit bench` end to end: a tiny real bundle timed through the CLI and the Python API.

Budgets are tiny (tens of milliseconds per configuration): these tests check the wiring
(rows, files, manifest, exit codes), not the speed of anything.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import requires
from toolkit.bench.driver import batch_sweep, bench_bundle
from toolkit.bench.measurement import KEY_FIELDS
from toolkit.bench.options import BenchOptions
from toolkit.bench.results import load_results
from toolkit.bundle import Bundle
from toolkit.cli.app import app
from toolkit.errors import UsageError
from toolkit.source.options import SourceOptions
from toolkit.spec import TensorSpec, parse_input

FAST = ["--budget", "0.05", "--warmup", "0.02", "--min-iters", "5"]


def QUICK(**changes) -> BenchOptions:
    """What FAST says on the command line, as the group object the Python API takes."""
    return replace(BenchOptions(batches=(1,), threads=1, budget_s=0.05, warmup_s=0.02,
                                min_iters=5), **changes)
ROW_FIELDS = {"format", "precision", "batch", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms",
              "std_ms", "min_ms", "max_ms", "throughput", "cold_start_ms", "iterations",
              "device", "threads"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A factory MLP (x: batch 1-4 × 5) exported to onnx and torchscript, once."""
    from toolkit.export.pipeline import export

    out = tmp_path_factory.mktemp("bench") / "mlp"
    result = export("tests.models:plain_mlp", ["onnx", "torchscript"], out,
                    inputs=["x:1-2-4x5"])
    assert result.exit_code == 0, result.to_dict()
    return out


@pytest.fixture
def bundle(exported: Path, tmp_path: Path) -> Path:
    """A private copy: each test may rewrite the manifest."""
    return Path(shutil.copytree(exported, tmp_path / "mlp"))


def invoke(*args: str):
    return CliRunner().invoke(app, ["bench", *map(str, args)])


def test_cli_writes_json_markdown_plot_and_manifest(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    md, png = tmp_path / "r.md", tmp_path / "r.png"
    result = invoke(bundle, "--batch", "1,4", "--threads", "1", *FAST, "--json", out,
                    "--markdown", md, "--plot", png, "--eager")
    assert result.exit_code == 0, result.output

    doc = json.loads(out.read_text())
    rows = doc["results"]
    configs = sorted((r["format"], r["batch"]) for r in rows)
    assert configs == [(f, b) for f in ("eager", "onnx", "torchscript") for b in (1, 4)]
    for row in rows:
        assert set(row) >= ROW_FIELDS, ROW_FIELDS - set(row)
        assert row["threads"] == 1 and row["device"] == "cpu"
        assert row["iterations"] >= 1 and len(row["times_ms"]) == row["iterations"]
        assert 0 < row["min_ms"] <= row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["cold_start_ms"] > 0
    assert doc["environment"]["bench_threads"] == 1 and doc["environment"]["cpu"]
    assert load_results(out) == rows  # readable back as a baseline

    assert "onnx/fp32" in md.read_text() and "## Environment" in md.read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "p50" in result.output and "torchscript/fp32" in result.output

    manifest = Bundle.open(bundle).manifest
    for record in manifest["artifacts"]:
        bench = record["bench"]
        assert bench["device"] == "cpu" and bench["threads"] == 1 and bench["date"]
        assert [r["batch"] for r in bench["rows"]] == [1, 4]
        assert all("times_ms" not in r for r in bench["rows"])
    assert [r["batch"] for r in manifest["bench"]["eager"]["rows"]] == [1, 4]

    # inspect shows the latest p50 of each artifact, per batch, as bench recorded it
    shown = CliRunner().invoke(app, ["inspect", str(bundle), "--json", "-"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.stdout)
    for artifact, record in zip(info["artifacts"], manifest["artifacts"]):
        want = {str(r["batch"]): r["p50_ms"] for r in record["bench"]["rows"]}
        assert artifact["bench"]["p50_ms"] == want and artifact["bench"]["device"] == "cpu"
    assert set(info["reference_bench"]["eager"]["p50_ms"]) == {"1", "4"}


def test_a_baseline_ten_times_as_fast_fails_the_gate(bundle: Path, tmp_path: Path) -> None:
    # ten times, not twice: this model runs in microseconds, where a loaded machine swings a
    # p50 by 2x between two runs (a fresh-clone run saw +2.7% against a halved baseline)
    first = tmp_path / "first.json"
    args = [bundle, "--format", "onnx", "--no-eager", "--batch", "2", *FAST]
    assert invoke(*args, "--json", first).exit_code == 0

    doc = json.loads(first.read_text())
    for row in doc["results"]:
        row["p50_ms"] /= 10
    fast = tmp_path / "fast.json"
    fast.write_text(json.dumps(doc))
    slower = invoke(*args, "--baseline", fast, "--fail-if-slower", "5%")
    assert slower.exit_code == 1, slower.output
    assert "regressed" in slower.output and "latency regression" in slower.output

    # the same run against itself, with room for this shared machine's noise, passes
    same = invoke(*args, "--baseline", first, "--fail-if-slower", "400%")
    assert same.exit_code == 0, same.output
    assert "no regression" in same.output


@pytest.mark.parametrize("args, message", [
    (["--batch", "16"], "outside the model's batch range 1-4"),
    (["--batch", "two"], "--batch 'two'"),
    (["--fail-if-slower", "5%"], "needs --baseline"),
    (["--format", "pt2"], "has no pt2 artifact"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_bad_options_exit_2_before_timing(bundle: Path, args: list[str], message: str) -> None:
    result = invoke(bundle, *args, *FAST)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "bench" not in Bundle.open(bundle).manifest["artifacts"][0]  # nothing was timed


def test_missing_bundle_exits_2(tmp_path: Path) -> None:
    result = invoke(tmp_path / "nope", *FAST)
    assert result.exit_code == 2
    assert "no such bundle" in result.output


def test_lone_onnx_file_is_benched_without_eager(exported: Path, tmp_path: Path) -> None:
    lone = tmp_path / "model.onnx"
    shutil.copy(exported / "model.onnx", lone)
    notes: list[str] = []
    results = bench_bundle(lone, timing=QUICK(batches=(3,)), on_note=notes.append)
    assert [(m.labels["format"], m.batch) for m in results] == [("onnx", 3)]
    assert any("lone .onnx" in n for n in notes)
    assert results[0].labels["cold_start_includes"] == "load + first call"


def test_eager_is_rebuilt_only_when_asked_for(bundle: Path) -> None:
    """The manifest's source is code: bench imports it only for --eager / --format eager,
    and says what it imports; a source that can't be rebuilt here is then an error."""
    notes: list[str] = []
    results = bench_bundle(bundle, formats=["ts"], timing=QUICK(), on_note=notes.append)
    assert [m.labels["format"] for m in results] == ["torchscript"]
    assert not any("rebuilding" in n for n in notes)
    results = bench_bundle(bundle, formats=["eager"], timing=QUICK(), on_note=notes.append)
    assert [m.labels["format"] for m in results] == ["eager"]
    assert any("rebuilding the PyTorch model" in n and "tests.models" in n for n in notes)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["source"] = {"kind": "onnx", "path": "elsewhere/model.onnx"}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="eager PyTorch can't be timed"):
        bench_bundle(bundle, formats=["eager"], timing=QUICK())


def test_batch_sweep_defaults_and_range() -> None:
    dynamic = [parse_input("x:1-64x3")]
    assert batch_sweep(dynamic) == [1, 2, 4, 8]
    assert batch_sweep([parse_input("x:3-5-6x3")]) == [3, 4, 5]
    assert batch_sweep([parse_input("x:1-16-32x3")]) == [1, 2, 4, 8, 16]  # opt joins
    assert batch_sweep(dynamic, [8, 1, 8]) == [1, 8]
    assert batch_sweep([TensorSpec.static("x", (5, 3))]) == [5]
    with pytest.raises(UsageError, match="fixed at 5"):
        batch_sweep([TensorSpec.static("x", (5, 3))], [1])
    with pytest.raises(UsageError, match="range 1-64"):
        batch_sweep(dynamic, [65])
    assert set(KEY_FIELDS) <= ROW_FIELDS


@pytest.mark.gpu
@requires(cuda=True)
def test_cuda_rows_carry_gpu_time_apart_from_host_latency(bundle: Path) -> None:
    results = bench_bundle(bundle, formats=["eager", "torchscript"],
                           source=SourceOptions(device="cuda"),
                           timing=QUICK(batches=(4,), threads=None))
    assert {m.labels["format"] for m in results} == {"eager", "torchscript"}
    for m in results:
        row = m.to_row()
        assert row["device"] == "cuda" and row["gpu_p50_ms"] is not None
        assert 0 < row["gpu_p50_ms"] <= row["p99_ms"] * 1.5  # device time within host span
