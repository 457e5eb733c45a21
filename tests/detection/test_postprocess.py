"""Detection post-processing: the output contract in eager, TorchScript and ONNX Runtime.

Real torchvision detectors (random weights, rescaled so their scores differ) and real ONNX
Runtime sessions; exported outputs are compared with eager by IoU and label, never
elementwise, since near-tied detections may swap places.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from toolkit.backends.onnx import nms as _onnx_nms  # noqa: F401 - registers ONNX's NMS node
from toolkit.demo.liven import liven
from toolkit.detection.match import pairwise_iou as _iou
from toolkit.detection.postprocess import (
    OUTPUT_NAMES,
    ClassAwareNMS,
    RawHeadNMS,
    TorchvisionDetectionAdapter,
    contract_dynamic_axes,
    find_raw_head_outputs,
    looks_like_torchvision_detections,
)
from toolkit.errors import UsageError

H, W = 128, 160  # not square: boxes must come back in these pixels whatever the model resizes to
K = 20


# ---------------------------------------------------------------------------- helpers


def _session(model_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # Loop subgraphs make ORT chatty about renamed initialisers
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])



def _matched_fraction(want: Any, got: Any, iou_min: float = 0.9, score_tol: float = 1e-3) -> float:
    """Greedy per-image matching of `got` to `want` (both contract tuples, numpy or torch):
    same label, IoU >= iou_min, score within score_tol. The fraction of `want` matched."""
    want = [np.asarray(t) for t in want]
    got = [np.asarray(t) for t in got]
    matched = total = 0
    for i in range(len(want[0])):
        n_w, n_g = int(want[0][i]), int(got[0][i])
        wb, ws, wl = want[1][i, :n_w], want[2][i, :n_w], want[3][i, :n_w]
        gb, gs, gl = got[1][i, :n_g], got[2][i, :n_g], got[3][i, :n_g]
        used = np.zeros(n_g, dtype=bool)
        ious = _iou(wb, gb) if n_w and n_g else np.zeros((n_w, n_g))
        # Zero-area boxes (clipped at the image border) have IoU 0 even with themselves.
        same = np.abs(wb[:, None] - gb[None]).max(-1, initial=0) <= 0.5
        ious = np.where(same, np.maximum(ious, 1.0), ious)
        for j in np.argsort(-ws):
            ok = (~used) & (gl == wl[j]) & (ious[j] >= iou_min) & (np.abs(gs - ws[j]) <= score_tol)
            if ok.any():
                used[np.flatnonzero(ok)[np.argmax(ious[j][ok])]] = True
                matched += 1
        total += n_w
    return matched / max(total, 1)


def _assert_contract(out: Any, batch: int, k: int) -> None:
    num, boxes, scores, labels = (torch.as_tensor(np.asarray(t)) for t in out)
    assert num.dtype == torch.int64 and tuple(num.shape) == (batch,)
    assert boxes.dtype == torch.float32 and tuple(boxes.shape) == (batch, k, 4)
    assert scores.dtype == torch.float32 and tuple(scores.shape) == (batch, k)
    assert labels.dtype == torch.int64 and tuple(labels.shape) == (batch, k)
    for i in range(batch):
        n = int(num[i])
        assert 0 <= n <= k
        assert not boxes[i, n:].any() and not scores[i, n:].any() and not labels[i, n:].any()
        if n > 1:
            assert torch.all(scores[i, : n - 1] >= scores[i, 1:n]), "not sorted by score"




def _build(name: str) -> nn.Module:
    from torchvision.models import detection

    common: dict[str, Any] = dict(weights=None, weights_backbone=None, num_classes=4)
    if name == "ssdlite320_mobilenet_v3_large":
        return detection.ssdlite320_mobilenet_v3_large(score_thresh=0.0, **common)
    if name == "fasterrcnn_mobilenet_v3_large_320_fpn":
        return detection.fasterrcnn_mobilenet_v3_large_320_fpn(box_score_thresh=0.0, **common)
    # FCOS's default 800 px resize is too slow for a unit test; the route is the same.
    return detection.fcos_resnet50_fpn(score_thresh=0.0, min_size=H, max_size=W, **common)


MODELS = ["ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn",
          pytest.param("fcos_resnet50_fpn", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(3, 3, H, W, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module", params=MODELS)
def detector(request: pytest.FixtureRequest, images: torch.Tensor) -> dict[str, Any]:
    """A torchvision detector, its adapter and the eager reference on batch 3."""
    torch.manual_seed(0)
    model = liven(_build(request.param).eval(), images[:1])
    adapter = TorchvisionDetectionAdapter(model, max_detections=K).eval()
    with torch.no_grad():
        raw = model(list(images[:1]))  # the model's own output for the first image
        ref = adapter(images)
    return {"name": request.param, "model": model, "adapter": adapter, "raw": raw, "ref": ref}


# ------------------------------------------------------- detectors with their own NMS


def test_looks_like_torchvision_detections(detector: dict[str, Any]) -> None:
    assert looks_like_torchvision_detections(detector["raw"])
    assert not looks_like_torchvision_detections(detector["ref"])  # the padded contract
    assert not looks_like_torchvision_detections([])
    assert not looks_like_torchvision_detections({"boxes": torch.zeros(1, 4)})
    assert not looks_like_torchvision_detections(
        [{"boxes": torch.zeros(2, 4), "scores": torch.zeros(3), "labels": torch.zeros(2)}])


def test_eager_adapter_follows_the_contract(detector: dict[str, Any]) -> None:
    ref, raw = detector["ref"], detector["raw"]
    _assert_contract(ref, batch=3, k=K)
    num, boxes, scores, labels = ref
    for i, det in enumerate(raw):
        assert int(num[i]) == min(len(det["scores"]), K) > 0
        # The K best of the model's own detections, in input pixels (not the resized ones).
        # (Batched and single-image convolutions differ in the last bits.)
        top = torch.argsort(det["scores"], descending=True)[:K]
        torch.testing.assert_close(scores[i, : num[i]], det["scores"][top])
        torch.testing.assert_close(boxes[i, : num[i]], det["boxes"][top], rtol=1e-4, atol=1e-2)
        assert torch.equal(labels[i, : num[i]], det["labels"][top])
    assert boxes[..., 0::2].max() <= W and boxes[..., 1::2].max() <= H
    assert boxes[..., 0::2].max() > W / 2 and boxes[..., 1::2].max() > H / 2
    assert len(torch.unique(scores[num > 0])) > K, "scores tie: the parity checks would be vacuous"


def test_torchscript_adapter_matches_eager(detector: dict[str, Any], images: torch.Tensor) -> None:
    scripted = torch.jit.script(detector["adapter"])
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)  # the artifact round-trips
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        out = loaded(images)
    _assert_contract(out, batch=3, k=K)
    assert _matched_fraction(detector["ref"], out) == 1.0


def test_onnx_adapter_has_a_dynamic_batch_and_matches_eager(
    detector: dict[str, Any], images: torch.Tensor
) -> None:
    module = detector["adapter"].export_module(images[:1])
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (images,), buffer, dynamo=False, opset_version=17,
                          input_names=["images"], output_names=list(OUTPUT_NAMES),
                          dynamic_axes=contract_dynamic_axes(["images"]))
    proto = onnx.load_from_string(buffer.getvalue())
    assert "Loop" in {node.op_type for node in proto.graph.node}
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = _session(buffer.getvalue())
    out3 = session.run(None, {"images": images.numpy()})
    _assert_contract(out3, batch=3, k=K)
    assert _matched_fraction(detector["ref"], out3) >= 0.95
    out1 = session.run(None, {"images": images[1:2].numpy()})
    _assert_contract(out1, batch=1, k=K)
    assert _matched_fraction([t[1:2] for t in detector["ref"]], out1) >= 0.95


def test_torch_export_fails_where_the_adapters_say_it_does(images: torch.Tensor) -> None:
    """The adapters declare that torch.export can't take them, so the ONNX route goes to the
    tracing exporter at once and pt2 stops before a trace: checked here against torch itself,
    at a fixed batch, so the declaration goes when upstream lifts the limit. (SSDlite: the
    cheapest of the three; their batched_nms is one torchvision function.)"""
    adapter = TorchvisionDetectionAdapter(_build("ssdlite320_mobilenet_v3_large").eval(), K)
    assert "batched_nms" in adapter.toolkit_torch_export_limit
    with pytest.raises(Exception, match="data-dependent"):
        torch.export.export(adapter, (images[:1],))


def test_adapter_rejects_a_bad_max_detections() -> None:
    with pytest.raises(UsageError, match="max_detections"):
        TorchvisionDetectionAdapter(nn.Identity(), max_detections=0)


# ------------------------------------------------------------ raw-head detectors + NMS


def _raw_head(batch: int, n: int = 300, classes: int = 4, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, n, 2, generator=g) * 100
    wh = torch.rand(batch, n, 2, generator=g) * 30 + 2
    scores = torch.rand(batch, n, classes, generator=g)
    return torch.cat([xy, xy + wh], dim=-1), scores


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou: float, score: float, k: int) -> list:
    """Plain per-image, per-class greedy NMS, then the K best: the reference semantics."""
    kept = []
    for c in range(scores.shape[1]):
        idx = [i for i in np.argsort(-scores[:, c], kind="stable") if scores[i, c] > score]
        while idx:
            best, idx = idx[0], idx[1:]
            kept.append((float(scores[best, c]), c, best))
            if idx:
                idx = [i for i, v in zip(idx, _iou(boxes[[best]], boxes[idx])[0]) if v <= iou]
    return sorted(kept, reverse=True)[:k]


@pytest.fixture(scope="module")
def nms_onnx() -> tuple[ClassAwareNMS, bytes]:
    nms = ClassAwareNMS(iou_threshold=0.45, score_threshold=0.3, max_detections=K).eval()
    boxes, scores = _raw_head(2)
    buffer = io.BytesIO()
    torch.onnx.export(nms, (boxes, scores), buffer, dynamo=False, opset_version=17,
                      input_names=["raw_boxes", "raw_scores"], output_names=list(OUTPUT_NAMES),
                      dynamic_axes=contract_dynamic_axes(["raw_boxes", "raw_scores"]))
    return nms, buffer.getvalue()


def test_class_aware_nms_matches_plain_greedy_nms() -> None:
    boxes, scores = _raw_head(3, n=120)
    scores[1] *= 0.31  # image 1: fewer than K candidates survive the score threshold
    out = ClassAwareNMS(0.45, 0.3, K)(boxes, scores)
    _assert_contract(out, batch=3, k=K)
    num, out_boxes, out_scores, out_labels = out
    assert int(num[1]) < K
    for i in range(3):
        want = _greedy_nms(boxes[i].numpy(), scores[i].numpy(), 0.45, 0.3, K)
        n = int(num[i])
        assert n == len(want)
        assert np.allclose(out_scores[i, :n].numpy(), [w[0] for w in want])
        assert out_labels[i, :n].tolist() == [w[1] for w in want]
        assert torch.equal(out_boxes[i, :n], boxes[i, [w[2] for w in want]])


def test_class_aware_nms_keeps_one_box_per_class_and_handles_no_candidates() -> None:
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0.0, 0, 10, 10.5]]])
    scores = torch.tensor([[[0.9, 0.0], [0.8, 0.7]]])  # box 1 loses class 0, wins class 1
    num, out_boxes, out_scores, out_labels = ClassAwareNMS(0.5, 0.1, 3)(boxes, scores)
    assert num.tolist() == [2]
    assert out_labels[0].tolist() == [0, 1, 0] and out_scores[0, :2].tolist() == pytest.approx(
        [0.9, 0.7])
    none = ClassAwareNMS(0.5, 0.95, 3)(boxes, scores)
    _assert_contract(none, batch=1, k=3)
    assert none[0].tolist() == [0]


def test_single_label_and_class_agnostic_conventions() -> None:
    """Multi-label (torchvision, TensorRT) keeps every (box, class) pair above the score;
    single-label (Ultralytics) a box's best class only; agnostic one NMS across classes."""
    apart = torch.tensor([[[0.0, 0, 10, 10], [20.0, 0, 30, 10]]])
    scores = torch.tensor([[[0.9, 0.6], [0.2, 0.7]]])
    multi = ClassAwareNMS(0.5, 0.3, 4)(apart, scores)
    assert multi[0].tolist() == [3] and multi[3][0, :3].tolist() == [0, 1, 1]  # box 0 twice
    single = ClassAwareNMS(0.5, 0.3, 4, multi_label=False)(apart, scores)
    assert single[0].tolist() == [2] and single[3][0, :2].tolist() == [0, 1]
    overlapping = torch.tensor([[[0.0, 0, 10, 10], [0.0, 0, 10, 10.5]]])
    two_classes = torch.tensor([[[0.9, 0.0], [0.0, 0.8]]])
    assert ClassAwareNMS(0.5, 0.3, 4)(overlapping, two_classes)[0].tolist() == [2]
    agnostic = ClassAwareNMS(0.5, 0.3, 4, agnostic=True)(overlapping, two_classes)
    assert agnostic[0].tolist() == [1] and agnostic[3][0, 0].item() == 0
    assert agnostic[2][0, 0].item() == pytest.approx(0.9)


@pytest.mark.parametrize("conventions", [{"multi_label": False}, {"agnostic": True}])
def test_each_convention_exports_to_onnx_and_scripts_with_the_same_rows(conventions) -> None:
    nms = ClassAwareNMS(0.45, 0.3, K, **conventions).eval()
    boxes, scores = _raw_head(2, seed=4)
    buffer = io.BytesIO()
    torch.onnx.export(nms, (boxes, scores), buffer, dynamo=False, opset_version=17,
                      input_names=["raw_boxes", "raw_scores"], output_names=list(OUTPUT_NAMES),
                      dynamic_axes=contract_dynamic_axes(["raw_boxes", "raw_scores"]))
    session = _session(buffer.getvalue())
    for batch, seed in ((1, 7), (3, 8)):
        boxes, scores = _raw_head(batch, seed=seed)
        want = nms(boxes, scores)
        got = session.run(None, {"raw_boxes": boxes.numpy(), "raw_scores": scores.numpy()})
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w.numpy())
        for g, w in zip(torch.jit.script(nms)(boxes, scores), want):
            assert torch.equal(g, w)


def test_class_aware_nms_exports_onnx_nms_with_a_dynamic_batch(
    nms_onnx: tuple[ClassAwareNMS, bytes]
) -> None:
    nms, model_bytes = nms_onnx
    proto = onnx.load_from_string(model_bytes)
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("NonMaxSuppression") == 1
    dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
            for o in proto.graph.output}
    assert dims == {"num_detections": ["batch"], "boxes": ["batch", K, 4],
                    "scores": ["batch", K], "labels": ["batch", K]}
    session = _session(model_bytes)
    for batch, seed in ((1, 5), (3, 6)):
        boxes, scores = _raw_head(batch, seed=seed)
        got = session.run(None, {"raw_boxes": boxes.numpy(), "raw_scores": scores.numpy()})
        want = nms(boxes, scores)
        _assert_contract(got, batch=batch, k=K)
        for g, w in zip(got, want):  # same NMS semantics: equal, not just close
            np.testing.assert_array_equal(g, w.numpy())
    empty = session.run(None, {"raw_boxes": boxes.numpy(), "raw_scores": scores.numpy() * 0.1})
    assert empty[0].tolist() == [0, 0, 0] and not empty[1].any()


def test_class_aware_nms_scripts() -> None:
    nms = ClassAwareNMS(0.45, 0.3, K)
    boxes, scores = _raw_head(2, seed=3)
    for g, w in zip(torch.jit.script(nms)(boxes, scores), nms(boxes, scores)):
        assert torch.equal(g, w)


class _DictHead(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        boxes = torch.cat([x[..., :2], x[..., :2] + x[..., 2:4].abs() + 1], dim=-1)
        return {"boxes": boxes, "scores": torch.sigmoid(x[..., 4:])}


def test_raw_head_nms_wraps_a_model_and_scripts() -> None:
    x = torch.randn(2, 50, 7, generator=torch.Generator().manual_seed(1)) * 20
    module = RawHeadNMS(_DictHead(), 0.5, 0.2, K)
    want = module(x)
    _assert_contract(want, batch=2, k=K)
    for g, w in zip(torch.jit.script(module)(x), want):
        assert torch.equal(g, w)


def test_find_raw_head_outputs_by_name_then_shape() -> None:
    assert find_raw_head_outputs([("scores", (2, 64, 3)), ("boxes", (2, 64, 4))]) == (1, 0)
    assert find_raw_head_outputs([("pred.boxes", (1, 9, 4)), ("pred.scores", (1, 9, 80))]) == (
        0, 1)
    assert find_raw_head_outputs([("output_0", (1, 9, 80)), ("output_1", (1, 9, 4))]) == (1, 0)


@pytest.mark.parametrize(
    ("outputs", "fragment"),
    [
        ([("logits", (4, 10))], "returns logits [4, 10]"),
        ([("boxes", (4, 10, 4))], "returns boxes [4, 10, 4]"),
        ([("boxes", (4, 40)), ("scores", (4, 10, 3))], "'boxes' has shape [4, 40]"),
        ([("boxes", (4, 10, 4)), ("scores", (4, 10))], "'scores' has shape [4, 10]"),
        ([("boxes", (4, 10, 4)), ("scores", (4, 12, 3))], "disagree on [B,N]"),
        ([("a.boxes", (1, 2, 4)), ("b.boxes", (1, 2, 4)), ("scores", (1, 2, 3))],
         "several outputs are named 'boxes'"),
    ],
)
def test_find_raw_head_outputs_names_what_it_found(outputs: list, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        find_raw_head_outputs(outputs)
    assert fragment in str(info.value) and "--nms needs" in str(info.value)
    assert info.value.exit_code == 2


def test_class_aware_nms_passes_torch_export_with_a_dynamic_batch() -> None:
    # pt2's route: data-dependent sizes are fine here, including no detection at all.
    nms = ClassAwareNMS(0.45, 0.3, K)
    boxes, scores = _raw_head(2, n=60, seed=4)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(nms, (boxes, scores), dynamic_shapes=({0: batch}, {0: batch}))
    exported = program.module()
    for b, s in ((boxes, scores), (boxes[:1], scores[:1] * 0.1), _raw_head(3, n=60, seed=5)):
        for g, w in zip(exported(b, s), nms(b, s)):
            assert torch.equal(g, w)


def test_nms_free_rows_are_judged_by_iou_in_every_format(tmp_path):
    """[B,K,6] rows (x1, y1, x2, y2, score, class after the model's own TopK) become the
    contract with --task detection, and are matched by IoU, at batch 1 and 3; without it the
    export says how to get there."""
    import json

    from typer.testing import CliRunner

    from toolkit.cli.app import app

    cli = CliRunner()
    out = tmp_path / "rows"
    result = cli.invoke(app, ["export", "tests.models:rows_detector", "--input",
                              "images:1-4x3x32x32", "--task", "detection", "--to",
                              "onnx,torchscript", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["detection"]["convention"] == "rows"
    assert manifest["detection"]["max_detections"] == 5  # the rows' own K
    for record in manifest["artifacts"]:
        detection = record["parity"]["detection"]
        assert record["parity"]["passed"] and detection["matched"] == detection["reference"]
    plain = cli.invoke(app, ["export", "tests.models:rows_detector", "--input",
                             "images:1-4x3x32x32", "--to", "onnx", "--out",
                             str(tmp_path / "plain")])
    assert "add --task detection" in " ".join(plain.output.split())


def test_rows_to_contract_keeps_rows_over_the_score_best_first_and_pads_to_k() -> None:
    from toolkit.detection.postprocess import RowsToContract

    rows = torch.tensor([[[0.0, 0, 4, 4, 0.2, 1], [5, 5, 9, 9, 0.9, 2], [1, 1, 3, 3, 0.05, 0]]])
    num, boxes, scores, labels = RowsToContract(lambda x: (x,), 0, 0.1, 4)(rows)
    assert num.tolist() == [2] and scores[0].tolist() == pytest.approx([0.9, 0.2, 0, 0])
    assert labels[0].tolist() == [2, 1, 0, 0] and boxes[0, 2:].abs().sum() == 0
