"""One place that decides which hardware-gated tests can run here, and says why not
(after Lightning's RunIf)."""

from __future__ import annotations

import importlib.util

import pytest


def skip_reason(*, cuda: bool = False, tensorrt: bool = False, ort_cuda: bool = False,
                module: str | None = None) -> str | None:
    """Why a test with these needs can't run on this machine (None when it can)."""
    if module and importlib.util.find_spec(module) is None:
        return f"{module} not installed"
    if tensorrt and importlib.util.find_spec("tensorrt") is None:
        return "TensorRT not installed (pip install 'toolkit[trt]' on a GPU machine)"
    if cuda or tensorrt or ort_cuda:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU on this machine"
    if ort_cuda:
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "onnxruntime has no CUDAExecutionProvider (install the 'gpu' extra)"
    return None


def requires(**needs: object) -> pytest.MarkDecorator:
    reason = skip_reason(**needs)  # type: ignore[arg-type]
    return pytest.mark.skipif(reason is not None, reason=reason or "")
