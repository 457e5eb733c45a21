"""TorchScript (legacy upstream): torch.jit.load of a frozen trace or script."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit.runtime.torch_common import TorchRunner


class TorchScriptRunner(TorchRunner):
    format = "torchscript"

    def __init__(self, path: str | Path, *, call_style: str = "flat", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self.call_style = call_style

    def _load(self) -> Callable[..., Any]:
        import torch

        return torch.jit.load(str(self.path), map_location=self.device).eval()


def open_artifact(bundle: Any, record: dict[str, Any], **options: Any) -> TorchScriptRunner:
    return TorchScriptRunner(bundle.path_of(record), call_style=record.get("call_style", "flat"),
                             inputs=bundle.inputs, outputs=bundle.outputs,
                             precision=record["precision"], **options)
