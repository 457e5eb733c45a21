"""Reduced precision that lives in the ONNX graph: fp16/bf16 casts and INT8 Q/DQ.

TensorRT 10+ strongly typed networks (the only kind TensorRT 11 builds) take precision from the
graph, so every transform here rewrites ONNX and is checked on CPU with ONNX Runtime. Graph
inputs and outputs stay fp32 so callers, golden samples and parity checks don't change.

- `convert_float16`: our own graph pass (see docs/precision.md for why not onnxconverter-common):
  float weights and ops go to fp16/bf16, numerically sensitive ops stay fp32, Casts sit at the
  boundaries.
- `quantize_int8`: ONNX Runtime's static quantizer in QDQ format, calibrated on real feeds,
  symmetric int8 (zero point 0) for TensorRT, or uint8 activations for the fastest CPU graph.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import ExportFailed, UsageError
from toolkit.spec import canonical_precision

# What each target runs. ONNX Runtime's CPU provider has no bf16 kernels for Conv/MatMul/Gemm
# (and, unlike fp16, inserts no Casts around them), so bf16 ONNX is for TensorRT only.
SUPPORTED_PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("fp32", "fp16", "int8"),
    "trt": ("fp32", "fp16", "bf16", "int8"),
}
TARGET_ALIASES = {"tensorrt": "trt", "engine": "trt", "onnxruntime": "onnx", "ort": "onnx"}

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
})
# Data-movement ops take the precision of the activation they move, so a Reshape between two
# fp32 ops neither narrows a large value to fp16 nor costs a pair of Casts.
_FOLLOW_OPS: frozenset[str] = frozenset({
    "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose", "Identity", "Expand", "Slice",
    "Gather", "GatherElements", "GatherND", "Concat", "Split", "Tile", "DepthToSpace",
    "SpaceToDepth",
})
# Inputs whose type is fixed to float by the ONNX spec, whatever the data type.
_FIXED_FP32_INPUTS: frozenset[tuple[str, int]] = frozenset({
    ("Resize", 1), ("Resize", 2), ("Upsample", 1),
})

ORT_QDQ_DISABLED_OPTIMIZERS: tuple[str, ...] = ("CommonSubexpressionElimination",)
"""Pass as `InferenceSession(..., disabled_optimizers=...)` for INT8 Q/DQ graphs on x86 CPUs
without VNNI: ORT's CSE merges the dedicated Q nodes again, which stops its int8->uint8
rewrite and leaves those Convs in fp32 (see docs/precision.md)."""

CALIB_METHODS = ("minmax", "entropy", "percentile")
INT8_PROFILES = ("trt", "cpu")
MIN_CALIB_SAMPLES = 100
TWO_GIB = 2 * 1024**3


# -- precision names ---------------------------------------------------------------------------
def check_precisions(target: str, precisions: str | Iterable[str]) -> list[str]:
    """Canonical, de-duplicated precisions, or UsageError naming what `target` supports."""
    if isinstance(precisions, str):
        precisions = [p for p in precisions.split(",") if p.strip()]
    key = TARGET_ALIASES.get(target.strip().lower(), target.strip().lower())
    if key not in SUPPORTED_PRECISIONS:
        raise UsageError(
            f"--precision: reduced precision isn't available for '{target}'; only for "
            f"{', '.join(sorted(SUPPORTED_PRECISIONS))} (other formats export fp32)"
        )
    allowed = SUPPORTED_PRECISIONS[key]
    out: list[str] = []
    for name in precisions:
        canon = canonical_precision(name)
        if canon not in allowed:
            raise UsageError(
                f"--precision {name}: not supported for {key}; supported: {', '.join(allowed)}"
            )
        if canon not in out:
            out.append(canon)
    return out or ["fp32"]


# -- ONNX helpers ------------------------------------------------------------------------------
def _load(src: Path) -> Any:
    import onnx

    if not Path(src).is_file():
        raise UsageError(f"{src}: ONNX file not found")
    try:
        return onnx.load(str(src))
    except Exception as err:  # onnx raises DecodeError/OSError variants
        raise UsageError(f"{src}: not a readable ONNX model ({err})") from None


def _save(model: Any, dst: Path) -> None:
    """Write atomically; weights stay inline unless the 2 GiB protobuf limit forces them out."""
    import onnx

    from toolkit.bundle import atomic_path

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    external = model.ByteSize() >= TWO_GIB
    if external:  # data file name must be final, so write it beside the model directly
        onnx.save(model, str(dst), save_as_external_data=True, location=dst.name + ".data")
        return
    with atomic_path(dst, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))


def op_counts(model_or_path: Any) -> dict[str, int]:
    """Op-type histogram of a model (path or ModelProto), for summaries and tests."""
    import onnx

    model = model_or_path
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model_or_path), load_external_data=False)
    return dict(Counter(n.op_type for n in model.graph.node))


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
        for node in self.graph.node:
            low = self.is_low(node)
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
            nodes.append(self.onnx.helper.make_node(
                "Cast", [inner], [vi.name], name=f"{vi.name}__cast_fp32", to=self.FLOAT
            ))
            self.cast_nodes += 1


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


# -- INT8 --------------------------------------------------------------------------------------
def _feed_reader(feeds: Sequence[Mapping[str, np.ndarray]], names: list[str]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        """Hands ORT's calibrator one feed at a time (labels and extra arrays dropped)."""

        def __init__(self) -> None:
            self._it: Iterator[Mapping[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            feed = next(self._it, None)
            if feed is None:
                return None
            return {n: np.ascontiguousarray(feed[n]) for n in names}

        def rewind(self) -> None:
            self._it = iter(feeds)

    return _Reader()


def _check_calibration(
    model: Any, feeds: Sequence[Mapping[str, np.ndarray]], where: str
) -> tuple[list[str], int]:
    """Validate every feed against the model's inputs; returns input names and sample count."""
    from toolkit.spec import validate_feed

    specs = _input_specs(model)
    if not feeds:
        raise UsageError(f"{where}: no calibration batches; pass data with --calib-data")
    samples = 0
    for i, feed in enumerate(feeds):
        validate_feed(specs, feed, f"{where} batch {i}")
        first = np.asarray(feed[specs[0].name]) if specs else None
        samples += int(first.shape[0]) if first is not None and first.ndim else 1
    return [s.name for s in specs], samples


def _input_specs(model: Any) -> list[Any]:
    """TensorSpecs of the graph inputs; symbolic dimensions accept any extent."""
    import onnx

    from toolkit.spec import TensorSpec

    inits = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in tt.shape.dim]
        lo = tuple(d or 1 for d in dims)
        hi = tuple(d or 2**31 - 1 for d in dims)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        specs.append(TensorSpec(vi.name, dtype, lo, lo, hi))
    return specs


def vnni_available() -> bool:
    """Whether this x86 CPU has 8-bit dot-product instructions (no int16 saturation)."""
    from toolkit.environment import cpu_flags

    return any(f in cpu_flags() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _dedicate_qdq(model: Any) -> int:
    """Give every consumer of a quantised activation its own Q->DQ pair.

    ORT converts int8 Q/DQ pairs to uint8 on x86 only where a Q feeds exactly one DQ, and
    TensorRT is indifferent, so duplicating the (cheap) Q keeps every Conv fusable.
    """
    import onnx

    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    extra: dict[int, list[Any]] = {}
    count = 0
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in inits or q.output[0] in outputs:
            continue
        dqs = consumers.get(q.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" for d in dqs):
            continue
        users = [(dq, user) for dq in dqs for user in consumers.get(dq.output[0], [])]
        for dq, user in users[1:]:
            count += 1
            tag = f"__dedicated{count}"
            q2 = onnx.helper.make_node("QuantizeLinear", list(q.input), [q.output[0] + tag],
                                       name=q.name + tag)
            q2.attribute.extend(q.attribute)
            dq2 = onnx.helper.make_node("DequantizeLinear", [q2.output[0], *dq.input[1:]],
                                        [dq.output[0] + tag], name=dq.name + tag)
            dq2.attribute.extend(dq.attribute)
            for k, name in enumerate(user.input):
                if name == dq.output[0]:
                    user.input[k] = dq2.output[0]
            extra.setdefault(id(q), []).extend([q2, dq2])
    if count:
        ordered = []
        for node in graph.node:
            ordered.append(node)
            ordered.extend(extra.get(id(node), []))
        del graph.node[:]
        graph.node.extend(ordered)
    return count


def _qdq_placement(model: Any, op_types: Sequence[str]) -> dict[str, Any]:
    """Which quantisable nodes got Q/DQ on both activation and weight inputs."""
    producers = {out: n for n in model.graph.node for out in n.output}
    wrapped, bare = 0, []
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        ins = [i for i in node.input[:2] if i]
        ok = all((p := producers.get(i)) is not None and p.op_type == "DequantizeLinear"
                 for i in ins)
        if ok:
            wrapped += 1
        else:
            bare.append(node.name or node.op_type)
    return {"quantized_nodes": wrapped, "unquantized_nodes": bare}


def quantize_int8(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    calib_feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    method: str = "minmax",
    per_channel: bool = True,
    profile: str = "trt",
    reduce_range: bool | None = None,
    op_types: Sequence[str] | None = None,
    exclude_nodes: Sequence[str] = (),
    percentile: float = 99.999,
    min_samples: int = MIN_CALIB_SAMPLES,
    where: str = "--calib-data",
) -> dict[str, Any]:
    """Calibrate on `calib_feeds` and write an explicit Q/DQ INT8 model to `dst`.

    profile "trt": int8 activations and weights, both symmetric (zero point 0), as TensorRT's
    explicit quantisation requires; runs on ORT CPU too. profile "cpu": uint8 asymmetric
    activations, ORT's fastest layout on x86 but not accepted by TensorRT.
    reduce_range (None = auto: on when this CPU lacks VNNI) keeps weights to 7 bits so that
    ORT's AVX2 u8*s8 kernels can't saturate; it costs TensorRT one bit of weight precision.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIB_METHODS:
        raise UsageError(f"--calib-method {method}: use one of {', '.join(CALIB_METHODS)}")
    if profile not in INT8_PROFILES:
        raise UsageError(f"int8 profile '{profile}': use one of {', '.join(INT8_PROFILES)}")
    src, dst = Path(src), Path(dst)
    model = _load(src)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise UsageError(f"{src}: already quantised (Q/DQ); quantise the fp32 model instead")
    names, samples = _check_calibration(model, calib_feeds, where)
    auto_rr = reduce_range is None
    if reduce_range is None:
        reduce_range = not vnni_available()
    op_types = list(op_types) if op_types else None
    symmetric = profile == "trt"
    extra: dict[str, Any] = {
        "ActivationSymmetric": symmetric,
        "WeightSymmetric": True,
        "DedicatedQDQPair": True,
        # TensorRT rebuilds Conv+Relu fusions itself; keep activations explicit in the graph.
        "QDQKeepRemovableActivations": symmetric,
        "CalibMovingAverage": False,
    }
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    calib_method = {
        "minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="toolkit-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quantized = Path(tmp) / "int8.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        except Exception:  # symbolic shape inference fails on some graphs; plain ONNX is fine
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        try:
            quantize_static(
                str(pre), str(quantized), _feed_reader(calib_feeds, names),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                per_channel=per_channel, reduce_range=reduce_range,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude_nodes),
                calibrate_method=calib_method, extra_options=extra,
            )
        except UsageError:
            raise
        except Exception as err:
            raise ExportFailed(f"{src}: INT8 quantisation failed: {err}") from None
        qmodel = onnx.load(str(quantized))
    dedicated = _dedicate_qdq(qmodel)
    onnx.checker.check_model(qmodel)
    _save(qmodel, dst)
    counts = op_counts(qmodel)
    summary: dict[str, Any] = {
        "precision": "int8",
        "profile": profile,
        "trt_compatible": symmetric,
        "calib_method": method,
        "calib_batches": len(calib_feeds),
        "calib_samples": samples,
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "reduce_range_auto": auto_rr,
        "activation_type": "int8" if symmetric else "uint8",
        "activation_symmetric": symmetric,
        "qdq_pairs_dedicated": dedicated,
        "quantize_linear": counts.get("QuantizeLinear", 0),
        "dequantize_linear": counts.get("DequantizeLinear", 0),
        "ort_disabled_optimizers": list(ORT_QDQ_DISABLED_OPTIMIZERS) if symmetric else [],
        **_qdq_placement(qmodel, ("Conv", "MatMul", "Gemm")),
        "warnings": [],
    }
    if samples < min_samples:
        summary["warnings"].append(
            f"{where}: only {samples} calibration samples (fewer than {min_samples}); "
            "activation ranges may not represent real data; give more samples or raise "
            "--calib-batches"
        )
    return summary
