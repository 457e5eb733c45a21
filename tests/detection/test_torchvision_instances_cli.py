"""torchvision's Mask R-CNN and Keypoint R-CNN through the CLI: recognised from their eager
output, exported with their masks and keypoints (never dropped in silence), judged per
matched detection by mask IoU and OKS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app

cli = CliRunner()
MODELS = "tests.detection.torchvision_instance_models"


def _export(out: Path, factory: str, *args: str) -> tuple[int, str]:
    result = cli.invoke(app, ["export", f"{MODELS}:{factory}", "--model-arg", "per_image=20",
                              "--input", "images:1-2x3x128x128", "--to", "onnx", "--out",
                              str(out), *args], env={"COLUMNS": "300"})
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("factory, output, measure", [("mask_rcnn", "masks", "mask_iou"),
                                                     ("keypoint_rcnn", "keypoints", "oks")])
def test_torchvision_instances_export_and_are_judged(tmp_path, factory, output, measure):
    code, text = _export(tmp_path / "b", factory)
    assert code == 0, text
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [o["name"] for o in manifest["outputs"]][-1] == output
    assert manifest["detection"]["instances"]["output"] == output
    assert "the contract plus" in text and "torchvision" in text
    # torch.export can't take it (the adapter says so): the tracing exporter at once, said
    assert manifest["artifacts"][0]["exporter"] == "torch.onnx torchscript (fallback)"
    assert "can't take this model (torchvision's batched_nms" in text
    parity = manifest["artifacts"][0]["parity"]["instances"]
    assert parity["passed"] and parity["judged"] > 10 and measure in parity["worst"]
    if output == "masks":
        assert manifest["detection"]["instances"]["mask_stride"] == 1


def test_torchvision_masks_dropped_only_when_asked_and_said():
    """--task detection keeps boxes alone, and the model's record says what was dropped."""
    from toolkit.detection.options import DetectionOptions
    from toolkit.source.detector_contract import as_detector
    from toolkit.source.load import load_model
    from toolkit.spec import parse_input

    loaded = load_model(f"{MODELS}:mask_rcnn", inputs=[parse_input("images:1x3x128x128")],
                        model_args={"per_image": 20})
    boxes_only = as_detector(loaded, DetectionOptions(task="detection"))
    assert [o.name for o in boxes_only.outputs] == ["num_detections", "boxes", "scores",
                                                     "labels"]
    assert boxes_only.detection["dropped"] == ["masks"]
    assert "masks are dropped, as asked" in boxes_only.detection["note"]


def test_a_task_the_detector_cannot_give_is_refused(tmp_path):
    code, text = _export(tmp_path / "b", "keypoint_rcnn", "--task", "segmentation")
    assert code == 2, text
    assert "returns keypoints" in text and "--task pose" in text
    assert not (tmp_path / "b").exists()
