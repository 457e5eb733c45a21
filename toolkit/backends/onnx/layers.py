"""ONNX's `layers` hook: a layer is int8 when a DequantizeLinear feeds its input or weight
(Q/DQ), else the element type of its input (fp16, bf16, fp32). MACs from ONNX shape inference
at the bundle's opt shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from toolkit.errors import UsageError
from toolkit.source.layers import LayerPrecision, LayerReport, conv_macs, product

#: ONNX ops that hold a network's multiply-accumulates
ONNX_COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")
_ONNX_FLOATS = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64"}


def onnx_layers(path: Path, shapes: Mapping[str, Sequence[int]],
                inference_precision: str | None = None) -> LayerReport:
    """The `layers` hook of ONNX files: (path, input shapes, unused) -> LayerReport."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends
        raise UsageError(f"{path} is not a readable ONNX model ({err})") from None
    for value in model.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[value.name], strict=False):
                dim.Clear()
                dim.dim_value = int(size)
    warnings: list[str] = []
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as err:  # inference gives up on some graphs: precisions still stand
        warnings.append(f"shape inference failed ({str(err).splitlines()[0][:160]}): MACs "
                        "unknown")
    graph = model.graph
    known: dict[str, tuple[int, list[int | None]]] = {}
    for value in [*graph.value_info, *graph.output, *graph.input]:
        tensor = value.type.tensor_type
        known[value.name] = (tensor.elem_type, [d.dim_value if d.HasField("dim_value")
                                                else None for d in tensor.shape.dim])
    for init in graph.initializer:
        known[init.name] = (init.data_type, list(init.dims))
    producers = {out: node for node in graph.node for out in node.output}
    batch = next((int(s[0]) for s in shapes.values() if len(s)), 1) or 1

    def weight_shape(name: str) -> list[int | None] | None:
        for _ in range(4):  # through DequantizeLinear / Cast / Transpose to the initializer
            if name in known and name not in producers:
                return known[name][1]
            node = producers.get(name)
            if node is None or node.op_type not in ("DequantizeLinear", "Cast", "Identity"):
                break
            name = node.input[0]
        return known.get(name, (0, None))[1]

    layers = []
    for node in graph.node:
        if node.op_type not in ONNX_COMPUTE:
            continue
        sources = [producers.get(name) for name in node.input[:2]]
        if any(s is not None and s.op_type == "DequantizeLinear" for s in sources):
            precision = "int8"
        else:
            precision = _ONNX_FLOATS.get(known.get(node.input[0], (1, []))[0], "fp32")
        macs = _macs(node.op_type, known.get(node.output[0], (0, None))[1],
                     weight_shape(node.input[1]) if len(node.input) > 1 else None,
                     known.get(node.input[0], (0, None))[1], batch)
        layers.append(LayerPrecision(node.name or node.output[0], node.op_type, precision,
                                     macs))
    return LayerReport(layers, "the ONNX graph (Q/DQ around a layer: int8; else its input's "
                       "element type)", tuple(warnings))


def _macs(op: str, out: list[int | None] | None, weight: list[int | None] | None,
          first: list[int | None] | None, batch: int) -> int | None:
    if not out or any(d is None or d <= 0 for d in out):
        return None
    per_sample = product(out) // max(batch, 1)
    if op in ("Conv", "ConvTranspose"):
        if not weight or any(d is None for d in weight):
            return None
        return conv_macs(per_sample, [int(d) for d in weight], op == "ConvTranspose")
    if not first or first[-1] is None:  # MatMul / Gemm: each output sums the inner dimension
        return None
    return per_sample * int(first[-1])
