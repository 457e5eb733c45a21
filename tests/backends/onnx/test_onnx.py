"""ONNX past protobuf's 2 GB limit: the weights go to model.onnx.data, one artifact of two
files, hashed, checked and copied together. Tested on a small model forced to external data
(the exporter's threshold is lowered through its test-only environment hook)."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from toolkit.backends.onnx.export import EXTERNAL_DATA_ENV
from toolkit.bundle import Bundle, sha256_file
from toolkit.cli.app import app

cli = CliRunner()


def run(*args: object):
    return cli.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("external") / "cnn"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(EXTERNAL_DATA_ENV, "1")
        result = run("export", "tests.models:small_cnn", "--to", "onnx", "--precision",
                     "fp32,fp16", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_the_weights_file_is_part_of_the_artifact(external):
    record = Bundle.open(external).artifact("onnx")
    assert [f.name for f in record.files] == ["model.onnx.data"]
    assert record.files[0].sha256 == sha256_file(external / "model.onnx.data")
    assert "external data" in " ".join(record.notes)
    graph = onnx.load(str(external / "model.onnx"), load_external_data=False)
    locations = {e.value for t in graph.graph.initializer for e in t.external_data
                 if e.key == "location"}
    assert locations == {"model.onnx.data"}  # the bundle's name, not the temp file's
    assert not [p.name for p in external.iterdir() if p.name.startswith(".")]
    # the fp16 file derived from it is small enough to hold its weights
    assert Bundle.open(external).artifact("onnx", "fp16").files == []


def test_a_copied_bundle_verifies_and_a_changed_weights_file_fails(external, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(external, copy)
    assert run("verify", copy).exit_code == 0
    blob = bytearray((copy / "model.onnx.data").read_bytes())
    blob[10] ^= 0xFF
    (copy / "model.onnx.data").write_bytes(bytes(blob))
    result = run("verify", copy, "--precision", "fp32")
    assert result.exit_code == 1 and "model.onnx.data changed" in " ".join(result.output.split())


def test_deploy_copies_the_weights_under_the_name_the_graph_gives(external, tmp_path):
    result = run("deploy", external, "--triton", tmp_path / "repo", "--format", "onnx",
                 "--name", "cnn")
    assert result.exit_code == 0, result.output
    served = tmp_path / "repo" / "cnn" / "1"
    assert sorted(p.name for p in served.iterdir()) == ["model.onnx", "model.onnx.data"]
    import onnxruntime as ort

    ort.InferenceSession(str(served / "model.onnx"))  # loads with its weights


@pytest.mark.skipif(pytest.importorskip("importlib.util").find_spec("openvino") is None,
                    reason="the 'openvino' extra is not installed")
def test_openvino_converts_an_onnx_with_external_data(external, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(external, copy)
    result = run("export", copy, "--to", "openvino")
    assert result.exit_code == 0, result.output
    assert Bundle.open(copy).artifact("openvino").parity.passed
