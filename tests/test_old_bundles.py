"""Bundles written before still open, verify and inspect. `tests/data/bundle_stop35` was
exported by the toolkit as it stood at the start of the backend-package work (commit 2328fa9:
small_cnn to ONNX, TorchScript and OpenVINO, fp32 and INT8, manifest schema 4, a dict-based
manifest in memory); the typed manifest and the format table's changes since must read it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit.bundle import Bundle
from toolkit.cli.app import app

OLD = Path(__file__).parent / "data" / "bundle_stop35"


@pytest.fixture
def old_bundle(tmp_path: Path) -> Path:
    copy = tmp_path / "old"
    shutil.copytree(OLD, copy)
    return copy


def test_an_older_bundle_opens_typed(old_bundle):
    bundle = Bundle.open(old_bundle)
    assert {(a.format, a.precision) for a in bundle.artifacts} == {
        ("onnx", "fp32"), ("onnx", "int8"), ("torchscript", "fp32"), ("openvino", "fp32"),
        ("openvino", "int8")}
    assert bundle.artifact("onnx", "int8").layout == "cpu"
    assert bundle.manifest.golden is not None and bundle.manifest.golden.real
    assert bundle.manifest.source.path == "tests.models:small_cnn"


def test_an_older_bundle_verifies_and_inspects(old_bundle, tmp_path):
    pytest.importorskip("openvino", reason="the 'openvino' extra is not installed")
    runner = CliRunner()
    result = runner.invoke(app, ["verify", str(old_bundle)])
    assert result.exit_code == 0, result.output
    assert result.output.count("PASS ") == 5
    result = runner.invoke(app, ["inspect", str(old_bundle), "--json", str(tmp_path / "i.json")])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "i.json").read_text())
    assert len(info["artifacts"]) == 5 and info["inputs"][0]["name"] == "x"
