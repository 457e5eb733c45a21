"""The regression gate: compare new rows with a baseline, fail when slower than allowed."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.bench.measurement import KEY_FIELDS, OPTIONAL_KEY_FIELDS
from toolkit.bundle import label_of
from toolkit.errors import CheckFailed, UsageError


# -- regression gate -------------------------------------------------------------------------
def parse_threshold(text: str | float, option: str = "--fail-if-slower") -> float:
    """'5%' or '5' -> 5.0 (percent). Bare numbers are percent too: '0.05' means 0.05%."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*%?\s*", text)
        if not match:
            raise UsageError(f"{option}: expected a percentage like '5%', got {text!r}")
        value = float(match.group(1))
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{option}: expected a percentage >= 0, got {text!r}")
    return value


@dataclass(frozen=True)
class Comparison:
    """One configuration against its baseline. `status`: regressed · improved · same ·
    new (no baseline row) · missing (baseline row with no new result)."""

    labels: dict[str, Any]
    baseline_p50_ms: float | None
    new_p50_ms: float | None
    threshold_pct: float
    noisy: bool = False

    @property
    def ratio(self) -> float | None:
        """new / baseline p50; 2.0 means twice as slow."""
        if self.baseline_p50_ms is None or self.new_p50_ms is None or self.baseline_p50_ms <= 0:
            return None
        return self.new_p50_ms / self.baseline_p50_ms

    @property
    def change_pct(self) -> float | None:
        ratio = self.ratio
        return None if ratio is None else (ratio - 1.0) * 100.0

    @property
    def regressed(self) -> bool:
        change = self.change_pct
        return change is not None and change > self.threshold_pct

    @property
    def status(self) -> str:
        if self.baseline_p50_ms is None:
            return "new"
        if self.new_p50_ms is None:
            return "missing"
        change = self.change_pct
        if change is None:
            return "same"
        if change > self.threshold_pct:
            return "regressed"
        return "improved" if change < -self.threshold_pct else "same"

    @property
    def name(self) -> str:
        parts = [label_of(str(self.labels.get("format")), str(self.labels.get("precision")),
                          self.labels.get("layout"))]
        for key in OPTIONAL_KEY_FIELDS:
            if self.labels.get(key) is not None:
                parts.append(f"{key}={self.labels[key]}")
        parts.append(f"batch={self.labels.get('batch')}")
        return " ".join(parts)


def _same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if any(a.get(k) != b.get(k) for k in KEY_FIELDS):
        return False
    return all(
        a.get(k) is None or b.get(k) is None or a.get(k) == b.get(k) for k in OPTIONAL_KEY_FIELDS
    )


def _labels(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in (*KEY_FIELDS, *OPTIONAL_KEY_FIELDS) if row.get(k) is not None}


def compare(
    rows: Sequence[Mapping[str, Any]],
    baseline_rows: Sequence[Mapping[str, Any]],
    threshold_pct: float,
) -> list[Comparison]:
    """Match each new row to a baseline row of the same configuration and compare p50s.

    Rows without a baseline come back as status 'new', baseline rows nobody matched as
    'missing' (neither fails the gate). A row is regressed when its p50 is more than
    `threshold_pct` percent slower than the baseline's.
    """
    unused = list(range(len(baseline_rows)))
    out: list[Comparison] = []
    for row in rows:
        match = next((i for i in unused if _same_config(row, baseline_rows[i])), None)
        base = None if match is None else baseline_rows[match]
        if match is not None:
            unused.remove(match)
        out.append(
            Comparison(
                labels=_labels(row),
                baseline_p50_ms=None if base is None else float(base["p50_ms"]),
                new_p50_ms=float(row["p50_ms"]),
                threshold_pct=threshold_pct,
                noisy=bool(row.get("noisy")) or bool(base and base.get("noisy")),
            )
        )
    for i in unused:
        base = baseline_rows[i]
        out.append(
            Comparison(
                labels=_labels(base),
                baseline_p50_ms=float(base["p50_ms"]),
                new_p50_ms=None,
                threshold_pct=threshold_pct,
            )
        )
    return out


def check_regressions(comparisons: Sequence[Comparison]) -> None:
    """Raise CheckFailed (exit 1) naming every regressed configuration."""
    bad = [c for c in comparisons if c.regressed]
    if bad:
        worst = ", ".join(
            f"{c.name} p50 {c.baseline_p50_ms:.3f} -> {c.new_p50_ms:.3f} ms "
            f"(+{c.change_pct:.1f}%)"
            for c in bad
        )
        raise CheckFailed(
            f"latency regression over {bad[0].threshold_pct:g}% in {len(bad)} "
            f"configuration(s): {worst}"
        )
