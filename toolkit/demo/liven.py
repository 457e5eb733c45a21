"""Make a random-weight detector's scores distinct, for tests and benchmarks without weights.

torchvision's random init makes activations vanish, so every score ties (SSDlite gives 1/3
everywhere) and parity has nothing to compare. Rescaling each conv/linear layer to unit output
on a few images (LSUV-style) gives distinct, stable scores without training.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def liven(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Rescale each conv/linear layer so its output has unit std on `images`; classification
    logits keep their prior."""
    def rescale(mod: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor:
        std = out.std().clamp(min=1e-6)
        mod.weight.data /= std
        if mod.bias is not None:
            mod.bias.data /= std
        return out / std

    hooks = [m.register_forward_hook(rescale) for name, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear)) and not name.endswith("cls_logits")]
    with torch.no_grad():
        model(list(images))
    for hook in hooks:
        hook.remove()
    return model.eval()
