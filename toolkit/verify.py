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
    """Where expected outputs come from.

    Golden samples use the stored eager outputs unless `live_for_golden`; real-data samples
    need a live runner (eager PyTorch from --against or the bundle's source, or another
    artifact with --reference).
    """

    name: str = "golden"
    runner: Runner | None = None
    live_for_golden: bool = False

    def expected(self, feed: Feed, golden: Feed | None) -> Feed:
        if golden is not None and not (self.live_for_golden and self.runner is not None):
            return golden
        if self.runner is None:
            raise UsageError("real-data samples need a live reference: pass --against "
                             "SOURCE or --reference FORMAT")
        return self.runner.infer(feed)


def preset_for(record: dict[str, Any]) -> str:
    """The tolerance preset: an fp32 TensorRT engine may use TF32 (on by default on Ampere+)."""
    precision = record.get("precision", "fp32")
    return "tf32" if record["format"] == "trt" and precision == "fp32" else precision


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
    tols = tolerances or tolerances_from_options(preset_for(record))
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


def strip_wrapper_prefix(name: str | None) -> str | None:
    """Module paths seen through FlatModule start with 'model.'; users know them without it."""
    if name is None:
        return None
    return "" if name == "model" else name.removeprefix("model.")


def localize(bundle: Bundle, record: dict[str, Any], feed: Feed, *, model: Any = None,
             reference_record: dict[str, Any] | None = None, tolerances: Any = None) -> Any:
    """First diverging node of a failing ONNX artifact, against eager PyTorch (preferred) or
    another ONNX of the same graph (e.g. fp32 for an fp16 artifact)."""
    from toolkit.localize import localize_onnx

    if record["format"] != "onnx":
        raise UsageError(f"--localize works on ONNX artifacts, not {record['format']}")
    if model is not None:
        reference: Any = model.flat
    elif reference_record is not None and reference_record["format"] == "onnx":
        reference = str(bundle.path_of(reference_record))
    else:
        raise UsageError("--localize needs a reference: the source model (--against SOURCE, "
                         "or the bundle's checkpoint on this machine) or --reference onnx")
    tolerance = tolerances.default if tolerances is not None else record.get("precision",
                                                                             "fp32")
    divergence = localize_onnx(str(bundle.path_of(record)), feed, reference,
                               tolerance=tolerance)
    if divergence is not None:
        divergence.module_path = strip_wrapper_prefix(divergence.module_path)
        divergence.parameters = [strip_wrapper_prefix(p) or p for p in divergence.parameters]
    return divergence
