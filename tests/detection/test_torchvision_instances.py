"""torchvision Mask R-CNN / Keypoint R-CNN with masks and keypoints kept: eager, TorchScript,
ONNX Runtime (TorchScript-based exporter, dynamic batch). Each kind's ONNX export at batch 1
and 2 through the toolkit's own gate is in test_torchvision_instances_cli.py; here the model
with both branches is scripted, and exported to ONNX with one image empty.

Real models at 128x128 with random weights (`liven` spreads their scores). Eager and
scripted outputs are compared with the model's own dicts exactly; ONNX Runtime's
elementwise within float tolerance, rows paired by box and score (random weights can tie two
scores, which two runtimes may order either way).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from toolkit.demo.liven import liven
from toolkit.detection.torchvision_instances import (
    MASK_THRESHOLD,
    TorchvisionInstanceAdapter,
    instance_kinds,
    instance_output_names,
    named_instances,
    pad_instances,
)
from toolkit.errors import UsageError

H = W = 128
K = 6  # more than the model keeps (5): padding rows are checked too
PER_IMAGE = 5


def _build(kind: str) -> nn.Module:
    from torchvision.models import detection

    small: dict[str, Any] = dict(weights=None, weights_backbone=None, min_size=H, max_size=W,
                                 box_score_thresh=0.0, box_detections_per_img=PER_IMAGE)
    if kind == "masks":
        return detection.maskrcnn_resnet50_fpn(num_classes=3, **small)
    return detection.keypointrcnn_resnet50_fpn(num_classes=2, num_keypoints=5, **small)


def _with_masks(model: nn.Module) -> nn.Module:
    """A Keypoint R-CNN given Mask R-CNN's mask branch too (RoIHeads runs both)."""
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    both = copy.deepcopy(model)
    heads = both.roi_heads
    heads.mask_roi_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)
    heads.mask_head = MaskRCNNHeads(256, [256, 256, 256, 256], 1)
    heads.mask_predictor = MaskRCNNPredictor(256, 256, 2)
    return both.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def models(images: torch.Tensor) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    built = {kind: liven(_build(kind).eval(), images[:1]) for kind in ("masks", "keypoints")}
    built["both"] = liven(_with_masks(built["keypoints"]), images[:1])
    return built


@pytest.fixture(scope="module")
def cases(models: dict[str, nn.Module], images: torch.Tensor) -> dict[str, dict[str, Any]]:
    """Per model, built on first use: the model, its adapter, the model's own list of dicts
    and the adapter's eager output."""
    return _Cases(models, images)


class _Cases(dict):
    def __init__(self, models: dict[str, nn.Module], images: torch.Tensor) -> None:
        super().__init__()
        self.models, self.images = models, images

    def __missing__(self, kind: str) -> dict[str, Any]:
        model = self.models[kind]
        with torch.no_grad():
            raw = model(list(self.images))
        extras = instance_kinds(raw)
        adapter = TorchvisionInstanceAdapter(model, K, extras).eval()
        with torch.no_grad():
            out = adapter(self.images)
        self[kind] = {"kind": kind, "model": model, "raw": raw, "extras": extras,
                      "adapter": adapter, "out": out}
        return self[kind]


@pytest.fixture(scope="module", params=["masks", "keypoints", "both"])
def case(request: pytest.FixtureRequest, cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return cases[request.param]


def test_instance_kinds(case: dict[str, Any]) -> None:
    want = {"masks": ("masks",), "keypoints": ("keypoints",), "both": ("masks", "keypoints")}
    assert case["extras"] == want[case["kind"]]
    raw = case["raw"]
    plain = [{k: v for k, v in det.items() if k in ("boxes", "scores", "labels")}
             for det in raw]
    assert instance_kinds(plain) == ()  # a Faster R-CNN's output
    assert instance_kinds([]) == ()
    if "masks" in case["extras"]:  # [n,H,W] masks (no channel) are not torchvision's
        squeezed = [{**det, "masks": det["masks"][:, 0]} for det in raw]
        assert "masks" not in instance_kinds(squeezed)
        # one image without masks: not every dict carries them
        assert "masks" not in instance_kinds(
            [raw[0], {k: v for k, v in raw[1].items() if k != "masks"}])


def test_eager_adapter_equals_the_models_own_dicts(case: dict[str, Any]) -> None:
    out, raw, extras = case["out"], case["raw"], case["extras"]
    assert len(out) == 4 + len(extras)
    num, boxes, scores, labels = out[:4]
    assert num.dtype == torch.int64 and tuple(num.shape) == (2,)
    assert boxes.dtype == scores.dtype == torch.float32 and labels.dtype == torch.int64
    named = dict(zip(extras, out[4:]))
    for i, det in enumerate(raw):
        n = int(num[i])
        assert n == len(det["scores"]) == PER_IMAGE < K
        order = torch.argsort(det["scores"], descending=True)
        assert torch.equal(scores[i, :n], det["scores"][order])
        assert torch.equal(boxes[i, :n], det["boxes"][order])
        assert torch.equal(labels[i, :n], det["labels"][order])
        assert not boxes[i, n:].any() and not scores[i, n:].any() and not labels[i, n:].any()
        if "masks" in named:
            masks = named["masks"]
            assert masks.dtype == torch.float32 and tuple(masks.shape) == (2, K, H, W)
            assert torch.equal(masks[i, :n], det["masks"][order][:, 0])
            assert not masks[i, n:].any()
        if "keypoints" in named:
            keypoints = named["keypoints"]
            assert keypoints.dtype == torch.float32 and tuple(keypoints.shape) == (2, K, 5, 3)
            assert torch.equal(keypoints[i, :n], det["keypoints"][order])
            assert not keypoints[i, n:].any()
            # torchvision's visibility column is 1 for every predicted keypoint
            assert torch.all(keypoints[i, :n, :, 2] == 1)
    assert len(torch.unique(scores[:, :PER_IMAGE])) >= 2 * PER_IMAGE - 1, "scores all tie"


@pytest.mark.parametrize("kind", ["masks", "both"])
def test_masks_are_pasted_probabilities(cases: dict[str, dict[str, Any]], kind: str) -> None:
    """torchvision's masks are sigmoid probabilities pasted at input size (stride 1), never
    thresholded by the model; they stay within the box enlarged by 30/28 (the mask is
    padded by one pixel of its 28 before pasting), so a few pixels past the box may be > 0."""
    case = cases[kind]
    num, boxes = case["out"][0], case["out"][1]
    masks = case["out"][4 + case["extras"].index("masks")]
    live = torch.cat([masks[i, : int(num[i])] for i in range(2)])
    assert float(live.min()) >= 0.0 and float(live.max()) <= 1.0
    pasted = live[live > 0]
    between = ((pasted > 0.05) & (pasted < 0.95)).float().mean()
    assert between > 0.1, "masks look binary: thresholded, not probabilities"
    assert (live > MASK_THRESHOLD).any()
    ys = torch.arange(H, dtype=torch.float32)[:, None]
    xs = torch.arange(W, dtype=torch.float32)[None, :]
    for i in range(2):
        for j in range(int(num[i])):
            x0, y0, x1, y1 = boxes[i, j].tolist()
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            hw, hh = (x1 - x0) / 2 * 30 / 28 + 1.5, (y1 - y0) / 2 * 30 / 28 + 1.5
            outside = ((xs - cx).abs() > hw) | ((ys - cy).abs() > hh)
            assert not masks[i, j][outside].any()


def test_no_detections_give_zero_rows(case: dict[str, Any], images: torch.Tensor) -> None:
    model = case["model"]
    saved = model.roi_heads.score_thresh
    model.roi_heads.score_thresh = 1.1  # no score passes: every list in the dicts is empty
    try:
        with torch.no_grad():
            out = case["adapter"](images[:1])
    finally:
        model.roi_heads.score_thresh = saved
    assert int(out[0][0]) == 0
    assert all(not t.any() for t in out[1:])
    tail = {"masks": (1, K, H, W), "keypoints": (1, K, 5, 3)}
    assert [tuple(t.shape) for t in out[4:]] == [tail[e] for e in case["extras"]]


def test_torchscript_adapter_matches_eager(cases: dict[str, dict[str, Any]], images: torch.Tensor,
                                          tmp_path: Path) -> None:
    case = cases["both"]  # both branches: scripting is slow, one model covers them
    scripted = torch.jit.script(case["adapter"])
    torch.jit.save(scripted, str(tmp_path / "adapter.pt"))  # the artifact round-trips
    loaded = torch.jit.load(str(tmp_path / "adapter.pt"))
    with torch.no_grad():
        got = loaded(images)
    assert len(got) == len(case["out"])
    for want, have in zip(case["out"], got):
        assert want.dtype == have.dtype and torch.equal(want, have)


def test_export_module_matches_eager_in_torchscript(cases: dict[str, dict[str, Any]],
                                                    images: torch.Tensor) -> None:
    """The scripted batch loop around the traced image (what ONNX exports), run in torch."""
    case = cases["both"]  # both branches: scripting is slow, one model covers them
    module = case["adapter"].export_module(images[:1])
    with torch.no_grad():
        got = module(images)
    assert len(got) == len(case["out"])
    for want, have in zip(case["out"], got):
        assert want.dtype == have.dtype and want.shape == have.shape
        # per-image convolutions differ from batched ones in the last bits
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-3)


def test_adapter_rejects_bad_arguments(models: dict[str, nn.Module]) -> None:
    with pytest.raises(UsageError, match="max_detections"):
        TorchvisionInstanceAdapter(models["masks"], 0, ("masks",))
    for bad in ((), ("masks", "masks"), ("segments",)):
        with pytest.raises(UsageError, match="extras"):
            TorchvisionInstanceAdapter(models["masks"], K, bad)


def test_adapter_copies_with_its_arity(case: dict[str, Any], images: torch.Tensor) -> None:
    twin = copy.deepcopy(case["adapter"])
    assert type(twin) is type(case["adapter"]) and isinstance(twin, TorchvisionInstanceAdapter)
    assert twin.output_names() == instance_output_names(case["extras"])


def test_pad_instances_reorders_every_output_alike() -> None:
    """torchvision already sorts by score; another model may not: the extras follow the rows."""
    det = {"boxes": torch.tensor([[0.0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]]),
           "scores": torch.tensor([0.2, 0.9, 0.5]), "labels": torch.tensor([1, 2, 3]),
           "masks": torch.arange(3.0)[:, None, None, None].expand(3, 1, 4, 5) / 10,
           "keypoints": torch.arange(3.0)[:, None, None].expand(3, 2, 3).clone()}
    n, boxes, scores, labels, masks, keypoints = pad_instances(det, 4, ["masks", "keypoints"])
    assert int(n) == 3
    assert scores.tolist() == pytest.approx([0.9, 0.5, 0.2, 0.0])
    assert labels.tolist() == [2, 3, 1, 0]
    assert boxes[:, 0].tolist() == [1.0, 2.0, 0.0, 0.0]
    assert tuple(masks.shape) == (4, 4, 5) and tuple(keypoints.shape) == (4, 2, 3)
    assert masks[:, 0, 0].tolist() == pytest.approx([0.1, 0.2, 0.0, 0.0])
    assert keypoints[:, 0, 0].tolist() == [1.0, 2.0, 0.0, 0.0]
    n, *_ = pad_instances(det, 2, ["keypoints"])  # truncated to K
    assert int(n) == 2


def test_onnx_image_without_detections(cases: dict[str, dict[str, Any]], images: torch.Tensor,
                                       tmp_path: Path) -> None:
    """A score threshold between the two images' best scores: one image keeps detections (the
    trace's example), the other none; ONNX Runtime zero-fills that image's rows. The model
    with both branches runs both of torchvision's ONNX loops (mask pasting, heatmaps) empty."""
    case = cases["both"]
    model, adapter, names = case["model"], case["adapter"], list(instance_output_names(
        case["extras"]))
    best = [float(det["scores"].max()) for det in case["raw"]]
    full = int(np.argmax(best))
    batch = images[[full, 1 - full]]
    saved = model.roi_heads.score_thresh
    model.roi_heads.score_thresh = (best[0] + best[1]) / 2
    try:
        with torch.no_grad():
            want = [t.numpy() for t in adapter(batch)]
        module = adapter.export_module(batch[:1])
    finally:
        model.roi_heads.score_thresh = saved
    assert want[0].tolist()[1] == 0 and want[0].tolist()[0] >= 1
    path = tmp_path / "thresholded.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (batch,), str(path), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=names,
                          dynamic_axes={n: {0: "batch"} for n in ["images", *names]})
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": batch.numpy()})
    assert got[0].tolist() == want[0].tolist()
    for g, w in zip(got[1:], want[1:]):
        assert g.shape == w.shape and not g[1].any()
        np.testing.assert_allclose(g[0], w[0], atol=2e-3)


def test_named_outputs_script_and_hook(cases: dict[str, dict[str, Any]],
                                       images: torch.Tensor) -> None:
    """What source.detection wires in: outputs named by field (as flatten_outputs names
    them), scriptable, and the legacy ONNX hook returning the batch loop."""
    case = cases["both"]  # both branches: scripting is slow, one model covers them
    from toolkit.source.wrapper import flatten_outputs

    named = named_instances(case["adapter"])
    with torch.no_grad():
        eager = named(images)
        scripted = torch.jit.script(named)(images)
    names = [name for name, _ in flatten_outputs(eager)]
    assert tuple(names) == instance_output_names(case["extras"])
    for want, a, b in zip(case["out"], eager, scripted):
        assert torch.equal(want, a) and torch.equal(want, b)
    hook = named.toolkit_legacy_onnx_module(images[:1])
    assert isinstance(hook, torch.jit.ScriptModule)
    assert len(hook.forward.schema.returns[0].type.elements()) == len(names)
