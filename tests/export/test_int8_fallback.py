"""Accuracy-controlled INT8: a classifier with one hidden unit scaled 1000x (the same function
in fp32) collapses to chance in plain INT8, since per-tensor activation ranges serve the
outlier; the fallback measures which layer costs it, keeps that one in float and passes the
gate, and says what it kept, what it cost and what it reached."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app

cli = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    import torch

    from tests.models import train_outlier_digits

    root = tmp_path_factory.mktemp("outlier")
    model, splits = train_outlier_digits()
    torch.save(model.state_dict(), root / "weights.pt")
    np.savez(root / "calib.npz", x=splits["x_train"][:256])
    np.savez(root / "eval.npz", x=splits["x_test"], labels=splits["y_test"])
    return {"weights": root / "weights.pt", "calib": root / "calib.npz",
            "eval": root / "eval.npz", "root": root}


def _export(data: dict[str, Path], out: Path, *extra: str, eval_data: bool = True,
            to: str = "onnx") -> tuple[int, str, dict]:
    judged = ["--eval-data", str(data["eval"])] if eval_data else []
    result = cli.invoke(app, ["export", "tests.models:outlier_digits", "--model-arg",
                              f"path={str(data['weights'])!r}", "--input", "x:1-8x1x8x8",
                              "--to", to, "--precision", "fp32,int8", "--calib-data",
                              str(data["calib"]), *judged, "--out", str(out), *extra],
                        env={"COLUMNS": "300"})
    manifest = json.loads((out / "manifest.json").read_text()) if out.is_dir() else {}
    record = next((a for a in manifest.get("artifacts", []) if a["precision"] == "int8"
                   and a["format"] == "onnx"), {})
    return result.exit_code, " ".join(result.output.split()), record


def test_plain_int8_collapses_and_the_refusal_names_the_layer(data, tmp_path):
    """A budget too small for any layer: refused as plain INT8 is, naming the layer that
    would have to stay in float."""
    code, text, record = _export(data, tmp_path / "tiny", "--max-fallback", "0.01%")
    assert code == 1 and "accuracy-failed" in text
    assert record["accuracy"]["reduced"]["score"] < 0.5 < record["accuracy"]["fp32"]["score"]
    fallback = record["transform"]["fallback"]
    assert not fallback["passed"] and fallback["kept_fp32"] == []
    assert fallback["ranking"][0]["op"] == "Gemm"
    assert fallback["ranking"][0]["node"] in text  # the refusal names it


def test_the_fallback_keeps_the_outliers_reader_in_float_and_passes(data, tmp_path):
    """ONNX, and the OpenVINO IR converted from it: both carry the one float layer."""
    code, text, record = _export(data, tmp_path / "on", to="onnx,openvino")
    assert code == 0, text
    fallback = record["transform"]["fallback"]
    assert fallback["passed"] and len(fallback["kept_fp32"]) == 1
    assert fallback["kept_mac_share"] < 0.05
    assert fallback["ranking"][0]["node"] == fallback["kept_fp32"][0]
    assert set(fallback["kept_fp32"]) <= set(record["transform"]["kept_fp32"])
    accuracy = record["accuracy"]
    assert accuracy["passed"] and accuracy["full_int8"]["score"] < 0.5
    assert accuracy["reduced"]["score"] >= accuracy["fp32"]["score"] - 0.01
    assert record["parity"]["passed"]
    assert "accuracy-controlled INT8" in text and "of the MACs" in text
    if "latency" in fallback:
        assert fallback["latency"]["p50_ms"] > 0
    # the file on disk is the one that passed: ONNX Runtime agrees with the record
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "on" / "model.int8.onnx"),
                                   providers=["CPUExecutionProvider"])
    split = np.load(data["eval"])
    logits = np.concatenate([session.run(None, {"x": split["x"][i:i + 8]})[0]
                             for i in range(0, len(split["x"]), 8)])
    assert (logits.argmax(1) == split["labels"]).mean() == pytest.approx(
        accuracy["reduced"]["score"])
    _inspect_layers_shows_what_stayed_in_float(tmp_path / "on", fallback["kept_fp32"], tmp_path)


def test_openvino_int8_by_nncf_hands_over_when_its_control_breaks_the_budget(data, tmp_path):
    """--openvino-quantizer nncf: the IR is NNCF's. Plain, it misses the gate (by less than the
    ONNX: its calibration is not plain minmax); its accuracy control, ranking by output
    differences, reverts every layer to float, past --max-fallback: the IR is then converted
    from the Q/DQ ONNX, whose search keeps the one layer, and the note says so."""
    pytest.importorskip("nncf", reason="the nncf extra is not installed")
    out = tmp_path / "nncf"
    code, text, _ = _export(data, out, "--openvino-quantizer", "nncf", to="openvino")
    assert code == 0, text
    manifest = json.loads((out / "manifest.json").read_text())
    record = next(a for a in manifest["artifacts"]
                  if a["format"] == "openvino" and a["precision"] == "int8")
    assert record["from_onnx"] == "model.int8.onnx" and record["accuracy"]["passed"]
    handed = next(n for n in record["notes"] if "NNCF's accuracy control" in n)
    assert "outside --max-fallback" in handed and "of the MACs" in handed
    onnx_int8 = next(a for a in manifest["artifacts"]
                     if a["format"] == "onnx" and a["precision"] == "int8")
    assert len(onnx_int8["transform"]["fallback"]["kept_fp32"]) == 1


def test_without_eval_data_the_parity_preset_is_the_gate(data, tmp_path):
    """No labels: plain INT8 fails parity on the real-data golden samples, and the same
    search keeps the layer in float until the int8 preset holds, as verify then confirms."""
    code, text, record = _export(data, tmp_path / "parity", eval_data=False)
    assert code == 0, text
    fallback = record["transform"]["fallback"]
    assert fallback["gate"] == "parity" and fallback["passed"]
    assert len(fallback["kept_fp32"]) == 1 and fallback["kept_mac_share"] < 0.05
    assert record["parity"]["passed"] and "accuracy" not in record
    assert "missed the parity gate" in text


@pytest.mark.parametrize("flag,bad", [("--max-fallback", "-1"), ("--max-fallback", "5x"),
                                      ("--max-fallback", "200%"), ("--max-fallback", "abc"),
                                      ("--max-fallback-seconds", "0"),
                                      ("--max-fallback-seconds", "nan")])
def test_a_bad_budget_is_one_line_and_exit_2(data, tmp_path, flag, bad):
    code, text, _ = _export(data, tmp_path / "bad", flag, bad)
    assert code == 2 and flag in text and "Traceback" not in text
    assert not (tmp_path / "bad").exists()


def test_budget_forms():
    from toolkit.export.job import FALLBACK_LAYER_CAP, fallback_budget

    assert fallback_budget("5%") == (0.05, FALLBACK_LAYER_CAP)
    assert fallback_budget("8") == (1.0, 8)
    assert fallback_budget("0") == fallback_budget("0%") == (0.0, 0)  # off: refused as before


def _inspect_layers_shows_what_stayed_in_float(out: Path, kept: list[str], tmp_path: Path):
    """`inspect --layers`: ONNX read from its graph, OpenVINO from its runtime model on this
    CPU; both name the one layer the search kept in float, at its share of the MACs."""
    result = cli.invoke(app, ["inspect", str(out), "--layers", "--json", str(tmp_path / "l.json")],
                        env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = {(a["format"], a["precision"]): a["layers"]
            for a in json.loads((tmp_path / "l.json").read_text())["artifacts"]}
    for fmt in ("onnx", "openvino"):
        report = rows[(fmt, "int8")]
        floats = [layer["name"] for layer in report["layers"] if layer["precision"] != "int8"]
        assert floats == kept, (fmt, report)
        assert 0 < report["mac_share"]["fp32"] < 0.05 and report["layer_counts"]["int8"] == 3
        assert [k["node"] for k in report["fallback"]["kept_fp32"]] == kept
        assert set(rows[(fmt, "fp32")]["layer_counts"]) == {"fp32"}
    assert "runtime model" in rows[("openvino", "int8")]["source"]
    assert kept[0] in result.output and "of MACs" in result.output


def test_openvino_quantizer_choices(data, tmp_path, monkeypatch):
    """A quantiser that isn't one is exit 2 before anything is written; NNCF asked for where
    it isn't installed is exit 3 naming the extra."""
    import sys

    code, text, _ = _export(data, tmp_path / "bad", "--openvino-quantizer", "magic",
                            to="openvino")
    assert code == 2 and "--openvino-quantizer" in text and not (tmp_path / "bad").exists()
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf fails: not installed
    code, text, _ = _export(data, tmp_path / "missing", "--openvino-quantizer", "nncf",
                            to="openvino")
    assert code == 3 and "toolkit[nncf]" in text, text
    assert not (tmp_path / "missing").exists()  # said before anything is exported


def test_the_tensorrt_layout_gets_the_same_search(data, tmp_path):
    """--int8-layout trt (symmetric int8 Q/DQ, what TensorRT builds from): the same search,
    gated on ONNX Runtime, leaves the kept layer without Q/DQ, which TensorRT then builds in
    float; the rest stays int8 Q/DQ."""
    import onnx

    out = tmp_path / "trt"
    code, text, _ = _export(data, out, "--int8-layout", "trt")
    assert code == 0, text
    manifest = json.loads((out / "manifest.json").read_text())
    record = next(a for a in manifest["artifacts"] if a.get("layout") == "trt")
    fallback = record["transform"]["fallback"]
    assert fallback["passed"] and len(fallback["kept_fp32"]) == 1 and record["parity"]["passed"]
    graph = onnx.load(str(out / record["path"])).graph
    producers = {o: n for n in graph.node for o in n.output}
    by_name = {n.name: n for n in graph.node}
    kept = by_name[fallback["kept_fp32"][0]]
    assert all(producers[i].op_type != "DequantizeLinear" for i in kept.input if i in producers)
    zero_points = {i.name: i.data_type for i in graph.initializer if "zero_point" in i.name}
    assert onnx.TensorProto.INT8 in zero_points.values()  # symmetric int8, no uint8
    assert onnx.TensorProto.UINT8 not in zero_points.values()
