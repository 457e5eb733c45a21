"""fp16 without overflow: the fp32 model's values are measured on the golden samples and the
real data, and the nodes whose tensors leave fp16's range stay fp32. A projection to about 2e5
before a LayerNorm gives inf and NaN in a plain conversion, and passes parity with the scan.

The plain conversion's overflow shows in true fp16 arithmetic, as TensorRT computes: onnx's
reference evaluator (numpy, every fp16 tensor held in fp16). ONNX Runtime's CPU provider hides
it: it has no fp16 Gemm, so it computes in fp32 and drops the Cast pair it put around it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app

cli = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("large") / "bundle"
    result = cli.invoke(app, ["export", "tests.models:large_activations", "--input",
                              "x:1-4x16", "--to", "onnx", "--precision", "fp32,fp16",
                              "--out", str(out)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return out, " ".join(result.output.split())


def _in_fp16(path: Path, x: np.ndarray) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    with np.errstate(over="ignore", invalid="ignore"):
        return ReferenceEvaluator(str(path)).run(None, {"x": x})[0]


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_the_scan_names_the_projection_and_what_reads_it(bundle):
    from toolkit.backends.onnx.precision.ranges import FP16_MAX, scan_ranges

    out, _ = bundle
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    scan = scan_ranges(out / "model.onnx", [{"x": x}])
    assert scan.samples == 1 and scan.large
    assert max(t.max_abs for t in scan.large) > FP16_MAX
    ops = {t.op for t in scan.large}
    assert ops & {"Gemm", "MatMul", "Add"}, ops
    assert all(t.max_abs > scan.limit for t in scan.large)
    assert "LayerNormalization" not in ops  # normalised: back in range


def test_a_plain_conversion_overflows(bundle, tmp_path):
    """What the scan prevents: the same graph converted with only the op-type list."""
    from toolkit.backends.onnx.precision.fp16 import convert_float16

    out, _ = bundle
    plain = tmp_path / "plain.onnx"
    convert_float16(out / "model.onnx", plain)
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    assert not np.isfinite(_in_fp16(plain, x)).all()


def test_fp16_keeps_the_large_nodes_in_fp32_passes_and_says_so(bundle):
    out, text = bundle
    manifest = json.loads((out / "manifest.json").read_text())
    record = next(a for a in manifest["artifacts"] if a["precision"] == "fp16")
    assert record["parity"]["passed"], record
    scan = record["transform"]["range_scan"]
    assert scan["keep_nodes"] and scan["samples"] >= 1
    assert set(scan["keep_nodes"]) <= set(record["transform"]["keep_fp32_nodes"])
    assert any("leave fp16's range" in note for note in record["notes"])
    assert "leave fp16's range" in text
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    want = _run(out / "model.onnx", x)
    for got in (_in_fp16(out / "model.fp16.onnx", x), _run(out / "model.fp16.onnx", x)):
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, atol=2e-2, rtol=2e-2)


def test_fp16_that_misses_parity_keeps_the_costly_block_in_fp32(tmp_path):
    """Weight rounding the range scan can't see (tests.models:offset_weights): fp16 misses its
    parity preset, and the search INT8 uses, over blocks (a layer and the ops up to the next
    layer), keeps the first layer's block in fp32 and passes; `inspect --layers` shows it."""
    out = tmp_path / "offset"
    result = cli.invoke(app, ["export", "tests.models:offset_weights", "--input", "x:1-8x16",
                              "--to", "onnx", "--precision", "fp32,fp16", "--max-fallback",
                              "1", "--out", str(out)], env={"COLUMNS": "300"})
    text = " ".join(result.output.split())
    assert result.exit_code == 0, text
    assert "full FP16 missed the parity gate" in text and "block(s) in fp32" in text
    manifest = json.loads((out / "manifest.json").read_text())
    record = next(a for a in manifest["artifacts"] if a["precision"] == "fp16")
    fallback = record["transform"]["fallback"]
    assert fallback["passed"] and fallback["gate"] == "parity" and len(fallback["kept_fp32"]) == 1
    assert set(fallback["kept_nodes"]) <= set(record["transform"]["keep_fp32_nodes"])
    assert record["parity"]["passed"]
    shown = cli.invoke(app, ["inspect", str(out), "--layers", "--json", str(tmp_path / "l.json")])
    assert shown.exit_code == 0, shown.output
    layers = {(a["precision"]): a["layers"]
              for a in json.loads((tmp_path / "l.json").read_text())["artifacts"]}["fp16"]
    assert {layer["name"]: layer["precision"] for layer in layers["layers"]} == {
        fallback["kept_fp32"][0]: "fp32", "node_linear_1": "fp16"}
