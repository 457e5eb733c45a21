"""Ultralytics detectors built from their packaged YAMLs (random weights, nothing downloaded),
for the YOLO detection path. Ultralytics is a test dependency only."""

from __future__ import annotations

import os

import torch
from torch import nn

os.environ.setdefault("YOLO_OFFLINE", "1")


def _spread_class_scores(model: nn.Module) -> nn.Module:
    """Random weights are degenerate: Ultralytics' init with identity BatchNorm statistics
    shrinks activations to ~1e-7 by the head, so every box gets the class prior (0.0001) and
    all scores tie. BatchNorm recalibrated on one batch of noise images (its statistics taken
    from that batch) gives activations of unit scale, so scores vary by place and class, as a
    trained model's do; a class prior of sigmoid(-3) then puts some dozens of boxes over
    Ultralytics' 0.25."""
    generator = torch.Generator().manual_seed(0)
    # the toolkit draws example images from N(0, 1); calibrate on the same
    images = torch.randn(8, 3, 320, 320, generator=generator)
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.reset_running_stats()
            layer.momentum = None  # a cumulative average: one batch sets it
    model.train()
    with torch.no_grad():
        model(images)
        head = model.model[-1]
        for branches in (head.cv3, getattr(head, "one2one_cv3", None) or ()):
            for branch in branches:  # the class prior of a model that finds things
                branch[-1].bias.fill_(-3.0)
    return model.eval()


def _detector(yaml: str, classes: int = 80, kind: str = "DetectionModel",
              **kwargs: object) -> nn.Module:
    """Built with torch seeded: every call gives the same weights (the toolkit seeds a
    factory it calls, but a benchmark or a test calling this directly must get the same).
    `kind` names Ultralytics' model class (SegmentationModel, PoseModel, OBBModel)."""
    from ultralytics.nn import tasks

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = getattr(tasks, kind)(yaml, nc=classes, verbose=False, **kwargs)
        return _spread_class_scores(model).eval()


def yolo11n_seg(classes: int = 80) -> nn.Module:
    return _detector("yolo11n-seg.yaml", classes, "SegmentationModel")


def yolo11n_pose(classes: int = 1, keypoints: int = 17) -> nn.Module:
    return _detector("yolo11n-pose.yaml", classes, "PoseModel",
                     data_kpt_shape=(keypoints, 3))


def yolo11n_obb(classes: int = 15) -> nn.Module:
    return _detector("yolo11n-obb.yaml", classes, "OBBModel")


def yolov8n(classes: int = 80) -> nn.Module:
    return _detector("yolov8n.yaml", classes)


def yolo11n(classes: int = 80) -> nn.Module:
    return _detector("yolo11n.yaml", classes)


def yolov8n_seg() -> nn.Module:
    from ultralytics.nn.tasks import SegmentationModel

    return SegmentationModel("yolov8n-seg.yaml", nc=80, verbose=False).eval()


def yolov10n_end2end() -> nn.Module:
    """An NMS-free head (one-to-one, end-to-end): [B,300,6] rows after its own TopK."""
    model = _detector("yolov10n.yaml")
    model.model[-1].end2end = True
    return model.eval()


def rtdetr_l() -> nn.Module:
    """Ultralytics' RT-DETR (rtdetr-l.yaml, random weights, nothing downloaded): its decoder
    returns [B,300,6] rows of normalised cx, cy, w, h, score, class."""
    from ultralytics.nn.tasks import RTDETRDetectionModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return RTDETRDetectionModel("rtdetr-l.yaml", nc=80, verbose=False).eval()
