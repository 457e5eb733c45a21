"""fp16 that misses its gate: the measured search INT8 uses (precision.fallback.search), over
blocks instead of layers. A block is a layer (Conv, MatMul, Gemm) and the ops after it up to
the next layer: a value rounded to fp16 between two ops of a block (x + 1000 - 1000 loses x's
low bits) is only saved by keeping both in fp32, which single-op steps never find. Keeping a
block in fp32 is converting again with its nodes kept (beside what the range scan kept)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.backends.onnx.precision.fallback import (
    QUANTISED_OPS,
    FallbackResult,
    layer_macs,
    search,
)

BLOCK_LIMIT = 32  # ops a block takes after its layer, at most


def blocks(model: Any) -> dict[str, list[str]]:
    """Each named layer -> its nodes: itself and what follows it up to the next layer."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    claimed: set[str] = set()
    found: dict[str, list[str]] = {}
    for layer in model.graph.node:
        if layer.op_type not in QUANTISED_OPS or not layer.name:
            continue
        members, frontier = [layer.name], list(layer.output)
        while frontier and len(members) <= BLOCK_LIMIT:
            for node in consumers.get(frontier.pop(), []):
                if node.op_type in QUANTISED_OPS or not node.name or node.name in claimed \
                        or node.name in members:
                    continue
                members.append(node.name)
                frontier.extend(node.output)
        claimed.update(members[1:])
        found[layer.name] = members
    return found


def find_fp16_fallback(source: Path, dtype: str, scan_nodes: Sequence[str],
                       feeds: Sequence[Mapping[str, np.ndarray]],
                       passes: Callable[[Any], tuple[bool, float | None]], workdir: Path, *,
                       max_share: float, max_layers: int, time_limit: float
                       ) -> tuple[FallbackResult, Any]:
    import onnx

    from toolkit.backends.onnx.precision.fp16 import convert_float16

    fp32 = onnx.load(str(source))
    units = blocks(fp32)
    ops = {n.name: n.op_type for n in fp32.graph.node if n.name in units}
    macs = layer_macs(fp32, {k: np.asarray(v)[:1] for k, v in feeds[0].items()}, list(units))
    trial = workdir / "fp16_trial.onnx"

    def build(kept: Sequence[str], wide: bool) -> Any:
        nodes = [*scan_nodes, *(n for unit in kept for n in units[unit])]
        convert_float16(source, trial, dtype=dtype, keep_fp32_nodes=nodes)
        return onnx.load(str(trial))

    result, best = search(build, fp32, feeds, ops, macs, passes, max_share=max_share,
                          max_layers=max_layers, time_limit=time_limit)
    result.kept_nodes = [n for unit in result.kept for n in units[unit]]
    return result, best
