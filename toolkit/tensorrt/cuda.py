"""CUDA device memory and streams for the TensorRT runner and builder, from PyTorch when it is
installed, else from NVIDIA's CUDA Python bindings (`cuda-python` / `cuda-bindings`), so an edge
device needs no torch to run an engine.

Both backends are written against their documented APIs. Neither has executed in this project
(no GPU here): the README's table says so. The logic that needs no GPU (dtype handling, the
choice of backend, bf16 widening) is tested on CPU.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.errors import BackendUnavailable

INSTALL_CUDA = "pip install 'toolkit[trt]' (brings cuda-python) or PyTorch with CUDA"


def numpy_buffer_dtype(name: str) -> np.dtype:
    """The host dtype that holds a buffer of this type: bf16 travels as its raw 16 bits."""
    return np.dtype(np.uint16) if name == "bfloat16" else np.dtype(name)


def narrow_to_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), rounded to nearest even as torch and CUDA round."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def widen_bfloat16(raw: np.ndarray) -> np.ndarray:
    """bf16 bits (uint16) -> float32: a bf16 is the upper half of the float32 it rounds."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


@dataclass
class DeviceBuffer:
    """Device memory of one tensor: its address for TensorRT, and what keeps it alive."""

    ptr: int
    shape: tuple[int, ...]
    dtype: str
    owner: Any = None  # a torch tensor, or the cuda-python allocation to free


class CudaDevice:
    """One CUDA device: facts, a stream, buffers, copies, optional graph capture."""

    backend = ""

    def facts(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def stream_handle(self) -> int:
        raise NotImplementedError

    def synchronize(self) -> None:
        raise NotImplementedError

    def upload(self, array: np.ndarray, dtype: str) -> DeviceBuffer:
        raise NotImplementedError

    def empty(self, shape: Sequence[int], dtype: str) -> DeviceBuffer:
        raise NotImplementedError

    def download(self, buffer: DeviceBuffer) -> np.ndarray:
        raise NotImplementedError

    def capture(self, enqueue: Callable[[], Any]) -> Callable[[], None]:
        """Record `enqueue` into a CUDA graph; returns a call that replays it."""
        raise NotImplementedError

    def release(self) -> None:
        return None


class TorchCuda(CudaDevice):
    """Buffers are torch CUDA tensors on a torch stream (CUDA-event timers share it)."""

    backend = "torch"

    def __init__(self, torch: Any, device: str) -> None:
        self.torch = torch
        self.device = torch.device(device)
        if self.device.index is not None:
            torch.cuda.set_device(self.device)
        self.stream = torch.cuda.Stream(device=self.device)

    def facts(self) -> dict[str, Any]:
        props = self.torch.cuda.get_device_properties(self.torch.cuda.current_device())
        return {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                "integrated": bool(getattr(props, "is_integrated", False)),
                "memory_gib": round(props.total_memory / 2**30, 1)}

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def _dtype(self, name: str) -> Any:
        return getattr(self.torch, name)

    def upload(self, array: np.ndarray, dtype: str) -> DeviceBuffer:
        torch = self.torch
        with torch.cuda.stream(self.stream):
            host = torch.from_numpy(array if array.flags.writeable else array.copy())
            tensor = host.to(self.device, dtype=self._dtype(dtype)).contiguous()
        return DeviceBuffer(tensor.data_ptr(), tuple(tensor.shape), dtype, tensor)

    def empty(self, shape: Sequence[int], dtype: str) -> DeviceBuffer:
        with self.torch.cuda.stream(self.stream):
            tensor = self.torch.empty(tuple(shape), dtype=self._dtype(dtype), device=self.device)
        return DeviceBuffer(tensor.data_ptr(), tuple(shape), dtype, tensor)

    def download(self, buffer: DeviceBuffer) -> np.ndarray:
        tensor = buffer.owner
        if tensor.dtype == self.torch.bfloat16:
            tensor = tensor.float()  # numpy has no bfloat16
        return tensor.cpu().numpy()

    def capture(self, enqueue: Callable[[], Any]) -> Callable[[], None]:
        torch = self.torch
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            enqueue()

        def replay() -> None:
            with torch.cuda.stream(self.stream):
                graph.replay()

        replay.graph = graph  # type: ignore[attr-defined] - keeps the graph alive
        return replay


class CudaPython(CudaDevice):
    """Buffers from cudaMalloc, copies with cudaMemcpyAsync, through NVIDIA's cuda-python."""

    backend = "cuda-python"

    def __init__(self, cudart: Any, device: str) -> None:
        self.rt = cudart
        index = int(device.split(":")[1]) if ":" in device else 0
        count = self._ok(cudart.cudaGetDeviceCount())
        if count <= index:
            raise BackendUnavailable(f"CUDA device {index} not found ({count} visible)")
        self._ok(cudart.cudaSetDevice(index))
        self.index = index
        self._stream = self._ok(cudart.cudaStreamCreate())
        self._allocations: list[int] = []

    def _ok(self, result: Any) -> Any:
        """cuda-python returns (error, *values); anything but success is raised."""
        status, *values = result if isinstance(result, tuple) else (result,)
        if int(status) != 0:
            name = getattr(status, "name", str(int(status)))
            raise BackendUnavailable(f"CUDA runtime call failed: {name}")
        return values[0] if len(values) == 1 else (tuple(values) or None)

    def facts(self) -> dict[str, Any]:
        props = self._ok(self.rt.cudaGetDeviceProperties(self.index))
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return {"name": name.rstrip("\x00"),
                "compute_capability": f"{props.major}.{props.minor}",
                "integrated": bool(props.integrated),
                "memory_gib": round(props.totalGlobalMem / 2**30, 1)}

    @property
    def stream_handle(self) -> int:
        return int(self._stream)

    def synchronize(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self._stream))

    def _malloc(self, nbytes: int) -> int:
        ptr = int(self._ok(self.rt.cudaMalloc(max(nbytes, 1))))
        self._allocations.append(ptr)
        return ptr

    def upload(self, array: np.ndarray, dtype: str) -> DeviceBuffer:
        if dtype == "bfloat16":
            host = narrow_to_bfloat16(array)
        else:
            host = np.ascontiguousarray(array, dtype=numpy_buffer_dtype(dtype))
        ptr = self._malloc(host.nbytes)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, self._stream))
        # the host copy must outlive the asynchronous copy
        return DeviceBuffer(ptr, tuple(host.shape), dtype, host)

    def empty(self, shape: Sequence[int], dtype: str) -> DeviceBuffer:
        nbytes = int(np.prod(shape, dtype=np.int64)) * numpy_buffer_dtype(dtype).itemsize
        return DeviceBuffer(self._malloc(nbytes), tuple(shape), dtype)

    def download(self, buffer: DeviceBuffer) -> np.ndarray:
        host = np.empty(buffer.shape, dtype=numpy_buffer_dtype(buffer.dtype))
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(host.ctypes.data, buffer.ptr, host.nbytes, kind,
                                         self._stream))
        self.synchronize()
        return widen_bfloat16(host) if buffer.dtype == "bfloat16" else host

    def capture(self, enqueue: Callable[[], Any]) -> Callable[[], None]:
        rt = self.rt
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._ok(rt.cudaStreamBeginCapture(self._stream, mode))
        try:
            enqueue()
        finally:
            graph = self._ok(rt.cudaStreamEndCapture(self._stream))
        executable = self._ok(rt.cudaGraphInstantiate(graph, 0))

        def replay() -> None:
            self._ok(rt.cudaGraphLaunch(executable, self._stream))

        return replay

    def release(self) -> None:
        self.synchronize()
        for ptr in self._allocations:
            self.rt.cudaFree(ptr)
        self._allocations.clear()
        self.rt.cudaStreamDestroy(self._stream)


def _import_cudart() -> Any:
    """cuda-python's runtime module: `cuda.bindings.runtime` (12.6+), else `cuda.cudart`."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _torch_with_cuda() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def open_device(device: str = "cuda", action: str = "run a TensorRT engine",
                prefer: str | None = None) -> CudaDevice:
    """The CUDA device, through torch when it has CUDA, else cuda-python; exit 3 otherwise."""
    order = ("torch", "cuda-python") if prefer != "cuda-python" else ("cuda-python", "torch")
    for backend in order:
        if backend == "torch" and (torch := _torch_with_cuda()) is not None:
            return TorchCuda(torch, device)
        if backend == "cuda-python" and (cudart := _import_cudart()) is not None:
            return CudaPython(cudart, device)
    raise BackendUnavailable(f"no CUDA GPU reachable to {action}: neither PyTorch with CUDA "
                             f"nor cuda-python is usable here ({INSTALL_CUDA})")


def device_facts(action: str = "build a TensorRT engine") -> dict[str, Any] | None:
    """The current GPU's facts, or None when no CUDA device is reachable (for preflight)."""
    try:
        cuda = open_device("cuda", action)
    except BackendUnavailable:
        return None
    try:
        return cuda.facts()
    finally:
        cuda.release()
