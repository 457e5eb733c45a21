"""INT8 in the ONNX graph: ONNX Runtime's static quantizer in QDQ format, calibrated on real
feeds; symmetric int8 (zero point 0) for TensorRT, or uint8 activations for the fastest CPU
graph. Graph inputs and outputs stay fp32."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.backends.onnx.precision.graph import _load, _save, op_counts
from toolkit.backends.onnx.runner import ORT_QDQ_DISABLED_OPTIMIZERS
from toolkit.errors import ExportFailed, UsageError

CALIB_METHODS = ("minmax", "entropy", "percentile")
INT8_PROFILES = ("trt", "cpu")
MIN_CALIB_SAMPLES = 100


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


def _detach_observed_activation_inputs(model: Any) -> bool:
    """ORT's quantizer gives a Relu/Clip's input the activation's own range (>= 0 for Relu)
    when the activation is its only reader, even if that input is also a model output:
    every negative value of the output would be clipped. Reading such an output through an
    Identity gives it a second reader, so it keeps its own range (ORT's graph optimizer
    removes the Identity when the file is loaded). True when the graph was changed."""
    import onnx

    outputs = {o.name for o in model.graph.output}
    changed = False
    for node in list(model.graph.node):
        if node.op_type in ("Relu", "Clip") and node.input and node.input[0] in outputs:
            name = node.input[0]
            inner = f"{name}__toolkit_pre_activation"
            for producer in model.graph.node:
                producer.output[:] = [inner if o == name else o for o in producer.output]
                if producer is not node:
                    producer.input[:] = [inner if i == name else i for i in producer.input]
            node.input[0] = inner
            model.graph.node.append(onnx.helper.make_node("Identity", [inner], [name],
                                                          name=f"{name}__toolkit_output"))
            changed = True
    if changed:  # the Identity was appended last: restore a topological order
        _toposort(model)
    return changed


def _toposort(model: Any) -> None:
    graph = model.graph
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:  # a cycle or a missing tensor: leave the rest as they were
            ordered += pending
            break
        for node in ready:
            ordered.append(node)
            known.update(node.output)
            pending.remove(node)
    del graph.node[:]
    graph.node.extend(ordered)


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


#: ops whose outputs select data (kept boxes, their indices): what follows them is
#: post-processing
_SELECTION_OPS = frozenset({"NonMaxSuppression", "TopK", "NonZero"})


def after_selection(model: Any) -> list[Any]:
    """The nodes computed from a selection op's output (NMS, TopK, NonZero), in the order the
    walk reaches them."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    frontier = [out for n in model.graph.node if n.op_type in _SELECTION_OPS for out in n.output]
    seen: set[int] = set()
    found = []
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if id(node) in seen:
                continue
            seen.add(id(node))
            found.append(node)
            frontier.extend(node.output)
    return found


def post_processing_nodes(model: Any) -> list[str]:
    """Named nodes computed from a selection op's output (NMS, TopK, NonZero): mask assembly,
    keypoint gathering, a rotated NMS's IoU. They stay fp32, like detection's
    post-processing: 8-bit mask coefficients or prototypes would move every mask edge."""
    return [node.name for node in after_selection(model) if node.name]


@contextlib.contextmanager
def _working_directory(path: str | Path) -> Iterator[None]:
    """The process's working directory set to `path` for the block (ORT's quantisation tools
    write scratch files into it); the CLI runs one export at a time."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ORT's quantiser logs on the root logger (one 'Axis 1 is out-of-range' line per 1-D
    weight it can't quantise per channel, e.g. each LayerNorm's): not the summary's business."""
    import logging

    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(before)


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
    # absolute: ORT runs from a temp folder (below), where a relative path means nothing
    src, dst = Path(src).absolute(), Path(dst).absolute()
    model = _load(src)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise UsageError(f"{src}: already quantised (Q/DQ); quantise the fp32 model instead")
    names, samples = _check_calibration(model, calib_feeds, where)
    auto_rr = reduce_range is None
    if reduce_range is None:
        reduce_range = not vnni_available()
    op_types = list(op_types) if op_types else None
    exclude_nodes = list(exclude_nodes)
    after_selection = post_processing_nodes(model)
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

    from toolkit.transaction import TEMP_PREFIX

    # beside the destination (the bundle), named as a temp file: what a kill -9 leaves here is
    # removed by the next command, and the calibration copies don't fill another disk
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}int8-", dir=Path(dst).parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quantized = Path(tmp) / "int8.onnx"
        source = src
        if _detach_observed_activation_inputs(model):
            source = Path(tmp) / "detached.onnx"
            onnx.save(model, str(source))
        # ORT's symbolic shape inference, when it can't finish, dumps sym_shape_infer_temp.onnx
        # and its external data into the working directory: ORT runs from the temp folder.
        with _working_directory(tmp), _quiet_root_logger():
            try:
                quant_pre_process(str(source), str(pre), skip_symbolic_shape=False)
            except Exception:  # symbolic shape inference fails on some graphs; plain ONNX is
                quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)  # fine
            try:
                quantize_static(
                    str(pre), str(quantized), _feed_reader(calib_feeds, names),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                    per_channel=per_channel, reduce_range=reduce_range,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=[*exclude_nodes, *after_selection],
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
        "kept_fp32": list(exclude_nodes),
        # post-processing (after NMS / TopK): never quantised, counted apart from the network
        "post_processing_fp32": len(after_selection),
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
