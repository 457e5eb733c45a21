"""Install the fakes for one test: a fake `tensorrt` (one snapshot) and a fake CUDA runtime
behind `toolkit.backends.trt.cuda`, as one "process"; `restart()` starts a new process (a new
library instance, new CUDA state; files on disk stay), as `verify` after `export` would."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.backends.trt.conformance.fake_cuda import FakeCudaRuntime
from tests.backends.trt.conformance.fake_trt import Machine, make_tensorrt
from toolkit.backends.trt import cuda as cuda_module


class FakeProcess:
    def __init__(self, line: str, monkeypatch: Any, machine: Machine | None = None,
                 driver_version: int | None = None, backend: str = "cuda-python") -> None:
        self.line = line
        self.backend = backend
        self.monkeypatch = monkeypatch
        self.machine = machine or Machine()
        self.driver_version = driver_version
        self.restart()

    def restart(self) -> FakeProcess:
        kwargs = {} if self.driver_version is None else {"driver_version": self.driver_version}
        if self.driver_version is None:
            from cuda import bindings

            kwargs["driver_version"] = int(bindings.__version__.split(".")[0]) * 1000 + 20
        self.cuda = FakeCudaRuntime(name=self.machine.gpu,
                                    devices=1 + len(self.machine.other_gpus), **kwargs)
        for index in range(1 + len(self.machine.other_gpus)):
            name, capability = self.machine.gpu_of(index)
            major, minor = capability.split(".")
            self.cuda.device_props[index] = dict(name=name, major=int(major), minor=int(minor))
        self.trt = make_tensorrt(self.line, self.cuda, self.machine)
        self.monkeypatch.setitem(sys.modules, "tensorrt", self.trt)
        self._torch_tensorrt()
        self.monkeypatch.setattr(cuda_module, "_import_cudart", lambda: self.cuda)
        self.monkeypatch.setattr(cuda_module, "_torch_with_cuda", lambda: None)
        if self.backend == "torch":
            use_torch_backend(self)
        return self

    def _torch_tensorrt(self) -> None:
        """`import torch_tensorrt` in this new process: absent, or a module whose import
        registers its plugins with this process's TensorRT (as the real one's does)."""
        import importlib.abc
        import importlib.util
        import types

        # (setitem first: undoing it removes a module a test imported after this point)
        self.monkeypatch.setitem(sys.modules, "torch_tensorrt", None)
        del sys.modules["torch_tensorrt"]
        state = self.trt._state
        installed = self.machine.torch_tensorrt

        class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
            fake_torch_tensorrt = True

            def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
                if name != "torch_tensorrt":
                    return None
                if not installed:
                    raise ModuleNotFoundError("No module named 'torch_tensorrt'")
                return importlib.util.spec_from_loader(name, self)

            def create_module(self, spec: Any) -> Any:
                return types.ModuleType(spec.name)

            def exec_module(self, module: Any) -> None:
                module.__version__ = "2.9.0"
                state.namespaces.add("torch_tensorrt")

        meta_path = [f for f in sys.meta_path if not getattr(f, "fake_torch_tensorrt", False)]
        self.monkeypatch.setattr(sys, "meta_path", [Finder(), *meta_path])

    @property
    def calls(self) -> list[str]:
        return self.trt._state.names()

    def cuda_calls_between(self, first: str, last: str) -> list[str]:
        calls = self.cuda.calls
        start = calls.index(first)
        return calls[start + 1: calls.index(last, start)]


# -- small real ONNX models ------------------------------------------------------------------
def _save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def two_output_onnx(path: Path) -> Path:
    """y = relu(x @ W), z = x * 2: the bundle may list only y (the engine has both)."""
    weight = numpy_helper.from_array(
        np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32), "W")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"], name="matmul"),
         helper.make_node("Relu", ["xw"], ["y"], name="relu"),
         helper.make_node("Mul", ["x", "two"], ["z"], name="double")],
        "two_outputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4])],
        initializer=[weight, two],
    )
    return _save(graph, path)


def roi_align_onnx(path: Path) -> Path:
    """A RoiAlign (torchvision detectors' box head): TensorRT builds it as a plugin layer."""
    graph = helper.make_graph(
        [helper.make_node("RoiAlign", ["x", "rois", "index"], ["y"], name="box_roi_pool",
                          output_height=2, output_width=2, sampling_ratio=2,
                          spatial_scale=1.0)],
        "roi",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8]),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, [3, 4]),
         helper.make_tensor_value_info("index", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2, 2, 2])],
    )
    return _save(graph, path)


def custom_op_onnx(path: Path) -> Path:
    """A node no importer handles (custom domain): the parser must name it."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["h"], name="relu"),
         helper.make_node("FancyNorm", ["h"], ["y"], name="head/fancy_norm",
                          domain="com.example")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def shape_input_onnx(path: Path) -> Path:
    """y = reshape(x, shape): `shape` is a shape tensor, which TensorRT reads on the host."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")],
        "shape_tensor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
    )
    return _save(graph, path)


def fp16_onnx(path: Path) -> Path:
    """x (fp32) -> Cast fp16 -> Relu -> Cast fp32: the layout of toolkit's fp16 files."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16, name="to_half"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT, name="to_float")],
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    return _save(graph, path)


def reference(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


# -- the torch buffer backend over the same fake CUDA runtime ------------------------------
class StrictTorchCuda:
    """A stand-in for `torch.cuda`, over the fake CUDA runtime, held to the installed torch's
    real API: every call is bound against the real function's signature (a wrong keyword or
    a missing argument is the TypeError torch raises); devices must be what torch accepts (an
    int, "cuda[:N]", a cuda torch.device) and name a device that exists; streams must be this
    stand-in's Stream; a name torch.cuda lacks is an AttributeError, and one it has that isn't
    modelled a NotImplementedError. Tensors stay real torch CPU tensors (`TorchCuda`'s
    tensor_device)."""

    def __init__(self, runtime: FakeCudaRuntime) -> None:
        import torch

        self.rt = runtime
        self.current = 0
        self.calls: list[str] = []
        api = self

        class Stream:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                bound = api._bind("Stream", torch.cuda.Stream.__new__, None, *args, **kwargs)
                internal = {"stream_id", "device_index", "device_type"}  # torch's own **kwargs
                if set(bound.arguments.get("kwargs", {})) - internal:
                    raise TypeError(f"Stream() got unexpected keywords {sorted(kwargs)}")
                index = bound.arguments.get("device")
                self.device = torch.device("cuda", api._index(index) if index is not None
                                           else api.current)
                self.cuda_stream = int(api._ok(runtime.cudaStreamCreate()))

            def synchronize(self) -> None:
                api._ok(runtime.cudaStreamSynchronize(self.cuda_stream))

        class CUDAGraph:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                api._bind("CUDAGraph", torch.cuda.CUDAGraph, *args, **kwargs)
                self.graph = self.exec = self.stream = None

            def replay(self) -> None:
                if self.exec is None:
                    raise RuntimeError("CUDAGraph.replay: the graph was never captured")
                api._ok(runtime.cudaGraphLaunch(self.exec, self.stream))

            def reset(self) -> None:
                if self.exec is not None:
                    runtime.cudaGraphExecDestroy(self.exec)
                    runtime.cudaGraphDestroy(self.graph)
                    self.graph = self.exec = None

        self.Stream, self.CUDAGraph = Stream, CUDAGraph

    def __getattr__(self, name: str) -> Any:
        import torch

        if name.startswith("_") or not hasattr(torch.cuda, name):
            raise AttributeError(f"torch.cuda has no attribute '{name}'")
        raise NotImplementedError(f"the torch.cuda stand-in doesn't model {name}; add it")

    def _bind(self, name: str, real: Any, *args: Any, **kwargs: Any) -> Any:
        import inspect

        self.calls.append(name)
        return inspect.signature(real).bind(*args, **kwargs)  # TypeError as torch raises

    def _index(self, device: Any) -> int:
        """What torch.cuda's device arguments accept: int, 'cuda[:N]', torch.device('cuda')."""
        import torch

        if isinstance(device, bool) or not isinstance(device, (int, str, torch.device)):
            raise TypeError(f"a CUDA device is an int, str or torch.device, not "
                            f"{type(device).__name__}")
        if not isinstance(device, int):
            device = torch.device(device)
            if device.type != "cuda":
                raise ValueError(f"Expected a cuda device, but got: {device}")
            device = self.current if device.index is None else device.index
        if not 0 <= device < self.rt.devices:
            raise RuntimeError("CUDA error: invalid device ordinal")
        return device

    def _check_stream(self, stream: Any) -> None:
        if stream is not None and not isinstance(stream, self.Stream):
            raise TypeError(f"expected a torch.cuda.Stream, got {type(stream).__name__}")

    @staticmethod
    def _ok(result: tuple) -> Any:
        if int(result[0]) != 0:
            raise RuntimeError(f"CUDA error: {result[0].name}")
        return result[1] if len(result) > 1 else None

    # -- the modelled part of torch.cuda ---------------------------------------------------
    def set_device(self, *args: Any, **kwargs: Any) -> None:
        import torch

        device = self._bind("set_device", torch.cuda.set_device, *args, **kwargs).arguments[
            "device"]
        self.current = self._index(device)
        self._ok(self.rt.cudaSetDevice(self.current))

    def current_device(self, *args: Any, **kwargs: Any) -> int:
        import torch

        self._bind("current_device", torch.cuda.current_device, *args, **kwargs)
        return self.current

    def get_device_properties(self, *args: Any, **kwargs: Any) -> Any:
        from types import SimpleNamespace

        import torch

        bound = self._bind("get_device_properties", torch.cuda.get_device_properties, *args,
                           **kwargs)
        device = bound.arguments.get("device")
        p = self.rt.props_of(self.current if device is None else self._index(device))
        values = dict(name=p["name"], major=p["major"], minor=p["minor"],
                      total_memory=p["memory"], is_integrated=int(p["integrated"]))
        missing = [k for k in values if not hasattr(torch._C._CudaDeviceProperties, k)]
        assert not missing, f"torch's device properties have no {missing}"
        return SimpleNamespace(**values)

    def mem_get_info(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
        import torch

        device = self._bind("mem_get_info", torch.cuda.mem_get_info, *args, **kwargs
                            ).arguments.get("device")
        if device is not None:
            self._index(device)
        _, free, total = self.rt.cudaMemGetInfo()
        return free, total

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        from contextlib import nullcontext

        import torch

        bound = self._bind("stream", torch.cuda.stream, *args, **kwargs)
        self._check_stream(bound.arguments["stream"])
        return nullcontext()

    def graph(self, *args: Any, **kwargs: Any) -> Any:
        from contextlib import contextmanager

        import torch
        from cuda.bindings import runtime as real

        bound = self._bind("graph", torch.cuda.graph, *args, **kwargs)
        bound.apply_defaults()
        graph, stream = bound.arguments["cuda_graph"], bound.arguments["stream"]
        if not isinstance(graph, self.CUDAGraph):
            raise TypeError(f"expected a torch.cuda.CUDAGraph, got {type(graph).__name__}")
        self._check_stream(stream)
        modes = {"global": "Global", "thread_local": "ThreadLocal", "relaxed": "Relaxed"}
        mode_name = bound.arguments["capture_error_mode"]
        if mode_name not in modes:
            raise RuntimeError(f"Unknown capture error mode. Expected `global`, "
                               f"`thread_local`, or `relaxed`, got {mode_name}")
        if stream is None:
            raise NotImplementedError("the stand-in captures on the stream it is given")

        @contextmanager
        def capturing() -> Any:
            mode = getattr(real.cudaStreamCaptureMode, f"cudaStreamCaptureMode{modes[mode_name]}")
            self._ok(self.rt.cudaStreamBeginCapture(stream.cuda_stream, mode))
            try:
                yield
            except BaseException:
                # torch ends the capture and frees what it captured when the body raises
                status, captured = self.rt.cudaStreamEndCapture(stream.cuda_stream)
                if int(status) == 0 and captured is not None:
                    self.rt.cudaGraphDestroy(captured)
                raise
            graph.graph = self._ok(self.rt.cudaStreamEndCapture(stream.cuda_stream))
            graph.exec = self._ok(self.rt.cudaGraphInstantiate(graph.graph, 0))
            graph.stream = stream.cuda_stream

        return capturing()


def use_torch_backend(process: FakeProcess) -> None:
    """Open devices through `TorchCuda` with the fake `torch.cuda` (CPU tensors registered as
    the fake's device memory, so the fake TensorRT accepts their addresses)."""
    import torch

    from toolkit.backends.trt.cuda import TorchCuda

    runtime = process.cuda

    class ConformanceTorchCuda(TorchCuda):
        def empty(self, shape: Any, dtype: str) -> Any:
            buffer = super().empty(shape, dtype)
            runtime.memory[buffer.ptr] = buffer.owner.view(torch.uint8).numpy()
            return buffer

        def free(self, buffer: Any) -> None:
            runtime.memory.pop(buffer.ptr, None)
            super().free(buffer)

        def release(self) -> None:
            for ptr in list(self._live):
                runtime.memory.pop(ptr, None)
            super().release()
            runtime.cudaStreamDestroy(self.stream.cuda_stream)

    def open_torch(device: str) -> Any:
        return ConformanceTorchCuda(torch, device, api=StrictTorchCuda(runtime),
                                    tensor_device="cpu")

    process.monkeypatch.setitem(cuda_module.BACKENDS, "torch", open_torch)
