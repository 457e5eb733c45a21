"""Accuracy-controlled INT8 and fp16 in the export: a file that missed its gate is handed to
the search (precision.fallback for INT8's layers, precision.fp16_fallback for fp16's blocks),
and the file, its records and its notes are replaced by what the search found (or the
refusal says what it reached and what would have to stay in float).

The gate is the one the artifact will be judged by: the task metric on --eval-data when given
(AccuracyGate), else the parity preset on the bundle's real-data golden samples (ParityGate)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from toolkit import tasks
from toolkit.bundle import Bundle
from toolkit.export.job import PrecisionOptions, fallback_budget

RANKING_SAMPLES = 16  # calibration samples the layers are ranked on


@dataclass(frozen=True)
class Verdict:
    passed: bool
    score: float | None  # the task metric; None for the parity gate
    line: str


class Gate(Protocol):
    kind: str

    def judge(self, path: Path) -> Verdict: ...


class AccuracyGate:
    """The task metric of a candidate on --eval-data against fp32's, within
    --max-accuracy-drop."""

    kind = "accuracy"

    def __init__(self, bundle: Bundle, options: PrecisionOptions, fp32_score: float) -> None:
        section = bundle.detection
        self.evaluation = tasks.of(section).hook("evaluation")(str(options.eval_data),
                                                               bundle.inputs, section)
        self.bundle, self.fp32_score, self.max_drop = bundle, fp32_score, \
            options.max_accuracy_drop

    def judge(self, path: Path) -> Verdict:
        from toolkit.backends.onnx.runner import OnnxRuntimeRunner
        from toolkit.parity.accuracy import score_gate

        runner = OnnxRuntimeRunner(path, inputs=self.bundle.inputs, outputs=self.bundle.outputs)
        with runner:
            score = self.evaluation(runner.infer)["score"]
        passed, line = score_gate(self.evaluation.metric, self.fp32_score, score, self.max_drop)
        return Verdict(passed, score, line)


class ParityGate:
    """The parity preset of the precision on the golden samples that judge it (the real-data
    ones), as verify will judge the artifact after export."""

    kind = "parity"

    def __init__(self, bundle: Bundle, precision: str) -> None:
        self.bundle, self.precision = bundle, precision

    def judge(self, path: Path) -> Verdict:
        from toolkit.backends.onnx.runner import OnnxRuntimeRunner
        from toolkit.manifest import InProcessTarget
        from toolkit.parity.verify import verify_record

        runner = OnnxRuntimeRunner(path, inputs=self.bundle.inputs, outputs=self.bundle.outputs)
        report = verify_record(self.bundle, InProcessTarget("onnx", self.precision), runner)
        return Verdict(report.passed, None, report.summary_line())


def ranking_feeds(calibration: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Up to RANKING_SAMPLES calibration samples, in the batches they came in."""
    feeds, taken = [], 0
    for feed in calibration:
        if taken >= RANKING_SAMPLES:
            break
        n = len(next(iter(feed.values())))
        keep = min(n, RANKING_SAMPLES - taken)
        feeds.append({k: np.asarray(v)[:keep] for k, v in feed.items()})
        taken += keep
    return feeds


@dataclass(frozen=True)
class Search:
    """What is searched: INT8's layers reverted in the Q/DQ graph, or fp16's blocks kept in
    fp32 by converting again. run(full, fp32, feeds, passes, share, count, seconds, workdir)
    -> (FallbackResult, the passing model)."""

    precision: str  # int8, fp16
    units: str  # what is kept: "layer(s) in float", "block(s) in fp32"
    run: Callable[..., tuple[Any, Any]]


def int8_search() -> Search:
    from toolkit.backends.onnx.precision.fallback import find_fallback

    def run(full: Any, fp32: Any, feeds: Any, passes: Any, share: float, count: int,
            seconds: float, workdir: Path) -> tuple[Any, Any]:
        return find_fallback(full, fp32, feeds, passes, max_share=share, max_layers=count,
                             time_limit=seconds)

    return Search("int8", "layer(s) in float", run)


def fp16_search(source: Path, dtype: str, scan_nodes: Sequence[str]) -> Search:
    from toolkit.backends.onnx.precision.fp16_fallback import find_fp16_fallback

    def run(full: Any, fp32: Any, feeds: Any, passes: Any, share: float, count: int,
            seconds: float, workdir: Path) -> tuple[Any, Any]:
        return find_fp16_fallback(source, dtype, scan_nodes, feeds, passes, workdir,
                                  max_share=share, max_layers=count, time_limit=seconds)

    return Search("fp16" if dtype == "float16" else "bf16", "block(s) in fp32", run)


def accuracy_controlled(bundle: Bundle, source: Path, dest: Path, options: PrecisionOptions,
                        calibration: Sequence[Mapping[str, np.ndarray]],
                        extra: dict[str, Any], gate: Gate, missed: Verdict,
                        accuracy_check: Callable[[], dict[str, Any]] | None = None,
                        searched: Search | None = None) -> bool:
    """After the reduced file at `dest` missed `gate` (`missed`): search for the fewest
    float units that pass, within --max-fallback. On success `dest` and `extra` hold the
    result (`accuracy_check()` gives the accuracy record again, for the accuracy gate) and
    True is returned; else only the notes grow, naming what the search reached."""
    import onnx

    from toolkit.backends.onnx.precision.graph import _save
    from toolkit.backends.onnx.precision.speed import default_session_speedup
    from toolkit.transaction import TEMP_PREFIX

    searched = searched or int8_search()
    name = searched.precision.upper()
    share, count = fallback_budget(options.max_fallback)
    if count == 0:
        return False
    fp32_model, full = onnx.load(str(source)), onnx.load(str(dest))
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}fallback-", dir=dest.parent) as tmp:
        trial = Path(tmp) / "trial.onnx"
        verdicts: list[Verdict] = []

        def passes(candidate: Any) -> tuple[bool, float | None]:
            onnx.save(candidate, str(trial))
            verdicts.append(gate.judge(trial))
            return verdicts[-1].passed, verdicts[-1].score

        result, best = searched.run(full, fp32_model, ranking_feeds(calibration), passes,
                                    share, count, options.max_fallback_seconds, Path(tmp))
        report = result.to_dict()
        report["gate"] = gate.kind
        extra["transform"]["fallback"] = report
        budget = (f"{share:.0%} of the MACs, {count} layers" if share < 1 else f"{count} layers")
        if not result.passed:
            helped = [c for c in result.ranking if c.recovered > 0]
            picked = [t["added"] for t in result.tried if t["added"] not in
                      {c.node for c in helped[:5]}]
            top = ", ".join([c.node for c in helped[:5]] + picked[:3]) or \
                "none: no single layer in float recovered any output error"
            reached = _best_reached(verdicts, getattr(gate, "fp32_score", None))
            stopped = (f" (stopped at --max-fallback-seconds {options.max_fallback_seconds:g})"
                       if result.timed_out else "")
            said = (f"accuracy-controlled {name} ({gate.kind} gate): within --max-fallback "
                    f"({budget}){stopped} {reached}; the most sensitive layers, which would "
                    f"have to stay in float: {top}")
            if result.beyond_budget:
                said += "; past the budget, " + ", ".join(
                    f"{c.node} ({c.mac_share:.1%} of the MACs)" for c in result.beyond_budget
                ) + " would recover the most on top: a larger --max-fallback lets the search "\
                    "try them"
            extra.setdefault("notes", []).append(said)
            if "accuracy" in extra:
                extra["accuracy"]["message"] = f"{extra['accuracy']['message']}; {said}"
            return False
        full_copy = Path(tmp) / f"full_{searched.precision}.onnx"
        full_copy.write_bytes(dest.read_bytes())
        _save(best, dest)
        summary = extra["transform"]
        if searched.precision == "int8":
            summary["kept_fp32"] = [*summary.get("kept_fp32", []), *result.kept]
        else:  # the conversion's own record of what it kept
            summary["keep_fp32_nodes"] = sorted({*summary.get("keep_fp32_nodes", []),
                                                 *result.kept_nodes})
        first = {k: np.asarray(v)[:1] for k, v in calibration[0].items()}
        timing = default_session_speedup(full_copy, dest, first)
    if accuracy_check is not None:
        extra["accuracy"] = accuracy_check()
        extra["accuracy"][f"full_{searched.precision}"] = {"score": missed.score,
                                                           "message": missed.line}
        now = extra["accuracy"]["message"]
    else:
        now = verdicts[-1].line
    cost = ""
    if timing is not None:
        report["latency"] = {f"full_{searched.precision}_p50_ms": timing["fp32_p50_ms"],
                             "p50_ms": timing["p50_ms"],
                             f"full_{searched.precision}_over_fallback": timing["speedup"]}
        cost = (f"; p50 {timing['p50_ms']:.3g} ms vs full {name} {timing['fp32_p50_ms']:.3g} "
                "ms at batch 1 on this CPU")
    names = ", ".join(result.kept[:6]) + (" ..." if len(result.kept) > 6 else "")
    extra.setdefault("notes", []).append(
        f"accuracy-controlled {name}: full {name} missed the {gate.kind} gate ({missed.line});"
        f" kept {len(result.kept)} {searched.units} ({result.kept_share:.2%} of the MACs: "
        f"{names}), ranked by measured sensitivity; now {now}{cost}")
    return True


def _best_reached(verdicts: Sequence[Verdict], fp32_score: float | None) -> str:
    if not verdicts:
        return "no layer fits the budget"
    scored = [v.score for v in verdicts if v.score is not None]
    if scored:
        against = f" vs fp32 {fp32_score:.2%}" if fp32_score is not None else ""
        return f"the best reached {max(scored):.2%}{against}"
    return f"with every layer it could keep: {verdicts[-1].line}"
