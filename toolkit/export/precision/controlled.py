"""Accuracy-controlled INT8 in the export: an INT8 file that missed its gate is handed to
precision.fallback, and the file, its accuracy record and its notes are replaced by what the
search found (or the refusal says what it reached and what would have to stay in float)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import tasks
from toolkit.bundle import Bundle
from toolkit.export.job import PrecisionOptions, fallback_budget

RANKING_SAMPLES = 16  # calibration samples the layers are ranked on


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


def accuracy_controlled(bundle: Bundle, source: Path, dest: Path, options: PrecisionOptions,
                        calibration: Sequence[Mapping[str, np.ndarray]],
                        extra: dict[str, Any],
                        accuracy_check: Callable[[], dict[str, Any]]) -> None:
    """After `extra["accuracy"]` failed: search for the fewest float layers that pass, within
    --max-fallback; on success `dest` and `extra` hold the result, else only the notes grow.
    `accuracy_check()` gives the gate's verdict on the file at `dest` (steps.accuracy_check)."""
    import onnx

    from toolkit.export.precision.fallback import find_fallback
    from toolkit.export.precision.onnx_graph import _save
    from toolkit.export.precision.speed import default_session_speedup
    from toolkit.parity.accuracy import score_gate
    from toolkit.runtime.onnxruntime import OnnxRuntimeRunner
    from toolkit.transaction import TEMP_PREFIX

    share, count = fallback_budget(options.max_fallback)
    failed = extra["accuracy"]
    if count == 0 or failed["fp32"]["score"] <= 0:  # off, or a vacuous gate: nothing to find
        return
    section = bundle.manifest.get("detection")
    evaluation = tasks.of(section).hook("evaluation")(str(options.eval_data), bundle.inputs,
                                                      section)
    fp32_score = failed["fp32"]["score"]
    fp32_model, full = onnx.load(str(source)), onnx.load(str(dest))
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}fallback-", dir=dest.parent) as tmp:
        trial = Path(tmp) / "trial.onnx"

        def passes(candidate: Any) -> tuple[bool, float]:
            onnx.save(candidate, str(trial))
            runner = OnnxRuntimeRunner(trial, inputs=bundle.inputs, outputs=bundle.outputs)
            with runner:
                score = evaluation(runner.infer)["score"]
            return score_gate(evaluation.metric, fp32_score, score,
                              options.max_accuracy_drop)[0], score

        result, best = find_fallback(full, fp32_model, ranking_feeds(calibration), passes,
                                     max_share=share, max_layers=count)
        report = result.to_dict()
        summary = extra["transform"]
        summary["fallback"] = report
        budget = (f"{share:.0%} of the MACs, {count} layers" if share < 1 else f"{count} layers")
        best_score = max((t["score"] for t in result.tried), default=None)
        if not result.passed:
            top = ", ".join(c.node for c in result.ranking[:5]) or "none measured"
            reached = (f"the best reached {best_score:.2%} vs fp32 {fp32_score:.2%}"
                       if best_score is not None else "no layer fits the budget")
            said = (f"accuracy-controlled INT8: within --max-fallback ({budget}) {reached}; "
                    f"the most sensitive layers, which would have to stay in float: {top}")
            extra.setdefault("notes", []).append(said)
            failed["message"] = f"{failed['message']}; {said}"  # the refusal's own line
            return
        full_copy = Path(tmp) / "full_int8.onnx"
        full_copy.write_bytes(dest.read_bytes())
        _save(best, dest)
        summary["kept_fp32"] = [*summary.get("kept_fp32", []), *result.kept]
        first = {k: np.asarray(v)[:1] for k, v in calibration[0].items()}
        timing = default_session_speedup(full_copy, dest, first)
    extra["accuracy"] = accuracy_check()
    extra["accuracy"]["full_int8"] = {"score": failed["reduced"]["score"],
                                      "message": failed["message"]}
    cost = ""
    if timing is not None:
        report["latency"] = {"full_int8_p50_ms": timing["fp32_p50_ms"],
                             "p50_ms": timing["p50_ms"],
                             "full_int8_over_fallback": timing["speedup"]}
        cost = (f"; p50 {timing['p50_ms']:.3g} ms vs full INT8 {timing['fp32_p50_ms']:.3g} ms "
                "at batch 1 on this CPU")
    names = ", ".join(result.kept[:6]) + (" ..." if len(result.kept) > 6 else "")
    extra.setdefault("notes", []).append(
        f"accuracy-controlled INT8: full INT8 missed the gate ({failed['message']}); kept "
        f"{len(result.kept)} layer(s) in float ({result.kept_share:.2%} of the MACs: {names}), "
        f"ranked by measured sensitivity; now {extra['accuracy']['message']}{cost}")
