"""TorchScript (legacy upstream): torch.jit.load of a frozen trace or script."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit.errors import UsageError, first_line
from toolkit.manifest import ArtifactRecord
from toolkit.runtime.torch_common import TorchRunner


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


def load_custom_ops() -> None:
    """Register the ops a saved program may call beyond torch's own: torchvision's (nms,
    roi_align) are what detectors use. Absent torchvision, such a file fails to load, and says
    which op is missing."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        import torchvision  # noqa: F401 - registers torchvision::* ops a TorchScript file calls


def open_artifact(bundle: Any, record: ArtifactRecord, **options: Any) -> TorchScriptRunner:
    return TorchScriptRunner(bundle.path_of(record),
                             call_style=record.call_style or "flat",
                             inputs=bundle.inputs, outputs=bundle.outputs,
                             precision=record.precision, **options)
