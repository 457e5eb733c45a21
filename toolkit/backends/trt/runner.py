"""Run a TensorRT engine: name-based IO bound to device buffers, `execute_async_v3` on a CUDA
stream, optional CUDA graph replay for timing. Buffers and the stream come from PyTorch when it
has CUDA, else from cuda-python (`toolkit.backends.trt.cuda`), so a device needs no torch.

Written against the TensorRT 10.x/11.x Python API docs (see docs/tensorrt.md). Before the
engine is deserialized, `trt_compat.preflight` checks the manifest record against this machine,
so a wrong TensorRT version or GPU gives one clear line and the rebuild command instead of
TensorRT's opaque deserialization error.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import formats
from toolkit.backends.trt import bindings as trt_bindings
from toolkit.backends.trt import compat as trt_compat
from toolkit.backends.trt import profiles as trt_profiles
from toolkit.backends.trt.build import import_tensorrt, register_plugins
from toolkit.backends.trt.cuda import (
    CapturedGraph,
    CudaDevice,
    DeviceBuffer,
    EnqueueRefused,
    TorchCuda,
    device_facts,
    open_device,
)
from toolkit.backends.trt.logger import errors_since, process_logger
from toolkit.errors import BackendUnavailable, UsageError
from toolkit.manifest import ArtifactRecord
from toolkit.runtime.base import ArtifactHome, Feed, Runner
from toolkit.spec import OutputSpec, TensorSpec


@dataclass
class _Bound:
    """Buffers whose addresses the context holds; kept alive while they may run. Shape-tensor
    inputs live in host memory (TensorRT reads them on the host)."""

    inputs: dict[str, DeviceBuffer] = field(default_factory=dict)
    outputs: dict[str, DeviceBuffer] = field(default_factory=dict)
    host: dict[str, np.ndarray] = field(default_factory=dict)
    graph: CapturedGraph | None = None


class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine (`model.engine`) on a CUDA device."""

    format = "trt"

    def __init__(
        self,
        path: str | Path,
        *,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[OutputSpec],
        device: str = "cuda",
        precision: str = "fp32",
        record: dict[str, Any] | None = None,
        cuda_graph: bool = False,
        threads: int | None = None,
        name: str | None = None,
        bundle_root: str | None = None,
    ) -> None:
        super().__init__(
            inputs=inputs, outputs=outputs, device=device, precision=precision,
            threads=threads, name=name,
        )
        self.path = Path(path)
        self.record = dict(record) if record else None
        self.cuda_graph = cuda_graph
        self.bundle_root = bundle_root  # named in rebuild commands; default: the engine's dir
        self.warnings: list[str] = []  # from preflight, e.g. same sm but another GPU model
        self._reset()

    def _reset(self) -> None:
        self._cuda: CudaDevice | None = None
        self._trt: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._logger: Any = None
        self._dtypes: dict[str, str] = {}
        self._engine_outputs: list[str] = []
        self._profiles: list[trt_profiles.Profile] = []
        self._profile = 0
        self._host: set[str] = set()  # tensors TensorRT reads or writes in host memory
        self._bound_key: tuple | None = None  # the prepared shapes the context is bound to
        # Device buffers reused by every infer() (grown when a shape needs more), and one
        # set per prepared shape, so neither a long verify nor a bench loop allocates per call.
        self._pool = _Bound()
        self._prepared: dict[tuple, _Bound] = {}

    @property
    def bundle_dir(self) -> str:
        return self.bundle_root or str(self.path.parent)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def stream(self) -> Any:
        """The torch CUDA stream the engine runs on, for CUDA-event timers (None until
        activated, and None on the cuda-python backend, where the host clock times it)."""
        cuda = getattr(self, "_cuda", None)
        return cuda.stream if isinstance(cuda, TorchCuda) else None

    @property
    def cuda_events_bracket_work(self) -> bool:
        return isinstance(getattr(self, "_cuda", None), TorchCuda)

    def _activate_impl(self) -> None:
        try:
            self._open()
        except BaseException:
            self._deactivate_impl()  # activate() failed: nothing it took may stay held
            raise

    def _open(self) -> None:
        if not self.device.startswith("cuda"):
            raise UsageError(f"{self.name}: TensorRT engines run on a CUDA device, "
                             f"not '{self.device}'")
        if not self.path.is_file():
            raise UsageError(f"{self.path}: engine not found; build it with "
                             f"{trt_compat.rebuild_command(self.bundle_dir)}")
        trt = self._preflight()
        trt_compat.api_plan(trt.__version__)  # refuses TensorRT < 10
        self._trt = trt
        self._cuda = open_device(self.device, "run a TensorRT engine")
        self._logger = process_logger(trt)
        mark = self._logger.mark()
        # before deserializing: the plugins its build recorded (TensorRT's, Torch-TensorRT's)
        unregistered = register_plugins(trt, self._logger, self.record)
        self._runtime = trt.Runtime(self._logger)
        if ((self.record or {}).get("compatibility") or {}).get("version_compatible"):
            # A version-compatible plan carries its own lean runtime, which runs host code.
            self._runtime.engine_host_code_allowed = True
        dla_core = (self.record or {}).get("dla_core")
        if dla_core is not None:
            self._runtime.DLA_core = int(dla_core)  # the core the engine's DLA layers run on
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            detail = errors_since(self._logger, mark)
            if unregistered:
                detail = f"{detail}; {unregistered}"
            raise BackendUnavailable(
                f"{self.path}: TensorRT {trt.__version__} could not load the engine ({detail}); "
                f"rebuild it here: {trt_compat.rebuild_command(self.bundle_dir)}"
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendUnavailable(f"{self.path}: TensorRT could not create an execution "
                                     "context (out of GPU memory?)")
        self._read_io()

    def _preflight(self) -> Any:
        """Check the record against this machine first; then insist on TensorRT and CUDA."""
        try:
            import tensorrt as trt
        except ImportError:
            trt = None
        gpu = device_facts("run a TensorRT engine", self.device)
        if self.record:
            dla_cores = None
            if trt is not None and self.record.get("dla_core") is not None:  # engine JSON
                dla_cores = int(trt.Runtime(process_logger(trt)).num_DLA_cores)
            here = trt_compat.machine(
                getattr(trt, "__version__", None), gpu, platform.machine(), dla_cores
            )
            decision = trt_compat.preflight(self.record, here, bundle=self.bundle_dir)
            decision.raise_if_blocked()
            self.warnings = list(decision.warnings)
        if trt is None:
            trt = import_tensorrt("run a TensorRT engine")
        if gpu is None:
            open_device(self.device, "run a TensorRT engine").release()  # raises the reason
        return trt

    def _read_io(self) -> None:
        trt, engine = self._trt, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if n not in ins]
        problems = trt_bindings.io_problems(
            ins, outs, [s.name for s in self.inputs], [o.name for o in self.outputs]
        )
        if problems:
            raise UsageError(f"{self.path}: " + "; ".join(problems) + "; rebuild the engine")
        self._engine_outputs = outs
        # TensorRT says where each tensor lives: shape tensors (and their outputs) on the host
        self._host = {n for n in names
                      if engine.get_tensor_location(n) == trt.TensorLocation.HOST}
        self._dtypes = {
            n: trt_bindings.buffer_dtype(n, engine.get_tensor_dtype(n).name) for n in names
        }
        count = int(engine.num_optimization_profiles)
        # A static engine has one implicit profile; only several need choosing between.
        self._profiles = [
            {n: tuple(tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(n, p))
             for n in ins}
            for p in range(count)
        ] if count > 1 else []
        self._profile = 0

    def _deactivate_impl(self) -> None:
        if self._cuda is not None:
            self._cuda.synchronize()
        # Graphs and buffers (release destroys and frees them) before the context, the
        # context before the engine.
        if self._cuda is not None:
            self._cuda.release()
        self._pool = _Bound()
        self._prepared.clear()
        self._context = None
        self._engine = None
        self._runtime = None
        self._reset()

    # -- running ---------------------------------------------------------------------------
    def _infer_impl(self, feed: Feed) -> dict[str, np.ndarray]:
        bound = self._bind(feed, self._pool)
        self._bound_key = None
        self._execute()
        self._cuda.synchronize()
        return {o.name: (bound.host[o.name].copy() if o.name in bound.host
                         else self._cuda.download(bound.outputs[o.name]))
                for o in self.outputs}

    def _prepare_impl(self, feed: Feed) -> Callable[[], Any]:
        """Inputs copied to the device and bound once; the call only enqueues the engine (or
        replays a CUDA graph of it). The latest prepare() owns the context's bindings; each
        distinct set of shapes keeps its buffers (and graph) for the runner's lifetime."""
        key = tuple(sorted((name, np.shape(array)) for name, array in feed.items()))
        bound = self._prepared.setdefault(key, _Bound())
        self._bind(feed, bound)
        rebound = self._bound_key != key
        self._bound_key = key
        if not self.cuda_graph:
            return self._execute
        if bound.graph is not None and rebound:
            # the context was bound to other shapes (or profile) since this graph was
            # captured: a replay of it is not documented as safe, so capture it again
            bound.graph.destroy()
            bound.graph = None
        if bound.graph is None:
            bound.graph = self._capture()
        return bound.graph

    def synchronize(self) -> None:
        if self._cuda is not None:
            self._cuda.synchronize()

    # -- helpers ---------------------------------------------------------------------------
    def _bind(self, feed: Mapping[str, np.ndarray], bound: _Bound) -> _Bound:
        """Copy the feed into `bound`'s buffers (allocated, or grown, only when they don't
        fit) and point the context at them: profile first, then shapes, then addresses."""
        cuda = self._cuda
        shapes = {name: tuple(np.shape(array)) for name, array in feed.items()}
        if self._profiles:
            self._switch_profile(trt_profiles.select_profile(self._profiles, shapes))
        for spec in self.inputs:
            name = spec.name
            mark = self._logger.mark()
            if not self._context.set_input_shape(name, shapes[name]):
                raise UsageError(f"{self.name}: the engine rejects shape {list(shapes[name])} "
                                 f"for input '{name}' ({errors_since(self._logger, mark)})")
            if name in self._host:
                host = np.ascontiguousarray(feed[name], dtype=self._dtypes[name])
                bound.host[name] = host  # TensorRT reads shape tensors from host memory
                self._set_address(name, host.ctypes.data)
                continue
            buffer = self._buffer(bound.inputs, name, shapes[name])
            cuda.copy_in(buffer, feed[name])
            self._set_address(name, buffer.ptr)
        for name in self._engine_outputs:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            if trt_bindings.unresolved_dims(shape):
                raise UsageError(f"{self.name}: output '{name}' has a data-dependent shape "
                                 f"{list(shape)}, which toolkit's TensorRT runner can't bind")
            if name in self._host:
                bound.host[name] = np.empty(shape, dtype=self._dtypes[name])
                self._set_address(name, bound.host[name].ctypes.data)
                continue
            self._set_address(name, self._buffer(bound.outputs, name, shape).ptr)
        return bound

    def _buffer(self, buffers: dict[str, DeviceBuffer], name: str,
                shape: tuple[int, ...]) -> DeviceBuffer:
        """`buffers[name]` seen as `shape`, reallocated only when it doesn't fit."""
        dtype = self._dtypes[name]
        held = buffers.get(name)
        if held is not None:
            try:
                buffers[name] = held.reshaped(shape)
                return buffers[name]
            except ValueError:
                self._cuda.free(held)
        buffers[name] = self._cuda.empty(shape, dtype)
        return buffers[name]

    def _switch_profile(self, profile: int) -> None:
        if profile == self._profile:
            return
        mark = self._logger.mark()
        try:
            ok = self._context.set_optimization_profile_async(profile, self._cuda.stream_handle)
        except RuntimeError as err:  # the bindings raise ("Error in set optimization profile
            # async.") where the C++ API returns false: TensorRT's log has the reason
            ok, fallback = False, str(err).splitlines()[0]
        else:
            fallback = "no reason logged"
        if not ok:
            reason = errors_since(self._logger, mark, fallback)
            raise BackendUnavailable(f"{self.name}: TensorRT could not switch to optimization "
                                     f"profile {profile}: {reason}")
        self._profile = profile

    def _set_address(self, name: str, address: int) -> None:
        mark = self._logger.mark()
        if not self._context.set_tensor_address(name, address):
            raise BackendUnavailable(f"{self.name}: TensorRT refused the address of tensor "
                                     f"'{name}': {errors_since(self._logger, mark)}")

    def _execute(self) -> None:
        mark = self._logger.mark()
        if not self._context.execute_async_v3(self._cuda.stream_handle):
            raise BackendUnavailable(f"{self.name}: TensorRT failed to run the engine: "
                                     f"{errors_since(self._logger, mark)}")

    def _capture(self) -> CapturedGraph:
        """Record one enqueue into a CUDA graph (after a plain run, which TensorRT needs to
        finish shape-dependent setup outside the capture). The enqueue's result is checked:
        a refused one would leave a graph that replays nothing."""
        self._execute()
        self._cuda.synchronize()
        handle = self._cuda.stream_handle
        mark = self._logger.mark()
        try:
            return self._cuda.capture(lambda: self._context.execute_async_v3(handle))
        except (EnqueueRefused, RuntimeError, BackendUnavailable) as err:
            reason = errors_since(self._logger, mark, str(err).splitlines()[0])
            raise BackendUnavailable(
                f"{self.name}: this engine can't be captured in a CUDA graph ({reason}); "
                "run without cuda_graph"
            ) from None


def open_artifact(bundle: ArtifactHome, record: ArtifactRecord, *, device: str = "cuda",
                  **options: Any) -> Runner:
    """The engine's runner; names Torch-TensorRT changed are mapped back to the bundle's.
    The engine record (TensorRT's fields) goes to the runner as its JSON, for preflight."""
    common = dict(record=record.to_json(), bundle_root=str(bundle.root),
                  precision=record.precision,
                  device=device if device.startswith("cuda") else "cuda", **options)
    path = bundle.path_of(record)
    names = formats.get(record.format).fields_of(record).tensor_names or {}
    if all(k == v for k, v in names.items()):
        return TensorRTRunner(path, inputs=bundle.inputs, outputs=bundle.outputs, **common)
    from toolkit.runtime.renamed import RenamedRunner, renamed_specs

    inner = TensorRTRunner(path, inputs=renamed_specs(bundle.inputs, names),
                           outputs=renamed_specs(bundle.outputs, names), **common)
    return RenamedRunner(inner, names, inputs=bundle.inputs, outputs=bundle.outputs)
