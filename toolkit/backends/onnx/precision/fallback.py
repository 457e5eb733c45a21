"""Accuracy-controlled INT8: when a Q/DQ model misses its accuracy gate, the layers that cost
the most are measured and the fewest of them read float again until the gate holds.

Measured, not guessed: each quantised layer in turn is reverted to float in the full INT8
graph (its inputs rewired to the fp32 tensors and weights, no recalibration), and what that
recovers of the network's output error against fp32 on calibration feeds is its sensitivity.
For a detector the network's outputs are what feeds the selection (NMS, TopK): the boxes and
scores before it, not the kept rows, which move by whole detections. Then the top-ranked
layers, up to a budget (a share of the model's MACs and a count), are kept in float one at a
time, the ranking measured again after each pick, until the task metric passes the gate."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

QUANTISED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclass(frozen=True)
class LayerCost:
    """One quantised layer: what reverting it alone recovers, and its share of the MACs."""

    node: str
    op: str
    recovered: float  # output error of full INT8 minus that with this layer in float
    macs: int
    mac_share: float


@dataclass
class FallbackResult:
    ranking: list[LayerCost]
    budget_share: float
    budget_count: int
    tried: list[dict[str, Any]] = field(default_factory=list)  # one per greedy round
    kept: list[str] = field(default_factory=list)
    passed: bool = False
    seconds: float = 0.0
    full_int8_error: float = 0.0
    wide: bool = False  # the kept layers read their inputs back to the previous layers' outputs
    beyond_budget: list[LayerCost] = field(default_factory=list)  # what the budget kept out
    timed_out: bool = False  # stopped at the time limit, not at the end of the search
    kept_nodes: list[str] = field(default_factory=list)  # every node of the units kept (fp16)

    @property
    def kept_share(self) -> float:
        shares = {c.node: c.mac_share for c in self.ranking}
        return float(sum(shares.get(n, 0.0) for n in self.kept))

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "kept_fp32": self.kept,
                "kept_mac_share": round(self.kept_share, 5),
                "budget_mac_share": self.budget_share, "budget_layers": self.budget_count,
                "tried": self.tried, "seconds": round(self.seconds, 1),
                "timed_out": self.timed_out,
                **({"kept_nodes": self.kept_nodes} if self.kept_nodes else {}),
                "float_inputs": ("back to the previous layers' outputs" if self.wide else
                                 "as the int8 graph has them before the layer's own "
                                 "quantisation"),
                "full_int8_output_error": self.full_int8_error,
                "ranking": [{"node": c.node, "op": c.op, "recovered": c.recovered,
                             "mac_share": round(c.mac_share, 5)} for c in self.ranking[:20]],
                "beyond_budget": [{"node": c.node, "recovered": c.recovered,
                                   "mac_share": round(c.mac_share, 5)}
                                  for c in self.beyond_budget]}


def judged_tensors(model: Any) -> list[str]:
    """The float tensors a layer's error is measured on: the inputs of every selection op
    (a detector's boxes and scores before NMS) and every graph output not computed from one."""
    from toolkit.backends.onnx.precision.int8 import after_selection

    producers = {out: node for node in model.graph.node for out in node.output}
    after = {out for node in after_selection(model) for out in node.output}
    judged = [i for n in model.graph.node if n.op_type == "NonMaxSuppression"
              for i in n.input[:2]]
    judged += [o.name for o in model.graph.output if o.name not in after]
    return [t for t in dict.fromkeys(judged) if t in producers]


def revert_to_float(qmodel: Any, fp32: Any, nodes: Sequence[str], wide: bool = False) -> Any:
    """A copy of the Q/DQ model in which `nodes` read the fp32 model's own inputs: activations
    before their QuantizeLinear, weights and biases as the float initializers (added back)."""
    from toolkit.backends.onnx.precision.int8 import _toposort

    model = copy.deepcopy(qmodel)
    originals = {n.name: n for n in fp32.graph.node if n.name}
    source = _Source(model, fp32, wide)
    wanted = set(nodes)
    for node in list(model.graph.node):
        if node.name not in wanted or node.name not in originals:
            continue
        inputs = [source.tensor(name) for name in originals[node.name].input]
        if all(name is not None for name in inputs):
            node.input[:] = inputs
            _float_output(model, node, source, wanted)
    _drop_dead(model)
    _toposort(model)
    return model


def _float_output(model: Any, node: Any, source: _Source, reverted: set[str]) -> None:
    """A layer kept in float keeps its output in float too: the Q/DQ pair the quantiser put
    on its output (for a fused int8 kernel) is bypassed, unless an int8 layer reads through
    it (that layer's own input quantisation). A YOLO DFL's box sides, quantised to 8 bits
    after its conv, lose the precision the float conv kept."""
    consumers: dict[str, list[Any]] = {}
    for other in model.graph.node:
        for name in other.input:
            consumers.setdefault(name, []).append(other)
    outputs = {o.name for o in model.graph.output}
    for quant in [q for out in node.output for q in consumers.get(out, [])
                  if q.op_type == "QuantizeLinear"]:
        for dequant in [d for d in consumers.get(quant.output[0], [])
                        if d.op_type == "DequantizeLinear"]:
            readers = consumers.get(dequant.output[0], [])
            if any(r.op_type in QUANTISED_OPS and r.name not in reverted for r in readers):
                continue
            if not readers and dequant.output[0] not in outputs:
                continue
            # the fp32 tensor of that name (recomputing an activation the quantiser folded
            # into the Q), else the node's own output (renamed for a graph output's Q)
            float_tensor = source.tensor(quant.input[0]) or quant.input[0]
            if float_tensor is None:
                continue
            dequant.op_type = "Identity"
            dequant.input[:] = [float_tensor]
            del dequant.attribute[:]
            dequant.domain = ""


class _Source:
    """fp32 tensors made available in the Q/DQ graph. A tensor is the same when the same node
    makes it, under whatever name (the quantiser folds a Relu into its Q by handing the
    Relu's output name to the op before it, whose values are the pre-activation ones); a
    tensor no shared node makes (that Relu's) is recomputed by the fp32 graph's own nodes,
    under a new name, from what the Q/DQ graph has."""

    def __init__(self, model: Any, fp32: Any, wide: bool = False) -> None:
        self.model = model
        self.initializers = {i.name: i for i in fp32.graph.initializer}
        self.fp32_producers = {out: n for n in fp32.graph.node for out in n.output}
        self.producers = {out: n for n in model.graph.node for out in n.output}
        self.inputs = {i.name for i in model.graph.input} | {""}
        self.present = {i.name for i in model.graph.initializer}
        self.names = {n.name for n in model.graph.node}
        self.made: dict[str, str | None] = {}
        # a node both graphs share makes the same values, whatever the quantiser renamed
        # its outputs to (a folded Relu's name, a graph output's Q input). Wide: an op that
        # is not a layer (a Relu, a pool, a reshape) reading dequantised inputs carries their
        # rounding (the previous layer's output quantisation), and is recomputed from float
        # inputs instead
        here = {n.name: n for n in model.graph.node if n.name}
        self.aliases = {}
        for node in fp32.graph.node:
            twin = here.get(node.name) if node.name else None
            if twin is None or twin.op_type != node.op_type or \
                    len(twin.output) != len(node.output):
                continue
            if wide and twin.op_type not in QUANTISED_OPS and any(
                    (p := self.producers.get(i)) is not None and p.op_type == "DequantizeLinear"
                    for i in twin.input):
                continue
            self.aliases.update(zip(node.output, twin.output, strict=True))

    def tensor(self, name: str, depth: int = 0) -> str | None:
        if name in self.inputs:
            return name
        if name in self.initializers:
            # the quantiser may name a DequantizeLinear's output after the float weight
            kept = name if name not in self.producers else f"{name}__float"
            if kept not in self.present:
                weight = copy.deepcopy(self.initializers[name])
                weight.name = kept
                self.model.graph.initializer.append(weight)
                self.present.add(kept)
            return kept
        if name in self.aliases:
            return self.aliases[name]
        node = self.fp32_producers.get(name)
        if node is None:
            return None
        if name not in self.made:
            self.made[name] = self._recompute(node, name, depth)
        return self.made[name]

    def _recompute(self, node: Any, name: str, depth: int) -> str | None:
        if depth > 8 or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            return None
        inputs = [self.tensor(i, depth + 1) for i in node.input]
        if any(i is None for i in inputs):
            return None
        copied = copy.deepcopy(node)
        copied.input[:] = inputs
        copied.output[:] = [f"{out}__float" for out in node.output]
        copied.name = f"{node.name or node.op_type}__float"
        while copied.name in self.names:
            copied.name += "_"
        self.names.add(copied.name)
        self.model.graph.node.append(copied)
        return f"{name}__float"


def _drop_dead(model: Any) -> None:
    """Remove nodes nothing reads (the bypassed Q/DQ pairs) and initializers nothing uses."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def _session(model: Any, outputs: Sequence[str]) -> Any:
    from toolkit.backends.onnx.precision.graph import exposing_session
    from toolkit.backends.onnx.runner import ORT_QDQ_DISABLED_OPTIMIZERS

    return exposing_session(model, outputs, disabled_optimizers=ORT_QDQ_DISABLED_OPTIMIZERS)


def _error(session: Any, feeds: Sequence[Mapping[str, np.ndarray]], names: Sequence[str],
           reference: list[list[np.ndarray]]) -> float:
    """Mean relative L2 error of the judged tensors against fp32's, over feeds and tensors."""
    errors = []
    for feed, want in zip(feeds, reference, strict=True):
        got = session.run(list(names), dict(feed))
        for g, w in zip(got, want, strict=True):
            g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
            if g.shape != w.shape:
                errors.append(1.0)
                continue
            errors.append(float(np.linalg.norm(g - w) / (np.linalg.norm(w) + 1e-12)))
    return float(np.mean(errors)) if errors else 0.0


def layer_macs(fp32: Any, feed: Mapping[str, np.ndarray], nodes: Sequence[str]) -> dict[str, int]:
    """Multiply-accumulates of each named Conv/MatMul/Gemm on one sample of `feed`, from the
    shapes of its output and weight (observed, not inferred)."""
    from onnx import numpy_helper

    from toolkit.source.layers import conv_macs

    by_name = {n.name: n for n in fp32.graph.node}
    weights = {i.name: numpy_helper.to_array(i).shape for i in fp32.graph.initializer}
    chosen = [by_name[n] for n in nodes if n in by_name]
    tensors = list(dict.fromkeys(t for node in chosen for t in (node.output[0], node.input[0])))
    session = _session(fp32, tensors)
    values = dict(zip(tensors, session.run(tensors, dict(feed)), strict=True))
    batch = max(int(np.asarray(next(iter(feed.values()))).shape[0]), 1)
    macs = {}
    for node in chosen:
        out = np.asarray(values[node.output[0]]).size // batch
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] in weights:
            macs[node.name] = conv_macs(out, weights[node.input[1]],
                                        node.op_type == "ConvTranspose")
        else:  # MatMul / Gemm: each output element sums over the inner dimension
            inner = np.asarray(values[node.input[0]]).shape[-1]
            macs[node.name] = out * int(inner)
    return macs


def _quantised_layers(qmodel: Any) -> list[Any]:
    producers = {out: n for n in qmodel.graph.node for out in n.output}
    return [n for n in qmodel.graph.node if n.op_type in QUANTISED_OPS and n.name
            and any((p := producers.get(i)) is not None and p.op_type == "DequantizeLinear"
                    for i in n.input[:2])]


Build = Callable[[Sequence[str], bool], Any]  # (units kept in float, wide) -> candidate


class _Judge:
    """The output error of a candidate (some units kept in float) against fp32."""

    def __init__(self, build: Build, fp32: Any, feeds: Sequence[Mapping[str, np.ndarray]]):
        self.build, self.feeds = build, feeds
        self.names = judged_tensors(fp32)
        reference_session = _session(fp32, self.names)
        self.reference = [reference_session.run(self.names, dict(f)) for f in feeds]
        self.wide = False

    def candidate(self, kept: Sequence[str]) -> Any:
        return self.build(list(kept), self.wide)

    def error(self, kept: Sequence[str]) -> float:
        return _error(_session(self.candidate(kept), self.names), self.feeds, self.names,
                      self.reference)


def find_fallback(qmodel: Any, fp32: Any, feeds: Sequence[Mapping[str, np.ndarray]],
                  passes: Callable[[Any], tuple[bool, float]], *, max_share: float = 0.05,
                  max_layers: int = 16, time_limit: float = 600.0) -> tuple[FallbackResult, Any]:
    """The fewest layers kept in float for which `passes(model)` holds (it runs the gate on a
    candidate and returns its verdict and score), within `max_share` of the MACs and
    `max_layers`. Greedy and re-measured: each round reverts, one at a time, every layer that
    still fits the budget on top of those already kept, keeps the one that recovers the most
    output error, and runs the gate; layers interact (an outlier's reader only helps once the
    writer is float too), so the ranking is measured again after each pick. The first round's
    ranking is the layers' own sensitivity, reported.

    A layer in float first reads its inputs as the int8 graph has them before its own input
    quantisation (the previous layers keep their int8 outputs: their fused kernels stay).
    When that search fails, it runs again with the inputs read wide: back through ops that
    are not layers to the previous layers' raw outputs (their output quantisation dropped
    on that path: an outlier written by the layer before, kept by TensorRT's layout in the
    Q/DQ after its Relu)."""
    ops = {n.name: n.op_type for n in _quantised_layers(qmodel)}
    macs = layer_macs(fp32, {k: np.asarray(v)[:1] for k, v in feeds[0].items()}, list(ops))

    def build(kept: Sequence[str], wide: bool) -> Any:
        return revert_to_float(qmodel, fp32, kept, wide) if kept else qmodel

    return search(build, fp32, feeds, ops, macs, passes, max_share=max_share,
                  max_layers=max_layers, time_limit=time_limit, passes_wide=(False, True))


def search(build: Build, fp32: Any, feeds: Sequence[Mapping[str, np.ndarray]],
           ops: Mapping[str, str], macs: Mapping[str, int],
           passes: Callable[[Any], tuple[bool, float]], *, max_share: float, max_layers: int,
           time_limit: float, passes_wide: Sequence[bool] = (False,)
           ) -> tuple[FallbackResult, Any]:
    """The greedy search over units (`ops`: name -> op type, `macs`: their MACs), whatever
    keeping a unit in float means to `build`."""
    started = time.monotonic()
    judge = _Judge(build, fp32, feeds)
    total = sum(macs.values()) or 1
    share = {name: macs.get(name, 0) / total for name in ops}
    full = judge.error([])
    result = FallbackResult([], max_share, max_layers, full_int8_error=full)
    result.ranking = sorted((LayerCost(n, ops[n], full - judge.error([n]), macs.get(n, 0),
                                       share[n]) for n in ops), key=lambda c: -c.recovered)
    best = None
    for wide in passes_wide:
        judge.wide = wide
        kept, candidate = _greedy(judge, share, full, result, passes, started, time_limit)
        if candidate is not None:
            result.kept, best = kept, candidate
        if result.passed:
            result.wide = wide
            break
    if not result.passed and time.monotonic() - started < time_limit:
        # what the budget kept out: the units that would recover the most on top of the
        # kept ones, for the refusal to name with their share of the MACs
        judge.wide = False
        base = judge.error(result.kept) if result.kept else full
        outside = {n: base - judge.error([*result.kept, n]) for n in share
                   if n not in result.kept and share[n] > max_share}
        result.beyond_budget = sorted(
            (LayerCost(n, ops[n], gain, macs.get(n, 0), share[n])
             for n, gain in outside.items() if gain > 0), key=lambda c: -c.recovered)[:3]
    result.seconds = time.monotonic() - started
    result.timed_out = not result.passed and result.seconds >= time_limit
    return result, best


def _greedy(judge: _Judge, share: Mapping[str, float], full: float, result: FallbackResult,
            passes: Callable[[Any], tuple[bool, float]], started: float,
            time_limit: float) -> tuple[list[str], Any]:
    kept: list[str] = []
    current, candidate = full, None
    while len(kept) < result.budget_count and time.monotonic() - started < time_limit:
        used = sum(share[n] for n in kept)
        trials = {name: judge.error([*kept, name]) for name in share
                  if name not in kept and used + share[name] <= result.budget_share + 1e-12}
        if not trials:
            break
        pick = min(trials, key=lambda n: trials[n])
        if trials[pick] >= current:  # nothing left that helps
            break
        kept.append(pick)
        current = trials[pick]
        candidate = judge.candidate(kept)
        ok, score = passes(candidate)
        result.tried.append({"kept": len(kept), "added": pick, "output_error": current,
                             "score": score, "passed": ok, "wide": judge.wide})
        if ok:
            result.passed = True
            break
    return kept, candidate
