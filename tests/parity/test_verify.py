"""`toolkit verify` as a user runs it: healthy bundles pass, planted defects fail with exit 1,
and --localize names the module of the damaged layer."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from tests.helpers import damaged_onnx_copy
from toolkit.bundle import Bundle
from toolkit.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def cnn_bundle(cnn_onnx_bundle, tmp_path_factory):
    """This module's own copy: a test records into it."""
    return shutil.copytree(cnn_onnx_bundle, tmp_path_factory.mktemp("verify") / "cnn")


def damaged_copy(bundle_dir, tmp_path, name_part: str, change, rehash: bool = True) -> str:
    return str(damaged_onnx_copy(bundle_dir, tmp_path / "damaged", name_part, change,
                                 rehash=rehash))


def test_healthy_bundle_passes_and_records(cnn_bundle, tmp_path):
    report = tmp_path / "parity.json"
    md = tmp_path / "parity.md"
    result = runner.invoke(app, ["verify", str(cnn_bundle), "--json", str(report),
                                 "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    # the example (batch 2), batches 1 and 3, and the declared maximum, 64
    golden = Bundle.open(cnn_bundle).manifest["golden"]
    assert golden["batches"] == [2, 1, 3, 64] and golden["shapes"][3]["x"][0] == 64
    assert data["passed"] and data["reports"][0]["samples"] == 4
    assert "| onnx/fp32 |" in md.read_text()
    record = Bundle.open(cnn_bundle).artifact("onnx")
    assert record["parity"]["passed"] and record["parity"]["tolerance"]


@pytest.mark.parametrize("factor", [1.03, 1.05])
def test_scaled_middle_layer_fails_and_is_localized(cnn_bundle, tmp_path, factor):
    damaged = damaged_copy(cnn_bundle, tmp_path, "features.3.weight", lambda w: w * factor)
    result = runner.invoke(app, ["verify", damaged, "--localize",
                                 "--against", "tests.models:small_cnn"])
    assert result.exit_code == 1, result.output
    assert "features.3" in result.output
    assert "Traceback" not in result.output


def test_nan_in_a_bias_fails(cnn_bundle, tmp_path):
    def poison(bias):
        bias[0] = np.nan
        return bias

    damaged = damaged_copy(cnn_bundle, tmp_path, "classifier.1.bias", poison)
    result = runner.invoke(app, ["verify", damaged, "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 1, result.output
    summary = json.loads((tmp_path / "r.json").read_text())["reports"][0]["outputs"]["output"]
    assert summary["nan_actual"] > 0


def test_real_data_uses_the_live_model(cnn_bundle, tmp_path):
    data = tmp_path / "real.npz"
    np.savez(data, x=np.random.default_rng(5).random((6, 3, 16, 16), dtype=np.float32))
    without = runner.invoke(app, ["verify", str(cnn_bundle), "--data", str(data)])
    # the manifest's factory is never imported unasked: the message says what it would be
    assert without.exit_code == 2 and "tests.models:small_cnn" in without.output
    result = runner.invoke(app, ["verify", str(cnn_bundle), "--data", str(data),
                                 "--against", "tests.models:small_cnn",
                                 "--json", str(tmp_path / "r.json"), "--no-record"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())["reports"][0]
    assert report["samples"] > 3  # golden + real batches


def test_against_eager_and_eager_format(cnn_bundle):
    result = runner.invoke(app, ["verify", str(cnn_bundle), "--against",
                                 "tests.models:small_cnn", "--format", "onnx,eager",
                                 "--no-record"])
    assert result.exit_code == 0, result.output


def test_per_output_tolerance_override_is_applied(cnn_bundle, tmp_path):
    damaged = damaged_copy(cnn_bundle, tmp_path, "features.3.weight", lambda w: w * 1.03)
    strict = runner.invoke(app, ["verify", damaged, "--no-record"])
    loose = runner.invoke(app, ["verify", damaged, "--no-record",
                                "--tol", "output:satol=0.5,cos=0.9"])
    assert strict.exit_code == 1, strict.output
    assert loose.exit_code == 0, loose.output


def test_mismatched_data_is_bad_input(cnn_bundle, tmp_path):
    data = tmp_path / "bad.npz"
    np.savez(data, x=np.zeros((2, 3, 8, 8), np.float32))
    result = runner.invoke(app, ["verify", str(cnn_bundle), "--data", str(data),
                                 "--against", "tests.models:small_cnn"])
    assert result.exit_code == 2, result.output
    assert "'x'" in result.output and "Traceback" not in result.output


def test_an_artifact_that_cannot_run_a_sample_fails_instead_of_crashing(cnn_bundle, tmp_path):
    copy = tmp_path / "fixed-batch"
    shutil.copytree(cnn_bundle, copy)
    model = onnx.load(str(copy / "model.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2  # bakes batch 2 in
    onnx.save(model, str(copy / "model.onnx"))
    result = runner.invoke(app, ["verify", str(copy), "--json", str(tmp_path / "r.json"),
                                 "--allow-modified"])
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.output
    errors = json.loads((tmp_path / "r.json").read_text())["reports"][0]["errors"]
    assert errors and "did not run" in errors[0]


def test_an_artifact_changed_after_export_fails_unless_allowed(cnn_bundle, tmp_path):
    """A one-byte-scale edit (the manifest's sha256 left as exported) fails verify and is
    refused by bench; --allow-modified checks the file as it is."""
    damaged = damaged_copy(cnn_bundle, tmp_path, "features.3.weight", lambda w: w * 1.0001,
                           rehash=False)
    result = runner.invoke(app, ["verify", damaged, "--no-record"])
    assert result.exit_code == 1, result.output
    assert "changed since it was exported" in result.output
    allowed = runner.invoke(app, ["verify", damaged, "--no-record", "--allow-modified"])
    assert allowed.exit_code == 0, allowed.output  # 1e-4 is within fp32 tolerance
    bench = runner.invoke(app, ["bench", damaged, "--budget", "0.05", "--batch", "1"])
    assert bench.exit_code == 2 and "changed since it was exported" in bench.output
    assert "Traceback" not in bench.output


def test_unknown_tol_output_refused(cnn_bundle, tmp_path):
    bad_tol = runner.invoke(app, ["verify", str(cnn_bundle), "--tol", "nosuch:atol=1"])
    assert bad_tol.exit_code == 2 and "nosuch" in bad_tol.output
    unwritable = runner.invoke(app, ["verify", str(cnn_bundle), "--json",
                                     str(tmp_path / "no" / "dir" / "r.json")])
    assert unwritable.exit_code == 2 and "--json" in unwritable.output


def test_precision_filter_picks_artifacts_and_names_what_is_missing(cnn_bundle, tmp_path):
    only_fp32 = runner.invoke(app, ["verify", str(cnn_bundle), "--precision", "fp32",
                                    "--no-record", "--json", "-"])
    assert only_fp32.exit_code == 0, only_fp32.output
    assert [r["precision"] for r in json.loads(only_fp32.stdout)["reports"]] == ["fp32"]
    missing = runner.invoke(app, ["verify", str(cnn_bundle), "--format", "onnx",
                                  "--precision", "int8", "--no-record"])
    assert missing.exit_code == 2 and "no onnx artifact in int8" in missing.output
    unknown = runner.invoke(app, ["verify", str(cnn_bundle), "--precision", "fp64"])
    assert unknown.exit_code == 2 and "unknown precision" in unknown.output


def test_localize_without_a_reference_names_the_command_to_type(cnn_bundle, tmp_path):
    damaged = damaged_copy(cnn_bundle, tmp_path, "features.3.weight", lambda w: w * 1.05)
    result = runner.invoke(app, ["verify", damaged, "--localize"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "--against tests.models:small_cnn" in text and "--reference onnx" in text
