"""An existing .onnx file as a source: its inputs and outputs read from the graph (no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.bundle import sha256_file
from toolkit.errors import UsageError
from toolkit.spec import DEFAULT_MAX_BATCH, OutputSpec, TensorSpec


@dataclass
class OnnxSource:
    """An existing ONNX file: the start of later steps (precision variants, TensorRT)."""

    path: Path
    inputs: list[TensorSpec]
    outputs: list[OutputSpec]
    source: dict[str, Any]


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


def source_specs(path: Path, inputs: Sequence[TensorSpec] | None = None
                 ) -> tuple[list[TensorSpec], list[OutputSpec]]:
    """An ONNX file as `export`'s SOURCE (the format's `source_file` hook): its inputs, the
    --input specs resolving its symbolic dimensions, and its outputs."""
    src = load_onnx_source(path, inputs)
    return list(src.inputs), list(src.outputs)


def describe_file(path: Path) -> tuple[list[TensorSpec], list[OutputSpec]]:
    """A lone ONNX file's inputs and outputs (the format's `describe` hook)."""
    src = load_onnx_source(path)
    return list(src.inputs), list(src.outputs)


def inspect_file(path: Path) -> dict[str, Any]:
    """What `toolkit inspect model.onnx` shows: IO, opsets, node and op counts, producer."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends
        raise UsageError(f"{path} is not a readable ONNX model ({err})") from None

    def dims(value: Any) -> list[Any]:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in value.type.tensor_type.shape.dim]

    initializers = {i.name for i in model.graph.initializer}
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {
        "file": str(path), "size_bytes": path.stat().st_size,
        "inputs": [{"name": v.name, "dtype": _ONNX_DTYPES.get(v.type.tensor_type.elem_type),
                    "shape": dims(v)} for v in model.graph.input if v.name not in initializers],
        "outputs": [{"name": v.name, "dtype": _ONNX_DTYPES.get(v.type.tensor_type.elem_type),
                     "shape": dims(v)} for v in model.graph.output],
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "nodes": len(model.graph.node), "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }
