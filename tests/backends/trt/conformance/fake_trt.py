"""A strict fake `tensorrt`, generated per API snapshot (conformance, never "run").

`make_tensorrt("10.3", cuda)` returns a module with exactly the names TensorRT 10.3 registers
(see `strict.py`) and just enough behaviour to carry toolkit's build and runner code end to end:

- the ONNX parser reads the file with `onnx` (external data included); inputs with symbolic
  dims are -1; a node the fake can't import (a custom domain) is a parser error naming it;
  ops TensorRT maps to plugins (RoiAlign -> ROIAlign_TRT) are recorded in the network;
- a "serialized engine" is a header (version, GPU, profiles, flags, plugins) and the ONNX bytes;
  deserializing checks what TensorRT checks: the version (or version-compatible + host code
  allowed), the GPU, the plugins registered in this process;
- an execution context runs the ONNX with ONNX Runtime, reading inputs from and writing outputs
  to the addresses bound with set_tensor_address (host memory the fake CUDA runtime hands out
  as "device" memory). It refuses to run when an address or an input shape is missing, and
  shapes must sit inside the active profile. Inside a stream capture it records the enqueue;
  a launch of the captured graph replays it;
- one logger per process, as TensorRT keeps (NVIDIA/TensorRT#1475): the first one passed to a
  Builder, Runtime or parser gets every message after, including those of later objects.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tests.backends.trt.conformance.strict import CallLog, Strict, StrictModule

#: the supported lines: JetPack 6.1's 10.3, the latest 10.x, the latest 11.x
SNAPSHOTS = ("10.3", "10.13", "11.4")
MAGIC = b"FAKETRT\0"
#: ONNX ops TensorRT's parser turns into plugin layers (need the plugin library registered)
PLUGIN_OPS = {"RoiAlign": "ROIAlign_TRT"}
ONNX_TO_TRT = {
    onnx.TensorProto.FLOAT: "FLOAT", onnx.TensorProto.FLOAT16: "HALF",
    onnx.TensorProto.BFLOAT16: "BF16", onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT8: "UINT8", onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64", onnx.TensorProto.BOOL: "BOOL",
}
HOST_DTYPE = {"FLOAT": np.float32, "HALF": np.float16, "BF16": np.uint16, "INT8": np.int8,
              "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}


@dataclass
class Machine:
    """What the fake GPU and its TensorRT installation are."""

    gpu: str = "NVIDIA Fake GPU"
    compute_capability: str = "8.7"
    dla_cores: int = 0
    #: engines the GPU refuses to capture in a CUDA graph (execute_async_v3 returns False)
    refuse_capture: bool = False
    #: every enqueue fails (execute_async_v3 returns False, as on a lost or broken context)
    refuse_enqueue: bool = False
    #: Torch-TensorRT is installed: importing it registers its plugins (namespace
    #: torch_tensorrt) in the process
    torch_tensorrt: bool = False
    #: GPUs 1, 2, ... of a multi-GPU host: (name, compute capability) each
    other_gpus: tuple[tuple[str, str], ...] = ()

    def gpu_of(self, index: int) -> tuple[str, str]:
        """(name, compute capability) of CUDA device `index`."""
        return (self.gpu, self.compute_capability) if index == 0 else self.other_gpus[index - 1]


@dataclass
class State(CallLog):
    """Per-process state of the fake library."""

    machine: Machine = field(default_factory=Machine)
    cuda: Any = None  # the FakeCudaRuntime whose memory and streams the engine uses
    logger: Any = None  # TensorRT's one logger for the process
    trt: Any = None  # the module this state belongs to
    plugins_initialised: bool = False
    #: plugin namespaces registered in this process: "" (TensorRT's library, by
    #: init_libnvinfer_plugins), "torch_tensorrt" (by importing Torch-TensorRT)
    namespaces: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        CallLog.__init__(self)

    def take_logger(self, logger: Any) -> None:
        if logger is None:
            raise TypeError("a logger is required")
        if not getattr(logger, "_initialised", False):
            raise TypeError("ILogger.__init__() must be called when overriding __init__")
        if self.logger is None:
            self.logger = logger
        elif logger is not self.logger:
            self.log("WARNING", "The logger passed into createInferRuntime differs from one "
                     "already provided for an existing builder, runtime, or refitter. Uses of "
                     "the global logger, returned by nvinfer1::getLogger(), will return the "
                     "existing value.")

    def gpu(self) -> tuple[str, str]:
        """The current CUDA device's (name, compute capability): TensorRT builds for it and
        loads engines on it."""
        return self.machine.gpu_of(self.cuda.current)

    def log(self, severity: str, message: str) -> None:
        if self.logger is not None:
            self.logger.log(getattr(self.trt.ILogger.Severity, severity), message)


def _io(value_info: onnx.ValueInfoProto) -> tuple[str, str, list[int]]:
    tensor = value_info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return value_info.name, ONNX_TO_TRT.get(tensor.elem_type, "UNSUPPORTED"), dims


def _shape_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs used directly as a shape argument (TensorRT's shape tensors)."""
    shape_slots = {"Reshape": 1, "Expand": 1, "Tile": 1, "ConstantOfShape": 0}
    names = {i.name for i in model.graph.input}
    found = set()
    for node in model.graph.node:
        slot = shape_slots.get(node.op_type)
        if slot is not None and len(node.input) > slot and node.input[slot] in names:
            found.add(node.input[slot])
    return found


def make_tensorrt(line: str, cuda: Any, machine: Machine | None = None) -> StrictModule:
    """A fresh fake `tensorrt` (a new "process") for the API snapshot `line`."""
    state = State(machine=machine or Machine(), cuda=cuda)
    trt: StrictModule

    def enum(name: str, member: str) -> Any:
        return getattr(getattr(trt, name), member)

    def new(name: str, *args: Any) -> Any:
        """An object of the generated (strict) class, built as TensorRT builds it internally."""
        return trt._new(name, *args)

    # -- logging ---------------------------------------------------------------------------
    class ILogger(Strict):
        def __init__(self) -> None:
            pass

        def log(self, severity: Any, msg: str) -> None:
            return None

    class Logger(ILogger):
        def __init__(self, min_severity: Any = None) -> None:
            self._messages: list[tuple[Any, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            self._messages.append((severity, msg))

    # -- building --------------------------------------------------------------------------
    class Dims(Strict):
        def __init__(self, shape: Any = ()) -> None:
            self._dims = tuple(int(d) for d in shape)

        def __len__(self) -> int:
            return len(self._dims)

        def __getitem__(self, index: int) -> int:
            return self._dims[index]

        def __iter__(self) -> Any:
            return iter(self._dims)

        def __eq__(self, other: object) -> bool:
            return tuple(self) == tuple(other)  # type: ignore[arg-type]

        def __repr__(self) -> str:
            return f"({', '.join(map(str, self._dims))})"

    def dims(values: Any) -> Any:
        return trt.Dims(list(values))

    class ITensor(Strict):
        def __init__(self, name: str, dtype: str, shape: list[int],
                     shape_tensor: bool = False) -> None:
            self._name, self._dtype, self._shape = name, dtype, shape
            self._shape_tensor = shape_tensor

        @property
        def is_shape_tensor(self) -> bool:
            return self._shape_tensor

        @property
        def name(self) -> str:
            return self._name

        @property
        def shape(self) -> Any:
            return dims(self._shape)

        @property
        def dtype(self) -> Any:
            return enum("DataType", self._dtype)

    class ILayer(Strict):
        def __init__(self, network: Any, node: onnx.NodeProto) -> None:
            self._network, self._node = network, node

        @property
        def name(self) -> str:
            return self._node.name

        @property
        def type(self) -> Any:
            plugin = self._node.op_type in PLUGIN_OPS
            return enum("LayerType", "PLUGIN_V2" if plugin else "UNARY")

    class INetworkDefinition(Strict):
        def __init__(self, flags: int) -> None:
            self._flags = flags
            self._inputs: list[Any] = []
            self._outputs: list[Any] = []
            self._model: onnx.ModelProto | None = None
            self._plugins: list[str] = []

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        @property
        def num_layers(self) -> int:
            return len(self._model.graph.node) if self._model is not None else 0

        def get_input(self, index: int) -> Any:
            return self._inputs[index]

        def get_layer(self, index: int) -> Any:
            return new("ILayer", self, self._model.graph.node[index])

        def _reduced(self) -> bool:
            """fp16 or int8 anywhere: what DLA can run (it has no fp32 layers)."""
            model = self._model
            return any(i.data_type == onnx.TensorProto.FLOAT16 for i in
                       model.graph.initializer) or any(
                n.op_type in ("QuantizeLinear", "Cast") for n in model.graph.node)

        def get_output(self, index: int) -> Any:
            return self._outputs[index]

        def _strongly_typed(self) -> bool:
            flag = trt.NetworkDefinitionCreationFlag
            if int(trt.__version__.split(".")[0]) >= 11:
                return True  # the only mode TensorRT 11 has
            return bool(self._flags & (1 << int(flag.STRONGLY_TYPED)))

    class ParserError(Strict):
        def __init__(self, desc: str, node: int, name: str, op: str) -> None:
            self._desc, self._node, self._name, self._op = desc, node, name, op

        def desc(self) -> str:
            return self._desc

        def node(self) -> int:
            return self._node

        def node_name(self) -> str:
            return self._name

        def node_operator(self) -> str:
            return self._op

        def code(self) -> Any:
            return enum("ErrorCode", "UNSUPPORTED_NODE")

    class OnnxParser(Strict):
        def __init__(self, network: Any, logger: Any) -> None:
            state.take_logger(logger)
            self._network = network
            self._errors: list[Any] = []

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> Any:
            return self._errors[index]

        def clear_errors(self) -> None:
            self._errors.clear()

        def parse_from_file(self, model: str) -> bool:
            try:
                proto = onnx.load(str(model))
            except Exception as err:
                self._errors.append(new("ParserError", f"failed to load {model}: {err}", -1,
                                        "", ""))
                return False
            return self._import(proto)

        def get_used_vc_plugin_libraries(self) -> list[str]:
            return vc_libraries(self._network)

        def parse(self, model: Any, path: Any = None) -> bool:
            return self._import(onnx.load_from_string(bytes(model)))

        def _import(self, proto: onnx.ModelProto) -> bool:
            for index, node in enumerate(proto.graph.node):
                if node.domain not in ("", "ai.onnx"):
                    self._errors.append(new("ParserError",
                        f"No importer registered for op: {node.op_type}. Attempting to import as "
                        "plugin.", index, node.name, node.op_type))
                elif node.op_type in PLUGIN_OPS:
                    self._network._plugins.append(PLUGIN_OPS[node.op_type])
            if self._errors:
                return False
            initializers = {i.name for i in proto.graph.initializer}
            network = self._network
            network._model = proto
            shape_inputs = _shape_inputs(proto)
            network._inputs = [trt_tensor(*_io(v), v.name in shape_inputs)
                               for v in proto.graph.input if v.name not in initializers]
            network._outputs = [trt_tensor(*_io(v)) for v in proto.graph.output]
            return True

    def vc_libraries(network: Any) -> list[str]:
        """The plugin library a version-compatible engine must carry for its plugin layers."""
        major = trt.__version__.split(".")[0]
        return [f"/usr/lib/x86_64-linux-gnu/libnvinfer_vc_plugin.so.{major}"] if (
            network._plugins) else []

    def trt_tensor(name: str, dtype: str, shape: list[int], shape_tensor: bool = False) -> Any:
        return new("ITensor", name, dtype, shape, shape_tensor)

    class IOptimizationProfile(Strict):
        def __init__(self) -> None:
            self._shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
            lo, mid, hi = (tuple(int(d) for d in s) for s in (min, opt, max))
            if not (len(lo) == len(mid) == len(hi)) or any(
                    not a <= b <= c for a, b, c in zip(lo, mid, hi)):
                state.log("ERROR", f"IOptimizationProfile::setDimensions: invalid min/opt/max "
                          f"for {input}: {lo} {mid} {hi}")
                return
            self._shapes[input] = (lo, mid, hi)

        def get_shape(self, input: str) -> list[Any]:
            return [dims(s) for s in self._shapes.get(input, ((), (), ()))]

        def set_shape_input(self, input: str, min: Any, opt: Any, max: Any) -> None:
            self._values = {**getattr(self, "_values", {}),
                            input: [list(map(int, v)) for v in (min, opt, max)]}

    class ITimingCache(Strict):
        def __init__(self, gpu: str, entries: int = 0) -> None:
            self._gpu, self._entries = gpu, entries

        def serialize(self) -> Any:
            return new("IHostMemory", json.dumps({"timing_cache": self._gpu,
                                               "entries": self._entries}).encode())

        def combine(self, input_cache: Any, ignore_mismatch: bool) -> bool:
            return True

        def reset(self) -> bool:
            self._entries = 0
            return True

    class IBuilderConfig(Strict):
        def __init__(self) -> None:
            self._flags: set[str] = set()
            self._pools: dict[str, int] = {}
            self._profiles: list[Any] = []
            self._cache: Any = None
            self._props = {"builder_optimization_level": 3, "DLA_core": -1,
                           "hardware_compatibility_level": enum("HardwareCompatibilityLevel",
                                                                "NONE"),
                           "default_device_type": enum("DeviceType", "GPU")}

        def set_flag(self, flag: Any) -> None:
            self._flags.add(flag.name)

        def get_flag(self, flag: Any) -> bool:
            return flag.name in self._flags

        def clear_flag(self, flag: Any) -> None:
            self._flags.discard(flag.name)

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            self._pools[pool.name] = int(pool_size)

        def get_memory_pool_limit(self, pool: Any) -> int:
            return self._pools.get(pool.name, 0)

        def add_optimization_profile(self, profile: Any) -> int:
            if not profile._shapes and not getattr(profile, "_values", {}):
                state.log("ERROR", "addOptimizationProfile: profile is not valid")
                return -1
            self._profiles.append(profile)
            return len(self._profiles) - 1

        @property
        def num_optimization_profiles(self) -> int:
            return len(self._profiles)

        def create_timing_cache(self, serialized_timing_cache: Any) -> Any:
            blob = bytes(serialized_timing_cache)
            if not blob:
                return new("ITimingCache", state.gpu()[0])
            try:
                data = json.loads(blob)
                return new("ITimingCache", data["timing_cache"], int(data["entries"]))
            except (ValueError, KeyError, TypeError):
                state.log("ERROR", "Timing cache is corrupted or from an incompatible version")
                return None  # the bindings return nullptr as None

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
            if cache is None:
                raise TypeError("set_timing_cache(): cache is None (nullptr)")
            if cache._gpu != state.gpu()[0] and not ignore_mismatch:
                state.log("WARNING", "Timing cache was created on another device; ignored")
                return False
            self._cache = cache
            return True

        def get_timing_cache(self) -> Any:
            return self._cache

        def _dynamic(self) -> bool:
            return any(lo != hi for p in self._profiles for lo, _, hi in p._shapes.values())

        def can_run_on_DLA(self, layer: Any) -> bool:
            # DLA runs reduced-precision layers of static shape (min = opt = max) only
            return (self._props["default_device_type"] == enum("DeviceType", "DLA")
                    and layer._network._reduced() and not self._dynamic())

    class IHostMemory(Strict, bytes):
        @property
        def nbytes(self) -> int:
            return len(self)

    class Builder(Strict):
        def __init__(self, logger: Any) -> None:
            state.take_logger(logger)

        @property
        def num_DLA_cores(self) -> int:
            return state.machine.dla_cores

        def create_network(self, flags: int = 0) -> Any:
            known = 0
            for member in trt.NetworkDefinitionCreationFlag.__members__.values():
                known |= 1 << int(member)
            if flags & ~known:
                state.log("ERROR", f"createNetworkV2: invalid flags {flags:#x}")
                return None
            return new("INetworkDefinition", flags)

        def create_builder_config(self) -> Any:
            return new("IBuilderConfig")

        def create_optimization_profile(self) -> Any:
            return new("IOptimizationProfile")

        def build_serialized_network(self, network: Any, config: Any) -> Any:
            if network._model is None:
                state.log("ERROR", "Network must have at least one output")
                return None
            for tensor in network._inputs:
                # "set_shape_input must be called for every input that is a shape tensor"
                if tensor._shape_tensor and not any(
                        tensor._name in getattr(p, "_values", {}) for p in config._profiles):
                    state.log("ERROR", f"{tensor._name}: shape tensor input needs "
                              "IOptimizationProfile::setShapeValues in every profile")
                    return None
            dynamic = any(d < 0 for t in network._inputs for d in t._shape)
            if dynamic and not config._profiles:
                state.log("ERROR", "Network has dynamic or shape inputs, but no optimization "
                          "profile has been defined.")
                return None
            for profile in config._profiles:
                missing = [t._name for t in network._inputs if any(d < 0 for d in t._shape)
                           and t._name not in profile._shapes]
                if missing:
                    state.log("ERROR", f"optimization profile is missing values for {missing}")
                    return None
            dla = config._props["default_device_type"] == enum("DeviceType", "DLA")
            # DLA runs fp16 and int8 layers only: a strongly typed fp32 network has none.
            # ... and static shapes only: with a dynamic profile every layer falls back.
            dla_layers = 0
            if dla:
                on_dla = network._reduced() and not config._dynamic()
                dla_layers = network.num_layers if on_dla else 0
                if not dla_layers and "GPU_FALLBACK" not in config._flags:
                    state.log("ERROR", "DLA: no layer of this network can run on DLA and GPU "
                              "fallback is off")
                    return None
            serialized = list(config._props.get("plugins_to_serialize", []))
            if "VERSION_COMPATIBLE" in config._flags and network._plugins:
                needed = [lib for lib in vc_libraries(network) if lib not in serialized]
                if needed:
                    state.log("ERROR", f"a version-compatible engine with plugin layers "
                              f"{network._plugins} must serialize {needed} "
                              "(IBuilderConfig::setPluginsToSerialize)")
                    return None
            if config._cache is not None:
                config._cache._entries += 1
            level = config._props["hardware_compatibility_level"]
            header = {
                "tensorrt": trt.__version__,
                "gpu": state.gpu()[0],
                "compute_capability": state.gpu()[1],
                "strongly_typed": network._strongly_typed(),
                "version_compatible": "VERSION_COMPATIBLE" in config._flags,
                "hardware": level.name,
                "dla_core": config._props["DLA_core"] if dla else None,
                "gpu_fallback": "GPU_FALLBACK" in config._flags,
                "dla_layers": dla_layers,
                "plugins": network._plugins,
                "pools": dict(config._pools),
                "serialized_plugins": serialized,
                "layers": network.num_layers,
                "shape_inputs": sorted(_shape_inputs(network._model)),
                "profiles": [
                    {n: [list(s) for s in shapes] for n, shapes in p._shapes.items()}
                    for p in config._profiles
                ],
            }
            head = json.dumps(header).encode()
            blob = MAGIC + len(head).to_bytes(8, "little") + head
            return new("IHostMemory", blob + network._model.SerializeToString())

    # -- running ---------------------------------------------------------------------------
    class Runtime(Strict):
        def __init__(self, logger: Any) -> None:
            state.take_logger(logger)
            self._props = {"engine_host_code_allowed": False, "DLA_core": -1}

        @property
        def num_DLA_cores(self) -> int:
            return state.machine.dla_cores

        def deserialize_cuda_engine(self, serialized_engine: Any) -> Any:
            blob = bytes(serialized_engine)
            if not blob.startswith(MAGIC):
                state.log("ERROR", "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                          "(Serialization assertion magicTagRead == kMAGIC_TAG failed.)")
                return None
            size = int.from_bytes(blob[8:16], "little")
            header = json.loads(blob[16:16 + size])
            model = onnx.load_from_string(blob[16 + size:])
            if header["version_compatible"]:
                if not self._props["engine_host_code_allowed"]:
                    state.log("ERROR", "Cannot deserialize a version-compatible engine: "
                              "engine_host_code_allowed is false")
                    return None
            elif header["tensorrt"] != trt.__version__:
                state.log("ERROR", f"The engine plan file is not compatible with this version "
                          f"of TensorRT, expecting library version {trt.__version__} got "
                          f"{header['tensorrt']}, please rebuild.")
                return None
            if header["hardware"] == "NONE" and header["compute_capability"] != (
                    state.gpu()[1]):
                state.log("ERROR", "The engine plan file is generated on an incompatible device")
                return None
            # a plugin named "namespace::name" needs its namespace registered; a version-
            # compatible plan carries the libraries it serialized
            missing = [p for p in header["plugins"] if (p.split("::")[0] if "::" in p else "")
                       not in state.namespaces]
            if missing and not header["serialized_plugins"]:
                state.log("ERROR", f"getPluginCreator could not find plugin: "
                          f"{missing[0]} version: 1")
                state.log("ERROR", "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                          "(Serialization assertion creator failed.Cannot deserialize plugin "
                          "since corresponding IPluginCreator not found in Plugin Registry)")
                return None
            return new("ICudaEngine", header, model)

    class ICudaEngine(Strict):
        def __init__(self, header: dict[str, Any], model: onnx.ModelProto) -> None:
            self._header, self._model = header, model
            initializers = {i.name for i in model.graph.initializer}
            self._inputs = [_io(v) for v in model.graph.input if v.name not in initializers]
            self._outputs = [_io(v) for v in model.graph.output]
            self._session: Any = None

        @property
        def num_io_tensors(self) -> int:
            return len(self._inputs) + len(self._outputs)

        @property
        def num_layers(self) -> int:
            return int(self._header["layers"])

        @property
        def num_optimization_profiles(self) -> int:
            return max(1, len(self._header["profiles"]))

        def _io(self) -> list[tuple[str, str, list[int]]]:
            return self._inputs + self._outputs

        def get_tensor_name(self, index: int) -> str:
            return self._io()[index][0]

        def _find(self, name: str) -> tuple[str, str, list[int]]:
            for entry in self._io():
                if entry[0] == name:
                    return entry
            raise KeyError(name)

        def get_tensor_mode(self, name: str) -> Any:
            member = "INPUT" if any(n == name for n, _, _ in self._inputs) else "OUTPUT"
            if not any(n == name for n, _, _ in self._io()):
                member = "NONE"
            return enum("TensorIOMode", member)

        def get_tensor_dtype(self, name: str) -> Any:
            return enum("DataType", self._find(name)[1])

        def get_tensor_shape(self, name: str) -> Any:
            return dims(self._find(name)[2])

        def is_shape_inference_io(self, name: str) -> bool:
            return name in self._header["shape_inputs"]

        def get_tensor_location(self, name: str) -> Any:
            host = name in self._header["shape_inputs"]
            return enum("TensorLocation", "HOST" if host else "DEVICE")

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Any]:
            profiles = self._header["profiles"]
            if not profiles:
                shape = self._find(name)[2]
                return [dims(shape)] * 3
            return [dims(s) for s in profiles[profile_index][name]]

        def create_execution_context(self) -> Any:
            return new("IExecutionContext", self)

        def serialize(self) -> Any:
            head = json.dumps(self._header).encode()
            return new("IHostMemory", MAGIC + len(head).to_bytes(8, "little") + head
                                   + self._model.SerializeToString())

        def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            import onnxruntime as ort

            if self._session is None:
                options = ort.SessionOptions()
                options.intra_op_num_threads = 1
                self._session = ort.InferenceSession(self._model.SerializeToString(), options,
                                                     providers=["CPUExecutionProvider"])
            names = [o.name for o in self._session.get_outputs()]
            return dict(zip(names, self._session.run(names, feed)))

    class IExecutionContext(Strict):
        def __init__(self, engine: Any) -> None:
            self._engine = engine
            self._profile = 0
            self._shapes: dict[str, tuple[int, ...]] = {}
            self._addresses: dict[str, int] = {}
            self._ran_since_shape_change = False
            for name, _, shape in engine._inputs:
                if all(d >= 0 for d in shape):
                    self._shapes[name] = tuple(shape)

        @property
        def engine(self) -> Any:
            return self._engine

        @property
        def active_optimization_profile(self) -> int:
            return self._profile

        def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
            if not 0 <= profile_index < self._engine.num_optimization_profiles:
                raise RuntimeError(f"profile index {profile_index} is out of range")
            self._profile = int(profile_index)
            self._shapes = {}  # shapes must be set again for the new profile
            self._ran_since_shape_change = False
            return True

        def _range(self, name: str) -> list[list[int]] | None:
            profiles = self._engine._header["profiles"]
            return profiles[self._profile].get(name) if profiles else None

        def set_input_shape(self, name: str, shape: Any) -> bool:
            wanted = tuple(int(d) for d in shape)
            rng = self._range(name)
            if rng is not None:
                lo, _, hi = rng
                if len(wanted) != len(lo) or any(not a <= d <= b
                                                 for d, a, b in zip(wanted, lo, hi)):
                    state.log("ERROR", f"IExecutionContext::setInputShape: Error Code 3: API "
                              f"Usage Error (Supplied shape {list(wanted)} for {name} is "
                              f"outside the range of profile {self._profile})")
                    return False
            self._shapes[name] = wanted
            self._ran_since_shape_change = False
            return True

        def _output_shapes(self) -> dict[str, tuple[int, ...]] | None:
            if any(name not in self._shapes for name, _, _ in self._engine._inputs):
                return None
            feed = {name: np.zeros(self._shapes[name], HOST_DTYPE[dtype])
                    for name, dtype, _ in self._engine._inputs}
            for name in self._engine._header["shape_inputs"]:
                feed[name] = self._host_values(name)
            return {k: tuple(v.shape) for k, v in self._engine._run(feed).items()}

        def get_tensor_shape(self, name: str) -> Any:
            if any(n == name for n, _, _ in self._engine._inputs):
                return dims(self._shapes.get(name, self._engine._find(name)[2]))
            shapes = self._output_shapes()
            if shapes is None:
                return dims([-1] * len(self._engine._find(name)[2]))
            return dims(shapes[name])

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if not any(n == name for n, _, _ in self._engine._io()):
                state.log("ERROR", f"IExecutionContext::setTensorAddress: Error Code 3: API "
                          f"Usage Error (Given invalid tensor name: {name})")
                return False
            if int(memory) == 0:
                state.log("ERROR", f"setTensorAddress: null address for {name}")
                return False
            self._addresses[name] = int(memory)
            return True

        def get_tensor_address(self, name: str) -> int:
            return self._addresses.get(name, 0)

        def _host_values(self, name: str) -> np.ndarray:
            _, dtype, _ = self._engine._find(name)
            shape = self._shapes[name]
            count = int(np.prod(shape, dtype=np.int64))
            itemsize = np.dtype(HOST_DTYPE[dtype]).itemsize
            raw = ctypes.string_at(self._addresses[name], count * itemsize)
            return np.frombuffer(raw, HOST_DTYPE[dtype]).reshape(shape).copy()

        def _problems(self) -> str | None:
            engine = self._engine
            for name, _, _ in engine._inputs:
                if name not in self._shapes:
                    return f"input shape of {name} not specified"
            for name, _, _ in engine._io():
                if name not in self._addresses:
                    return f"Address is not set for {name}"
            for name, dtype, _ in engine._io():
                address = self._addresses[name]
                shape = self._shapes.get(name) or self._output_shapes()[name]  # type: ignore
                nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(HOST_DTYPE[dtype]).itemsize
                on_device = state.cuda.owns(address, max(nbytes, 1))
                if name in engine._header["shape_inputs"]:
                    if on_device:
                        return (f"shape tensor {name} must be in host memory, its address is "
                                "device memory")
                elif not on_device:
                    return f"the address of {name} is not device memory of {nbytes} bytes"
            return None

        def execute_async_v3(self, stream_handle: int) -> bool:
            if state.machine.refuse_enqueue:
                state.log("ERROR", "IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime "
                          "(the launch was refused)")
                return False
            problem = self._problems()
            if problem:
                state.log("ERROR", f"IExecutionContext::enqueueV3: Error Code 3: API Usage "
                          f"Error ({problem})")
                return False
            refused = state.machine.refuse_capture or not self._ran_since_shape_change
            if state.cuda.is_capturing(stream_handle) and refused:
                state.log("ERROR", "IExecutionContext::enqueueV3: Error Code 1: CUDA graph "
                          "capture of this enqueue is not supported (run once outside the "
                          "capture after changing shapes)")
                return False
            addresses, shapes = dict(self._addresses), dict(self._shapes)

            def work() -> None:
                feed = {}
                for name, dtype, _ in self._engine._inputs:
                    count = int(np.prod(shapes[name], dtype=np.int64))
                    raw = ctypes.string_at(addresses[name],
                                           count * np.dtype(HOST_DTYPE[dtype]).itemsize)
                    feed[name] = np.frombuffer(raw, HOST_DTYPE[dtype]).reshape(shapes[name])
                for name, value in self._engine._run(feed).items():
                    value = np.ascontiguousarray(value)
                    ctypes.memmove(addresses[name], value.ctypes.data, value.nbytes)

            state.cuda.enqueue(stream_handle, work, what="execute_async_v3")
            self._ran_since_shape_change = True
            return True

    # -- module functions ------------------------------------------------------------------
    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        if logger is not None:
            state.take_logger(logger)
        state.plugins_initialised = True
        state.namespaces.add("")
        return True

    behaviours = {
        "ILogger": ILogger, "Logger": Logger, "Dims": Dims, "ITensor": ITensor,
        "INetworkDefinition": INetworkDefinition, "ParserError": ParserError,
        "OnnxParser": OnnxParser, "IOptimizationProfile": IOptimizationProfile,
        "ITimingCache": ITimingCache, "IBuilderConfig": IBuilderConfig, "ILayer": ILayer,
        "IHostMemory": IHostMemory, "Builder": Builder, "Runtime": Runtime,
        "ICudaEngine": ICudaEngine, "IExecutionContext": IExecutionContext,
    }
    trt = StrictModule(line, behaviours, {"init_libnvinfer_plugins": init_libnvinfer_plugins},
                       state)
    state.trt = trt
    return trt


def engine_header(path: str | Path) -> dict[str, Any]:
    """What a fake engine file records (for tests)."""
    blob = Path(path).read_bytes()
    size = int.from_bytes(blob[8:16], "little")
    return json.loads(blob[16:16 + size])


def with_plugins(path: str | Path, plugins: list[str]) -> None:
    """Rewrite a fake engine's plugin layers (what Torch-TensorRT's TorchScript route places:
    `torch_tensorrt::Interpolate`), for tests of engines this fake can't build itself."""
    blob = Path(path).read_bytes()
    size = int.from_bytes(blob[8:16], "little")
    header = json.loads(blob[16:16 + size])
    header["plugins"] = list(plugins)
    head = json.dumps(header).encode()
    Path(path).write_bytes(MAGIC + len(head).to_bytes(8, "little") + head + blob[16 + size:])
