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
from toolkit.source.layers import LayerPrecision, LayerReport, conv_macs

_COMPUTE = {"Convolution": "Conv", "GroupConvolution": "Conv",
            "ConvolutionBackpropData": "ConvTranspose",
            "GroupConvolutionBackpropData": "ConvTranspose", "MatMul": "MatMul"}
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
    static = [op for op in model.get_ordered_ops() if op.get_type_name() in _COMPUTE]
    warnings: list[str] = []
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
                                     precision, _macs(op)))
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
    if shape.rank.is_dynamic:
        return None
    dims = [d.get_length() if d.is_static else None for d in shape]
    return None if any(d is None for d in dims[1:]) else [d or 1 for d in dims]


def _macs(op: Any) -> int | None:
    out, weight = _static(op.get_output_partial_shape(0)), _static(op.input(1).get_partial_shape())
    if out is None or weight is None:
        return None
    per_sample = 1
    for d in out[1:]:
        per_sample *= d
    kind = op.get_type_name()
    if kind == "MatMul":
        first = _static(op.input(0).get_partial_shape())
        return per_sample * first[-1] if first else None
    if kind.startswith("Group"):  # [G, Cout/G, Cin/G, k...]: per output, Cin/G x kernel
        weight = weight[1:]
    return conv_macs(per_sample, weight, "Backprop" in kind)
