"""ONNX -> TensorRT engine, built on the machine that will run it.

A thin layer over TensorRT's Python API: every decision (flags per version, profiles,
compatibility, the manifest record) is made by the pure functions in `trt_plan`. Written
against the TensorRT 10.x and 11.x Python API documentation; see docs/tensorrt.md for the calls
used and which of them have run.
"""

from __future__ import annotations

import importlib
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit.backends.trt import compat as trt_compat
from toolkit.backends.trt import options as trt_build
from toolkit.backends.trt import profiles as trt_profiles
from toolkit.backends.trt.cuda import open_device
from toolkit.backends.trt.logger import errors_since, process_logger
from toolkit.backends.trt.options import BuildOptions
from toolkit.bundle import atomic_path, now
from toolkit.errors import BackendUnavailable, ExportFailed, UsageError
from toolkit.spec import TensorSpec


def import_tensorrt(action: str = "build a TensorRT engine") -> Any:
    """`import tensorrt`, or BackendUnavailable (exit 3) saying how to get it."""
    try:
        import tensorrt
    except ImportError as err:
        raise BackendUnavailable(
            f"TensorRT is not installed, needed to {action}: {trt_build.INSTALL_HINT} "
            f"(engines are built and run on the GPU that uses them) [{err.__class__.__name__}]"
        ) from None
    return tensorrt


def init_plugins(trt: Any, logger: Any) -> None:
    """Register TensorRT's plugin library in this process. The ONNX parser maps some ops to
    plugins (RoiAlign -> ROIAlign_TRT); an engine holding one deserializes only after this."""
    if hasattr(trt, "init_libnvinfer_plugins"):
        trt.init_libnvinfer_plugins(logger, "")


#: what registers each plugin namespace an engine's build may have used: TensorRT's own
#: library, and Torch-TensorRT's (its import registers the `torch_tensorrt` plugins, such as
#: the TorchScript route's Interpolate and Normalize)
PLUGIN_SOURCES = ("tensorrt", "torch_tensorrt")


def recorded_plugins(engine: dict[str, Any] | None) -> list[str]:
    """The plugin sources an engine's record (its JSON, as preflight reads it) says to
    register before deserializing it (records older than the field: TensorRT's, and
    Torch-TensorRT's for a --via engine)."""
    engine = engine or {}
    listed = (engine.get("plugins") or {}).get("register")
    if listed is None:
        listed = ["tensorrt"] + (["torch_tensorrt"] if engine.get("via") not in (None, "onnx")
                                 else [])
    return [name for name in listed if name in PLUGIN_SOURCES]


def register_plugins(trt: Any, logger: Any, record: dict[str, Any] | None) -> str | None:
    """Register, in this process, the plugins the engine's build recorded: a verify or bench
    runs in a new process, where only what is registered deserializes. Returns what could
    not be registered (said if the engine then fails to load), else None."""
    missing = None
    for source in recorded_plugins(record):
        if source == "tensorrt":
            init_plugins(trt, logger)
            continue
        try:
            importlib.import_module(source)
        except ImportError as err:
            missing = (f"the engine was built by Torch-TensorRT, whose plugins it may hold, "
                       f"and torch_tensorrt doesn't import here ({err.__class__.__name__}): "
                       "pip install torch-tensorrt")
    return missing


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    inputs: list[TensorSpec],
    options: BuildOptions,
    precision: str = "fp32",
    device: str = "cuda",
) -> dict[str, Any]:
    """Parse `onnx_path` into a strongly typed network, build and write `engine_path`.

    `device` (cuda, cuda:N) is the GPU it is built for: TensorRT builds on the current CUDA
    device, which opening it makes current for the whole build.

    Returns the engine record (see `trt_compat.engine_record`). Raises UsageError for bad
    options or paths, BackendUnavailable (exit 3) without TensorRT or a CUDA GPU, ExportFailed
    when TensorRT can't parse or build the model. The engine file appears only when complete.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise UsageError(f"{onnx_path}: ONNX model not found; export --to onnx first")
    profiles = trt_profiles.resolve_profiles(inputs, options)
    if options.dla_core is not None and precision not in trt_build.DLA_PRECISIONS:
        # A strongly typed fp32 network has no layer DLA can run: all of it would fall back
        # to the GPU while the record said DLA.
        raise UsageError(
            f"--dla-core: DLA runs fp16 and int8 layers only, and this engine is {precision}: "
            "add --precision fp16 (or int8 with --calib-data), or leave --dla-core out"
        )
    if options.dla_core is not None:
        _check_dla_static(profiles)
    trt = import_tensorrt()
    cuda = open_device(device, "build a TensorRT engine")
    try:
        return _build(trt, cuda.facts(), onnx_path, engine_path, inputs, options, profiles)
    finally:
        cuda.release()


def _build(trt: Any, gpu: dict[str, Any], onnx_path: Path, engine_path: Path,
           inputs: list[TensorSpec], options: BuildOptions,
           profiles: list[trt_profiles.Profile]) -> dict[str, Any]:
    plan = trt_compat.api_plan(trt.__version__)
    trt_compat.check_options_supported(options, plan)

    logger = process_logger(trt)
    mark = logger.mark()
    init_plugins(trt, logger)
    builder = trt.Builder(logger)
    network = _create_network(trt, builder, plan)
    parser = _parse_onnx(trt, network, logger, onnx_path)
    network_dims = _check_inputs(network, inputs, onnx_path)

    config = builder.create_builder_config()
    _configure(trt, builder, config, options)
    if trt_profiles.needs_profiles(profiles, network_dims):
        _add_profiles(builder, config, profiles)
    placement = _dla_placement(config, network, options, onnx_path)
    serialized_plugins = _serialize_plugins(parser, config, options)
    cache_status = _load_timing_cache(config, options.timing_cache)

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        detail = errors_since(logger, mark, "TensorRT logged no error")
        raise ExportFailed(f"TensorRT could not build an engine from {onnx_path}: {detail}")
    engine_layers = _engine_layers(trt, logger, serialized, options, onnx_path)

    engine_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(engine_path, suffix=".engine") as tmp:
        tmp.write_bytes(serialized)  # IHostMemory exposes the buffer protocol
    size = engine_path.stat().st_size
    _save_timing_cache(config, options.timing_cache)

    engine_json = trt_compat.engine_record(
        trt_version=trt.__version__,
        gpu=gpu,
        platform=platform.machine(),
        options=options,
        profiles=profiles,
        build_seconds=seconds,
        size_bytes=size,
        network_layers=int(network.num_layers),
        engine_layers=engine_layers,
        timing_cache=cache_status,
        built_at=now(),
    )
    engine_json["plugins"] = {"register": ["tensorrt"], "serialized": serialized_plugins}
    if placement is not None:
        engine_json["layers"]["placement"] = placement
    return engine_json


# -- steps (each a few TensorRT calls) -----------------------------------------------------
def _create_network(trt: Any, builder: Any, plan: trt_compat.ApiPlan) -> Any:
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    logger = process_logger(trt)
    mark = logger.mark()
    network = builder.create_network(flags)
    if network is None:
        raise ExportFailed(f"TensorRT refused create_network(flags={flags:#x}): "
                           f"{errors_since(logger, mark)}")
    return network


def _parse_onnx(trt: Any, network: Any, logger: Any, onnx_path: Path) -> Any:
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external weight files next to the model.
    if parser.parse_from_file(str(onnx_path)):
        return parser
    errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
    raise ExportFailed(trt_compat.format_parser_errors(str(onnx_path), errors))


def _parser_error(error: Any) -> dict[str, Any]:
    def call(name: str, default: Any) -> Any:
        method = getattr(error, name, None)  # node_name/node_operator: TensorRT 10+
        return method() if callable(method) else default

    return {
        "desc": call("desc", str(error)),
        "node": call("node", -1),
        "node_name": call("node_name", ""),
        "node_operator": call("node_operator", ""),
    }


def _check_inputs(
    network: Any, inputs: Sequence[TensorSpec], onnx_path: Path
) -> dict[str, list[int]]:
    """The network's input dims (-1 = dynamic), checked against the bundle's specs."""
    dims = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.is_shape_tensor:
            # TensorRT needs a shape tensor's values (min/opt/max) in every profile at build
            # time (IOptimizationProfile.set_shape_input); a bundle records shapes, not values
            raise UsageError(
                f"{onnx_path}: input '{tensor.name}' is a shape tensor (the model uses its "
                "values as a shape); TensorRT needs their range at build time, which the "
                "bundle doesn't record: make it a constant of the model"
            )
        dims[tensor.name] = [int(d) for d in tensor.shape]
    problems = trt_profiles.check_network_inputs(dims, inputs)
    if problems:
        raise ExportFailed(f"{onnx_path}: " + "; ".join(problems) + "; re-export the ONNX")
    return dims


def _configure(trt: Any, builder: Any, config: Any, options: BuildOptions) -> None:
    if options.workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace)
    config.builder_optimization_level = options.optimization_level
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    level = trt_build.HARDWARE_ENUM[options.hardware_compatibility]
    if level != "NONE":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)
    if options.dla_core is not None:
        cores = int(builder.num_DLA_cores)
        if options.dla_core >= cores:
            raise UsageError(
                f"--dla-core {options.dla_core}: this machine has {cores} DLA core(s)"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        if options.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _check_dla_static(profiles: Sequence[trt_profiles.Profile]) -> None:
    """DLA runs static shapes only (min = opt = max): with a dynamic range every layer would
    fall back to the GPU (GPU fallback is on) while the record said DLA. Refused (exit 2)."""
    for profile in profiles:
        for name, (lo, _, hi) in profile.items():
            for dim, (a, b) in enumerate(zip(lo, hi, strict=True)):
                if a != b:
                    raise UsageError(
                        f"--dla-core: DLA runs static shapes only, and input '{name}' dimension "
                        f"{dim} ranges {a}-{b}; export with a static --input (e.g. "
                        f"{name}:{'x'.join(map(str, hi))}) and no --profile, or leave "
                        "--dla-core out"
                    )


def _dla_placement(config: Any, network: Any, options: BuildOptions,
                   onnx_path: Path) -> dict[str, int] | None:
    """Where the layers of a DLA build run, from TensorRT's own query (can_run_on_DLA per
    layer, after the profiles are set); None without --dla-core. A network none of whose
    layers DLA can run is refused: the record would say DLA for a GPU engine."""
    if options.dla_core is None:
        return None
    count = int(network.num_layers)
    on_dla = sum(bool(config.can_run_on_DLA(network.get_layer(i))) for i in range(count))
    if count and not on_dla:
        raise UsageError(f"--dla-core: TensorRT can run none of the {count} layers of "
                         f"{onnx_path} on DLA; leave --dla-core out")
    return {"dla": on_dla, "gpu": count - on_dla}


def _serialize_plugins(parser: Any, config: Any, options: BuildOptions) -> list[str]:
    """A version-compatible engine carries the plugin libraries its layers use (the ONNX
    parser's RoiAlign -> ROIAlign_TRT...): the parser names them, the config serializes them
    (NVIDIA's rule for version-compatible engines with plugins). Their paths, for the record."""
    if not options.version_compatible:
        return []
    libraries = [str(path) for path in parser.get_used_vc_plugin_libraries()]
    if libraries:
        config.plugins_to_serialize = libraries
    return libraries


def _add_profiles(builder: Any, config: Any, profiles: Sequence[trt_profiles.Profile]) -> None:
    for index, profile in enumerate(profiles):
        trt_profile = builder.create_optimization_profile()
        for name, (lo, mid, hi) in profile.items():
            trt_profile.set_shape(name, lo, mid, hi)
        if config.add_optimization_profile(trt_profile) < 0:
            raise UsageError(
                f"TensorRT rejected optimization profile {index}: "
                f"{trt_compat.describe_profile(profile)}"
            )


def _load_timing_cache(config: Any, path: str | None) -> str | None:
    """Start from the saved timing cache when there is one; say what happened."""
    if not path:
        return None
    cache_file = Path(path)
    blob = cache_file.read_bytes() if cache_file.is_file() else b""
    cache = config.create_timing_cache(blob) if blob else None
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return "loaded"
    # None: a corrupt file (TensorRT returns nullptr); False: another GPU or TensorRT
    # version. Either way start empty and overwrite the file after the build.
    empty = config.create_timing_cache(b"")
    if empty is None or not config.set_timing_cache(empty, ignore_mismatch=False):
        raise ExportFailed("TensorRT could not create an empty timing cache; build without "
                           "--timing-cache")
    if not blob:
        return "created"
    return "corrupt, replaced" if cache is None else "mismatched, replaced"


def _save_timing_cache(config: Any, path: str | None) -> None:
    if not path:
        return
    cache = config.get_timing_cache()
    if cache is None:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".cache") as tmp:
        tmp.write_bytes(cache.serialize())


def _engine_layers(
    trt: Any, logger: Any, serialized: Any, options: BuildOptions, onnx_path: Path
) -> int | None:
    """Read the plan back before writing it: proves it loads, and counts layers after fusion
    (None when this TensorRT's ICudaEngine has no num_layers)."""
    runtime = trt.Runtime(logger)
    if options.version_compatible:
        runtime.engine_host_code_allowed = True  # we just built this plan: it is trusted
    mark = logger.mark()
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        detail = errors_since(logger, mark)
        raise ExportFailed(f"the engine built from {onnx_path} does not load back: {detail}")
    layers = getattr(engine, "num_layers", None)
    return int(layers) if layers is not None else None
