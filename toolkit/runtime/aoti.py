"""AOTInductor packages (.pt2): compiled ahead of time, loaded without the model's code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit.errors import BackendUnavailable
from toolkit.runtime.torch_common import TorchRunner


class AOTIRunner(TorchRunner):
    format = "pt2"

    def __init__(self, path: str | Path, *, compiled_for: str = "cpu", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self.compiled_for = compiled_for

    def _load(self) -> Callable[..., Any]:
        import torch

        if self.compiled_for.split(":")[0] != self.device.split(":")[0]:
            raise BackendUnavailable(
                f"{self.path} was compiled for {self.compiled_for}, not {self.device}; "
                f"re-export with --to pt2 --device {self.device}"
            )
        from toolkit.runtime.torchscript import load_custom_ops

        load_custom_ops()
        package = torch._inductor.aoti_load_package(str(self.path))
        return lambda *tensors: package(*tensors)


def open_artifact(bundle: Any, record: dict[str, Any], **options: Any) -> AOTIRunner:
    return AOTIRunner(bundle.path_of(record), compiled_for=record.get("device", "cpu"),
                      inputs=bundle.inputs, outputs=bundle.outputs,
                      precision=record["precision"], **options)
