"""`toolkit select`: the fastest verified artifact for a device and batch, never a failed or
unverified one; a latency budget; exit 1 with reasons when nothing qualifies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit.bundle import Bundle
from toolkit.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(cnn_onnx_torchscript_bundle: Path, tmp_path_factory) -> Path:
    """small_cnn in ONNX and TorchScript, this module's own copy (the session's is shared)."""
    return Path(shutil.copytree(cnn_onnx_torchscript_bundle,
                                tmp_path_factory.mktemp("select") / "cnn"))


def with_bench(exported: Path, tmp_path: Path, timings: dict[str, dict[int, float]]) -> Path:
    """A copy of the bundle whose artifacts carry these recorded p50s (p99 = 1.5 x p50), as
    `toolkit bench` records them for the very file (sha256)."""
    copy = Path(shutil.copytree(exported, tmp_path / "b"))
    manifest = json.loads((copy / "manifest.json").read_text())
    for record in manifest["artifacts"]:
        label = f"{record['format']}/{record['precision']}"
        rows = [{"format": record["format"], "precision": record["precision"], "batch": b,
                 "p50_ms": ms, "p99_ms": 1.5 * ms, "throughput": 1000 * b / ms}
                for b, ms in timings[label].items()]
        record["bench"] = {"device": "cpu", "threads": 2, "rows": rows,
                           "sha256": record["sha256"], "date": "2026-11-27T00:00:00+00:00"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def select(bundle: Path, *args: str):
    return runner.invoke(app, ["select", str(bundle), *args])


def selected_and_excluded(bundle: Path, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """`select`'s choice, and each excluded artifact's reason, from its --json."""
    result = select(bundle, "--json", str(tmp_path / "s.json"))
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "s.json").read_text())
    return doc["selected"]["artifact"], {c["artifact"]: c["excluded"]
                                         for c in doc["candidates"] if c["excluded"]}


def test_picks_the_fastest_verified_and_records_it(exported, tmp_path):
    bundle = with_bench(exported, tmp_path, {"onnx/fp32": {1: 2.0, 4: 4.0},
                                             "torchscript/fp32": {1: 1.0, 4: 6.0}})
    result = select(bundle, "--batch", "1")
    assert result.exit_code == 0, result.output
    chosen = Bundle.open(bundle).manifest["selected"]
    assert chosen["artifact"] == "torchscript/fp32" and chosen["p50_ms"] == 1.0
    assert chosen["batch"] == 1 and chosen["device"] == "cpu" and chosen["machine"]
    assert "lost: p50 2.00x" in result.output
    # at batch 4 ONNX is faster; throughput ranks the same here
    assert select(bundle, "--batch", "4", "--objective", "throughput").exit_code == 0
    assert Bundle.open(bundle).manifest["selected"]["artifact"] == "onnx/fp32"


def test_a_failed_artifact_is_never_chosen(exported, tmp_path):
    bundle = with_bench(exported, tmp_path, {"onnx/fp32": {1: 2.0},
                                             "torchscript/fp32": {1: 1.0}})
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][1]["parity"]["passed"] = False  # torchscript, the faster one
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert selected_and_excluded(bundle, tmp_path) == (
        "onnx/fp32", {"torchscript/fp32": "failed parity"})


def test_the_latency_budget_picks_the_best_throughput_that_fits(exported, tmp_path):
    bundle = with_bench(exported, tmp_path, {"onnx/fp32": {1: 2.0, 8: 5.0},
                                             "torchscript/fp32": {1: 1.0, 8: 30.0}})
    # within 20 ms p99: ts b1 1000/s, onnx b1 500/s, onnx b8 1600/s (ts b8: p99 45 ms)
    result = select(bundle, "--latency-budget", "20")
    assert result.exit_code == 0, result.output
    chosen = Bundle.open(bundle).manifest["selected"]
    assert (chosen["artifact"], chosen["batch"]) == ("onnx/fp32", 8)


def test_nothing_qualifies_exits_1_saying_why(exported, tmp_path):
    bundle = with_bench(exported, tmp_path, {"onnx/fp32": {1: 2.0},
                                             "torchscript/fp32": {1: 1.0}})
    result = select(bundle, "--latency-budget", "0.5")
    assert result.exit_code == 1, result.output
    assert "onnx/fp32: p99 3.00 ms > --latency-budget 0.5 ms" in result.output
    assert "torchscript/fp32: p99 1.50 ms" in result.output
    assert "selected" not in Bundle.open(bundle).manifest


def test_stale_results_are_measured_first(exported, tmp_path):
    """A bench of another file (sha256 differs) doesn't count: select times it again."""
    bundle = with_bench(exported, tmp_path, {"onnx/fp32": {1: 2.0},
                                             "torchscript/fp32": {1: 1.0}})
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][1]["bench"]["sha256"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = select(bundle, "--batch", "1")
    assert result.exit_code == 0, result.output
    assert "torchscript/fp32: no bench result for this file" in result.output
    fresh = Bundle.open(bundle).artifact("torchscript")["bench"]
    assert fresh["sha256"] == Bundle.open(bundle).artifact("torchscript")["sha256"]


def test_bad_input(exported, tmp_path):
    bundle = Path(shutil.copytree(exported, tmp_path / "b"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    for record in manifest["artifacts"]:
        record.pop("parity")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    unverified = select(bundle)
    assert unverified.exit_code == 2 and "toolkit verify" in unverified.output
    for args, needle in ((["--objective", "cheapest"], "--objective"),
                         (["--batch", "999"], "--batch 999")):
        result = select(exported, *args)
        assert result.exit_code == 2 and needle in result.output, result.output


def test_the_tensorrt_layout_is_not_chosen_for_a_cpu(exported, tmp_path):
    """An INT8 file laid out for TensorRT is slow in ONNX Runtime on CPU: excluded there, even
    when a noisy bench made it look fastest."""
    bundle = with_bench(exported, tmp_path, {"onnx/fp32": {1: 2.0},
                                             "torchscript/fp32": {1: 3.0}})
    manifest = json.loads((bundle / "manifest.json").read_text())
    trt_layout = json.loads(json.dumps(manifest["artifacts"][0]))
    trt_layout.update(precision="int8", layout="trt", path="model.int8-trt.onnx")
    trt_layout["bench"]["rows"][0]["p50_ms"] = 0.5
    shutil.copyfile(bundle / "model.onnx", bundle / "model.int8-trt.onnx")
    manifest["artifacts"].append(trt_layout)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    chosen, excluded = selected_and_excluded(bundle, tmp_path)
    assert chosen == "onnx/fp32"
    assert "written for the format built from it" in excluded["onnx/int8-trt"]


def test_the_batch_of_a_fixed_batch_bundle_is_a_valid_batch(tmp_path):
    """`select --batch 1` on a bundle exported at a fixed batch of 1 is what it has, not an
    error; another batch is refused naming the one it has."""
    out = tmp_path / "fixed"
    result = runner.invoke(app, ["export", "tests.models:plain_mlp", "--input", "x:1x5",
                                 "--to", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    chosen = select(out, "--batch", "1")
    assert chosen.exit_code == 0, chosen.output
    assert "selected onnx/fp32" in chosen.output
    other = select(out, "--batch", "4")
    assert other.exit_code == 2 and "fixed at 1" in other.output
