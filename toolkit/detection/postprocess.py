"""Detection post-processing as nn.Modules that produce the toolkit's output contract.

Every exported detector returns, in this order:
    num_detections int64 [B]; boxes float32 [B,K,4] (xyxy, input pixels);
    scores float32 [B,K]; labels int64 [B,K]
with rows past num_detections zero and K = max_detections. Two kinds of model are covered:

- `TorchvisionDetectionAdapter`: models that run their own post-processing and follow
  torchvision's convention, `forward(list[Tensor CHW]) -> list[dict(boxes, scores, labels)]`.
- `RawHeadNMS`: raw-head (YOLO-style) models returning `boxes` [B,N,4] and `scores` [B,N,C];
  class-aware NMS is appended; an exporter with a graph NMS operator puts that in instead
  (`GRAPH_NMS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision.nms)
from torch import Tensor, nn

from toolkit.detection.match import OUTPUT_NAMES
from toolkit.detection.options import DEFAULT_MAX_DETECTIONS
from toolkit.errors import UsageError

__all__ = ["DEFAULT_MAX_DETECTIONS", "OUTPUT_NAMES"]  # re-exported for callers of this module

DETECTION_KEYS = ("boxes", "scores", "labels")


# --------------------------------------------------------------------------------------------
# Padding one image's detections to K rows


def pad_detections(
    boxes: Tensor, scores: Tensor, labels: Tensor, max_detections: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One image's variable-length detections -> (count [], boxes [K,4], scores [K], labels [K]).

    Sorted by score (descending), truncated to K, zero-padded. Only shape-polymorphic ops:
    traced, the result keeps working for any number of detections.
    """
    k = max_detections
    order = torch.argsort(scores, descending=True)
    boxes = boxes[order].to(torch.float32)
    scores = scores[order].to(torch.float32)
    labels = labels[order].to(torch.int64)
    # Appending K zero rows, then keeping the first K, gives a static K without a branch on n.
    boxes = torch.cat([boxes, torch.zeros((k, 4), dtype=boxes.dtype, device=boxes.device)])[:k]
    scores = torch.cat([scores, torch.zeros((k,), dtype=scores.dtype, device=scores.device)])[:k]
    labels = torch.cat([labels, torch.zeros((k,), dtype=labels.dtype, device=labels.device)])[:k]
    # A tensor count (not len()): a trace must not bake the example's detection count in.
    count = torch.ones_like(order).sum().clamp(max=k)
    return count, boxes, scores, labels


# --------------------------------------------------------------------------------------------
# Detectors with their own post-processing (the torchvision convention)


def looks_like_torchvision_detections(output: Any) -> bool:
    """True when the model's own output is torchvision's: a non-empty list of dicts of tensors with
    `boxes` [n,4], `scores` [n] and `labels` [n] (extra keys, e.g. masks, are allowed)."""
    if not isinstance(output, (list, tuple)) or not output:
        return False
    for item in output:
        if not isinstance(item, Mapping) or not all(key in item for key in DETECTION_KEYS):
            return False
        boxes, scores, labels = (item[key] for key in DETECTION_KEYS)
        if not all(isinstance(t, Tensor) for t in (boxes, scores, labels)):
            return False
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or scores.dim() != 1 or labels.dim() != 1:
            return False
        if not boxes.shape[0] == scores.shape[0] == labels.shape[0]:
            return False
    return True


class _ListOfDicts(nn.Module):
    """Calls a model that returns list[dict[str, Tensor]] in Python and scripted code alike."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return self.model(images)


class _LossesAndDetections(nn.Module):
    """torchvision's own detectors: scripted, they return (losses, detections) whatever the
    mode (`eager_outputs` is skipped under scripting); in Python, only the detections."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        if torch.jit.is_scripting():
            return self.model(images)[1]
        return self.model(images)


#: Why torch.export can't take a torchvision detector, whatever the batch (tested against torch,
#: so the claim goes when upstream lifts it): the adapters declare it, and the routes through
#: torch.export stop at once instead of after a trace bound to fail.
TORCHVISION_EXPORT_LIMIT = (
    "torchvision's batched_nms branches on the number of boxes, which torch.export can't "
    "guard (pytorch/vision#9306, pytorch/pytorch#118884)")


class TorchvisionDetectionAdapter(nn.Module):
    """A torchvision-convention detector as a batched module with the fixed-rank contract.

    `forward(images [B,3,H,W])` unbinds the batch into the list the model wants and pads each
    image's detections to K. Boxes come back in input pixels: torchvision's transform resizes
    internally and maps the boxes back to the original size itself.

    Routes: called in Python; `torch.jit.script(adapter)`; the legacy tracing exporter with a
    static batch (tracing unrolls the loop over images). For a dynamic batch under that exporter use
    `export_module(...)` (see `DynamicBatchLoop`).
    """

    toolkit_torch_export_limit = TORCHVISION_EXPORT_LIMIT

    def __init__(self, model: nn.Module, max_detections: int = DEFAULT_MAX_DETECTIONS) -> None:
        super().__init__()
        if max_detections < 1:
            raise UsageError(f"max_detections must be >= 1, got {max_detections}")
        model.eval()
        # torchvision's classes have `eager_outputs`; their scripted forward returns a tuple.
        returns_tuple = hasattr(model, "eager_outputs")
        self.detector = _LossesAndDetections(model) if returns_tuple else _ListOfDicts(model)
        self.max_detections = max_detections

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        detections = self.detector(list(images.unbind(0)))
        return _stack_padded(detections, self.max_detections)

    def single_image(self) -> _SingleImage:
        """The per-image module ([3,H,W] -> padded results), what `DynamicBatchLoop` traces."""
        return _SingleImage(self.detector, self.max_detections)

    def export_module(self, example: Tensor) -> nn.Module:
        """A module for `torch.onnx.export(..., dynamo=False)` with a dynamic batch: the
        per-image model traced at `example[0]`, inside a scripted loop over the batch (which
        the exporter turns into a graph loop). Same outputs as `self(images)`."""
        return DynamicBatchLoop.from_single(self.single_image(), example)


def _stack_padded(
    detections: list[dict[str, Tensor]], max_detections: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    counts: list[Tensor] = []
    boxes: list[Tensor] = []
    scores: list[Tensor] = []
    labels: list[Tensor] = []
    for det in detections:
        n, b, s, lab = pad_detections(det["boxes"], det["scores"], det["labels"], max_detections)
        counts.append(n)
        boxes.append(b)
        scores.append(s)
        labels.append(lab)
    return torch.stack(counts), torch.stack(boxes), torch.stack(scores), torch.stack(labels)


class _SingleImage(nn.Module):
    def __init__(self, detector: nn.Module, max_detections: int) -> None:
        super().__init__()
        self.detector = detector
        self.max_detections = max_detections

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        det = self.detector([image])[0]
        return pad_detections(det["boxes"], det["scores"], det["labels"], self.max_detections)


class DynamicBatchLoop(nn.Module):
    """Runs a per-image module over the batch in a scripted loop.

    The legacy tracing exporter (dynamo=False) unrolls Python loops when it traces, fixing the
    batch; a scripted loop becomes a graph loop whose trip count is the batch size. The per-image
    module is traced (torchvision's detectors take their export-friendly paths when traced).
    Script this module (`torch.jit.script`) and export the ScriptModule.
    """

    def __init__(self, per_image: nn.Module) -> None:
        super().__init__()
        self.per_image = per_image

    @classmethod
    def from_single(cls, single: nn.Module, example: Tensor) -> nn.Module:
        import warnings

        with warnings.catch_warnings():
            # The tracer warns about shape arithmetic that is, by construction, shape-generic.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(single.eval(), (example[0],), check_trace=False)
        return torch.jit.script(cls(traced))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        counts: list[Tensor] = []
        boxes: list[Tensor] = []
        scores: list[Tensor] = []
        labels: list[Tensor] = []
        for i in range(images.shape[0]):
            n, b, s, lab = self.per_image(images[i])
            counts.append(n)
            boxes.append(b)
            scores.append(s)
            labels.append(lab)
        return torch.stack(counts), torch.stack(boxes), torch.stack(scores), torch.stack(labels)


def contract_dynamic_axes(input_names: Sequence[str]) -> dict[str, dict[int, str]]:
    """`dynamic_axes` for `torch.onnx.export(..., dynamo=False)`: the batch of every input and
    of the four contract outputs (export with `output_names=OUTPUT_NAMES`)."""
    return {name: {0: "batch"} for name in (*input_names, *OUTPUT_NAMES)}


# --------------------------------------------------------------------------------------------
# Raw-head (YOLO-style) detectors: class-aware NMS appended


def _select_reference(
    boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float
) -> Tensor:
    """Class-aware, per-image NMS -> selected [S,3] int64 rows (image, class, box), the
    semantics graph NMS operators share (score > threshold; suppress when IoU > threshold).

    boxes [B,N,4] xyxy; scores [B,N,C]. One `torchvision.ops.nms` call on boxes offset per
    (image, class) group: torchvision's `batched_nms` would branch on the box count, a guard
    that `torch.export` can't decide.
    """
    num_classes = scores.shape[2]
    num_boxes = scores.shape[1]
    candidates = torch.nonzero(scores > score_threshold)  # [S0, 3] rows (image, box, class)
    image, box, cls = candidates[:, 0], candidates[:, 1], candidates[:, 2]
    flat_box = image * num_boxes + box
    cand_scores = scores.reshape(-1)[flat_box * num_classes + cls]
    cand_boxes = boxes.reshape(-1, 4)[flat_box]
    # Groups never overlap once shifted by more than the largest coordinate; the max is taken
    # over all boxes (never empty), not the candidates (empty when nothing passes the score).
    span = boxes.abs().max().to(cand_boxes.dtype) * 2 + 1
    offsets = ((image * num_classes + cls).to(cand_boxes.dtype) * span)[:, None]
    # torchvision's fake `nms` claims at least 2 kept boxes, so a torch.export'ed graph
    # asserts that at run time and fails on 0 or 1 detections. Two sentinels in a group of
    # their own always survive; they are dropped again right after.
    # built from arange, not torch.tensor: a traced constant would make the tracer warn
    left = torch.arange(2, dtype=cand_boxes.dtype, device=cand_boxes.device)[:, None] * 2
    zero = torch.zeros_like(left)
    sentinels = torch.cat([left, zero, left + 1, zero + 1], dim=1)  # [[0,0,1,1], [2,0,3,1]]
    sentinels = sentinels + span * (scores.shape[0] * num_classes)
    keep = _tv_nms(torch.cat([cand_boxes + offsets, sentinels]),
                   torch.cat([cand_scores, cand_scores.new_zeros(2)]), iou_threshold)
    keep = keep[keep < cand_scores.shape[0]]
    return torch.stack([image[keep], cls[keep], box[keep]], dim=1)


def _tv_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    return torch.ops.torchvision.nms(boxes, scores, iou_threshold)


#: NMS a format's exporter puts in its graph instead of `_select_reference` while it traces:
#: name -> (is this exporter tracing now?, (boxes, scores, max_per_class, iou, score) -> the
#: same [S,3] rows). A backend registers its own (its nms.py) when it is imported.
GRAPH_NMS: dict[str, tuple[Callable[[], bool], Callable[..., Tensor]]] = {}


def _select(
    boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float,
    score_threshold: float,
) -> Tensor:
    for tracing, graph_nms in GRAPH_NMS.values():
        if tracing():
            return graph_nms(boxes, scores, max_per_class, iou_threshold, score_threshold)
    return _select_reference(boxes, scores, iou_threshold, score_threshold)


def _ranked_slots(selected: Tensor, scores: Tensor, max_detections: int
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Selected (image, class, box) rows -> (slot, class, flat box index, score, one-hot of
    the image) per row, best first: each row's slot in a [B*K + 1] output, the last slot
    being the spare that takes rows ranked K or lower.

    A row's rank within its image (after sorting by score) comes from a cumulative sum over a
    one-hot of the image index; no data-dependent shapes reach the outputs."""
    k = max_detections
    batch, num_boxes, num_classes = scores.shape[0], scores.shape[1], scores.shape[2]
    image, cls, box = selected[:, 0], selected[:, 1], selected[:, 2]
    flat_box = image * num_boxes + box
    sel_scores = scores.reshape(-1)[flat_box * num_classes + cls]
    order = torch.argsort(sel_scores, descending=True)
    image, cls, flat_box, sel_scores = image[order], cls[order], flat_box[order], sel_scores[order]
    one_hot = (image[:, None] == torch.arange(batch, device=image.device)[None, :]).to(torch.int64)
    rank = (torch.cumsum(one_hot, dim=0) * one_hot).sum(dim=1) - 1
    spare = batch * k
    slot = torch.where(rank < k, image * k + rank, torch.full_like(rank, spare))
    return slot, cls, flat_box, sel_scores, one_hot


def pad_selected(
    selected: Tensor, boxes: Tensor, scores: Tensor, max_detections: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Selected (image, class, box) rows in any order -> the fixed-rank contract: each
    image's rows best first, the K best scattered into its K slots, the rest cut off."""
    k = max_detections
    batch = scores.shape[0]
    slot, cls, flat_box, sel_scores, one_hot = _ranked_slots(selected, scores, k)
    spare = batch * k
    sel_boxes = boxes.reshape(-1, 4)[flat_box]
    out_scores = torch.zeros([spare + 1], dtype=torch.float32, device=scores.device)
    out_scores = out_scores.scatter(0, slot, sel_scores.to(torch.float32))
    out_labels = torch.zeros([spare + 1], dtype=torch.int64, device=scores.device)
    out_labels = out_labels.scatter(0, slot, cls.to(torch.int64))
    out_boxes = torch.zeros([spare + 1, 4], dtype=torch.float32, device=boxes.device)
    out_boxes = out_boxes.scatter(0, slot[:, None].expand(-1, 4), sel_boxes.to(torch.float32))
    counts = one_hot.sum(dim=0).clamp(max=k)
    return (
        counts,
        out_boxes[:spare].reshape(batch, k, 4),
        out_scores[:spare].reshape(batch, k),
        out_labels[:spare].reshape(batch, k),
    )


def gather_selected(selected: Tensor, scores: Tensor, features: Tensor,
                    max_detections: int) -> Tensor:
    """Per-box features [B,N,F] (mask coefficients, keypoints, an angle) of the selected rows,
    in the same slots `pad_selected` gives their boxes -> [B,K,F], zero past each image's
    detections."""
    k = max_detections
    batch, width = scores.shape[0], features.shape[2]
    slot, _, flat_box, _, _ = _ranked_slots(selected, scores, k)
    picked = features.reshape(-1, width)[flat_box].to(torch.float32)
    out = torch.zeros([batch * k + 1, width], dtype=torch.float32, device=features.device)
    out = out.scatter(0, slot[:, None].expand(-1, width), picked)
    return out[:batch * k].reshape(batch, k, width)


class ClassAwareNMS(nn.Module):
    """Raw-head outputs -> the contract: `forward(boxes [B,N,4] xyxy, scores [B,N,C])`.

    Class-aware NMS per image (a box may be kept once per class, like the graph
    NMS operators), then the top K per image by score. In Python and scripted it runs
    torchvision's NMS; the legacy tracing exporter writes one `NonMaxSuppression`
    node; the batch stays dynamic in both.

    `multi_label=False` keeps only each box's best class (Ultralytics' predictions) instead of
    every (box, class) pair above the score; `agnostic=True` runs one NMS across classes, each
    kept box labelled with its best class.
    """

    def __init__(
        self,
        iou_threshold: float = 0.45,
        score_threshold: float = 0.25,
        max_detections: int = DEFAULT_MAX_DETECTIONS,
        multi_label: bool = True,
        agnostic: bool = False,
    ) -> None:
        super().__init__()
        if max_detections < 1:
            raise UsageError(f"max_detections must be >= 1, got {max_detections}")
        self.iou_threshold = float(iou_threshold)
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)
        self.multi_label = bool(multi_label)
        self.agnostic = bool(agnostic)

    def forward(self, boxes: Tensor, scores: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        boxes = boxes.to(torch.float32)
        selected, scores = self.select(boxes, scores)
        return pad_selected(selected, boxes, scores, self.max_detections)

    def select(self, boxes: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        """The kept (image, class, box) rows, and the scores they are ranked by (each box's
        best class alone when not multi_label): what `pad_selected` and `gather_selected`
        take."""
        boxes = boxes.to(torch.float32)
        scores = scores.to(torch.float32)
        best, best_class = scores.max(dim=2, keepdim=True)
        if not self.multi_label:  # each box's best class alone competes (ties: all tied)
            scores = scores * (scores >= best).to(scores.dtype)
        ranked = best if self.agnostic else scores
        if torch.jit.is_scripting():
            selected = _select_reference(boxes, ranked, self.iou_threshold, self.score_threshold)
        else:
            # More than K per class is never needed: the K best of an image are, at worst,
            # all of one class.
            selected = _select(boxes, ranked, self.max_detections, self.iou_threshold,
                               self.score_threshold)
        if self.agnostic:  # one class column was ranked: label each kept box with its best
            flat = selected[:, 0] * scores.shape[1] + selected[:, 2]
            selected = torch.stack(
                [selected[:, 0], best_class.reshape(-1)[flat], selected[:, 2]], dim=1)
        return selected, scores


class RawHeadNMS(nn.Module):
    """A raw-head detector with class-aware NMS appended: `forward(images)` -> the contract.

    `boxes` / `scores` name the model's outputs: dict keys, or indices into a tuple output
    (see `find_raw_head_outputs`). Scriptable when the model returns `dict[str, Tensor]`.
    """

    def __init__(
        self,
        model: nn.Module,
        iou_threshold: float = 0.45,
        score_threshold: float = 0.25,
        max_detections: int = DEFAULT_MAX_DETECTIONS,
        boxes: str | int = "boxes",
        scores: str | int = "scores",
        multi_label: bool = True,
        agnostic: bool = False,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.nms = ClassAwareNMS(iou_threshold, score_threshold, max_detections, multi_label,
                                 agnostic)
        self.boxes_key = boxes
        self.scores_key = scores

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out = self.model(images)
        return self.nms(out[self.boxes_key], out[self.scores_key])


class YoloDecode(nn.Module):
    """Ultralytics' raw Detect output as `boxes` [B,N,4] xyxy and `scores` [B,N,C].

    v5u/v8/v11 heads return one tensor [B, 4+C, N]: cx, cy, w, h in input pixels, then each
    class's score (sigmoid, no objectness); some exports transpose it to [B, N, 4+C].
    `index` picks it from the model's flattened outputs (Ultralytics adds its feature maps in
    eval mode)."""

    def __init__(self, model: nn.Module, index: int = 0, channels_first: bool = True,
                 classes: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.index = index
        self.channels_first = channels_first
        # the class columns end here when more follow (a Segment head's mask coefficients
        # exported as boxes only, with --task detection); -1: they run to the end
        self.classes_end = 4 + classes if classes is not None else -1

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        prediction = self.model(images)[self.index]
        if self.channels_first:
            prediction = prediction.transpose(1, 2)
        centre, size = prediction[..., 0:2], prediction[..., 2:4]
        boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
        scores = prediction[..., 4:] if self.classes_end < 0 else \
            prediction[..., 4:self.classes_end]
        return {"boxes": boxes, "scores": scores}


def rows_to_xyxy_pixels(boxes: Tensor, box_format: str, height: Any, width: Any) -> Tensor:
    """Rows' boxes [..., 4] in `box_format` (see options.BOX_FORMATS) -> xyxy input pixels;
    `height` and `width` are the input's (sizes or traced shape values)."""
    if box_format.endswith("-norm"):
        scale = torch.stack([torch.as_tensor(width), torch.as_tensor(height)]).to(boxes)
        boxes = boxes * torch.cat([scale, scale])
    if box_format.startswith("cxcywh"):
        centre, size = boxes[..., 0:2], boxes[..., 2:4]
        boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
    return boxes


class RowsToContract(nn.Module):
    """Post-processed detection rows -> the contract: a model (an NMS-free head: YOLOv10,
    YOLO26 end-to-end, RT-DETR style) that returns [B,K,6] rows of a box, score, class after
    its own TopK; the box is x1, y1, x2, y2 in input pixels unless `box_format` says otherwise
    (RT-DETR: normalised cx, cy, w, h). Rows above `score_threshold` are kept, best first, up
    to `max_detections`; the rest are zero, as the contract says."""

    def __init__(self, model: nn.Module, index: int = 0, score_threshold: float = 0.25,
                 max_detections: int = DEFAULT_MAX_DETECTIONS, box_format: str = "xyxy") -> None:
        super().__init__()
        self.model = model
        self.index = index
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)
        self.box_format = box_format

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        rows = self.model(images)[self.index].to(torch.float32)
        k = min(self.max_detections, rows.shape[1])
        scores, order = torch.topk(rows[..., 4], k, dim=1)
        picked = torch.gather(rows, 1, order[..., None].expand(-1, -1, rows.shape[2]))
        valid = scores > self.score_threshold
        keep = valid.to(torch.float32)
        boxes = picked[..., 0:4]
        if self.box_format != "xyxy":
            boxes = rows_to_xyxy_pixels(boxes, self.box_format, images.shape[-2],
                                        images.shape[-1])
        boxes = boxes * keep[..., None]
        labels = picked[..., 5].to(torch.int64) * valid.to(torch.int64)
        pad = self.max_detections - k
        if pad > 0:  # fewer rows than K: the contract still has K
            boxes = torch.nn.functional.pad(boxes, (0, 0, 0, pad))
            scores = torch.nn.functional.pad(scores, (0, pad))
            labels = torch.nn.functional.pad(labels, (0, pad))
            keep = torch.nn.functional.pad(keep, (0, pad))
        return valid.sum(dim=1).to(torch.int64), boxes, scores * keep, labels


class QueriesToRows(nn.Module):
    """A DETR-style head (transformers' RT-DETR: `logits` [B,Q,C], `pred_boxes` [B,Q,4] of
    normalised cx, cy, w, h) as [B,K,6] rows, its own post-processing's way: sigmoid scores,
    the top K (query, class) pairs over all of them, no NMS. `RowsToContract` with
    box_format cxcywh-norm makes them the contract."""

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model = model
        self.k = int(k)

    def forward(self, images: Tensor) -> tuple[Tensor]:
        out = self.model(images)
        logits, boxes = out["logits"], out["pred_boxes"]
        classes = logits.shape[2]
        scores = logits.sigmoid().flatten(1)
        top, index = torch.topk(scores, min(self.k, scores.shape[1]), dim=1)
        query = torch.div(index, classes, rounding_mode="floor")
        picked = torch.gather(boxes, 1, query[..., None].expand(-1, -1, 4))
        labels = (index % classes).to(picked.dtype)
        return (torch.cat([picked, top[..., None], labels[..., None]], dim=-1),)


def find_raw_head_outputs(outputs: Sequence[tuple[str, Sequence[int]]]) -> tuple[int, int]:
    """Indices of the `boxes` [B,N,4] and `scores` [B,N,C] outputs among (name, shape) pairs,
    e.g. a model's flattened outputs. Found by name (`boxes`, `pred.boxes`, ...), otherwise by
    shape when exactly one pair of rank-3 outputs fits. Raises UsageError naming what was
    found when they are missing or of the wrong shape."""
    shapes = [(name, tuple(int(d) for d in shape)) for name, shape in outputs]
    found = ", ".join(f"{n} {list(s)}" for n, s in shapes) or "no outputs"
    want = "--nms needs outputs 'boxes' [B,N,4] (xyxy) and 'scores' [B,N,C]"

    def by_name(key: str) -> int | None:
        hits = [i for i, (n, _) in enumerate(shapes) if n == key or n.endswith("." + key)]
        if len(hits) > 1:
            raise UsageError(f"{want}; several outputs are named '{key}': {found}")
        return hits[0] if hits else None

    boxes_i, scores_i = by_name("boxes"), by_name("scores")
    if boxes_i is None and scores_i is None:
        rank3 = [i for i, (_, s) in enumerate(shapes) if len(s) == 3]
        box_like = [i for i in rank3 if shapes[i][1][2] == 4]
        if len(rank3) == 2 and len(box_like) >= 1:
            boxes_i = box_like[0]
            scores_i = rank3[1] if rank3[0] == boxes_i else rank3[0]
    if boxes_i is None or scores_i is None:
        raise UsageError(f"{want}; the model returns {found}")
    (bname, bshape), (sname, sshape) = shapes[boxes_i], shapes[scores_i]
    if len(bshape) != 3 or bshape[2] != 4:
        raise UsageError(f"{want}; '{bname}' has shape {list(bshape)} (all outputs: {found})")
    if len(sshape) != 3:
        raise UsageError(f"{want}; '{sname}' has shape {list(sshape)} (all outputs: {found})")
    if bshape[:2] != sshape[:2]:
        raise UsageError(
            f"{want}; '{bname}' {list(bshape)} and '{sname}' {list(sshape)} disagree on [B,N]"
        )
    return boxes_i, scores_i
