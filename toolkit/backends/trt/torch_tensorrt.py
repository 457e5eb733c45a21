"""TensorRT engines through Torch-TensorRT instead of the ONNX parser (`--via`).

`--via torch-compile`: torch.export -> `torch_tensorrt.dynamo.
convert_exported_program_to_serialized_trt_engine` -> raw engine bytes, the same kind of file
the ONNX route writes, so `TensorRTRunner`, verify and bench run it unchanged.
`--via torchscript`: a trace -> `torch_tensorrt.ts.convert_method_to_trt_engine`, only while
the installed Torch-TensorRT still has its TorchScript frontend.

Written against Torch-TensorRT's documented API; like the rest of the TensorRT layer it has
not run here (no GPU, no TensorRT). Torch-TensorRT names engine tensors after the exported
graph, not after the bundle, so the build reads the engine's IO names back and records how
they map onto the bundle's (`tensor_names`); the runtime renames through that map.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

from toolkit.backends.trt import compat as trt_compat
from toolkit.backends.trt import options as trt_build
from toolkit.backends.trt import profiles as trt_profiles
from toolkit.backends.trt.build import import_tensorrt, init_plugins
from toolkit.backends.trt.logger import claim_process_logger, errors_since, process_logger
from toolkit.bundle import atomic_path, now
from toolkit.errors import BackendUnavailable, ExportFailed, UsageError, first_line
from toolkit.export.common import dynamic_shapes, example_args
from toolkit.source.wrapper import TORCH_DTYPES, LoadedModel

#: Torch-TensorRT releases that changed what the export route can honour
EXPORT_ENTRY_SINCE = (2, 5)  # convert_exported_program_to_serialized_trt_engine
HARDWARE_COMPATIBLE_SINCE = (2, 9)  # `hardware_compatible` (ignored silently before)
EXPLICIT_TYPING_NOOP_SINCE = (2, 13)  # `use_explicit_typing` does nothing from here on


def require_cuda(action: str = "build a TensorRT engine") -> Any:
    """`import torch` with a visible CUDA GPU, or BackendUnavailable (exit 3)."""
    try:
        import torch
    except ImportError:
        raise BackendUnavailable(f"PyTorch is not installed, needed to {action}") from None
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            f"no CUDA GPU is visible, needed to {action}: run on the target GPU machine"
        )
    return torch


def gpu_facts(torch: Any, device: str = "cuda") -> dict[str, Any]:
    """Name, compute capability and kind of `device` (recorded per engine)."""
    index = torch.device(device).index
    props = torch.cuda.get_device_properties(
        torch.cuda.current_device() if index is None else index)
    return {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "integrated": bool(getattr(props, "is_integrated", False)),
        "memory_gib": round(props.total_memory / 2**30, 1),
    }


def import_torch_tensorrt() -> Any:
    try:
        import torch_tensorrt
    except ImportError as err:
        raise BackendUnavailable(
            "Torch-TensorRT is not installed, needed for --via torch-compile/torchscript: "
            "pip install torch-tensorrt (the build matching your torch) on the target GPU "
            f"machine, or use the default --via onnx [{type(err).__name__}]"
        ) from None
    return torch_tensorrt


def _version(text: str | None) -> tuple[int, int]:
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in str(text or "0").split(".")]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def check_route_options(options: trt_build.BuildOptions, via: str) -> None:
    """Options the Torch-TensorRT routes can't honour are refused, never recorded (exit 2)."""
    refused = []
    if options.hardware_compatibility == "same-compute-capability":
        refused.append("--hardware-compat same-compute-capability (Torch-TensorRT has only "
                       "ampere+)")
    if options.dla_core is not None:
        refused.append("--dla-core (the Torch-TensorRT route builds for the GPU)")
    if options.extra_profiles:
        refused.append("--profile (Torch-TensorRT takes one min/opt/max range per input)")
    if via == "torchscript" and (options.hardware_compatibility != "none"
                                 or options.version_compatible):
        refused.append("--hardware-compat/--version-compatible (the TorchScript frontend "
                       "has neither)")
    if refused:
        raise UsageError(f"--via {via} can't honour {'; '.join(refused)}: use --via onnx, "
                         "which can")


def export_settings(version: str | None, options: trt_build.BuildOptions) -> dict[str, Any]:
    """`convert_exported_program_to_serialized_trt_engine` keywords for this Torch-TensorRT,
    or exit 3 naming the version when it can't build what was asked."""
    have = _version(version)
    if have < EXPORT_ENTRY_SINCE:
        raise BackendUnavailable(
            f"Torch-TensorRT {version} has no convert_exported_program_to_serialized_trt_engine "
            f"(added in {'.'.join(map(str, EXPORT_ENTRY_SINCE))}): upgrade torch-tensorrt, or "
            "use --via onnx"
        )
    settings: dict[str, Any] = {
        "optimization_level": options.optimization_level,
        "version_compatible": options.version_compatible,
    }
    if options.hardware_compatibility == "ampere+":
        if have < HARDWARE_COMPATIBLE_SINCE:
            raise BackendUnavailable(
                f"--hardware-compat ampere+ through Torch-TensorRT needs "
                f"{'.'.join(map(str, HARDWARE_COMPATIBLE_SINCE))} or newer (this machine has "
                f"{version}, which ignores it): upgrade, or use --via onnx"
            )
        settings["hardware_compatible"] = True
    if have < EXPLICIT_TYPING_NOOP_SINCE:
        settings["use_explicit_typing"] = True  # precision as written in the model
    if options.workspace:
        settings["workspace_size"] = options.workspace
    if options.timing_cache:
        settings["timing_cache_path"] = options.timing_cache
    return settings


def build_engine_from_model(model: LoadedModel, dest: Path, options: trt_build.BuildOptions,
                            via: str, device: str = "cuda") -> dict[str, Any]:
    """Build `dest` from the PyTorch model through Torch-TensorRT, on `device` (cuda,
    cuda:N); returns the engine record."""
    check_route_options(options, via)
    torch_tensorrt = import_torch_tensorrt()
    version = getattr(torch_tensorrt, "__version__", None)
    settings = export_settings(version, options) if via == "torch-compile" else {}
    trt = import_tensorrt()
    torch = require_cuda()
    logger = claim_process_logger(trt)  # before Torch-TensorRT's Builder takes the process
    mark = logger.mark()
    inputs = [torch_tensorrt.Input(min_shape=s.min, opt_shape=s.opt, max_shape=s.max,
                                   dtype=TORCH_DTYPES[s.dtype]) for s in model.inputs]
    module = model.flat.to(device).eval()
    started = time.perf_counter()
    try:
        # TensorRT builds on the current device: make it the one asked for
        with torch.cuda.device(torch.device(device)):
            if via == "torch-compile":
                engine = _via_export(torch, torch_tensorrt, model, module, inputs, settings,
                                     device)
            else:
                engine = _via_torchscript(torch, torch_tensorrt, model, module, inputs, device)
    except (BackendUnavailable, UsageError):
        raise
    except Exception as err:  # Torch-TensorRT's own conversion errors
        logged = errors_since(logger, mark, "")
        raise ExportFailed(f"Torch-TensorRT ({via}) failed: {first_line(err)}"
                           + (f" (TensorRT: {logged})" if logged else "")) from err
    finally:
        model.module.to("cpu")
    seconds = time.perf_counter() - started
    names = _tensor_names(trt, bytes(engine), model, options.version_compatible)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest, suffix=".engine") as tmp:
        tmp.write_bytes(bytes(engine))
    record = trt_compat.engine_record(
        trt_version=trt.__version__, gpu=gpu_facts(torch, device), platform=platform.machine(),
        options=options, profiles=trt_profiles.resolve_profiles(model.inputs, options),
        build_seconds=seconds, size_bytes=dest.stat().st_size, network_layers=None,
        engine_layers=None, timing_cache=None, built_at=now(),
    )
    record.update(via=via, tensor_names=names,
                  torch_tensorrt=getattr(torch_tensorrt, "__version__", None),
                  # its plugins (Interpolate, Normalize...) load in a new process only once
                  # torch_tensorrt is imported there: the runner does, as recorded
                  plugins={"register": ["tensorrt", "torch_tensorrt"], "serialized": []})
    return record


def _via_export(torch: Any, torch_tensorrt: Any, model: LoadedModel, module: Any,
                inputs: list[Any], settings: dict[str, Any], device: str = "cuda") -> Any:
    program = torch.export.export(module, example_args(model, device=device),
                                  dynamic_shapes=dynamic_shapes(model))
    convert = torch_tensorrt.dynamo.convert_exported_program_to_serialized_trt_engine
    return convert(program, arg_inputs=inputs, **settings)


def _via_torchscript(torch: Any, torch_tensorrt: Any, model: LoadedModel, module: Any,
                     inputs: list[Any], device: str = "cuda") -> Any:
    frontend = getattr(torch_tensorrt, "ts", None)
    convert = getattr(frontend, "convert_method_to_trt_engine", None)
    if convert is None:
        raise BackendUnavailable(
            f"Torch-TensorRT {getattr(torch_tensorrt, '__version__', '')} has no TorchScript "
            "frontend any more; use --via torch-compile or the default --via onnx"
        )
    traced = torch.jit.trace(module, example_args(model, device=device))
    return convert(traced, "forward", inputs=inputs)


def _tensor_names(trt: Any, engine: bytes, model: LoadedModel,
                  version_compatible: bool = False) -> dict[str, str]:
    """Bundle tensor name -> engine tensor name, matched by position within inputs and
    within outputs (Torch-TensorRT keeps the graph's order)."""
    logger = process_logger(trt)
    init_plugins(trt, logger)  # Torch-TensorRT may have placed plugin layers
    runtime = trt.Runtime(logger)
    if version_compatible:
        runtime.engine_host_code_allowed = True  # its plan carries a lean runtime: ours
    mark = logger.mark()
    cuda_engine = runtime.deserialize_cuda_engine(engine)
    if cuda_engine is None:
        raise ExportFailed("the Torch-TensorRT engine does not load back: "
                           f"{errors_since(logger, mark)}")
    names = [cuda_engine.get_tensor_name(i) for i in range(cuda_engine.num_io_tensors)]
    ins = [n for n in names if cuda_engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outs = [n for n in names if n not in ins]
    wanted_in = [s.name for s in model.inputs]
    wanted_out = [o.name for o in model.outputs]
    if len(ins) != len(wanted_in) or len(outs) != len(wanted_out):
        raise ExportFailed(
            f"the Torch-TensorRT engine has inputs {ins} and outputs {outs}; the bundle has "
            f"{wanted_in} and {wanted_out}"
        )
    return dict(zip(wanted_in + wanted_out, ins + outs))
