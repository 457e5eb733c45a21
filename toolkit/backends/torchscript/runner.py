"""TorchScript (legacy upstream): torch.jit.load of a frozen trace or script."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit import formats
from toolkit.errors import UsageError, first_line
from toolkit.manifest import ArtifactRecord
from toolkit.runtime.base import ArtifactHome
from toolkit.runtime.torch_common import TorchRunner, load_custom_ops


class TorchScriptRunner(TorchRunner):
    format = "torchscript"

    def __init__(self, path: str | Path, *, call_style: str = "flat", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self.call_style = call_style

    def _load(self) -> Callable[..., Any]:
        import torch

        load_custom_ops()
        try:
            return torch.jit.load(str(self.path), map_location=self.device).eval()
        except RuntimeError as err:
            raise UsageError(f"torch.jit.load can't load {self.path}: {first_line(err)}"
                             ) from err


def open_artifact(bundle: ArtifactHome, record: ArtifactRecord,
                  **options: Any) -> TorchScriptRunner:
    return TorchScriptRunner(bundle.path_of(record),
                             call_style=formats.get(record.format).fields_of(record).call_style
                             or "flat",
                             inputs=bundle.inputs, outputs=bundle.outputs,
                             precision=record.precision, **options)
