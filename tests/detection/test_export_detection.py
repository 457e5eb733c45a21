"""Detection end to end through the CLI, as a user runs it: a Lightning raw-head detector and a
torchvision detector exported to the output contract, verified by IoU matching, scored by mAP,
and planted defects caught."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from tests.helpers import damaged_onnx_copy
from toolkit import runtime
from toolkit.bundle import Bundle
from toolkit.cli.app import app
from toolkit.demo.detection_data import make_detection_data

runner = CliRunner()
CONTRACT = {"num_detections": ("int64", 1), "boxes": ("float32", 3), "scores": ("float32", 2),
            "labels": ("int64", 2)}


def run(*args: Any):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("det-data")
    np.savez(root / "eval.npz", **make_detection_data(96, split="test", seed=3))
    np.savez(root / "calib.npz", x=make_detection_data(128, split="val", seed=4)["x"])
    bad = make_detection_data(8, split="test", seed=3)
    np.savez(root / "no_boxes.npz", x=bad["x"], labels=bad["labels"])
    return {"eval": root / "eval.npz", "calib": root / "calib.npz",
            "no_boxes": root / "no_boxes.npz"}


@pytest.fixture(scope="module")
def bundle(trained, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("det-bundle") / "shapes"
    result = run("export", trained["dir"] / "shapes_detector.ckpt",
                 "--model", "toolkit.demo.detector:ShapesDetector",
                 "--nms", "iou=0.5,score=0.3,max=20", "--to", "onnx,torchscript,pt2",
                 "--precision", "fp32,fp16,int8", "--calib-data", data["calib"],
                 "--eval-data", data["eval"], "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_every_artifact_follows_the_contract_at_two_batches(bundle, data):
    images = np.load(data["eval"])["x"]
    records = Bundle.open(bundle).artifacts
    assert {(r["format"], r["precision"]) for r in records} == {
        ("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"), ("torchscript", "fp32"),
        ("pt2", "fp32")}
    for record in records:
        with runtime.load(bundle, record["format"], precision=record["precision"]) as r:
            for batch in (1, 3):
                out = r.infer({"x": images[:batch]})
                for name, (dtype, rank) in CONTRACT.items():
                    assert out[name].dtype == dtype and out[name].ndim == rank
                    assert out[name].shape[0] == batch
                assert out["boxes"].shape[1] == 20  # K from --nms max=20
                for i, n in enumerate(out["num_detections"]):
                    assert 0 < n <= 20, (record["format"], n)
                    assert not out["scores"][i, n:].any() and not out["boxes"][i, n:].any()


def test_manifest_records_the_detector_parity_and_map(bundle):
    manifest = Bundle.open(bundle).manifest
    assert manifest["task"] == "detection"
    assert manifest["detection"]["convention"] == "raw-head"
    assert manifest["detection"]["nms"]["iou"] == 0.5
    graph = onnx.load(str(bundle / "model.onnx"))
    assert any(n.op_type == "NonMaxSuppression" for n in graph.graph.node)
    for record in manifest["artifacts"]:
        parity = record["parity"]
        assert parity["passed"] and parity["detection"]["matched"] > 0, record["format"]
        if record["precision"] == "fp32":
            assert parity["detection"]["worst_iou"] >= 0.99
    for precision in ("fp16", "int8"):
        accuracy = Bundle.open(bundle).artifact("onnx", precision)["accuracy"]
        assert accuracy["metric"] == "mAP@[.5:.95]" and accuracy["passed"]
        assert accuracy["fp32"]["map"] > 30  # a trained detector, not noise


def test_onnx_map_equals_eager_within_half_a_point(bundle, data, trained):
    from toolkit.parity.task_eval import detection_evaluation
    from toolkit.source.rebuild import source_model

    evaluation = detection_evaluation(str(data["eval"]), Bundle.open(bundle).inputs,
                                      {"max_detections": 20})
    with runtime.load(bundle, "onnx") as onnx_runner:
        onnx_map = evaluation(onnx_runner.infer)["map"]
    with runtime.model_runner(source_model(Bundle.open(bundle)), "eager") as eager:
        eager_map = evaluation(eager.infer)["map"]
    assert abs(onnx_map - eager_map) <= 0.5, (onnx_map, eager_map)


@pytest.mark.parametrize(("layer", "change", "expect"), [
    ("box_head.weight", lambda w: w * 1.05, "moved"),
    ("cls_head.bias", lambda b: b + np.float32(0.5), "score"),
])
def test_planted_defects_fail_verify_and_localize_names_the_layer(bundle, tmp_path, layer,
                                                                 change, expect):
    damaged = damaged_onnx_copy(bundle, tmp_path / "damaged", layer, change)
    source = Bundle.open(bundle).manifest["source"]
    result = run("verify", damaged, "--format", "onnx", "--precision", "fp32", "--localize",
                 "--against", source["path"], "--model", source["class"],
                 "--no-record", "--json", tmp_path / "r.json")
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    failures = " ".join(report["reports"][0]["detection"]["failures"])
    assert expect in failures, failures
    divergence = report["divergences"]["onnx/fp32"]
    assert divergence is not None and layer.split(".")[0] in json.dumps(divergence)


def test_detection_bad_input_is_one_line_and_exit_2(data, tmp_path, trained):
    ckpt = trained["dir"] / "shapes_detector.ckpt"
    cases = [
        (("export", "tests.models:small_cnn", "--nms", "iou=0.5", "--out", tmp_path / "a"),
         "--nms needs outputs 'boxes'"),
        (("export", "tests.models:small_cnn", "--task", "detection", "--out", tmp_path / "b"),
         "--task detection: the model returns"),
        (("export", ckpt, "--model", "toolkit.demo.detector:ShapesDetector", "--nms",
          "iou=0.5,score=0.3", "--eval-data", data["no_boxes"], "--out", tmp_path / "c"),
         "no 'boxes' array"),
        (("export", "torchvision.models:resnet18", "--model-arg", "weights=IMAGENET",
          "--out", tmp_path / "d"), "not a Python literal"),
        (("export", ckpt, "--model-arg", "num_classes=3", "--out", tmp_path / "e"),
         "--model-arg passes keyword arguments to a factory"),
        (("export", ckpt, "--model", "toolkit.demo.detector:ShapesDetector", "--nms",
          "iou=2", "--out", tmp_path / "f"), "iou must be in [0, 1]"),
    ]
    for args, needle in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output and "Traceback" not in result.output, result.output
        assert not Path(args[-1]).exists()  # nothing left behind


@pytest.mark.slow
def test_torchvision_detector_through_model_args(tmp_path):
    import torch

    # Random weights: seeded, so the (nearly tied) scores are the same on every run.
    torch.manual_seed(0)
    out = tmp_path / "frcnn"
    result = run("export", "torchvision.models.detection:fasterrcnn_mobilenet_v3_large_320_fpn",
                 "--model-arg", "weights=None", "--model-arg", "weights_backbone=None",
                 "--model-arg", "num_classes=4", "--model-arg", "box_score_thresh=0.0",
                 "--model-arg", "min_size=160", "--model-arg", "max_size=160",
                 "--input", "x:1-3x3x160x160", "--to", "onnx,torchscript,pt2",
                 "--precision", "fp32,fp16", "--out", out)
    # pt2 can't (one line, 'not-exported', 2) and the others go through; fp16's random-weight
    # scores all tie at the top-K cut, a vacuous check that fails (1): a made artifact failing
    # a check outranks a format that couldn't be made
    assert result.exit_code == 1, result.output
    assert "batched_nms" in result.output and "pytorch/vision#9306" in result.output
    manifest = Bundle.open(out).manifest
    assert manifest["detection"]["convention"] == "torchvision"
    formats = {r["format"]: r for r in manifest["artifacts"] if r["precision"] == "fp32"}
    assert set(formats) == {"onnx", "torchscript"}
    # fp16 of a model inside an ONNX Loop: a valid file (it loads and runs every sample) that
    # says it computes in fp32; with random weights its fp16 margin finds every score tied
    fp16 = Bundle.open(out).artifact("onnx", "fp16")
    assert not fp16["parity"]["errors"] and "computes in fp32" in " ".join(fp16["notes"])
    for record in formats.values():
        assert record["parity"]["passed"] and record["parity"]["detection"]["matched"] > 0
    with runtime.load(out, "onnx") as r:  # the batch stays dynamic through the ONNX Loop
        for batch in (1, 3):
            got = r.infer({"x": np.random.default_rng(0).random(
                (batch, 3, 160, 160), dtype=np.float32)})
            assert got["boxes"].shape == (batch, 100, 4)


@pytest.mark.slow
def test_detection_demo_runs_end_to_end(trained, tmp_path):
    """The demo's steps after training (which is `train_detector`, as the shared fixture's):
    the demo takes a checkpoint already in its folder, and says so."""
    import shutil

    out = tmp_path / "demo"
    out.mkdir()
    shutil.copy(trained["dir"] / "shapes_detector.ckpt", out)
    result = run("demo", "--task", "detection", "--quick", "--out", out)
    assert result.exit_code == 0, result.output
    assert "reusing" in result.output
    assert "mAP@[.5:.95]" in result.output and "eager PyTorch" in result.output
    manifest = Bundle.open(out / "bundle").manifest
    assert {(r["format"], r["precision"]) for r in manifest["artifacts"]} >= {
        ("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"), ("torchscript", "fp32")}
    assert all(r["parity"]["passed"] for r in manifest["artifacts"])
    assert all(r["bench"]["rows"] for r in manifest["artifacts"] if r["format"] == "onnx")


def test_map_from_a_datamodule_equals_map_from_the_npz(bundle, data):
    from toolkit.parity.task_eval import detection_evaluation

    inputs = Bundle.open(bundle).inputs
    from_npz = detection_evaluation(str(data["eval"]), inputs, {"max_detections": 20})
    from_dm = detection_evaluation("tests.detection.shapes_dm:ShapesEval", inputs,
                                   {"max_detections": 20})
    with runtime.load(bundle, "onnx") as r:
        assert from_dm(r.infer)["map"] == pytest.approx(from_npz(r.infer)["map"], abs=1e-9)


def test_a_raw_head_exported_without_nms_gets_a_hint(trained, tmp_path):
    result = run("export", trained["dir"] / "shapes_detector.ckpt",
                 "--model", "toolkit.demo.detector:ShapesDetector", "--to", "onnx",
                 "--out", tmp_path / "plain", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    notes = json.loads((tmp_path / "r.json").read_text())["notes"]
    assert any("add --nms" in note for note in notes)
    assert "detection" not in Bundle.open(tmp_path / "plain").manifest  # exported as it is


def test_labels_past_the_detectors_classes_are_bad_input(trained, data, tmp_path):
    """The raw head's scores say how many classes there are: a label past them can never be
    matched, and would drag both sides' mAP down alike (the gate then proves nothing)."""
    arrays = dict(np.load(data["eval"]))
    arrays["labels"] = np.where(arrays["labels"] >= 0, arrays["labels"] + 99, -1)
    np.savez(tmp_path / "eval.npz", **arrays)
    out = tmp_path / "b"
    result = run("export", trained["dir"] / "shapes_detector.ckpt",
                 "--model", "toolkit.demo.detector:ShapesDetector",
                 "--nms", "iou=0.5,score=0.3,max=20", "--to", "onnx", "--precision",
                 "fp32,fp16", "--eval-data", tmp_path / "eval.npz", "--out", out)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "labels of image 0 include" in text and "classes" in text
    assert not out.exists()
