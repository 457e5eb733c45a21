"""Where fp16 would overflow, measured: the fp32 ONNX run on real inputs with every float
intermediate exposed, and the nodes that must compute or read a tensor whose magnitude leaves
fp16's range. A fixed list of sensitive op types (fp16.DEFAULT_SENSITIVE) covers reductions
and exponentials; this covers the rest: a Gemm or Conv whose activations are simply large."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FP16_MAX = 65504.0
# Kept when over half of fp16's largest value: the fp16 graph computes its inputs with fp16
# rounding, and data the scan did not see can run larger than data it did.
HEADROOM = 2.0


@dataclass(frozen=True)
class LargeTensor:
    """One tensor over the limit: its largest magnitude and the node that makes it."""

    tensor: str
    max_abs: float
    producer: str  # a node name, or "" for a graph input
    op: str


@dataclass
class RangeScan:
    """What the scan found: the tensors over `limit`, and the nodes kept in fp32 for them (each
    tensor's producer and every node that reads it)."""

    limit: float
    samples: int
    large: list[LargeTensor] = field(default_factory=list)
    keep_nodes: list[str] = field(default_factory=list)
    unnamed: int = 0  # nodes that should stay fp32 but have no name to say so by

    def note(self) -> str | None:
        if not self.large:
            return None
        worst = sorted(self.large, key=lambda t: -t.max_abs)[:3]
        named = ", ".join(f"{t.op or 'input'} {t.producer or t.tensor} (max |x| {t.max_abs:.3g})"
                          for t in worst)
        more = f" and {len(self.large) - len(worst)} more" if len(self.large) > len(worst) else ""
        text = (f"kept {len(self.keep_nodes)} node(s) in fp32 where the fp32 model's values "
                f"on {self.samples} sample(s) leave fp16's range (over {self.limit:.0f}): "
                f"{named}{more}")
        if self.unnamed:
            text += f"; {self.unnamed} unnamed node(s) could not be kept"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "samples": self.samples, "keep_nodes": self.keep_nodes,
                "unnamed": self.unnamed,
                "large": [{"tensor": t.tensor, "max_abs": t.max_abs, "producer": t.producer,
                           "op": t.op} for t in self.large]}


def scan_ranges(path: str | Path, feeds: Iterable[Mapping[str, np.ndarray]],
                limit: float = FP16_MAX / HEADROOM) -> RangeScan:
    """Run the fp32 model at `path` on `feeds` with every float tensor of the main graph as an
    output; the tensors whose largest finite magnitude exceeds `limit` and the nodes to keep."""
    import onnx

    from toolkit.backends.onnx.precision.graph import exposing_session

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*graph.value_info, *graph.input, *graph.output]}
    producers = {out: node for node in graph.node for out in node.output}
    floats = [name for name, elem in types.items()
              if elem == onnx.TensorProto.FLOAT and name in producers]
    # no graph optimisation: fused nodes would hide the tensors asked for
    session = exposing_session(model, floats, optimize=False)
    names = [o.name for o in session.get_outputs()]
    wanted = [i.name for i in session.get_inputs()]
    peaks: dict[str, float] = {}
    samples = 0
    for feed in feeds:
        feed = {k: np.asarray(v) for k, v in feed.items() if k in wanted}
        samples += 1
        for name, value in [*zip(names, session.run(None, feed), strict=True), *feed.items()]:
            value = np.asarray(value)
            if value.dtype != np.float32 or value.size == 0:
                continue
            finite = np.abs(value[np.isfinite(value)])
            if finite.size:
                peaks[name] = max(peaks.get(name, 0.0), float(finite.max()))
    scan = RangeScan(limit=limit, samples=samples)
    keep: dict[str, None] = {}
    for name, peak in sorted(peaks.items()):
        if peak <= limit:
            continue
        node = producers.get(name)
        scan.large.append(LargeTensor(name, peak, node.name if node is not None else "",
                                      node.op_type if node is not None else ""))
        for touched in [node, *(n for n in graph.node if name in n.input)]:
            if touched is None:
                continue
            if touched.name:
                keep[touched.name] = None
            else:
                scan.unnamed += 1
    scan.keep_nodes = list(keep)
    return scan
