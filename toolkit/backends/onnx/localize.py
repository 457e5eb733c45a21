"""Where does an ONNX graph stop computing what the model computes?

`localize_onnx` walks the graph in topological order and names the FIRST node whose output
diverges from a reference, with the PyTorch module it came from. Two kinds of reference:

- eager PyTorch (an nn.Module): forward hooks capture module outputs keyed by module path;
  the dynamo exporter records each node's module scope in `metadata_props`
  (`pkg.torch.onnx.name_scopes`, `pkg.torch.onnx.class_hierarchy`, or the older `namespace`),
  so a module's output is the value produced by the last node of that scope (the k-th
  contiguous run of the scope for a module called k times, e.g. a shared ReLU);
- another ONNX of the same graph (fp32 vs fp16, before vs after a rewrite): tensors match by
  value name, node by node.

Memory stays bounded on large graphs: intermediate tensors are exposed as graph outputs a
group at a time (and, for the eager side, hooks capture only that group), compared, then
dropped; the walk stops at the first group holding a divergent tensor.

Note that exporter rewrites move scopes: with Conv+BatchNorm fused, the Conv node carries the
BatchNorm's scope (`layer2.0.bn1`) while its weight keeps the conv's name
(`layer2.0.conv1.weight`); a Divergence therefore lists both the scope and the parameters.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolkit.errors import UsageError
from toolkit.parity.compare import value_failures
from toolkit.parity.metrics import ErrorMetrics, error_metrics
from toolkit.parity.tolerances import Tolerance, tolerance_for

DEFAULT_GROUP_SIZE = 32


@dataclass
class Divergence:
    """The first tensor, in topological order, that differs from the reference."""

    node: str
    op_type: str
    module_path: str | None          # "" is the top-level module; None when unknown
    module_class: str | None
    tensor: str
    metrics: ErrorMetrics
    reasons: list[str]
    reference: str                   # "eager" or "onnx"
    node_index: int
    parameters: list[str] = field(default_factory=list)   # initializers the node reads
    rewrite: str | None = None       # exporter rewrite that produced the node, if recorded
    last_match: str | None = None    # the last tensor that still matched ("name (module)")
    suspects: list[str] = field(default_factory=list)     # nodes between last match and here
    compared: int = 0                # tensors compared up to and including this one

    @property
    def parameter_modules(self) -> list[str]:
        """Modules owning the parameters the node reads ('layer2.0.conv1.weight' ->
        'layer2.0.conv1'): the conv a fused Conv+BatchNorm node came from."""
        found = [p.rsplit(".", 1)[0] for p in self.parameters if "." in p]
        return list(dict.fromkeys(found))

    def where(self) -> str:
        module = (self.module_path or "(top level)") if self.module_path is not None else "?"
        text = f"node '{self.node}' ({self.op_type}), module {module}"
        if self.module_class:
            text += f" [{self.module_class}]"
        others = [m for m in self.parameter_modules if m != self.module_path]
        if others:
            text += f" fused with {', '.join(others)}"
        return text

    def describe(self) -> str:
        m = self.metrics
        text = (f"first divergence at {self.where()}, tensor '{self.tensor}': "
                f"max abs {m.max_abs:.3g}, cosine {m.cosine:.6f}, "
                f"{m.violations}/{m.numel} elements out of tolerance")
        if self.parameters:
            text += f"; reads {', '.join(self.parameters)}"
        if self.rewrite:
            text += f"; rewritten by {self.rewrite}"
        text += f"; last match: {self.last_match}" if self.last_match else "; no earlier match"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node, "op_type": self.op_type, "module_path": self.module_path,
            "module_class": self.module_class, "tensor": self.tensor,
            "metrics": self.metrics.to_dict(), "reasons": list(self.reasons),
            "reference": self.reference, "node_index": self.node_index,
            "parameters": list(self.parameters), "rewrite": self.rewrite,
            "last_match": self.last_match, "suspects": list(self.suspects),
            "compared": self.compared, "parameter_modules": self.parameter_modules,
            "summary": self.describe(),
        }


# -- graph metadata ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeScope:
    """A node's module scopes, outermost first: [(path, class), ...], root path ''."""

    modules: tuple[tuple[str, str | None], ...]

    @property
    def innermost(self) -> tuple[str | None, str | None]:
        return self.modules[-1] if self.modules else (None, None)

    def paths(self) -> list[str]:
        return [path for path, _ in self.modules]


def _literal_list(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def node_scope(node: Any) -> NodeScope:
    """Module scopes the dynamo exporter recorded for an ONNX node (empty when none)."""
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = _literal_list(meta.get("pkg.torch.onnx.name_scopes"))
    classes = _literal_list(meta.get("pkg.torch.onnx.class_hierarchy"))
    if scopes:
        # The last entry names the op itself (an fx node), not a module.
        classes = classes if len(classes) == len(scopes) else [None] * len(scopes)
        return NodeScope(tuple(zip(scopes[:-1], classes[:-1], strict=True)))
    namespace = meta.get("namespace")  # ": pkg.M/stem: torch...Conv2d/conv2d: aten.conv2d"
    if namespace:
        parts = [p.split(": ", 1) for p in namespace.split("/")]
        pairs = [(p[0].strip(), p[1].strip() if len(p) > 1 else None) for p in parts]
        return NodeScope(tuple(pairs[:-1]))
    return NodeScope(())


def _initializer_names(graph: Any) -> set[str]:
    return {init.name for init in graph.initializer}


def _graph_inputs(graph: Any) -> list[str]:
    inits = _initializer_names(graph)
    return [i.name for i in graph.input if i.name not in inits]


def _load(model: Any) -> Any:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise UsageError(f"{path}: ONNX file not found")
    try:
        return onnx.load(path)
    except Exception as err:  # onnx raises several unrelated types for a bad file
        raise UsageError(f"{path}: not a readable ONNX model ({err})") from None


class _Exposer:
    """Runs an ONNX model with a chosen set of intermediate values exposed as outputs."""

    def __init__(self, model: Any, providers: Sequence[str] | None = None) -> None:
        self.model = model
        self.providers = list(providers or ["CPUExecutionProvider"])

    def run(self, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnx
        import onnxruntime as ort

        graph = self.model.graph
        kept = len(graph.output)
        existing = {o.name for o in graph.output}
        extra = [n for n in names if n not in existing]
        # ORT accepts name-only outputs; avoid a deep copy of a large model per group.
        graph.output.extend(onnx.ValueInfoProto(name=n) for n in extra)
        try:
            blob = self.model.SerializeToString()
        finally:
            del graph.output[kept:]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(blob, options, providers=self.providers)
        del blob
        wanted = list(dict.fromkeys(names))
        inputs = {i.name for i in session.get_inputs()}
        values = session.run(wanted, {k: v for k, v in feed.items() if k in inputs})
        return dict(zip(wanted, values, strict=True))


# -- candidates -------------------------------------------------------------------------------


@dataclass
class _Candidate:
    node_index: int
    node: Any
    tensor: str
    module_path: str | None = None
    module_class: str | None = None
    call: int = 0            # which call of the module (eager reference)


def _float_values(model: Any) -> set[str]:
    """Value names whose declared type is floating point (unknown types are kept)."""
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    known: dict[str, bool] = {}
    for vi in list(model.graph.value_info) + list(model.graph.output):
        if vi.type.HasField("tensor_type"):
            known[vi.name] = vi.type.tensor_type.elem_type in floats
    return {name for name, is_float in known.items() if is_float} | {
        o for n in model.graph.node for o in n.output if o and o not in known
    }


def _onnx_candidates(model: Any, reference: Any) -> list[_Candidate]:
    """Every node output present in both graphs by name, in the tested graph's order."""
    ref_values = {o for n in reference.graph.node for o in n.output if o}
    floats = _float_values(model)
    out: list[_Candidate] = []
    for i, node in enumerate(model.graph.node):
        if node.op_type in ("Constant", "Shape"):
            continue
        for name in node.output:
            if name and name in ref_values and name in floats:
                path, cls = node_scope(node).innermost
                out.append(_Candidate(i, node, name, path, cls))
    return out


def _scope_runs(nodes: Sequence[Any]) -> dict[str, list[int]]:
    """For each module path, the index of the last node of each contiguous run of its scope."""
    runs: dict[str, list[int]] = {}
    previous: set[str] = set()
    for i, node in enumerate(nodes):
        current = {p for p in node_scope(node).paths() if p}
        for path in current:
            if path in previous:
                runs[path][-1] = i
            else:
                runs.setdefault(path, []).append(i)
        previous = current
    return runs


def _scope_last(nodes: Sequence[Any]) -> dict[str, int]:
    last: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for path in node_scope(node).paths():
            if path:
                last[path] = i
    return last


def _eager_candidates(model: Any, calls: Mapping[str, int],
                      classes: Mapping[str, str]) -> list[_Candidate]:
    """Map module calls to the ONNX value of the last node of the matching scope run."""
    nodes = list(model.graph.node)
    runs, last = _scope_runs(nodes), _scope_last(nodes)
    chosen: dict[str, _Candidate] = {}
    for path, n_calls in calls.items():
        if path not in last or n_calls == 0:
            continue  # fused away, folded, or never called
        if n_calls == 1:
            ends = [last[path]]
        elif len(runs.get(path, [])) == n_calls:
            ends = runs[path]
        else:
            continue  # calls and scope runs don't line up: ambiguous, skip
        for call, index in enumerate(ends):
            node = nodes[index]
            if not node.output or not node.output[0]:
                continue
            cand = _Candidate(index, node, node.output[0], path, classes.get(path), call)
            held = chosen.get(cand.tensor)
            # One value can end several scopes (a block's last ReLU): keep the innermost.
            if held is None or path.count(".") > (held.module_path or "").count("."):
                chosen[cand.tensor] = cand
    return sorted(chosen.values(), key=lambda c: (c.node_index, c.tensor))


# -- eager capture ----------------------------------------------------------------------------


def _first_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, Mapping):
        for item in value.values():
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _eager_args(module: Any, feed: Mapping[str, np.ndarray], names: Sequence[str]) -> list[Any]:
    import torch

    missing = [n for n in names if n not in feed]
    if missing:
        raise UsageError(f"localize: feed lacks input(s) {', '.join(missing)}")
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    return [torch.from_numpy(np.ascontiguousarray(feed[n])).to(device) for n in names]


def _run_hooked(
    module: Any, args: Sequence[Any], wanted: Mapping[str, set[int]] | None
) -> tuple[dict[str, int], dict[tuple[str, int], np.ndarray]]:
    """Run the module once; count every submodule's calls and keep the `wanted` outputs."""
    import torch

    counts: dict[str, int] = {}
    kept: dict[tuple[str, int], np.ndarray] = {}
    handles = []

    def hook_for(path: str):
        def hook(_mod: Any, _inp: Any, output: Any) -> None:
            call = counts.get(path, 0)
            counts[path] = call + 1
            if wanted is not None and call in wanted.get(path, ()):
                tensor = _first_tensor(output)
                if tensor is not None:
                    kept[(path, call)] = tensor.detach().float().cpu().numpy().copy()
        return hook

    for path, sub in module.named_modules():
        if path and (wanted is None or path in wanted):
            handles.append(sub.register_forward_hook(hook_for(path)))
    try:
        with torch.no_grad():
            module(*args)
    finally:
        for handle in handles:
            handle.remove()
    return counts, kept


# -- the walk ---------------------------------------------------------------------------------


def _as_tolerance(tolerance: Tolerance | str | None) -> Tolerance:
    if isinstance(tolerance, Tolerance):
        return tolerance
    return tolerance_for(tolerance or "fp32").default


def _label(c: _Candidate) -> str:
    if c.module_path is None:
        return c.tensor
    return f"{c.tensor} ({c.module_path or 'top level'})"


def _walk(
    candidates: Sequence[_Candidate],
    fetch: Any,
    tol: Tolerance,
    group_size: int,
    reference_kind: str,
    model: Any,
) -> Divergence | None:
    """Compare candidates group by group; stop at the first diverging tensor."""
    inits = _initializer_names(model.graph)
    nodes = list(model.graph.node)
    last_ok: _Candidate | None = None
    compared = 0
    for start in range(0, len(candidates), max(1, group_size)):
        group = list(candidates[start:start + group_size])
        expected, actual = fetch(group)
        for cand in group:
            exp, act = expected.get(cand.tensor), actual.get(cand.tensor)
            if exp is None or act is None or np.shape(exp) != np.shape(act):
                continue  # not comparable (shape changed by a rewrite, or not captured)
            compared += 1
            metrics = error_metrics(np.asarray(exp), np.asarray(act), tol)
            reasons = value_failures(metrics, tol)
            if not reasons:
                last_ok = cand
                continue
            first = last_ok.node_index + 1 if last_ok else 0
            meta = {p.key: p.value for p in cand.node.metadata_props}
            return Divergence(
                node=cand.node.name or f"#{cand.node_index}", op_type=cand.node.op_type,
                module_path=cand.module_path, module_class=cand.module_class,
                tensor=cand.tensor, metrics=metrics, reasons=reasons,
                reference=reference_kind, node_index=cand.node_index,
                parameters=[i for i in cand.node.input if i in inits],
                rewrite=meta.get("pkg.onnxscript.rewriter.rule_name"),
                last_match=_label(last_ok) if last_ok else None,
                suspects=[n.name or f"#{first + k}"
                          for k, n in enumerate(nodes[first:cand.node_index + 1])],
                compared=compared,
            )
        del expected, actual
    return None


def localize_onnx(
    onnx_path: str | os.PathLike[str] | Any,
    feed: Mapping[str, np.ndarray],
    reference: Any,
    *,
    tolerance: Tolerance | str | None = None,
    group_size: int = DEFAULT_GROUP_SIZE,
    providers: Sequence[str] | None = None,
) -> Divergence | None:
    """Find the first node of `onnx_path` whose output diverges from `reference`.

    reference: an `nn.Module` in eval mode (called with the feed's arrays in the ONNX graph's
      input order), or another ONNX (path or ModelProto) of the same graph.
    tolerance: a Tolerance or a precision preset name (default fp32); intermediate tensors are
      judged with the same rule as outputs.
    group_size: how many intermediate tensors are exposed per run (memory vs. runs).
    Returns None when every comparable tensor matches.
    """
    tol = _as_tolerance(tolerance)
    model = _load(onnx_path)
    feed = {k: np.asarray(v) for k, v in feed.items()}
    if hasattr(reference, "named_modules") and callable(reference):
        return _localize_eager(model, feed, reference, tol, group_size, providers)
    ref_model = _load(reference)
    tested = _Exposer(model, providers)
    ref = _Exposer(ref_model, providers)
    cands = _onnx_candidates(model, ref_model)

    def fetch(group: list[_Candidate]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        names = [c.tensor for c in group]
        return ref.run(names, feed), tested.run(names, feed)

    return _walk(cands, fetch, tol, group_size, "onnx", model)


def _localize_eager(
    model: Any, feed: Mapping[str, np.ndarray], module: Any, tol: Tolerance,
    group_size: int, providers: Sequence[str] | None,
) -> Divergence | None:
    args = _eager_args(module, feed, _graph_inputs(model.graph))
    counts, _ = _run_hooked(module, args, None)
    classes = {path: f"{type(sub).__module__}.{type(sub).__qualname__}"
               for path, sub in module.named_modules() if path}
    cands = _eager_candidates(model, counts, classes)
    if not cands:
        raise UsageError(
            "localize: the ONNX graph records no PyTorch module scopes to match against; "
            "export it with torch.onnx.export(dynamo=True), or localize against another ONNX"
        )
    tested = _Exposer(model, providers)

    def fetch(group: list[_Candidate]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        wanted: dict[str, set[int]] = {}
        for c in group:
            wanted.setdefault(c.module_path or "", set()).add(c.call)
        _, kept = _run_hooked(module, args, wanted)
        expected = {c.tensor: kept[(c.module_path or "", c.call)]
                    for c in group if (c.module_path or "", c.call) in kept}
        return expected, tested.run([c.tensor for c in group], feed)

    return _walk(cands, fetch, tol, group_size, "eager", model)
