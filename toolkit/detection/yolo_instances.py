"""Ultralytics' Segment, Pose and OBB heads as the detection contract plus their extra output.

The raw prediction of these heads (`export=True`) is one tensor [B, 4+C+E, N]: cx, cy, w, h
in input pixels, C class scores (sigmoids), then E per-anchor extras: 32 mask coefficients
(Segment, with prototypes [B,32,H/4,W/4] as a second output), P x 3 decoded keypoints
(Pose: x, y in input pixels, a sigmoid score), or one angle (OBB). Post-processing goes in
the graph, the same module being the reference, in float32 whatever the network's
precision (everything after the selection ops stays fp32, and INT8 never quantises it):

- Segment: class-aware NMS as for Detect, then each kept detection's mask assembled as
  Ultralytics does it: sigmoid(coefficients . prototypes) at the prototype grid (stride 4),
  zero outside the box (a cell is inside when its top-left input pixel lies in the box).
- Pose: class-aware NMS, then each kept detection's keypoints [P,3] (a [P,2] skeleton gets
  a score column of ones).
- OBB: rotated NMS out of standard ops (graph formats have no rotated NMS operator):
  Ultralytics' own, a fast NMS by probabilistic IoU (Llerena et al. 2021, the Hellinger
  distance of the boxes' Gaussians): a candidate is dropped when any higher-scoring
  candidate of its class overlaps it over the threshold, whether or not that one was itself
  dropped. It runs over the
  `candidates` best scores of each image (a [M,M] IoU matrix); `boxes` is then the
  axis-aligned box enclosing each rotated one.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from toolkit.detection.postprocess import ClassAwareNMS, gather_selected, pad_selected

#: the extra output each instance task adds to the detection contract
EXTRA_OUTPUT = {"segmentation": "masks", "pose": "keypoints", "obb": "oriented_boxes"}
#: a rotated NMS looks at this many of an image's best candidates (at least K)
OBB_CANDIDATES = 1000


class SegmentDetections(NamedTuple):
    num_detections: Tensor
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    masks: Tensor


class PoseDetections(NamedTuple):
    num_detections: Tensor
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    keypoints: Tensor


class OrientedDetections(NamedTuple):
    num_detections: Tensor
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    oriented_boxes: Tensor


def assemble_masks(coefficients: Tensor, prototypes: Tensor, boxes: Tensor,
                   stride: int) -> Tensor:
    """Mask probabilities [B,K,h,w] from coefficients [B,K,M], prototypes [B,M,h,w] and the
    detections' xyxy input-pixel boxes [B,K,4], zero outside each box."""
    batch, m, h, w = prototypes.shape
    k = coefficients.shape[1]
    logits = torch.matmul(coefficients, prototypes.to(torch.float32).reshape(batch, m, h * w))
    probabilities = logits.reshape(batch, k, h, w).sigmoid()
    cols = torch.arange(w, device=boxes.device).to(torch.float32) * stride
    rows = torch.arange(h, device=boxes.device).to(torch.float32) * stride
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))  # [B,K,1] each
    inside_x = (cols >= x1) & (cols < x2)  # [B,K,w]
    inside_y = (rows >= y1) & (rows < y2)  # [B,K,h]
    inside = inside_y[..., :, None] & inside_x[..., None, :]
    return probabilities * inside.to(torch.float32)


def _gaussian(obb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The covariance (xx, yy, xy) of a uniform rotated box: diag(w^2, h^2) / 12 turned by
    the angle."""
    a = obb[..., 2].pow(2) / 12
    b = obb[..., 3].pow(2) / 12
    cos, sin = obb[..., 4].cos(), obb[..., 4].sin()
    return a * cos.pow(2) + b * sin.pow(2), a * sin.pow(2) + b * cos.pow(2), (a - b) * cos * sin


def probabilistic_iou(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """Probabilistic IoU of every box of `a` [..., N, 5] with every box of `b` [..., M, 5]
    (cx, cy, w, h, angle) -> [..., N, M]: 1 - the Hellinger distance of their Gaussians,
    from the Bhattacharyya distance with the mean covariance S = (S1 + S2) / 2."""
    xx1, yy1, xy1 = (t[..., :, None] for t in _gaussian(a))
    xx2, yy2, xy2 = (t[..., None, :] for t in _gaussian(b))
    dx = a[..., :, None, 0] - b[..., None, :, 0]
    dy = a[..., :, None, 1] - b[..., None, :, 1]
    sxx, syy, sxy = xx1 + xx2, yy1 + yy2, xy1 + xy2  # 2 S
    det = sxx * syy - sxy.pow(2)
    # (1/8) d' S^-1 d with S^-1 = 2 (S1 + S2)^-1
    mahalanobis = (syy * dx.pow(2) - 2 * sxy * dx * dy + sxx * dy.pow(2)) / (4 * (det + eps))
    det1 = (xx1 * yy1 - xy1.pow(2)).clamp(min=0)
    det2 = (xx2 * yy2 - xy2.pow(2)).clamp(min=0)
    # (1/2) ln(det S / sqrt(det S1 det S2)), det S = det(2 S) / 4
    spread = 0.5 * torch.log(det / (4 * torch.sqrt(det1 * det2) + eps) + eps)
    distance = (mahalanobis + spread).clamp(min=eps, max=100.0)
    return 1 - torch.sqrt(1 - torch.exp(-distance) + eps)


def enclosing_boxes(obb: Tensor) -> Tensor:
    """The axis-aligned xyxy box enclosing each rotated box [..., 5] -> [..., 4]."""
    cos, sin = obb[..., 4].cos().abs(), obb[..., 4].sin().abs()
    half_w = (obb[..., 2] * cos + obb[..., 3] * sin) / 2
    half_h = (obb[..., 2] * sin + obb[..., 3] * cos) / 2
    cx, cy = obb[..., 0], obb[..., 1]
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)


class YoloInstances(nn.Module):
    """An Ultralytics Segment / Pose / OBB model -> the contract plus masks, keypoints or
    oriented boxes. `model` returns a tuple: the prediction at `index`, and for
    segmentation the prototypes at `proto_index`."""

    def __init__(self, model: nn.Module, task: str, classes: int, *, index: int = 0,
                 proto_index: int = 1, mask_stride: int = 4,
                 keypoint_shape: tuple[int, int] = (17, 3), iou_threshold: float = 0.7,
                 score_threshold: float = 0.25, max_detections: int = 300,
                 multi_label: bool = False, agnostic: bool = False,
                 candidates: int = OBB_CANDIDATES) -> None:
        super().__init__()
        if task not in EXTRA_OUTPUT:
            raise ValueError(f"task {task!r} is not one of {', '.join(EXTRA_OUTPUT)}")
        self.model = model
        self.task = task
        self.classes = int(classes)
        self.index = int(index)
        self.proto_index = int(proto_index)
        self.mask_stride = int(mask_stride)
        self.keypoint_shape = (int(keypoint_shape[0]), int(keypoint_shape[1]))
        self.nms = ClassAwareNMS(iou_threshold, score_threshold, max_detections,
                                 multi_label=multi_label, agnostic=agnostic)
        self.candidates = max(int(candidates), int(max_detections))

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        outputs = self.model(images)
        prediction = outputs[self.index].transpose(1, 2).to(torch.float32)  # [B,N,4+C+E]
        centre, size = prediction[..., 0:2], prediction[..., 2:4]
        scores = prediction[..., 4:4 + self.classes]
        extra = prediction[..., 4 + self.classes:]
        if self.task == "obb":
            return self._oriented(torch.cat([centre, size, extra[..., 0:1]], dim=-1), scores)
        boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
        k = self.nms.max_detections
        selected, ranked = self.nms.select(boxes, scores)
        count, kept, kept_scores, labels = pad_selected(selected, boxes, ranked, k)
        features = gather_selected(selected, ranked, extra, k)
        if self.task == "segmentation":
            masks = assemble_masks(features, outputs[self.proto_index], kept, self.mask_stride)
            return SegmentDetections(count, kept, kept_scores, labels, masks)
        points, dims = self.keypoint_shape
        keypoints = features.reshape(features.shape[0], k, points, dims)
        if dims == 2:  # no score column: every keypoint counts
            keypoints = torch.cat([keypoints, torch.ones_like(keypoints[..., :1])], dim=-1)
        return PoseDetections(count, kept, kept_scores, labels, keypoints)

    def _oriented(self, obb: Tensor, scores: Tensor) -> OrientedDetections:
        """Rotated fast NMS (class-aware unless agnostic) over each image's best candidates."""
        best, label = scores.max(dim=2)  # one label per box, as Ultralytics' OBB predictions
        m = min(self.candidates, best.shape[1])
        top, order = torch.topk(best, m, dim=1)
        obb = torch.gather(obb, 1, order[..., None].expand(-1, -1, 5))
        label = torch.gather(label, 1, order)
        valid = top > self.nms.score_threshold
        shifted = obb
        if not self.nms.agnostic:  # classes never overlap once their centres are far apart
            span = obb[..., 0:4].abs().amax(dim=(1, 2), keepdim=True) * 4 + 1
            offset = label[..., None].to(torch.float32) * span
            shifted = torch.cat([obb[..., 0:2] + offset, obb[..., 2:5]], dim=-1)
        iou = probabilistic_iou(shifted, shifted)  # [B,M,M], candidates best first
        ahead = torch.ones(m, m, device=obb.device).triu(diagonal=1).to(torch.bool)
        suppressor = ahead[None] & valid[..., :, None]
        keep = valid & ~((iou > self.nms.iou_threshold) & suppressor).any(dim=1)
        k = self.nms.max_detections
        kk = min(k, m)
        kept_scores, slot = torch.topk(top * keep.to(top.dtype), kk, dim=1)
        present = kept_scores > 0
        weight = present.to(torch.float32)
        rotated = torch.gather(obb, 1, slot[..., None].expand(-1, -1, 5)) * weight[..., None]
        labels = torch.gather(label, 1, slot) * present.to(label.dtype)
        boxes = enclosing_boxes(rotated) * weight[..., None]
        if kk < k:  # fewer candidates than K: the contract still has K rows
            pad = k - kk
            rotated = nn.functional.pad(rotated, (0, 0, 0, pad))
            boxes = nn.functional.pad(boxes, (0, 0, 0, pad))
            kept_scores = nn.functional.pad(kept_scores, (0, pad))
            labels = nn.functional.pad(labels, (0, pad))
            present = nn.functional.pad(present, (0, pad))
        return OrientedDetections(present.sum(dim=1).to(torch.int64), boxes,
                                  kept_scores * present.to(kept_scores.dtype),
                                  labels.to(torch.int64), rotated)
