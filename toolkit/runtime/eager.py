"""Eager PyTorch: the reference every artifact is compared with, and the speed baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from toolkit.runtime.torch_common import TorchRunner


class EagerRunner(TorchRunner):
    format = "eager"

    def __init__(self, model: Any, **kwargs: Any) -> None:
        super().__init__(inputs=model.inputs, outputs=model.outputs, **kwargs)
        self.model = model

    def _load(self) -> Callable[..., Any]:
        return self.model.flat.to(self.device).eval()

    def _deactivate_impl(self) -> None:
        self.model.module.to("cpu")
        super()._deactivate_impl()


def open_model(model: Any, **options: Any) -> EagerRunner:
    return EagerRunner(model, **options)
