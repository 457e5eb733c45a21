"""What a device with TensorRT says of itself to `--on` (`toolkit _device probe`): TensorRT's
version (`version`), and on a Jetson, where there is no nvidia-smi, the GPU from the CUDA
runtime the runner uses. Runs on the device; no torch."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from toolkit.modules import module_available


def device_facts(describe_gpu: bool) -> dict[str, Any]:
    facts: dict[str, Any] = {"version": _tensorrt_version()}
    if describe_gpu:
        with contextlib.suppress(Exception):  # no driver, no bindings: nothing to add
            from toolkit.backends.trt.cuda import device_facts as cuda_facts

            found = cuda_facts("describe the GPU") or {}
            if found.get("name"):
                facts["gpu"] = str(found["name"])
            if found.get("compute_capability"):
                facts["compute_capability"] = str(found["compute_capability"])
    return facts


def _tensorrt_version() -> str | None:
    module = sys.modules.get("tensorrt")
    if module is None and module_available("tensorrt"):
        with contextlib.suppress(Exception):
            import tensorrt as module  # type: ignore[no-redef]
    return str(getattr(module, "__version__", "")) or None if module is not None else None
