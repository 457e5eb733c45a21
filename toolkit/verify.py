"""Run artifacts on samples and compare them with a reference: the parity gate's orchestration.

The comparison itself lives in `parity` (no backend); this module picks the runner, the
samples (golden, plus real data) and the reference (golden outputs, live eager PyTorch, or
another artifact), and records the verdict in the manifest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.bundle import Bundle
from toolkit.errors import UsageError
from toolkit.parity import ParityReport, Tolerances, check, tolerances_from_options
from toolkit.runtime import load_artifact, model_runner, source_model
from toolkit.runtime.base import Runner

Feed = dict[str, np.ndarray]


@dataclass
class Reference:
    """Where expected outputs come from: 'golden', a live Runner (eager or an artifact)."""

    name: str = "golden"
    runner: Runner | None = None

    def expected(self, feed: Feed, golden: Feed | None) -> Feed:
        if self.runner is None:
            if golden is None:
                raise UsageError("real-data samples need a live reference: pass --against "
                                 "SOURCE or --reference FORMAT")
            return golden
        return self.runner.infer(feed)


def runner_for(bundle: Bundle, record: dict[str, Any], *, device: str = "cpu",
               model: Any = None, threads: int | None = None) -> Runner:
    if record["format"] in ("eager", "compile"):
        return model_runner(model if model is not None else source_model(bundle),
                            record["format"], device=device, threads=threads)
    return load_artifact(bundle, record, device=device, threads=threads)


def sample_pairs(bundle: Bundle, data: Sequence[Feed] = (),
                 golden: bool = True) -> Iterator[tuple[Feed, Feed | None]]:
    """(inputs, golden outputs or None) for the golden samples, then the real-data ones."""
    if golden:
        for sample in bundle.golden():
            yield sample.inputs, sample.outputs
    for feed in data:
        yield {s.name: feed[s.name] for s in bundle.inputs}, None


def verify_record(
    bundle: Bundle,
    record: dict[str, Any],
    *,
    device: str = "cpu",
    model: Any = None,
    tolerances: Tolerances | None = None,
    reference: Reference | None = None,
    data: Sequence[Feed] = (),
) -> ParityReport:
    """Run one artifact on every sample and compare it with the reference."""
    reference = reference or Reference()
    precision = record.get("precision", "fp32")
    tols = tolerances or tolerances_from_options(precision)
    label = f"{record['format']}/{precision}"
    runner = runner_for(bundle, record, device=device, model=model)
    with runner:
        def pairs() -> Iterator[tuple[Feed, Feed]]:
            for feed, golden in sample_pairs(bundle, data):
                yield reference.expected(feed, golden), runner.infer(feed)

        return check(pairs(), precision=precision, tolerance=tols, artifact=label,
                     reference=reference.name)


def record_parity(bundle: Bundle, record: dict[str, Any], report: ParityReport) -> None:
    """Store the verdict (without per-sample detail) in the manifest record."""
    summary = report.to_dict(details=False)
    if record.get("path") is None:
        return  # in-process targets (compile) have no artifact entry to update
    bundle.update_artifact(record["format"], record.get("precision", "fp32"), parity=summary)
