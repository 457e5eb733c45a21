"""Per-layer precision of an artifact: each compute layer (convolution, matrix product), the
precision it computes in and its multiply-accumulates, read from the file without torch.
The records and the arithmetic here; each format reads its own files in its `layers` hook."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LayerPrecision:
    name: str
    op: str
    precision: str  # int8, fp16, bf16, fp32
    macs: int | None  # per sample at the opt shapes; None where a shape is unknown


@dataclass(frozen=True)
class LayerReport:
    layers: list[LayerPrecision]
    source: str  # how the precisions were found
    warnings: tuple[str, ...] = ()

    def mac_shares(self) -> dict[str, float]:
        """Share of the known MACs at each precision."""
        total = sum(layer.macs or 0 for layer in self.layers)
        shares: dict[str, float] = {}
        for layer in self.layers:
            shares[layer.precision] = shares.get(layer.precision, 0.0) + (layer.macs or 0)
        return {k: (v / total if total else 0.0) for k, v in sorted(shares.items())}

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.precision] = counts.get(layer.precision, 0) + 1
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "layer_counts": self.counts(),
                "mac_share": {k: round(v, 5) for k, v in self.mac_shares().items()},
                "layers": [asdict(layer) for layer in self.layers],
                "warnings": list(self.warnings)}


def conv_macs(out_per_sample: int, weight: Sequence[int], transposed: bool = False) -> int:
    """A convolution's MACs per sample: every output element sums over its input channels
    (of the group) and the kernel; a transposed one spreads each input over its outputs."""
    if transposed:  # weight [Cin, Cout/g, k...]: an upper bound once the stride is over 1
        return int(out_per_sample) * product(weight[2:]) * int(weight[0])
    return int(out_per_sample) * product(weight[1:])


def product(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out
