"""Reduced precision judged on real data, and the INT8 layout chosen by where it runs (#11):
an unseen classifier whose example_input_array is random noise, trained on real digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from toolkit.bundle import Bundle
from toolkit.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    from tests.models import save_checkpoint, train_digits8x8

    model, data = train_digits8x8()
    root = tmp_path_factory.mktemp("digits8x8")
    save_checkpoint(model, root / "digits.ckpt")
    np.savez(root / "calib.npz", x=data["x_train"][:256])
    np.savez(root / "eval.npz", x=data["x_test"], labels=data["y_test"])
    return {"ckpt": root / "digits.ckpt", "calib": root / "calib.npz",
            "eval": root / "eval.npz", "root": root}


def export(digits, out: Path, *extra: str):
    return runner.invoke(app, [
        "export", str(digits["ckpt"]), "--model", "tests.models:Digits8x8", "--to", "onnx",
        "--precision", "fp32,fp16,int8", "--calib-data", str(digits["calib"]),
        "--eval-data", str(digits["eval"]), "--max-accuracy-drop", "0.5", "--out", str(out),
        *extra])


def test_a_noise_example_does_not_fail_a_healthy_int8(digits):
    out = digits["root"] / "bundle"
    result = export(digits, out)
    assert result.exit_code == 0, result.output
    bundle = Bundle.open(out)
    golden = bundle.manifest["golden"]
    assert golden["real"] and "--eval-data" in golden["real_source"]
    fp32 = bundle.artifact("onnx", "fp32")
    assert fp32["parity"]["judged_on"] == "golden samples"  # the noise example included
    for precision in ("fp16", "int8"):
        record = bundle.artifact("onnx", precision)
        assert record["parity"]["passed"], record["parity"]
        assert record["parity"]["judged_on"].startswith("real data (--eval-data")
        accuracy = record["accuracy"]
        drop = (accuracy["fp32"]["score"] - accuracy["reduced"]["score"]) * 100
        assert accuracy["passed"] and drop <= 0.5, accuracy
        assert accuracy["fp32"]["score"] > 0.9  # it did learn the digits
    int8 = bundle.artifact("onnx", "int8")
    assert int8["layout"] == "cpu" and int8["path"] == "model.int8.onnx"
    assert int8["transform"]["activation_type"] == "uint8"
    assert any("ONNX Runtime CPU layout" in n for n in int8["notes"])
    timing = int8["transform"]["default_session"]  # timed at export in default sessions
    assert timing["p50_ms"] > 0 and timing["fp32_p50_ms"] > 0 and timing["runs"] >= 5
    slower = any("slower than fp32 here" in n for n in int8["notes"])
    assert slower == (timing["speedup"] < 0.9)
    # a later plain `verify` judges the same way, without the model or the data
    again = runner.invoke(app, ["verify", str(out), "--no-record", "--json",
                                str(digits["root"] / "v.json")])
    assert again.exit_code == 0, again.output
    reports = json.loads((digits["root"] / "v.json").read_text())["reports"]
    assert {r["artifact"]: r["judged_on"].split(" ")[0] for r in reports} == {
        "onnx/fp32": "golden", "onnx/fp16": "real", "onnx/int8": "real"}


def test_both_layouts_under_clear_names(digits, tmp_path):
    result = runner.invoke(app, [
        "export", str(digits["ckpt"]), "--model", "tests.models:Digits8x8", "--to", "onnx",
        "--precision", "fp32,int8", "--calib-data", str(digits["calib"]),
        "--int8-layout", "both", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "int8-trt" in result.output
    bundle = Bundle.open(tmp_path / "b")
    layouts = {r["layout"]: r for r in bundle.artifacts if r["precision"] == "int8"}
    assert layouts["cpu"]["path"] == "model.int8.onnx"
    assert layouts["trt"]["path"] == "model.int8-trt.onnx"
    assert layouts["trt"]["transform"]["activation_symmetric"] is True
    assert any("TensorRT layout" in n for n in layouts["trt"]["notes"])
    # calibration data only: judged on calibration samples
    assert "--calib-data" in bundle.manifest["golden"]["real_source"]
    bench = runner.invoke(app, ["bench", str(tmp_path / "b"), "--precision", "int8",
                                "--batch", "1", "--budget", "0.05", "--json",
                                str(tmp_path / "r.json")])
    assert bench.exit_code == 0, bench.output
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    notes = {r.get("layout"): r.get("session_note") for r in rows}
    assert notes["cpu"] is None and "CSE disabled" in notes["trt"]


def test_trt_target_gets_the_tensorrt_layout(digits, tmp_path):
    """--to trt (TensorRT can't be installed here: exit 3) still leaves the ONNX to build the
    engine from on the target, in TensorRT's layout."""
    result = runner.invoke(app, [
        "export", str(digits["ckpt"]), "--model", "tests.models:Digits8x8", "--to", "trt",
        "--precision", "fp32,int8", "--calib-data", str(digits["calib"]), "--out",
        str(tmp_path / "t")])
    assert result.exit_code == 3, result.output
    layouts = [r.get("layout") for r in Bundle.open(tmp_path / "t").artifacts
               if r["precision"] == "int8"]
    assert layouts == ["trt"]


def test_an_unknown_layout_lists_the_choices(digits, tmp_path):
    result = export(digits, tmp_path / "x", "--int8-layout", "gpu")
    assert result.exit_code == 2, result.output
    assert "auto, cpu, trt, both" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()
