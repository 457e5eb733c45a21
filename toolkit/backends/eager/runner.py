"""Eager PyTorch: the reference every artifact is compared with, and the speed baseline."""

from __future__ import annotations

from typing import Any

from toolkit.runtime.torch_common import ModelRunner


class EagerRunner(ModelRunner):
    format = "eager"


def open_model(model: Any, **options: Any) -> EagerRunner:
    return EagerRunner(model, **options)
