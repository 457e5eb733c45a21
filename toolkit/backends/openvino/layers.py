"""Per-layer precision of an OpenVINO IR as this CPU executes it: the IR is compiled with the
artifact's inference precision and each compute layer takes the runtime precision of the
execution node it was fused into (OpenVINO's runtime model: u8/i8 kernels are int8, bf16 under
a bf16 hint). Where compiling fails, the graph says it: int8 when a FakeQuantize or an 8-bit
Convert feeds the layer, else the inference precision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from toolkit.environment import require_module
from toolkit.errors import UsageError
from toolkit.source.layers import LayerPrecision, LayerReport, conv_macs, product

_COMPUTE = {"Convolution": "Conv", "GroupConvolution": "Conv",
            "ConvolutionBackpropData": "ConvTranspose",
            "GroupConvolutionBackpropData": "ConvTranspose", "MatMul": "MatMul",
            "ScaledDotProductAttention": "Attention"}
_RUNTIME = {"u8": "int8", "i8": "int8", "bf16": "bf16", "f16": "fp16", "f32": "fp32"}
_SUFFIX = "/WithoutBiases"  # OpenVINO's name for a Conv split from its bias Add


def openvino_layers(path: Path, shapes: Mapping[str, Sequence[int]],
                    inference_precision: str | None = None) -> LayerReport:
    """The `layers` hook of OpenVINO IRs: (xml path, input shapes, "f32"|"bf16")."""
    ov = require_module("openvino", f"reading {path.name}", extra="openvino")
    hint = inference_precision or "f32"
    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except Exception as err:  # OpenVINO raises its own error types
        raise UsageError(f"OpenVINO can't read {path}: {str(err).splitlines()[0][:200]}"
                         ) from None
    warnings: list[str] = []
    batch = next((int(s[0]) for s in shapes.values() if len(s)), 1) or 1
    if shapes:
        try:  # static shapes at the opt shapes: MACs per sample even where the batch and the
            # tokens are folded into one dynamic dimension
            model.reshape({name: list(shape) for name, shape in shapes.items()})
        except Exception as err:  # a model that won't take them keeps its dynamic shapes
            warnings.append(f"not reshaped to the opt shapes ({str(err).splitlines()[0][:120]})"
                            ": MACs of dynamic layers unknown")
            batch = 0
    static = [op for op in model.get_ordered_ops() if op.get_type_name() in _COMPUTE]
    try:
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        executed = _runtime_precisions(compiled)
        source = f"OpenVINO's runtime model on this CPU (inference precision {hint})"
    except Exception as err:  # a CPU that can't compile it still has the graph to read
        executed = {}
        warnings.append(f"not compiled here ({str(err).splitlines()[0][:160]}): precisions "
                        "read from the graph")
        source = f"the IR's graph (inference precision {hint})"
    graph_float = {"bf16": "bf16", "f16": "fp16"}.get(hint, "fp32")
    layers = []
    for op in static:
        name = op.get_friendly_name()
        precision = executed.get(name) or ("int8" if _quantised(op) else graph_float)
        layers.append(LayerPrecision(name.removesuffix(_SUFFIX), _COMPUTE[op.get_type_name()],
                                     precision, _macs(op, batch)))
    return LayerReport(layers, source, tuple(warnings))


def _runtime_precisions(compiled: Any) -> dict[str, str]:
    """Original layer name -> the precision its execution node runs in."""
    found: dict[str, str] = {}
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        if "runtimePrecision" not in info or "originalLayersNames" not in info:
            continue
        precision = _RUNTIME.get(info["runtimePrecision"].astype(str))
        if precision is None:
            continue
        kind = info["layerType"].astype(str) if "layerType" in info else ""
        if not any(k in kind for k in ("Conv", "MatMul", "FullyConnected", "Deconv")):
            continue
        for original in info["originalLayersNames"].astype(str).split(","):
            found.setdefault(original.strip(), precision)
    return found


def _quantised(op: Any) -> bool:
    """A FakeQuantize, or a Convert from 8-bit integers, within a few steps up either input."""
    for index in range(min(2, op.get_input_size())):
        node = op.input_value(index).get_node()
        for _ in range(4):
            kind = node.get_type_name()
            if kind == "FakeQuantize":
                return True
            if kind == "Convert" and \
                    node.input_value(0).get_element_type().get_type_name() in ("u8", "i8"):
                return True
            if kind not in ("Multiply", "Subtract", "Convert", "Reshape", "Transpose") or \
                    node.get_input_size() == 0:
                break
            node = node.input_value(0).get_node()
    return False


def _static(shape: Any) -> list[int] | None:
    if shape.rank.is_dynamic or not shape.is_static:
        return None
    return [d.get_length() for d in shape]


def _macs(op: Any, batch: int) -> int | None:
    """Per sample, from the static shapes at the opt shapes (None: dynamic, or no batch)."""
    out = _static(op.get_output_partial_shape(0))
    first, second = (_static(op.input(i).get_partial_shape()) for i in (0, 1))
    if out is None or first is None or second is None or batch <= 0:
        return None
    kind = op.get_type_name()
    if kind == "ScaledDotProductAttention":  # Q K^T and the weights times V
        return 2 * product(first[:-1]) * second[-2] * first[-1] // batch
    per_sample = product(out) // batch
    if kind == "MatMul":
        return per_sample * (first[-2] if op.get_transpose_a() else first[-1])
    weight = second[1:] if kind.startswith("Group") else second  # [G, Cout/G, Cin/G, k...]
    return conv_macs(per_sample, weight, "Backprop" in kind)
