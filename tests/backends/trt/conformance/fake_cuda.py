"""A fake CUDA runtime over NVIDIA's real `cuda-bindings` package (conformance, never "run").

`cuda.bindings.runtime` imports without a GPU; every call then fails with
cudaErrorInsufficientDriver. This fake stands in for that module in `toolkit.backends.trt.cuda`:

- strict names: a function the real module lacks is an AttributeError; one it has but the fake
  doesn't model is a NotImplementedError naming it;
- the real enums, handle types (`cudaStream_t`, `cudaGraph_t`, `cudaGraphExec_t`) and
  `(cudaError_t, value)` returns, with argument types checked as the bindings check them;
- host memory stands in for the device (a device pointer is a real host address, so the fake
  TensorRT reads and writes tensors there with ctypes); allocations are counted;
- a stream runs work at once, except while it captures: then work is recorded into a graph
  and a launch replays it. What CUDA forbids during capture (synchronous calls, pageable
  host copies, allocation on the capturing stream's behalf, a sync) invalidates the capture,
  as on a GPU, and EndCapture then returns cudaErrorStreamCaptureInvalidated.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cuda.bindings import runtime as real

Err = real.cudaError_t
OK = Err.cudaSuccess


@dataclass
class Capture:
    """One stream capture in progress: the work it recorded, and whether it was broken."""

    nodes: list[Callable[[], None]] = field(default_factory=list)
    invalidated: str | None = None


@dataclass
class Graph:
    nodes: list[Callable[[], None]]
    destroyed: bool = False


class FakeCudaRuntime:
    """`cuda.bindings.runtime`, with host memory as the device. One instance = one process."""

    def __init__(self, *, devices: int = 1, name: str = "NVIDIA Fake GPU", major: int = 8,
                 minor: int = 7, integrated: bool = False, memory: int = 8 * 2**30,
                 driver_version: int = 12040) -> None:
        self.devices = devices
        self.props = dict(name=name, major=major, minor=minor, integrated=integrated,
                          memory=memory)
        #: device index -> what differs from `props` (a multi-GPU host)
        self.device_props: dict[int, dict[str, Any]] = {}
        self.driver_version = driver_version
        self.memory: dict[int, np.ndarray] = {}  # device pointer -> backing host array
        self.streams: dict[int, Capture | None] = {}  # stream handle -> capture in progress
        self.graphs: dict[int, Graph] = {}
        self.execs: dict[int, Graph] = {}
        self.calls: list[str] = []
        self.current = 0
        self._next_handle = 0x1000

    # -- strictness ------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if not hasattr(real, name):
            raise AttributeError(f"cuda.bindings.runtime has no attribute '{name}'")
        value = getattr(real, name)
        if isinstance(value, type):
            return value  # the real enums and handle types
        raise NotImplementedError(f"the fake CUDA runtime doesn't model {name}(); add it")

    def _record(self, name: str) -> None:
        self.calls.append(name)

    def _handle(self) -> int:
        self._next_handle += 0x10
        return self._next_handle

    @staticmethod
    def _stream_id(stream: Any) -> int:
        if not isinstance(stream, (int, real.cudaStream_t)) or isinstance(stream, bool):
            raise TypeError(f"stream must be a cudaStream_t or int, not {type(stream).__name__}")
        return int(stream)

    def _illegal_during_capture(self, what: str) -> None:
        """Legacy-stream synchronous work invalidates every capture in ThreadLocal mode too
        when it touches a capturing stream; we model the common case: any capture breaks."""
        for capture in self.streams.values():
            if capture is not None and capture.invalidated is None:
                capture.invalidated = what

    def enqueue(self, stream: Any, work: Callable[[], None], *, capturable: bool = True,
                what: str = "work") -> None:
        """Run `work` on `stream` now, or record it when the stream captures (used by the
        fake TensorRT's execute_async_v3 as well as the copies below)."""
        sid = self._stream_id(stream)
        if sid not in self.streams and sid != 0:
            raise RuntimeError(f"stream {sid:#x} was never created")
        capture = self.streams.get(sid)
        if capture is None:
            work()
        elif capturable:
            capture.nodes.append(work)
        else:
            capture.invalidated = capture.invalidated or what

    def is_capturing(self, stream: Any) -> bool:
        return self.streams.get(self._stream_id(stream)) is not None

    # -- devices ---------------------------------------------------------------------------
    def cudaDriverGetVersion(self) -> tuple:
        self._record("cudaDriverGetVersion")
        return (OK, self.driver_version)

    def cudaRuntimeGetVersion(self) -> tuple:
        self._record("cudaRuntimeGetVersion")
        return (OK, self.driver_version)

    def cudaGetDeviceCount(self) -> tuple:
        self._record("cudaGetDeviceCount")
        return (OK, self.devices)

    def cudaSetDevice(self, device: int) -> tuple:
        self._record("cudaSetDevice")
        if not isinstance(device, int) or not 0 <= device < self.devices:
            return (Err.cudaErrorInvalidDevice,)
        self.current = device
        return (OK,)

    def cudaGetDeviceProperties(self, device: int) -> tuple:
        self._record("cudaGetDeviceProperties")
        if not isinstance(device, int) or not 0 <= device < self.devices:
            return (Err.cudaErrorInvalidDevice, None)
        mine = self.props_of(device)
        props = real.cudaDeviceProp()
        props.name = mine["name"].encode().ljust(256, b"\0")
        props.major, props.minor = mine["major"], mine["minor"]
        props.integrated = int(mine["integrated"])
        props.totalGlobalMem = mine["memory"]
        return (OK, props)

    def props_of(self, device: int) -> dict[str, Any]:
        return {**self.props, **self.device_props.get(device, {})}

    def cudaMemGetInfo(self) -> tuple:
        self._record("cudaMemGetInfo")
        used = sum(a.nbytes for a in self.memory.values())
        return (OK, self.props["memory"] - used, self.props["memory"])

    # -- memory ----------------------------------------------------------------------------
    def cudaMalloc(self, size: int) -> tuple:
        self._record("cudaMalloc")
        if not isinstance(size, int) or size < 0:
            raise TypeError(f"cudaMalloc(size) takes an int, got {size!r}")
        self._illegal_during_capture("cudaMalloc")
        backing = np.zeros(max(size, 1), dtype=np.uint8)
        ptr = backing.ctypes.data
        self.memory[ptr] = backing
        return (OK, ptr)

    def cudaFree(self, ptr: int) -> tuple:
        self._record("cudaFree")
        self._illegal_during_capture("cudaFree")
        if int(ptr) not in self.memory:
            return (Err.cudaErrorInvalidValue,)
        del self.memory[int(ptr)]
        return (OK,)

    def owns(self, ptr: int, nbytes: int) -> bool:
        """Whether [ptr, ptr + nbytes) lies inside one live allocation."""
        return any(base <= ptr and ptr + nbytes <= base + a.nbytes
                   for base, a in self.memory.items())

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple:
        self._record("cudaMemcpyAsync")
        if not isinstance(kind, real.cudaMemcpyKind):
            raise TypeError(f"cudaMemcpyAsync kind must be a cudaMemcpyKind, got {kind!r}")
        for value in (dst, src, count):
            if not isinstance(value, int):
                raise TypeError(f"cudaMemcpyAsync takes ints for pointers and sizes: {value!r}")
        kinds = real.cudaMemcpyKind
        device_side = {kinds.cudaMemcpyHostToDevice: (dst,), kinds.cudaMemcpyDeviceToHost: (src,),
                       kinds.cudaMemcpyDeviceToDevice: (dst, src)}.get(kind, ())
        if any(not self.owns(p, count) for p in device_side):
            return (Err.cudaErrorInvalidValue,)
        # Copies from or to pageable host memory can't be captured; device-to-device can.
        capturable = kind == kinds.cudaMemcpyDeviceToDevice
        self.enqueue(stream, lambda: ctypes.memmove(dst, src, count), capturable=capturable,
                     what="a host copy")
        return (OK,)

    def cudaMemcpy(self, dst: int, src: int, count: int, kind: Any) -> tuple:
        self._record("cudaMemcpy")
        self._illegal_during_capture("cudaMemcpy")
        ctypes.memmove(dst, src, count)
        return (OK,)

    # -- streams and graphs ----------------------------------------------------------------
    def cudaStreamCreate(self) -> tuple:
        self._record("cudaStreamCreate")
        handle = self._handle()
        self.streams[handle] = None
        return (OK, real.cudaStream_t(handle))

    def cudaStreamDestroy(self, stream: Any) -> tuple:
        self._record("cudaStreamDestroy")
        sid = self._stream_id(stream)
        if sid not in self.streams:
            return (Err.cudaErrorInvalidResourceHandle,)
        del self.streams[sid]
        return (OK,)

    def cudaStreamSynchronize(self, stream: Any) -> tuple:
        self._record("cudaStreamSynchronize")
        sid = self._stream_id(stream)
        if self.streams.get(sid) is not None:
            self.streams[sid].invalidated = "cudaStreamSynchronize"
            return (Err.cudaErrorStreamCaptureUnsupported,)
        return (OK,)

    def cudaStreamBeginCapture(self, stream: Any, mode: Any) -> tuple:
        self._record("cudaStreamBeginCapture")
        if not isinstance(mode, real.cudaStreamCaptureMode):
            raise TypeError(f"mode must be a cudaStreamCaptureMode, got {mode!r}")
        sid = self._stream_id(stream)
        if sid not in self.streams:
            return (Err.cudaErrorInvalidResourceHandle,)
        if self.streams[sid] is not None:
            return (Err.cudaErrorIllegalState,)
        self.streams[sid] = Capture()
        return (OK,)

    def cudaStreamEndCapture(self, stream: Any) -> tuple:
        self._record("cudaStreamEndCapture")
        sid = self._stream_id(stream)
        capture = self.streams.get(sid)
        if capture is None:
            return (Err.cudaErrorIllegalState, None)
        self.streams[sid] = None
        if capture.invalidated:
            return (Err.cudaErrorStreamCaptureInvalidated, None)
        handle = self._handle()
        self.graphs[handle] = Graph(capture.nodes)
        return (OK, real.cudaGraph_t(handle))

    def cudaGraphInstantiate(self, graph: Any, flags: int) -> tuple:
        """As the bindings declare it: `cudaGraphInstantiate(graph, unsigned long long flags)`,
        both required (the real call without flags is a TypeError)."""
        self._record("cudaGraphInstantiate")
        if isinstance(flags, bool) or not isinstance(flags, int) or flags < 0:
            raise TypeError(f"cudaGraphInstantiate flags must be an unsigned int, got {flags!r}")
        if not isinstance(graph, real.cudaGraph_t):
            raise TypeError(f"graph must be a cudaGraph_t, got {type(graph).__name__}")
        source = self.graphs.get(int(graph))
        if source is None or source.destroyed:
            return (Err.cudaErrorInvalidValue, None)
        handle = self._handle()
        self.execs[handle] = Graph(list(source.nodes))
        return (OK, real.cudaGraphExec_t(handle))

    def cudaGraphLaunch(self, exec_: Any, stream: Any) -> tuple:
        self._record("cudaGraphLaunch")
        if not isinstance(exec_, real.cudaGraphExec_t):
            raise TypeError(f"cudaGraphLaunch needs a cudaGraphExec_t, got {type(exec_).__name__}")
        graph = self.execs.get(int(exec_))
        if graph is None or graph.destroyed:
            return (Err.cudaErrorInvalidValue,)
        for node in graph.nodes:
            self.enqueue(stream, node)
        return (OK,)

    def cudaGraphDestroy(self, graph: Any) -> tuple:
        self._record("cudaGraphDestroy")
        found = self.graphs.pop(int(graph), None)
        return (OK,) if found is not None else (Err.cudaErrorInvalidValue,)

    def cudaGraphExecDestroy(self, exec_: Any) -> tuple:
        self._record("cudaGraphExecDestroy")
        found = self.execs.pop(int(exec_), None)
        return (OK,) if found is not None else (Err.cudaErrorInvalidValue,)

    # -- what tests assert -----------------------------------------------------------------
    @property
    def live_allocations(self) -> int:
        return len(self.memory)

    @property
    def live_graphs(self) -> int:
        return len(self.graphs) + len(self.execs)
