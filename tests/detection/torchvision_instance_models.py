"""torchvision's Mask R-CNN and Keypoint R-CNN, small and offline (no weights downloaded), their
layers rescaled to unit-scale activations (`liven`) so that scores vary as a trained model's
do: factories for the CLI (`tests.detection.torchvision_instance_models:mask_rcnn`)."""

from __future__ import annotations

import torch
from torch import nn

from toolkit.demo.liven import liven

SIZE = 128


def _small(kind: str, per_image: int) -> nn.Module:
    from torchvision.models import detection

    options = dict(weights=None, weights_backbone=None, min_size=SIZE, max_size=SIZE,
                   box_score_thresh=0.0, box_detections_per_img=per_image)
    if kind == "masks":
        model = detection.maskrcnn_resnet50_fpn(num_classes=3, **options)
    else:
        model = detection.keypointrcnn_resnet50_fpn(num_classes=2, num_keypoints=5, **options)
    images = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    return liven(model.eval(), images).eval()


def mask_rcnn(per_image: int = 5) -> nn.Module:
    return _small("masks", per_image)


def keypoint_rcnn(per_image: int = 5) -> nn.Module:
    return _small("keypoints", per_image)
