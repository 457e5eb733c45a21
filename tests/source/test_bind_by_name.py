"""--input names bind to forward's parameters by name, whatever the order they are given in:
an artifact fed by name computes what the model computes for those names."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from tests import models
from toolkit.cli.app import app

cli = CliRunner()


def _export(tmp_path, factory: str, *inputs: str):
    out = tmp_path / factory
    args = ["export", f"tests.models:{factory}", "--to", "onnx", "--out", str(out)]
    for spec in inputs:
        args += ["--input", spec]
    return cli.invoke(app, args), out


def _onnx_matches_eager_by_name(out, module, feed):
    manifest = json.loads((out / "manifest.json").read_text())
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, feed)[0]
    with torch.inference_mode():
        want = module(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return manifest


def test_inputs_of_different_dtypes_given_out_of_order_bind_by_name(tmp_path):
    result, out = _export(tmp_path, "ids_and_weights", "weights:2x5",
                          "input_ids:2x5:int64:0-11")
    assert result.exit_code == 0, result.output
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(0, 11, (2, 5)).astype(np.int64),
            "weights": rng.random((2, 5), dtype=np.float32)}
    manifest = _onnx_matches_eager_by_name(out, models.ids_and_weights(), feed)
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "weights"]  # forward's


def test_inputs_alike_in_shape_and_dtype_bind_by_name(tmp_path):
    """Only names tell a from b: given as b, a the artifact's input 'a' must feed forward's a
    (bound by position, 'b' fed a and parity passed, the golden samples bound the same way)."""
    result, out = _export(tmp_path, "difference", "b:2x3", "a:2x3")
    assert result.exit_code == 0, result.output
    rng = np.random.default_rng(1)
    feed = {"a": rng.standard_normal((2, 3), dtype=np.float32),
            "b": rng.standard_normal((2, 3), dtype=np.float32)}
    manifest = _onnx_matches_eager_by_name(out, models.difference(), feed)
    assert [i["name"] for i in manifest["inputs"]] == ["a", "b"]


def test_a_name_forward_lacks_is_exit_2_listing_the_parameters(tmp_path):
    result, out = _export(tmp_path, "difference", "x:2x3", "b:2x3")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "--input x" in text and "a, b, c" in text
    assert not out.exists()


@pytest.mark.parametrize("inputs", [("c:2x3", "b:2x3", "a:2x3"), ("c:2x3", "a:2x3")])
def test_optional_parameters_are_bound_by_name_too(tmp_path, inputs):
    """a, c without b: bound by position, c would have fed b; it goes by keyword."""
    result, out = _export(tmp_path, "difference", *inputs)
    assert result.exit_code == 0, result.output
    rng = np.random.default_rng(2)
    names = sorted(spec.split(":")[0] for spec in inputs)
    feed = {n: rng.standard_normal((2, 3), dtype=np.float32) for n in names}
    manifest = _onnx_matches_eager_by_name(out, models.difference(), feed)
    assert [i["name"] for i in manifest["inputs"]] == names
