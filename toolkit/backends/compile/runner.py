"""torch.compile in-process (not saved): compiled on first call, so cold start includes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from toolkit.runtime.torch_common import ModelRunner


class CompiledRunner(ModelRunner):
    format = "compile"

    def __init__(self, model: Any, *, mode: str | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.mode = mode

    def _load(self) -> Callable[..., Any]:
        import torch

        module = super()._load()
        dynamic = any(s.dynamic_dims for s in self.inputs)
        return torch.compile(module, mode=self.mode, dynamic=dynamic or None)


def open_model(model: Any, **options: Any) -> CompiledRunner:
    return CompiledRunner(model, **options)
