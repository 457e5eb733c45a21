"""CUDA device memory, streams and graphs for the TensorRT runner and builder, from PyTorch when
it has CUDA, else from NVIDIA's CUDA Python bindings (`cuda-python` / `cuda-bindings`), so an
edge device needs no torch to run an engine.

What has run where (the README's table has the whole picture): the cuda-python backend against
the real cuda-bindings on a GPU through `benchmarks/gpu_check.sh`; both backends on CPU in the
conformance suite (`tests/backends/trt/conformance`), over a fake CUDA runtime built on the real
cuda-bindings types. The logic that needs no GPU (bf16 on the host, backend choice, the driver
check) is tested directly.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.errors import BackendUnavailable

INSTALL_CUDA = ("pip install 'toolkit[trt-cu12]' or 'toolkit[trt-cu13]' (cuda-python for the "
                "driver's CUDA major) or PyTorch with CUDA")


def numpy_buffer_dtype(name: str) -> np.dtype:
    """The host dtype that holds a buffer of this type: bf16 travels as its raw 16 bits."""
    return np.dtype(np.uint16) if name == "bfloat16" else np.dtype(name)


def narrow_to_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), rounded to nearest even as torch and CUDA round. NaN
    becomes the quiet NaN 0x7FC0 with its sign (rounding its payload could reach inf or 0)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.ascontiguousarray(values, dtype=np.float32))
    return np.where(nan, ((bits >> 16) & 0x8000).astype(np.uint16) | 0x7FC0, rounded
                    ).astype(np.uint16)


def widen_bfloat16(raw: np.ndarray) -> np.ndarray:
    """bf16 bits (uint16) -> float32: a bf16 is the upper half of the float32 it rounds."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def host_array(array: np.ndarray, dtype: str) -> np.ndarray:
    """The bytes a buffer of `dtype` holds for these values (bf16 narrowed on the host)."""
    if dtype == "bfloat16":
        return narrow_to_bfloat16(array)
    return np.ascontiguousarray(array, dtype=numpy_buffer_dtype(dtype))


@dataclass
class DeviceBuffer:
    """Device memory of one tensor: its address for TensorRT, and what keeps it alive.
    `capacity` is the bytes allocated; a buffer may be reused for any shape that fits."""

    ptr: int
    shape: tuple[int, ...]
    dtype: str
    owner: Any = None  # the flat torch tensor, or None for a cuda-python allocation
    capacity: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * numpy_buffer_dtype(self.dtype).itemsize

    def reshaped(self, shape: Sequence[int]) -> DeviceBuffer:
        """The same memory seen as another shape (it must fit the capacity)."""
        view = DeviceBuffer(self.ptr, tuple(int(d) for d in shape), self.dtype, self.owner,
                            self.capacity)
        if view.nbytes > self.capacity:
            raise ValueError(f"{view.nbytes} bytes don't fit a buffer of {self.capacity}")
        return view


class CapturedGraph:
    """A CUDA graph of recorded work: calling it replays the work; `destroy` frees it."""

    def __init__(self, launch: Callable[[], None], destroy: Callable[[], None]) -> None:
        self._launch, self._destroy = launch, destroy
        self.destroyed = False

    def __call__(self) -> None:
        if self.destroyed:
            raise RuntimeError("this CUDA graph was destroyed")
        self._launch()

    def destroy(self) -> None:
        if not self.destroyed:
            self.destroyed = True
            self._destroy()


class CudaDevice:
    """One CUDA device: facts, a stream, buffers, copies, graph capture."""

    backend = ""

    def __init__(self) -> None:
        self._graphs: list[CapturedGraph] = []

    def facts(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def stream_handle(self) -> int:
        raise NotImplementedError

    @property
    def live_allocations(self) -> int:
        """Device buffers handed out and not yet freed."""
        raise NotImplementedError

    def memory_info(self) -> tuple[int, int]:
        """(free, total) bytes of device memory."""
        raise NotImplementedError

    def synchronize(self) -> None:
        raise NotImplementedError

    def empty(self, shape: Sequence[int], dtype: str) -> DeviceBuffer:
        raise NotImplementedError

    def copy_in(self, buffer: DeviceBuffer, array: np.ndarray) -> None:
        """Host -> device into an existing buffer of the array's shape, asynchronously."""
        raise NotImplementedError

    def download(self, buffer: DeviceBuffer) -> np.ndarray:
        """Device -> host after the queued work; bf16 comes back as float32."""
        raise NotImplementedError

    def copy_device(self, dst: DeviceBuffer, src: DeviceBuffer) -> None:
        """Device -> device on the stream (capturable)."""
        raise NotImplementedError

    def free(self, buffer: DeviceBuffer) -> None:
        raise NotImplementedError

    def _capture(self, enqueue: Callable[[], Any]) -> CapturedGraph:
        raise NotImplementedError

    def upload(self, array: np.ndarray, dtype: str) -> DeviceBuffer:
        buffer = self.empty(np.shape(array), dtype)
        self.copy_in(buffer, array)
        return buffer

    def capture(self, enqueue: Callable[[], Any]) -> CapturedGraph:
        """Record `enqueue` into a CUDA graph. An enqueue that returns False (TensorRT refused
        it) or raises fails the capture with that reason: a graph that captured nothing would
        replay nothing."""
        graph = self._capture(enqueue)
        self._graphs.append(graph)
        return graph

    def release(self) -> None:
        """Destroy the graphs, then free every buffer still held, then the stream."""
        for graph in self._graphs:
            graph.destroy()
        self._graphs.clear()


class EnqueueRefused(RuntimeError):
    """The work to capture reported failure (execute_async_v3 returned False)."""


def _call_enqueue(enqueue: Callable[[], Any]) -> None:
    if enqueue() is False:
        raise EnqueueRefused("the enqueue returned False while capturing")


class TorchCuda(CudaDevice):
    """Buffers are torch CUDA tensors on a torch stream (CUDA-event timers share it).

    `api` is `torch.cuda`; the conformance suite passes a stand-in over its fake CUDA runtime
    and keeps tensors on the CPU (`tensor_device`)."""

    backend = "torch"

    def __init__(self, torch: Any, device: str, api: Any = None,
                 tensor_device: str | None = None) -> None:
        super().__init__()
        self.torch = torch
        self.api = api if api is not None else torch.cuda
        self.device = torch.device(device)
        self.tensor_device = torch.device(tensor_device) if tensor_device else self.device
        if self.device.index is not None:
            self.api.set_device(self.device)
        self.stream = self.api.Stream(device=self.device)
        self._live: dict[int, Any] = {}

    def facts(self) -> dict[str, Any]:
        index = self.device.index if self.device.index is not None else (
            self.api.current_device())
        props = self.api.get_device_properties(index)
        return {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                "integrated": bool(getattr(props, "is_integrated", False)),
                "memory_gib": round(props.total_memory / 2**30, 1)}

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    @property
    def live_allocations(self) -> int:
        return len(self._live)

    def memory_info(self) -> tuple[int, int]:
        free, total = self.api.mem_get_info(self.device)
        return int(free), int(total)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def _view(self, buffer: DeviceBuffer) -> Any:
        count = int(np.prod(buffer.shape, dtype=np.int64))
        return buffer.owner[:count].view(buffer.shape)

    def empty(self, shape: Sequence[int], dtype: str) -> DeviceBuffer:
        count = int(np.prod(tuple(shape), dtype=np.int64))
        with self.api.stream(self.stream):
            flat = self.torch.empty(max(count, 1), dtype=getattr(self.torch, dtype),
                                    device=self.tensor_device)
        self._live[flat.data_ptr()] = flat
        return DeviceBuffer(flat.data_ptr(), tuple(int(d) for d in shape), dtype, flat,
                            flat.numel() * flat.element_size())

    def copy_in(self, buffer: DeviceBuffer, array: np.ndarray) -> None:
        torch = self.torch
        host = torch.from_numpy(np.ascontiguousarray(array))
        with self.api.stream(self.stream):
            self._view(buffer).copy_(host.to(getattr(torch, buffer.dtype)), non_blocking=False)

    def download(self, buffer: DeviceBuffer) -> np.ndarray:
        self.synchronize()
        tensor = self._view(buffer)
        if tensor.dtype == self.torch.bfloat16:
            tensor = tensor.float()  # numpy has no bfloat16
        return tensor.cpu().numpy().copy()

    def copy_device(self, dst: DeviceBuffer, src: DeviceBuffer) -> None:
        with self.api.stream(self.stream):
            self._view(dst).copy_(self._view(src))

    def free(self, buffer: DeviceBuffer) -> None:
        self._live.pop(buffer.ptr, None)

    def _capture(self, enqueue: Callable[[], Any]) -> CapturedGraph:
        graph = self.api.CUDAGraph()
        with self.api.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            _call_enqueue(enqueue)

        def replay() -> None:
            with self.api.stream(self.stream):
                graph.replay()

        return CapturedGraph(replay, graph.reset)

    def release(self) -> None:
        super().release()
        self._live.clear()


class CudaPython(CudaDevice):
    """Buffers from cudaMalloc, copies with cudaMemcpyAsync, through NVIDIA's cuda-python."""

    backend = "cuda-python"

    def __init__(self, cudart: Any, device: str) -> None:
        super().__init__()
        self.rt = cudart
        index = int(device.split(":")[1]) if ":" in device else 0
        count = self._ok(cudart.cudaGetDeviceCount())
        if count <= index:
            raise BackendUnavailable(f"CUDA device {index} not found ({count} visible)")
        self._ok(cudart.cudaSetDevice(index))
        self.index = index
        self._stream = self._ok(cudart.cudaStreamCreate())
        self._allocations: dict[int, int] = {}  # device pointer -> bytes

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

    @property
    def live_allocations(self) -> int:
        return len(self._allocations)

    def memory_info(self) -> tuple[int, int]:
        free, total = self._ok(self.rt.cudaMemGetInfo())
        return int(free), int(total)

    def synchronize(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self._stream))

    def empty(self, shape: Sequence[int], dtype: str) -> DeviceBuffer:
        shape = tuple(int(d) for d in shape)
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * numpy_buffer_dtype(dtype).itemsize, 1)
        ptr = int(self._ok(self.rt.cudaMalloc(nbytes)))
        self._allocations[ptr] = nbytes
        return DeviceBuffer(ptr, shape, dtype, None, nbytes)

    def copy_in(self, buffer: DeviceBuffer, array: np.ndarray) -> None:
        host = host_array(array, buffer.dtype)
        if host.nbytes != buffer.nbytes:
            raise ValueError(f"{host.nbytes} bytes don't fit a {buffer.shape} {buffer.dtype} "
                             "buffer")
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        # From pageable memory the call returns once the bytes are staged: `host` may go.
        self._ok(self.rt.cudaMemcpyAsync(buffer.ptr, host.ctypes.data, host.nbytes, kind,
                                         self._stream))

    def download(self, buffer: DeviceBuffer) -> np.ndarray:
        host = np.empty(buffer.shape, dtype=numpy_buffer_dtype(buffer.dtype))
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(host.ctypes.data, buffer.ptr, host.nbytes, kind,
                                         self._stream))
        self.synchronize()
        return widen_bfloat16(host) if buffer.dtype == "bfloat16" else host

    def copy_device(self, dst: DeviceBuffer, src: DeviceBuffer) -> None:
        if dst.nbytes != src.nbytes:
            raise ValueError(f"device copy of {src.nbytes} bytes into {dst.nbytes}")
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._ok(self.rt.cudaMemcpyAsync(dst.ptr, src.ptr, src.nbytes, kind, self._stream))

    def free(self, buffer: DeviceBuffer) -> None:
        if self._allocations.pop(buffer.ptr, None) is not None:
            self._ok(self.rt.cudaFree(buffer.ptr))

    def _capture(self, enqueue: Callable[[], Any]) -> CapturedGraph:
        rt = self.rt
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._ok(rt.cudaStreamBeginCapture(self._stream, mode))
        try:
            _call_enqueue(enqueue)
        except BaseException:
            # End the capture but keep the enqueue's own error: the capture's status
            # (invalidated) says nothing the user can act on.
            status, *rest = rt.cudaStreamEndCapture(self._stream)
            if int(status) == 0 and rest and rest[0] is not None:
                rt.cudaGraphDestroy(rest[0])
            raise
        graph = self._ok(rt.cudaStreamEndCapture(self._stream))
        try:
            executable = self._ok(rt.cudaGraphInstantiate(graph, 0))
        except BackendUnavailable:
            rt.cudaGraphDestroy(graph)
            raise

        def launch() -> None:
            self._ok(rt.cudaGraphLaunch(executable, self._stream))

        def destroy() -> None:
            rt.cudaGraphExecDestroy(executable)
            rt.cudaGraphDestroy(graph)

        return CapturedGraph(launch, destroy)

    def release(self) -> None:
        self.synchronize()
        super().release()
        for ptr in list(self._allocations):
            self.rt.cudaFree(ptr)
        self._allocations.clear()
        self.rt.cudaStreamDestroy(self._stream)


# -- choosing a backend --------------------------------------------------------------------
def _import_cudart() -> Any:
    """cuda-python's runtime module: `cuda.bindings.runtime` (12.6+), else `cuda.cudart`."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def bindings_version() -> str | None:
    """cuda-bindings' (or cuda-python's) version, or None when neither is installed."""
    for name in ("cuda.bindings", "cuda"):
        try:
            version = getattr(importlib.import_module(name), "__version__", None)
        except ImportError:
            continue
        if version:
            return str(version)
    return None


def check_driver(driver_version: int, bindings_version: str | None) -> None:
    """cuda-python N.x calls the CUDA N driver API: on an older driver every call fails with
    cudaErrorInsufficientDriver, which says nothing about the fix. Say it (exit 3)."""
    if driver_version <= 0:
        raise BackendUnavailable("no NVIDIA driver is loaded on this machine (the CUDA driver "
                                 "reports version 0)")
    if not bindings_version:
        return
    bindings_major = int(bindings_version.split(".")[0])
    driver_major, driver_minor = driver_version // 1000, driver_version % 1000 // 10
    if bindings_major > driver_major:
        raise BackendUnavailable(
            f"cuda-python {bindings_version} needs a CUDA {bindings_major} driver; this "
            f"driver supports CUDA {driver_major}.{driver_minor}: pip install "
            f"'cuda-python>={driver_major},<{driver_major + 1}' "
            f"(or 'toolkit[trt-cu{driver_major}]')"
        )


def _torch_with_cuda() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _open_torch(device: str) -> CudaDevice:
    torch = _torch_with_cuda()
    if torch is None:
        raise BackendUnavailable("PyTorch is not installed or has no CUDA here")
    try:
        return TorchCuda(torch, device)
    except (RuntimeError, AssertionError) as err:  # torch's CUDA errors are RuntimeErrors
        raise BackendUnavailable(f"PyTorch could not open {device}: "
                                 f"{str(err).splitlines()[0]}") from None


def _open_cuda_python(device: str) -> CudaDevice:
    cudart = _import_cudart()
    if cudart is None:
        raise BackendUnavailable("cuda-python is not installed")
    status, driver = cudart.cudaDriverGetVersion()
    if int(status) != 0:
        raise BackendUnavailable(f"cuda-python can't read the driver version: {status}")
    check_driver(int(driver), bindings_version())
    return CudaPython(cudart, device)


BACKENDS: dict[str, Callable[[str], CudaDevice]] = {
    "torch": _open_torch, "cuda-python": _open_cuda_python,
}


def open_device(device: str = "cuda", action: str = "run a TensorRT engine",
                prefer: str | None = None) -> CudaDevice:
    """The CUDA device through the first backend that opens it (torch, then cuda-python, or
    `prefer` first); exit 3 naming why each one failed."""
    order = sorted(BACKENDS, key=lambda name: name != prefer)
    reasons = []
    for name in order:
        try:
            return BACKENDS[name](device)
        except BackendUnavailable as err:
            reasons.append(f"{name}: {err}")
    raise BackendUnavailable(f"no CUDA GPU reachable to {action} ({'; '.join(reasons)}); "
                             f"{INSTALL_CUDA}")


def device_facts(action: str = "build a TensorRT engine",
                 device: str = "cuda") -> dict[str, Any] | None:
    """The facts of `device` (cuda, cuda:N), or None when it can't be reached (preflight)."""
    try:
        cuda = open_device(device, action)
    except BackendUnavailable:
        return None
    try:
        return cuda.facts()
    finally:
        cuda.release()
