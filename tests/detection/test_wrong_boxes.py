"""Detection parity that can't pass a wrong box: tiny boxes are not excused by their shift,
normalised boxes are refused or converted, RT-DETR's rows are read in their own convention, and
a YOLO read of something that isn't a YOLO prediction is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.detection.match import (
    MAX_RELATIVE_SHIFT,
    MIN_BOX_SIZE,
    PRESETS,
    check_pixel_boxes,
    match_detections,
    pairwise_iou,
)
from toolkit.detection.options import NmsOptions, parse_nms_option
from toolkit.errors import UsageError

from .test_match import batch

cli = CliRunner()


def _one(box, score=0.8, label=1):
    return batch([([list(box)], [score], [label])], k=2)


def test_tiny_boxes_far_apart_are_not_the_same_box():
    """RT-DETR's normalised boxes read as pixels: two 0.1-px boxes at IoU 0 were within the
    fp32 shift of 0.05 px, and parity said PASS at worst IoU 0.0."""
    ref = _one([0.312, 0.212, 0.412, 0.312])
    act = _one([0.35, 0.25, 0.45, 0.35])
    result = match_detections(ref, act)
    assert not result.passed, result.summary()


def test_a_shift_small_for_its_box_still_passes():
    # fp16: a 40-px box moved by 0.8 px (IoU 0.96 < 0.99 for fp32 but judged as fp16's 0.9)
    ref = _one([10.0, 10.0, 50.0, 50.0])
    assert match_detections(ref, _one([10.8, 10.0, 50.8, 50.0]), tolerance="fp16").passed
    # fp32: a 3-px box moved by 0.04 px is the same box (IoU 0.97 < 0.99)
    assert match_detections(_one([1.0, 1.0, 4.0, 4.0]), _one([1.04, 1.0, 4.04, 4.0])).passed


def _corners(x, y, w, h):
    return [x, y, x + w, y + h]


boxes = st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0.01, 1), st.floats(0.01, 1))


@settings(max_examples=300, deadline=None)
@given(ref=boxes, act=boxes, scale=st.sampled_from([1.0, 10.0, 64.0, 640.0, 4096.0]),
       precision=st.sampled_from(sorted(PRESETS)), dx=st.floats(-0.2, 0.2),
       n=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_a_pair_under_the_iou_threshold_passes_only_on_a_small_shift_of_a_real_box(
        ref, act, scale, precision, dx, n, seed):
    """Property: whatever the box sizes, coordinate scale and detection order, a judged pair
    with IoU under the preset's threshold passes only when its box is at least MIN_BOX_SIZE
    pixels and its shift within box_atol and a tenth of the box."""
    tol = PRESETS[precision]
    a = np.array(_corners(*ref)) * scale
    # a near copy half the time, so pairs around the threshold are drawn too
    b = (a + dx * np.array([1, 0, 1, 0]) * (a[2] - a[0]) if seed % 2
         else np.array(_corners(*act)) * scale)
    iou = float(pairwise_iou(a[None], b[None])[0, 0])
    if iou >= tol.min_iou:
        return
    # n - 1 other, far-away detections in a random order on each side
    others = [[5000.0 + 100 * j, 5000.0, 5050.0 + 100 * j, 5050.0] for j in range(n - 1)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    ref_boxes = [list(a), *others]
    act_boxes = [list(b), *others]
    scores = list(np.linspace(0.9, 0.5, n))
    expected = batch([(ref_boxes, scores, [1] * n)], k=n + 1)
    actual = batch([([act_boxes[i] for i in order], [scores[i] for i in order], [1] * n)],
                   k=n + 1)
    size = max(a[2] - a[0], a[3] - a[1])
    shift = float(np.abs(np.float32(a) - np.float32(b)).max())
    result = match_detections(expected, actual, tolerance=tol)
    small = size >= MIN_BOX_SIZE and shift <= min(tol.box_atol, MAX_RELATIVE_SHIFT * size)
    # the pair is matched only on a small shift of a real box (the far-away others always)
    assert result.matched == n - 1 + int(small), (a, b, iou, shift, result.summary())
    if n == 1:
        assert result.passed == small
    if scale <= 1.0:  # sub-pixel boxes: never excused
        assert not small


def test_boxes_all_in_0_1_on_a_large_input_are_refused_naming_the_convention():
    normalised = _one([0.3, 0.2, 0.4, 0.3])
    with pytest.raises(UsageError, match="normalised cx, cy, w, h"):
        check_pixel_boxes(normalised, (640, 480))
    check_pixel_boxes(normalised, (32, 32))  # a tiny input may have tiny boxes
    check_pixel_boxes(_one([30.0, 20.0, 40.0, 30.0]), (640, 480))


def test_rows_take_an_explicit_box_format():
    nms = parse_nms_option("layout=rows,box=cxcywh-norm,score=0.1")
    assert nms.box_format == "cxcywh-norm"
    assert parse_nms_option(nms.to_option()) == nms
    with pytest.raises(UsageError, match="box must be one of"):
        parse_nms_option("layout=rows,box=yxyx")
    with pytest.raises(UsageError, match="describes layout=rows"):
        NmsOptions(layout="yolo", box_format="xyxy")


def test_rows_convert_normalised_centre_boxes_to_corner_pixels():
    from toolkit.detection.postprocess import RowsToContract

    rows = torch.tensor([[[0.5, 0.5, 0.2, 0.1, 0.9, 3.0], [0.1, 0.1, 0.1, 0.1, 0.05, 1.0]]])
    images = torch.zeros(1, 3, 100, 200)  # H 100, W 200
    num, boxes, scores, labels = RowsToContract(lambda x: (rows,), 0, 0.1, 3,
                                                box_format="cxcywh-norm")(images)
    assert num.tolist() == [1] and labels[0].tolist() == [3, 0, 0]
    assert boxes[0, 0].tolist() == pytest.approx([80.0, 45.0, 120.0, 55.0])
    assert boxes[0, 1:].abs().sum() == 0


def _export(tmp_path, name, *extra):
    out = tmp_path / name
    result = cli.invoke(app, ["export", "tests.models:normalised_rows_detector", "--input",
                              "images:1-2x3x128x128", "--task", "detection", "--to", "onnx",
                              "--out", str(out), *extra])
    return result, out


def test_normalised_rows_read_as_pixels_are_refused_and_converted_when_said(tmp_path):
    """The wrong convention never passes: read as xyxy pixels it is exit 2 naming the likely
    convention; with box=cxcywh-norm the rows become pixel boxes, matched by IoU."""
    wrong, out = _export(tmp_path, "wrong", "--nms", "layout=rows,score=0.0")
    assert wrong.exit_code == 2, wrong.output
    assert "box=cxcywh-norm" in " ".join(wrong.output.split())
    assert not out.exists()
    right, out = _export(tmp_path, "right", "--nms", "layout=rows,box=cxcywh-norm,score=0.0")
    assert right.exit_code == 0, right.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["detection"]["box"] == "cxcywh-norm"
    golden = np.load(out / "golden.npz")
    boxes = [golden[k] for k in golden.files if k.endswith("boxes")]
    assert boxes and max(float(b.max()) for b in boxes) > 10.0  # pixels
    record = manifest["artifacts"][0]
    assert record["parity"]["passed"]
    assert record["parity"]["detection"]["worst_iou"] > 0.99


def test_a_yolo_read_of_rows_is_refused(tmp_path):
    """[B,K,6] rows read as a YOLO prediction make class indices into 'scores': refused."""
    result, out = _export(tmp_path, "yolo", "--nms", "layout=yolo")
    assert result.exit_code == 2, result.output
    assert "outside [0, 1]" in " ".join(result.output.split())
    assert not out.exists()


@pytest.fixture(scope="module")
def rtdetr():
    pytest.importorskip("ultralytics")
    from tests.detection.yolo_models import rtdetr_l

    return rtdetr_l()


def test_ultralytics_rtdetr_is_recognised_with_its_convention(rtdetr):
    """RT-DETR's decoder is found in the model: its rows are normalised cx, cy, w, h, score,
    class, and the contract holds them as xyxy input pixels."""
    from toolkit.detection.options import DetectionOptions
    from toolkit.source.detector_contract import as_detector
    from toolkit.source.wrapper import LoadedModel
    from toolkit.spec import parse_input

    spec = parse_input("images:1x3x128x128")
    loaded = LoadedModel(module=rtdetr, inputs=[spec], call_style="positional")
    detector = as_detector(loaded, DetectionOptions(
        task="detection", nms=NmsOptions(score_threshold=0.0, max_detections=300,
                                         layout="rows")))
    assert detector.detection["convention"] == "rows"
    assert detector.detection["box"] == "cxcywh-norm"
    images = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        rows = rtdetr(images)
        num, boxes, scores, labels = detector.module(images)
    order = rows[0, :, 4].argsort(descending=True, stable=True)
    want = rows[0, order]
    cx, cy, w, h = (want[:, i] * 128 for i in range(4))
    assert int(num[0]) == 300

    def rows_in_order(score: torch.Tensor, box: torch.Tensor, label: torch.Tensor) -> np.ndarray:
        """Best score first; rows whose scores tie exactly (random weights give some) in box
        order, which the contract's sort need not keep."""
        table = torch.cat([score[:, None], box, label[:, None].float()], dim=1).numpy()
        return table[np.lexsort([table[:, i] for i in range(5, 0, -1)] + [-table[:, 0]])]

    got = rows_in_order(scores[0], boxes[0], labels[0])
    expected = rows_in_order(want[:, 4], torch.stack(
        [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1), want[:, 5])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert boxes.max() > 1.0
    with pytest.raises(UsageError, match="outside \\[0, 1\\]"):
        as_detector(loaded, DetectionOptions(task="detection", nms="layout=yolo"))


@pytest.mark.slow
def test_an_ultralytics_rtdetr_exports_and_matches_eager_by_iou_in_pixels(tmp_path):
    """rtdetr-l.yaml at 128 px (random weights: scores about 0.04, so a low score and all 300
    rows): recognised from the model, exported to ONNX, matched by IoU in input pixels
    (about 37 s on the 2-core EPYC: a 128 MiB model)."""
    pytest.importorskip("ultralytics")
    out = tmp_path / "rtdetr"
    result = cli.invoke(app, ["export", "tests.detection.yolo_models:rtdetr_l", "--input",
                              "images:1x3x128x128", "--task", "detection", "--nms",
                              "layout=rows,score=0.03,max=300", "--to", "onnx", "--out",
                              str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["detection"]["convention"], manifest["detection"]["box"]) == (
        "rows", "cxcywh-norm")
    detection = manifest["artifacts"][0]["parity"]["detection"]
    assert detection["matched"] == detection["reference"] > 0
    assert detection["worst_iou"] > 0.99
    golden = np.load(out / "golden.npz")
    assert max(float(golden[k].max()) for k in golden.files if k.endswith("boxes")) > 100


def test_a_raw_head_with_normalised_boxes_is_refused_before_any_artifact(tmp_path):
    """NMS appended to boxes in 0-1 on a 128-px input: the golden check refuses them, naming
    the convention, rather than judging IoU in units where every box is sub-pixel."""
    out = tmp_path / "raw"
    result = cli.invoke(app, ["export", "tests.models:normalised_raw_head", "--input",
                              "images:1-2x3x128x128", "--nms", "iou=0.5,score=0.1", "--to",
                              "onnx", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "every box coordinate lies in [0, 1]" in " ".join(result.output.split())
    assert not out.exists()


def test_transformers_rtdetr_is_recognised_and_matches_eager_by_iou_in_pixels(tmp_path):
    """transformers' RTDetrForObjectDetection (tiny config): logits and normalised cx, cy, w,
    h boxes per query, taken as its own post-processing does (sigmoid, top K pairs, no NMS)
    and judged in input pixels. (Its dynamo ONNX differs from eager here, and parity says so:
    only TorchScript is asserted.)"""
    pytest.importorskip("transformers")
    out = tmp_path / "hf_rtdetr"
    result = cli.invoke(app, ["export", "tests.source.hf_models:tiny_rtdetr", "--input",
                              "pixel_values:1x3x128x128", "--task", "detection", "--nms",
                              "layout=rows,score=0.0,max=20", "--to", "torchscript", "--out",
                              str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["detection"]["convention"], manifest["detection"]["box"]) == (
        "rows", "cxcywh-norm")
    detection = manifest["artifacts"][0]["parity"]["detection"]
    assert detection["matched"] == detection["reference"] == 20
    golden = np.load(out / "golden.npz")
    assert max(float(golden[k].max()) for k in golden.files if k.endswith("boxes")) > 10
