"""Shared plumbing for runners that execute torch code (in-process, compiled, saved programs,
and the backends' torch.export-based programs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from toolkit.environment import require_module
from toolkit.errors import BackendUnavailable
from toolkit.runtime.base import Feed, Runner


def check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(
            f"--device {device}: no CUDA GPU is visible here; run on a GPU machine or use cpu"
        )


class TorchRunner(Runner):
    """A runner whose `_call(*tensors)` returns the flat outputs (or a structure to flatten)."""

    call_style = "flat"  # 'flat': FlatModule outputs; 'positional'/'keyword': user structure

    def _activate_impl(self) -> None:
        torch = require_module("torch", f"running {self.name}")
        check_device(self.device)
        if self.threads:
            # torch's thread count is the process's: put back what it was when this runner
            # goes, or a bench at 1 thread would leave the caller's training at 1
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        try:
            self._fn = self._load()
        except BaseException:  # never activated, so never deactivated: put the count back here
            self._deactivate_impl()
            raise

    def _load(self) -> Callable[..., Any]:
        raise NotImplementedError

    def _deactivate_impl(self) -> None:
        self._fn = None
        before = getattr(self, "_threads_before", None)
        if before is not None:
            import torch

            torch.set_num_threads(before)
            self._threads_before = None

    def _tensors(self, feed: Feed) -> tuple:
        import torch

        from toolkit.source.wrapper import TORCH_DTYPES

        return tuple(
            torch.from_numpy(feed[s.name]).to(self.device, dtype=TORCH_DTYPES[s.dtype])
            for s in self.inputs
        )

    def _run(self, tensors: Sequence[Any]) -> Any:
        if self.call_style == "keyword":
            return self._fn(**dict(zip([s.name for s in self.inputs], tensors)))
        return self._fn(*tensors)

    def _infer_impl(self, feed: Feed) -> dict[str, np.ndarray]:
        import torch

        from toolkit.source.wrapper import flatten_outputs, to_numpy

        with torch.inference_mode():
            out = self._run(self._tensors(feed))
        if self.call_style == "flat":
            values = list(out) if isinstance(out, (tuple, list)) else [out]
        else:
            values = [t for _, t in flatten_outputs(out)]
        return {spec.name: to_numpy(v) for spec, v in zip(self.outputs, values)}

    def _prepare_impl(self, feed: Feed) -> Callable[[], Any]:
        import torch

        tensors = self._tensors(feed)

        def call() -> Any:
            with torch.inference_mode():
                return self._run(tensors)

        return call

    def synchronize(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


def load_custom_ops() -> None:
    """Register the ops a saved program may call beyond torch's own: torchvision's (nms,
    roi_align) are what detectors use. Absent torchvision, such a file fails to load, and says
    which op is missing."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        import torchvision  # noqa: F401 - registers torchvision::* ops a saved program calls


class ModelRunner(TorchRunner):
    """Runs the source model itself, in-process (a `runs_from='model'` format's runner)."""

    def __init__(self, model: Any, **kwargs: Any) -> None:
        super().__init__(inputs=model.inputs, outputs=model.outputs, **kwargs)
        self.model = model

    def _load(self) -> Callable[..., Any]:
        return self.model.flat.to(self.device).eval()

    def _deactivate_impl(self) -> None:
        self.model.module.to("cpu")
        super()._deactivate_impl()
