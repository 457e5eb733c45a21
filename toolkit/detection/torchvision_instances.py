"""torchvision's Mask R-CNN and Keypoint R-CNN with their masks and keypoints kept.

`TorchvisionDetectionAdapter` (postprocess.py) keeps boxes, scores and labels only. This one
also returns, after the four contract outputs and in this order:
    masks float32 [B,K,H,W]: torchvision's pasted mask PROBABILITIES (sigmoid of the mask head,
        pasted into the input image, stride 1), zero outside the box; the channel is squeezed.
        torchvision thresholds at 0.5 only in its drawing utilities, never in the model.
    keypoints float32 [B,K,P,3]: x, y in input pixels, then torchvision's visibility column
        (always 1). Its `keypoints_scores` (heatmap logits, not in [0, 1]) are not kept.
Same K rows as the boxes, sorted by score, zero past num_detections.

torch's scripting can't type a tuple of varying length, so the adapter and the batch loop come in
one class per arity (4 + 1 extra, 4 + 2 extras); `TorchvisionInstanceAdapter(...)` builds the
right one.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from toolkit.detection.options import DEFAULT_MAX_DETECTIONS
from toolkit.detection.postprocess import (
    OUTPUT_NAMES,
    TORCHVISION_EXPORT_LIMIT,
    _ListOfDicts,
    _LossesAndDetections,
    looks_like_torchvision_detections,
)
from toolkit.errors import UsageError

#: the extra outputs, in the order they follow the contract's four
EXTRA_KINDS = ("masks", "keypoints")
#: what a mask pixel's probability must exceed to belong to the instance (torchvision's
#: draw_segmentation_masks callers and COCO evaluation binarise at 0.5)
MASK_THRESHOLD = 0.5
#: torchvision pastes masks at the input's own resolution
MASK_STRIDE = 1


def instance_kinds(output: Any) -> tuple[str, ...]:
    """Which extras a torchvision model's own output carries, in output order: 'masks' when every
    dict has `masks` [n,1,H,W], 'keypoints' when every dict has `keypoints` [n,P,3] (n the
    dict's box count). () for anything else, a plain detector's output included."""
    if not looks_like_torchvision_detections(output):
        return ()

    def every(key: str, rank: int, fits: Any) -> bool:
        return all(
            isinstance(item.get(key), Tensor) and item[key].dim() == rank
            and item[key].shape[0] == item["boxes"].shape[0] and fits(item[key].shape)
            for item in output if isinstance(item, Mapping))

    kinds = []
    if every("masks", 4, lambda s: s[1] == 1):
        kinds.append("masks")
    if every("keypoints", 3, lambda s: s[2] == 3):
        kinds.append("keypoints")
    return tuple(kinds)


def instance_output_names(extras: Sequence[str]) -> tuple[str, ...]:
    """The adapter's output names: the contract's four, then the extras."""
    return (*OUTPUT_NAMES, *extras)


def _pad_rows(rows: Tensor, k: int) -> Tensor:
    """[n, ...] -> [k, ...]: k zero rows appended, the first k kept (no branch on n, so a
    trace keeps working for any n)."""
    zeros = torch.zeros([k] + list(rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    return torch.cat([rows, zeros])[:k]


def pad_instances(det: dict[str, Tensor], max_detections: int,
                  extras: list[str]) -> list[Tensor]:
    """One image's detections -> [count, boxes [K,4], scores [K], labels [K], then each extra]
    (masks [K,H,W], keypoints [K,P,3]), all rows in one score order. `pad_detections`'s rule,
    with the extras gathered by the same permutation (sorting twice could order ties
    differently)."""
    k = max_detections
    order = torch.argsort(det["scores"], descending=True)
    out = [
        # a tensor count (not len()): a trace must not bake the example's count in
        torch.ones_like(order).sum().clamp(max=k),
        _pad_rows(det["boxes"][order].to(torch.float32), k),
        _pad_rows(det["scores"][order].to(torch.float32), k),
        _pad_rows(det["labels"][order].to(torch.int64), k),
    ]
    for kind in extras:
        if kind == "masks":
            out.append(_pad_rows(det["masks"][order][:, 0].to(torch.float32), k))
        else:
            out.append(_pad_rows(det["keypoints"][order].to(torch.float32), k))
    return out


class TorchvisionInstanceAdapter(nn.Module):
    """A Mask/Keypoint R-CNN as a batched module: `forward(images [B,3,H,W])` -> the four
    contract tensors, then the extras named in `extras` (a non-empty subset of EXTRA_KINDS,
    e.g. `instance_kinds(model(list(images)))`), in EXTRA_KINDS order.

    Routes: called in Python; `torch.jit.script(adapter)`; the legacy tracing exporter through
    `export_module(example)`, which keeps the batch dynamic. Constructing this class returns
    the subclass of the right arity (scripting needs a fixed tuple type)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> TorchvisionInstanceAdapter:
        # (copy and pickle call __new__ with no arguments, on the subclass itself)
        if cls is TorchvisionInstanceAdapter:
            extras = kwargs.get("extras", args[2] if len(args) > 2 else ("masks",))
            cls = _ADAPTERS.get(len(tuple(extras)), cls)
        return super().__new__(cls)

    toolkit_torch_export_limit = TORCHVISION_EXPORT_LIMIT

    def __init__(self, model: nn.Module, max_detections: int = DEFAULT_MAX_DETECTIONS,
                 extras: Sequence[str] = ("masks",)) -> None:
        super().__init__()
        if max_detections < 1:
            raise UsageError(f"max_detections must be >= 1, got {max_detections}")
        unknown = [kind for kind in extras if kind not in EXTRA_KINDS]
        if not extras or unknown or len(set(extras)) != len(extras):
            raise UsageError(f"extras must be some of {', '.join(EXTRA_KINDS)} (each once); "
                             f"got {list(extras)}")
        model.eval()
        # torchvision's classes have `eager_outputs`; scripted, they return a tuple
        returns_tuple = hasattr(model, "eager_outputs")
        self.detector = _LossesAndDetections(model) if returns_tuple else _ListOfDicts(model)
        self.max_detections = int(max_detections)
        self.extras: list[str] = [kind for kind in EXTRA_KINDS if kind in extras]

    def output_names(self) -> tuple[str, ...]:
        """num_detections, boxes, scores, labels, then the extras (never scripted)."""
        return instance_output_names(self.extras)

    def padded(self, images: Tensor) -> list[Tensor]:
        """The outputs as a list (count, boxes, scores, labels, extras...), batched."""
        detections = self.detector(list(images.unbind(0)))
        per_image = [pad_instances(det, self.max_detections, self.extras)
                     for det in detections]
        return [torch.stack([outs[j] for outs in per_image])
                for j in range(4 + len(self.extras))]

    def single_image(self) -> nn.Module:
        """The per-image module ([3,H,W] -> padded outputs), what `export_module` traces."""
        return _SingleImage(self.detector, self.max_detections, self.extras)

    def export_module(self, example: Tensor) -> nn.Module:
        """A ScriptModule for `torch.onnx.export(..., dynamo=False)` with a dynamic batch: the
        per-image model traced at `example[0]` (torchvision takes its export paths when traced:
        `_onnx_paste_masks_in_image_loop`, `_onnx_heatmaps_to_keypoints_loop`) inside a
        scripted loop over the batch (a graph loop). Same outputs as `self(images)`."""
        with warnings.catch_warnings():
            # the tracer warns about shape arithmetic that is, by construction, shape-generic
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(self.single_image().eval(), (example[0],),
                                     check_trace=False)
        return torch.jit.script(_LOOPS[len(self.extras)](traced))


class _OneExtra(TorchvisionInstanceAdapter):
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        o = self.padded(images)
        return o[0], o[1], o[2], o[3], o[4]


class _TwoExtras(TorchvisionInstanceAdapter):
    def forward(self, images: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        o = self.padded(images)
        return o[0], o[1], o[2], o[3], o[4], o[5]


_ADAPTERS: dict[int, type[TorchvisionInstanceAdapter]] = {1: _OneExtra, 2: _TwoExtras}


class _SingleImage(nn.Module):
    """[3,H,W] -> (count, boxes, scores, labels, extras...); traced, never scripted."""

    def __init__(self, detector: nn.Module, max_detections: int, extras: list[str]) -> None:
        super().__init__()
        self.detector = detector
        self.max_detections = max_detections
        self.extras = list(extras)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        det = self.detector([image])[0]
        return tuple(pad_instances(det, self.max_detections, self.extras))


class _OneExtraLoop(nn.Module):
    """The traced per-image module over the batch in a scripted loop (see DynamicBatchLoop,
    postprocess.py): a graph loop whose trip count is the batch."""

    def __init__(self, per_image: nn.Module) -> None:
        super().__init__()
        self.per_image = per_image

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        n_: list[Tensor] = []
        b_: list[Tensor] = []
        s_: list[Tensor] = []
        l_: list[Tensor] = []
        e_: list[Tensor] = []
        for i in range(images.shape[0]):
            n, b, s, lab, e = self.per_image(images[i])
            n_.append(n)
            b_.append(b)
            s_.append(s)
            l_.append(lab)
            e_.append(e)
        return (torch.stack(n_), torch.stack(b_), torch.stack(s_), torch.stack(l_),
                torch.stack(e_))


class _TwoExtrasLoop(nn.Module):
    """`_OneExtraLoop` for masks and keypoints together."""

    def __init__(self, per_image: nn.Module) -> None:
        super().__init__()
        self.per_image = per_image

    def forward(self, images: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        n_: list[Tensor] = []
        b_: list[Tensor] = []
        s_: list[Tensor] = []
        l_: list[Tensor] = []
        e_: list[Tensor] = []
        f_: list[Tensor] = []
        for i in range(images.shape[0]):
            n, b, s, lab, e, f = self.per_image(images[i])
            n_.append(n)
            b_.append(b)
            s_.append(s)
            l_.append(lab)
            e_.append(e)
            f_.append(f)
        return (torch.stack(n_), torch.stack(b_), torch.stack(s_), torch.stack(l_),
                torch.stack(e_), torch.stack(f_))


_LOOPS: dict[int, type[nn.Module]] = {1: _OneExtraLoop, 2: _TwoExtrasLoop}


# --------------------------------------------------------------------------------------------
# Named outputs (flatten_outputs names NamedTuple fields): what the exported files call them


class DetectionsWithMasks(NamedTuple):
    num_detections: Tensor
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    masks: Tensor


class DetectionsWithKeypoints(NamedTuple):
    num_detections: Tensor
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    keypoints: Tensor


class DetectionsWithMasksAndKeypoints(NamedTuple):
    num_detections: Tensor
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    masks: Tensor
    keypoints: Tensor


class _NamedBase(nn.Module):
    def __init__(self, inner: TorchvisionInstanceAdapter) -> None:
        super().__init__()
        self.inner = inner

    def toolkit_legacy_onnx_module(self, example: Tensor) -> nn.Module:
        """What the legacy tracing exporter traces instead of this module (the exporter
        looks this hook up): the scripted loop over the batch, same outputs in the same
        order."""
        return self.inner.export_module(example)


class _NamedMasks(_NamedBase):
    def forward(self, images: Tensor) -> DetectionsWithMasks:
        n, boxes, scores, labels, masks = self.inner(images)
        return DetectionsWithMasks(n, boxes, scores, labels, masks)


class _NamedKeypoints(_NamedBase):
    def forward(self, images: Tensor) -> DetectionsWithKeypoints:
        n, boxes, scores, labels, keypoints = self.inner(images)
        return DetectionsWithKeypoints(n, boxes, scores, labels, keypoints)


class _NamedBoth(_NamedBase):
    def forward(self, images: Tensor) -> DetectionsWithMasksAndKeypoints:
        n, boxes, scores, labels, masks, keypoints = self.inner(images)
        return DetectionsWithMasksAndKeypoints(n, boxes, scores, labels, masks, keypoints)


_NAMED: dict[tuple[str, ...], type[_NamedBase]] = {
    ("masks",): _NamedMasks, ("keypoints",): _NamedKeypoints,
    ("masks", "keypoints"): _NamedBoth}


def named_instances(adapter: TorchvisionInstanceAdapter) -> nn.Module:
    """The adapter with named outputs (num_detections, boxes, scores, labels, masks and/or
    keypoints) and the `toolkit_legacy_onnx_module` hook, as source.detection's `_Contract`
    gives the plain adapter: scriptable; the legacy exporter gets the dynamic-batch loop."""
    return _NAMED[tuple(adapter.extras)](adapter)
