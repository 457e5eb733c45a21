"""SOURCE -> something to export: a Lightning checkpoint, a factory, an ONNX file or a bundle.

Checkpoints are read with `torch.load(weights_only=True)`: a checkpoint that needs arbitrary
unpickling is refused before anything in it runs, unless the user passes --trust-checkpoint.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.bundle import Bundle, sha256_file
from toolkit.errors import UsageError
from toolkit.spec import DEFAULT_MAX_BATCH, OutputSpec, TensorSpec, with_dynamic_batch


@dataclass
class OnnxSource:
    """An existing ONNX file: the start of later steps (precision variants, TensorRT)."""

    path: Path
    inputs: list[TensorSpec]
    outputs: list[OutputSpec]
    source: dict[str, Any]


@dataclass
class BundleSource:
    bundle: Bundle


def source_kind(source: str) -> str:
    """'bundle', 'onnx', 'checkpoint' or 'factory', judged from the string alone."""
    path = Path(source)
    if path.is_dir():
        return "bundle"
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix in (".ckpt", ".pt", ".pth"):
        return "checkpoint"
    if ":" in source and not path.exists():
        return "factory"
    if path.exists():
        return "checkpoint"
    raise UsageError(
        f"source '{source}' not found: give a .ckpt file, an .onnx file, a bundle directory "
        "or a factory such as torchvision.models:resnet18"
    )


def import_object(ref: str, option: str = "--model") -> Any:
    """Import `pkg.module:attr` or `path/to/file.py:attr` (the current directory is importable)."""
    module_name, sep, attr = ref.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{option} '{ref}' must look like pkg.module:Name")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise UsageError(f"{option} '{ref}': file {file} not found")
            spec = importlib.util.spec_from_file_location(file.stem, file)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[file.stem] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except UsageError:
        raise
    except Exception as err:  # the user's module may fail in any way while importing
        raise UsageError(
            f"{option} '{ref}': importing {module_name} failed ({type(err).__name__}: {err})"
        ) from err
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{option} '{ref}': {module_name} has no attribute '{attr}'")
        obj = getattr(obj, part)
    return obj


# -- checkpoints ----------------------------------------------------------------------------
def _data_only_globals() -> list[Any]:
    """Types that hyperparameters commonly hold and that rebuild without running code
    (argparse hyperparameters, paths): allowed on top of torch's weights-only set."""
    import argparse
    import pathlib

    return [argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath,
            pathlib.WindowsPath, pathlib.PureWindowsPath]


def read_checkpoint(path: Path, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict without executing code from it (unless trusted)."""
    import torch

    if not path.is_file():
        raise UsageError(f"checkpoint {path} not found")
    if not zipfile.is_zipfile(path) and path.stat().st_size < 64:
        raise UsageError(f"checkpoint {path} is empty or truncated")
    try:
        if trust:
            # pickled classes usually live in the user's project, like --model
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            data = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals(_data_only_globals()):
                data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Listing the globals reads the pickle's opcodes only; nothing in it is executed.
        try:
            needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # a damaged pickle: the generic message below still holds
            needed = []
        allowed = {f"{t.__module__}.{t.__qualname__}" for t in _data_only_globals()}
        needed = [n for n in needed if n not in allowed]
        shown = ", ".join(needed[:4]) + (" …" if len(needed) > 4 else "")
        raise UsageError(
            f"checkpoint {path} needs arbitrary unpickling to load"
            + (f" (it stores {shown})" if shown else "")
            + "; nothing in it was run. If you trust where it came from, pass --trust-checkpoint"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise UsageError(
            f"checkpoint {path} can't be read: it looks truncated or is not a PyTorch "
            f"checkpoint ({str(err).splitlines()[0][:160]})"
        ) from None
    if not isinstance(data, Mapping):
        raise UsageError(f"checkpoint {path} holds a {type(data).__name__}, not a dict")
    return dict(data)


def _class_from_checkpoint(ckpt: Mapping[str, Any], path: Path) -> str:
    hparams = ckpt.get("hyper_parameters") or {}
    class_path = hparams.get("_class_path") if isinstance(hparams, Mapping) else None
    if not class_path:
        raise UsageError(
            f"checkpoint {path} does not record its LightningModule class; "
            "pass --model pkg.module:ClassName"
        )
    module, _, name = str(class_path).rpartition(".")
    return f"{module}:{name}"


def load_lightning_checkpoint(
    path: Path, model_ref: str | None, trust: bool = False
) -> tuple[Any, str]:
    """Rebuild the LightningModule (hyperparameters + weights) from a .ckpt file."""
    import inspect

    ckpt = read_checkpoint(path, trust=trust)
    if "state_dict" not in ckpt:
        raise UsageError(
            f"checkpoint {path} has no 'state_dict'; for a plain state_dict use a factory "
            "source with --weights"
        )
    ref = model_ref or _class_from_checkpoint(ckpt, path)
    cls = import_object(ref, "--model")
    if not isinstance(cls, type):
        raise UsageError(f"--model '{ref}' is not a class")
    loader = getattr(cls, "load_from_checkpoint", None)
    try:
        if loader is not None:
            kwargs: dict[str, Any] = {"map_location": "cpu", "strict": True}
            if "weights_only" in inspect.signature(loader).parameters:
                kwargs["weights_only"] = not trust
            import torch

            with torch.serialization.safe_globals(_data_only_globals()):
                module = loader(str(path), **kwargs)
        else:  # a plain nn.Module class: hyperparameters as keyword arguments
            module = cls(**dict(ckpt.get("hyper_parameters") or {}))
            module.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, KeyError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"checkpoint {path} doesn't fit {ref}: {first[:300]}"
        ) from err
    return module, ref


def load_state_dict_file(module: Any, path: Path) -> None:
    """Load `--weights FILE` (a state_dict, or a checkpoint holding one) into `module`."""
    state = read_checkpoint(path)
    state = state.get("state_dict", state)
    try:
        module.load_state_dict(state)
        return
    except RuntimeError as first_error:
        # Lightning prefixes keys with the attribute holding the network ('model.', 'net.').
        prefixes = {k.split(".", 1)[0] for k in state}
        if len(prefixes) == 1:
            prefix = prefixes.pop() + "."
            try:
                module.load_state_dict({k.removeprefix(prefix): v for k, v in state.items()})
                return
            except RuntimeError:
                pass
        line = str(first_error).strip().splitlines()[0]
        raise UsageError(f"--weights {path} doesn't fit the model: {line[:300]}") from None


# -- inputs ---------------------------------------------------------------------------------
def _example_to_specs(module: Any, example: Any) -> tuple[list[TensorSpec], str, dict]:
    """Specs, call style and numpy values from a LightningModule's example_input_array."""
    import torch

    from toolkit.model import forward_parameter_names, spec_from_tensor, to_numpy

    if isinstance(example, Mapping):
        named = {str(k): v for k, v in example.items()}
        style = "keyword"
    elif isinstance(example, (tuple, list)):
        names = forward_parameter_names(module, len(example))
        named = dict(zip(names, example))
        style = "positional"
    elif isinstance(example, torch.Tensor):
        named = {forward_parameter_names(module, 1)[0]: example}
        style = "positional"
    else:
        raise UsageError(
            f"example_input_array is a {type(example).__name__}; use a tensor, tuple or dict"
        )
    specs = [spec_from_tensor(name, value) for name, value in named.items()]
    return specs, style, {k: to_numpy(v) for k, v in named.items()}


def build_loaded_model(
    module: Any,
    *,
    inputs: Sequence[TensorSpec] | None,
    static: bool,
    source: dict[str, Any],
    max_batch: int = DEFAULT_MAX_BATCH,
):
    """Combine a module with its input spec: --input wins, else example_input_array."""
    from toolkit.model import LoadedModel

    example = getattr(module, "example_input_array", None)
    specs, style, values = ([], "positional", None)
    if example is not None:
        specs, style, values = _example_to_specs(module, example)
        if not static:
            specs = [with_dynamic_batch(s, max_batch) for s in specs]
    if inputs:
        given = list(inputs)
        if style == "keyword" and {s.name for s in given} != {s.name for s in specs}:
            raise UsageError(
                f"--input names {[s.name for s in given]} must match the keys of the "
                f"model's example_input_array {[s.name for s in specs]}"
            )
        example_shapes = {s.name: s.opt for s in specs}
        if values and any(example_shapes.get(s.name) != s.opt for s in given):
            values = None  # the example no longer fits the shapes the user asked for
        specs = given
    if not specs:
        raise UsageError(
            "the model has no example_input_array; describe its inputs with "
            "--input NAME:SHAPE[:DTYPE], e.g. --input x:1-16x3x224x224"
        )
    return LoadedModel(module=module, inputs=specs, call_style=style,
                       example=values, source=source)


def load_model(
    source: str,
    *,
    model_ref: str | None = None,
    weights: str | None = None,
    inputs: Sequence[TensorSpec] | None = None,
    static: bool = False,
    trust_checkpoint: bool = False,
):
    """Load a checkpoint or factory into a LoadedModel (eval mode, specs resolved)."""
    kind = source_kind(source)
    if kind == "checkpoint":
        path = Path(source)
        module, ref = load_lightning_checkpoint(path, model_ref, trust=trust_checkpoint)
        info = {"kind": "lightning-checkpoint", "path": str(path.resolve()),
                "sha256": sha256_file(path), "class": ref}
    elif kind == "factory":
        factory = import_object(source, "source")
        if not callable(factory):
            raise UsageError(f"source '{source}' is not callable")
        try:
            module = factory()
        except Exception as err:  # user code
            raise UsageError(f"factory {source}() failed: {type(err).__name__}: {err}") from err
        info = {"kind": "factory", "path": source, "class": type(module).__qualname__}
        if weights:
            load_state_dict_file(module, Path(weights))
            info["weights"] = str(Path(weights).resolve())
            info["sha256"] = sha256_file(weights)
    else:
        raise UsageError(f"'{source}' is a {kind}, not a model to load")
    import torch

    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"'{source}' produced a {type(module).__name__}, not a torch nn.Module")
    if hasattr(module, "_trainer"):
        module._trainer = None  # export the network, not the training object
    return build_loaded_model(module, inputs=inputs, static=static, source=info)


# -- ONNX files -----------------------------------------------------------------------------
_ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 11: "float64", 7: "int64",
                6: "int32", 3: "int8", 2: "uint8", 9: "bool", 5: "int16"}


def load_onnx_source(path: Path, inputs: Sequence[TensorSpec] | None = None) -> OnnxSource:
    """Read an ONNX file's IO; symbolic dims need ranges (dim 0 defaults to 1-1-64)."""
    import onnx

    if not path.is_file():
        raise UsageError(f"ONNX file {path} not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises its own DecodeError
        raise UsageError(f"{path} is not a readable ONNX model ({err})") from None
    initializers = {i.name for i in model.graph.initializer}
    given = {s.name: s for s in inputs or []}
    specs: list[TensorSpec] = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dtype = _ONNX_DTYPES.get(tensor_type.elem_type, "float32")
        if value.name in given:
            specs.append(given.pop(value.name))
            continue
        lo, opt, hi = [], [], []
        for axis, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                lo.append(dim.dim_value)
                opt.append(dim.dim_value)
                hi.append(dim.dim_value)
            elif axis == 0:
                lo.append(1)
                opt.append(1)
                hi.append(DEFAULT_MAX_BATCH)
            else:
                raise UsageError(
                    f"{path}: input '{value.name}' dimension {axis} is symbolic "
                    f"('{dim.dim_param}'); give its range with --input {value.name}:SHAPE, "
                    "e.g. 1-8x1-128-512"
                )
        specs.append(TensorSpec(value.name, dtype, tuple(lo), tuple(opt), tuple(hi)))
    if given:
        raise UsageError(f"--input names {sorted(given)} are not inputs of {path}")
    outputs = [
        OutputSpec(o.name, _ONNX_DTYPES.get(o.type.tensor_type.elem_type, "float32"))
        for o in model.graph.output
    ]
    info = {"kind": "onnx", "path": str(path.resolve()), "sha256": sha256_file(path)}
    return OnnxSource(path, specs, outputs, info)
