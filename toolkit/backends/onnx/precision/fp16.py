"""fp16 / bf16 in the ONNX graph: our own pass (see docs/precision.md for why not
onnxconverter-common). Float weights and ops go low, numerically sensitive ops stay fp32 with
Casts at the boundaries; graph inputs and outputs stay fp32.

ONNX Runtime's CPU provider has no bf16 kernels for Conv/MatMul/Gemm (and, unlike fp16, inserts
no Casts around them), so bf16 ONNX is for TensorRT only."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.backends.onnx.precision.graph import _load, _save
from toolkit.errors import ExportFailed, UsageError
from toolkit.spec import canonical_precision

# Ops whose fp16 result can overflow (sums, exp, powers) or lose the precision a normalisation
# needs; they stay fp32 and take Casts around them.
DEFAULT_SENSITIVE: frozenset[str] = frozenset({
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceProd", "CumSum",
    "LayerNormalization", "GroupNormalization", "InstanceNormalization",
    "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Erf",
})

# Ops that never change type: they create floats from attributes/ints, carry quantisation
# parameters or hold subgraphs we don't rewrite.
_NEVER_LOW: frozenset[str] = frozenset({
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "EyeLike",
    "Multinomial", "Bernoulli", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    "If", "Loop", "Scan", "Range",
    "NonMaxSuppression",  # its boxes and scores are float32 by the ONNX spec
})
# Data-movement ops take the precision of the activation they move, so a Reshape between two
# fp32 ops neither narrows a large value to fp16 nor costs a pair of Casts.
_FOLLOW_OPS: frozenset[str] = frozenset({
    "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose", "Identity", "Expand", "Slice",
    "Gather", "GatherElements", "GatherND", "Concat", "Split", "Tile", "DepthToSpace",
    "SpaceToDepth",
})
# Ops whose outputs select data (indices, kept boxes): everything computed from them stays fp32.
_SELECTION_OPS: frozenset[str] = frozenset({"NonZero", "NonMaxSuppression", "TopK"})
# Inputs whose type is fixed to float by the ONNX spec, whatever the data type.
_FIXED_FP32_INPUTS: frozenset[tuple[str, int]] = frozenset({
    ("Resize", 1), ("Resize", 2), ("Upsample", 1),
})


# -- fp16 / bf16 -------------------------------------------------------------------------------
def _to_low(array: np.ndarray, elem: int) -> Any:
    """A numpy float array as an fp16 or bf16 TensorProto payload."""
    import onnx

    if elem == onnx.TensorProto.FLOAT16:
        return array.astype(np.float16)
    import ml_dtypes  # ships with onnx >= 1.16

    return array.astype(ml_dtypes.bfloat16)


def _convert_tensor(tensor: Any, elem: int) -> Any:
    import onnx
    from onnx import numpy_helper

    arr = numpy_helper.to_array(tensor).astype(np.float32)
    low = _to_low(arr, elem)
    if elem == onnx.TensorProto.FLOAT16:
        out = numpy_helper.from_array(low, tensor.name)
    else:  # from_array doesn't know ml_dtypes everywhere; build the proto by hand
        out = onnx.helper.make_tensor(
            tensor.name, elem, arr.shape, low.view(np.uint16).tobytes(), raw=True
        )
    return out


def _elem_types(model: Any) -> dict[str, int]:
    graph = model.graph
    types: dict[str, int] = {}
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:  # Constant outputs may lack value_info
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


class _FloatPass:
    """Rewrites one graph: decides each node's precision and inserts Casts where types meet."""

    def __init__(self, model: Any, elem: int, keep_ops: set[str], keep_nodes: set[str]) -> None:
        import onnx

        self.onnx = onnx
        self.model = model
        self.graph = model.graph
        self.elem = elem
        self.FLOAT = onnx.TensorProto.FLOAT
        self.types = _elem_types(model)
        self.keep_ops = keep_ops
        self.keep_nodes = keep_nodes
        self.current: dict[str, int] = {}  # float tensors' type after the rewrite
        self.casts: dict[tuple[str, int], str] = {}
        self.cast_nodes = 0
        self.kept: Counter[str] = Counter()
        # Tensors subgraphs (Loop/If/Scan bodies, kept fp32) read from the outer graph without
        # listing them as inputs: their producers and initializers must stay fp32 too.
        self.implicit: set[str] = set().union(*(_subgraph_reads(n) for n in self.graph.node))

    def is_low(self, node: Any) -> bool:
        if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER_LOW:
            return False
        if any(a.type in (5, 10) for a in node.attribute):  # GRAPH / GRAPHS attributes
            return False
        return node.op_type not in self.keep_ops and node.name not in self.keep_nodes

    def decide(self) -> list[bool]:
        """Each node's precision, in graph order; data-movement ops follow their inputs."""
        inits = {i.name for i in self.graph.initializer}
        fp32_tensors = {vi.name for vi in self.graph.input if self.types.get(vi.name) == self.FLOAT}
        flags = []
        selected: set[str] = set()  # tensors computed from data-dependent selections
        for node in self.graph.node:
            low = self.is_low(node) and not any(o in self.implicit for o in node.output)
            if node.op_type in _SELECTION_OPS or any(i in selected for i in node.input):
                # Post-processing (candidate gathering, coordinate offsets, NMS, padding)
                # decides which boxes survive: fp16 there changes the answer, not its digits.
                selected.update(node.output)
                low = False
            if low and node.op_type in _FOLLOW_OPS:
                low = not any(i in fp32_tensors for i in node.input if i and i not in inits)
            if not low:
                fp32_tensors.update(o for o in node.output if self.types.get(o) == self.FLOAT)
            flags.append(low)
        return flags

    def wanted(self, node: Any, low: bool, index: int) -> int:
        if low and (node.op_type, index) not in _FIXED_FP32_INPUTS:
            return self.elem
        return self.FLOAT

    def cast(self, name: str, to: int, out: list[Any]) -> str:
        key = (name, to)
        if key not in self.casts:
            tag = "fp32" if to == self.FLOAT else "lowp"
            new = f"{name}__to_{tag}"
            out.append(self.onnx.helper.make_node(
                "Cast", [name], [new], name=f"{name}__cast_{tag}", to=to
            ))
            self.casts[key] = new
            self.cast_nodes += 1
        return self.casts[key]

    def convert_initializers(self, low_flags: list[bool]) -> tuple[int, int]:
        """Initializers that only low-precision inputs read become low precision in place."""
        wants: dict[str, set[int]] = {}
        for node, low in zip(self.graph.node, low_flags):
            for k, name in enumerate(node.input):
                if name:
                    wants.setdefault(name, set()).add(self.wanted(node, low, k))
        for name in self.implicit:
            wants.setdefault(name, set()).add(self.FLOAT)
        converted = total = 0
        for i, init in enumerate(self.graph.initializer):
            if init.data_type != self.FLOAT:
                continue
            size = int(np.prod(init.dims)) if init.dims else 1
            total += size
            self.current[init.name] = self.FLOAT
            if wants.get(init.name) == {self.elem}:
                self.graph.initializer[i].CopyFrom(_convert_tensor(init, self.elem))
                self.current[init.name] = self.elem
                converted += size
        return converted, total

    def retype_attributes(self, node: Any) -> None:
        if node.op_type == "ConstantOfShape" and not any(a.name == "value"
                                                         for a in node.attribute):
            # Without `value` the op makes float32 zeros (the spec's default): say it in fp16.
            zero = self.onnx.helper.make_tensor("value", self.FLOAT, [1], [0.0])
            node.attribute.append(self.onnx.helper.make_attribute("value", zero))
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == self.FLOAT:
                attr.i = self.elem
            elif node.op_type in ("Constant", "ConstantOfShape") and attr.name == "value" \
                    and attr.t.data_type == self.FLOAT:
                attr.t.CopyFrom(_convert_tensor(attr.t, self.elem))

    def run(self) -> dict[str, Any]:
        graph = self.graph
        for vi in graph.input:
            if self.types.get(vi.name) == self.FLOAT:
                self.current[vi.name] = self.FLOAT
        low_flags = self.decide()
        converted, total = self.convert_initializers(low_flags)
        new_nodes: list[Any] = []
        for node, low in zip(graph.node, low_flags):
            for k, name in enumerate(node.input):
                have = self.current.get(name)
                if not name or have is None:
                    continue  # not a float tensor
                want = self.wanted(node, low, k)
                if have != want:
                    node.input[k] = self.cast(name, want, new_nodes)
            if low:
                self.retype_attributes(node)
            elif self.touches_float(node) and node.op_type not in _FOLLOW_OPS:
                self.kept[node.op_type] += 1
            for out in node.output:
                if self.types.get(out) == self.FLOAT or (low and self.makes_float(node)):
                    self.current[out] = self.elem if low else self.FLOAT
            new_nodes.append(node)
        self.restore_outputs(new_nodes)
        del graph.node[:]
        graph.node.extend(new_nodes)
        return {"weights_converted": converted, "weights_total": total}

    def touches_float(self, node: Any) -> bool:
        return any(self.current.get(n) is not None for n in node.input) or any(
            self.types.get(o) == self.FLOAT for o in node.output
        )

    def makes_float(self, node: Any) -> bool:
        if node.op_type == "Cast":
            return any(a.name == "to" and a.i == self.elem for a in node.attribute)
        return False

    def restore_outputs(self, nodes: list[Any]) -> None:
        """Graph outputs stay fp32: the producer writes a renamed tensor, a Cast restores it."""
        producers = {out: node for node in nodes for out in node.output}
        for vi in self.graph.output:
            if self.current.get(vi.name, self.FLOAT) == self.FLOAT or vi.name not in producers:
                continue
            inner = f"{vi.name}__lowp"
            node = producers[vi.name]
            node.output[list(node.output).index(vi.name)] = inner
            for other in nodes:  # consumers inside the graph read the renamed tensor too
                for k, name in enumerate(other.input):
                    if name == vi.name:
                        other.input[k] = inner
            # a Cast for an in-graph consumer of this output may hold `__cast_fp32` already
            taken = {n.name for n in nodes}
            name = f"{vi.name}__output_fp32"
            while name in taken:
                name += "_"
            nodes.append(self.onnx.helper.make_node(
                "Cast", [inner], [vi.name], name=name, to=self.FLOAT
            ))
            self.cast_nodes += 1


def _subgraph_reads(node: Any) -> set[str]:
    """Every tensor name read by the nodes of a node's subgraphs, at any depth."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == 5 else list(attr.graphs) if attr.type == 10 else []
        for graph in graphs:
            for inner in graph.node:
                names.update(i for i in inner.input if i)
                names |= _subgraph_reads(inner)
    return names


BF16_MIN_OPSET = 22  # Conv, Gemm and most float ops accept bfloat16 from opset 22


def _opset_for_bf16(model: Any) -> Any:
    """bf16 Conv/Gemm are only legal ONNX from opset 22: upgrade the default domain if older."""
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= BF16_MIN_OPSET:
        return model
    try:
        return version_converter.convert_version(model, BF16_MIN_OPSET)
    except Exception as err:
        raise ExportFailed(
            f"bf16 needs ONNX opset {BF16_MIN_OPSET} (model has {opset}) and the upgrade failed: "
            f"{err}; re-export with --opset {BF16_MIN_OPSET}"
        ) from None


def convert_float16(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    dtype: str = "float16",
    keep_fp32_ops: Iterable[str] = DEFAULT_SENSITIVE,
    keep_fp32_nodes: Iterable[str] = (),
) -> dict[str, Any]:
    """Write an fp16 (or bf16) copy of `src` to `dst`; inputs and outputs stay fp32.

    Returns a summary: dtype, fraction of float weights converted, ops kept fp32, casts added.
    """
    import onnx

    key = canonical_precision(dtype)
    if key not in ("fp16", "bf16"):
        raise UsageError(f"convert_float16: dtype must be float16 or bfloat16, got '{dtype}'")
    elem = onnx.TensorProto.FLOAT16 if key == "fp16" else onnx.TensorProto.BFLOAT16
    model = _load(Path(src))
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise UsageError(f"{src}: already quantised (Q/DQ); convert the fp32 model instead")
    try:
        if key == "bf16":
            model = _opset_for_bf16(model)
        model = onnx.shape_inference.infer_shapes(model)
        rewrite = _FloatPass(model, elem, set(keep_fp32_ops), set(keep_fp32_nodes))
        counts = rewrite.run()
        # Types changed: drop stale value_info and let shape inference fill it again.
        del model.graph.value_info[:]
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model, full_check=True)  # type-checks every node
    except UsageError:
        raise
    except Exception as err:
        raise ExportFailed(f"{src}: {key} conversion failed: {err}") from None
    _save(model, Path(dst))
    total = counts["weights_total"]
    return {
        "precision": key,
        "dtype": "float16" if key == "fp16" else "bfloat16",
        "weights_converted_fraction": round(counts["weights_converted"] / total, 4) if total
        else 0.0,
        "ops_kept_fp32": dict(sorted(rewrite.kept.items())),
        "casts_inserted": rewrite.cast_nodes,
        "keep_fp32_ops": sorted(set(keep_fp32_ops)),
        "keep_fp32_nodes": sorted(set(keep_fp32_nodes)),
    }
