"""Ultralytics YOLO, first-class: a Detect head built from Ultralytics' packaged YAML (random
weights, nothing downloaded) exports as a detector with no wrapper — decoded in the graph,
Ultralytics' NMS convention and defaults, said in the export's notes — and matches eager by
IoU in every format, at batch 1, 3 and the declared maximum."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("ultralytics", reason="ultralytics (a test dependency, in the dev extra) "
                    "is not installed")

from toolkit.cli.app import app

cli = CliRunner()
YOLO = "tests.detection.yolo_models:yolov8n"


@pytest.fixture(scope="module")
def yolo_bundle(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("yolo") / "v8n"
    result = cli.invoke(app, ["export", YOLO, "--input", "images:1-4x3x320x320", "--to",
                              "onnx,torchscript", "--out", str(out)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return out, result.output


def test_a_yolo_head_exports_as_a_detector_with_ultralytics_defaults(yolo_bundle):
    out, output = yolo_bundle
    manifest = json.loads((out / "manifest.json").read_text())
    detection = manifest["detection"]
    assert detection["convention"] == "yolo" and detection["classes"] == 80
    assert detection["nms"] == {"iou": 0.7, "score": 0.25, "layout": "yolo",
                                "multi_label": False, "agnostic": False}
    assert detection["max_detections"] == 300
    assert "Ultralytics' prediction defaults" in " ".join(output.split())
    for record in manifest["artifacts"]:
        assert record["parity"]["passed"], record["format"]
        assert record["parity"]["detection"]["matched"] > 0


def test_the_batch_stays_dynamic_through_decode_and_nms(yolo_bundle):
    out, _ = yolo_bundle
    import numpy as np

    with np.load(out / "golden.npz") as golden:
        batches = {golden[k].shape[0] for k in golden.files if "/in/" in k}
    assert batches == {1, 3, 4}  # and at the declared maximum, 4 (parity above)


def test_verify_agrees_and_nms_options_change_the_convention(yolo_bundle, tmp_path):
    out, _ = yolo_bundle
    assert cli.invoke(app, ["verify", str(out), "--no-record"]).exit_code == 0
    # the eager model rebuilt from the manifest gets the same decode and NMS
    eager = cli.invoke(app, ["verify", str(out), "--format", "eager", "--no-record"])
    assert eager.exit_code == 0, eager.output
    multi = tmp_path / "multi"
    result = cli.invoke(app, ["export", YOLO, "--input", "images:1x3x256x256", "--to",
                              "torchscript", "--nms",
                              "layout=yolo,score=0.3,multi_label=1,agnostic=1", "--out",
                              str(multi)])
    assert result.exit_code == 0, result.output
    nms = json.loads((multi / "manifest.json").read_text())["detection"]["nms"]
    assert nms["multi_label"] is True and nms["agnostic"] is True and nms["score"] == 0.3


def test_reduced_onnx_of_a_yolo_bundle(yolo_bundle, tmp_path, monkeypatch):
    """fp16 matches eager by IoU. INT8 keeps a layer in float only where the measured search
    put it (no rule names the DFL conv), and leaves the working directory empty: ONNX
    Runtime's symbolic shape inference gives up on this graph (a dynamic batch through NMS)
    and dumped
    sym_shape_infer_temp.onnx with 13 MB of external data there."""
    import shutil

    import numpy as np

    out = tmp_path / "v8n"
    shutil.copytree(yolo_bundle[0], out)
    calib = tmp_path / "calib.npz"
    np.savez(calib, images=np.random.default_rng(1).standard_normal(
        (8, 3, 320, 320)).astype(np.float32))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = cli.invoke(app, ["export", str(out), "--to", "onnx", "--precision",
                              "fp32,fp16,int8", "--calib-data", str(calib)])
    assert result.exit_code in (0, 1), result.output  # random weights: INT8 may miss its gate
    assert not list(cwd.iterdir()), list(cwd.iterdir())
    records = {a["precision"]: a for a in json.loads((out / "manifest.json").read_text())
               ["artifacts"] if a["format"] == "onnx"}
    assert records["fp16"]["parity"]["passed"], records["fp16"]["parity"]["summary"]
    assert records["fp16"]["parity"]["detection"]["matched"] > 0
    # no rule keeps the DFL conv in float any more: only the measured search keeps layers
    transform = records["int8"]["transform"]
    assert not transform["kept_fp32"] or transform["fallback"]["kept_fp32"], transform


def test_yolo11_is_recognised_the_same_way(tmp_path):
    out = tmp_path / "v11n"
    result = cli.invoke(app, ["export", "tests.detection.yolo_models:yolo11n", "--input",
                              "images:1x3x128x128", "--to", "torchscript", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["detection"]["convention"] == "yolo"
    assert manifest["artifacts"][0]["parity"]["passed"]


def test_an_end_to_end_head_is_taken_as_its_rows(tmp_path):
    """YOLOv10 (and YOLO26) one-to-one heads post-process themselves into [B,300,6] rows: no
    NMS is added, the rows over Ultralytics' conf are the detections, judged by IoU."""
    out = tmp_path / "v10"
    result = cli.invoke(app, ["export", "tests.detection.yolo_models:yolov10n_end2end",
                              "--input", "images:1x3x128x128", "--to", "torchscript",
                              "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["detection"]["convention"] == "rows"
    assert manifest["detection"]["max_detections"] == 300
    assert manifest["artifacts"][0]["parity"]["passed"]


def test_torch_export_keeps_the_batch_dynamic_after_eager_runs():
    """The Detect head caches its anchors with the last input's shape, batch included; the
    golden samples run it at several batches before pt2 is exported, and torch.export then
    guarded the batch on the cached shape ("Constraints violated (batch)"). The toolkit turns
    on Ultralytics' own dynamic switch (the AOTInductor compile after it is the pt2 format's
    own, covered by tests/formats; torch.export is where this failed)."""
    import torch

    from toolkit.detection.options import DetectionOptions
    from toolkit.export.common import dynamic_shapes, example_args
    from toolkit.source.detector_contract import as_detector
    from toolkit.source.load import load_model
    from toolkit.spec import parse_inputs

    loaded = as_detector(load_model(YOLO, inputs=parse_inputs(["images:1-4x3x128x128"])),
                         DetectionOptions())
    for batch in (1, 3, 4):  # what golden samples do before the export
        loaded.run(loaded.example_feed(batch=batch, seed=batch))
    program = torch.export.export(loaded.flat, example_args(loaded),
                                  dynamic_shapes=dynamic_shapes(loaded))
    [user_input] = program.graph_signature.user_inputs
    [images] = [node for node in program.graph.nodes if node.name == user_input]
    assert not isinstance(images.meta["val"].shape[0], int)  # still a symbol, not baked in
