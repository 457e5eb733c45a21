"""The data that calibrates and judges reduced precision, for every format: calibration
batches from --calib-data, the real batches that judge parity, and the accuracy gate on
--eval-data between two runners of any format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolkit import tasks
from toolkit.bundle import Bundle
from toolkit.errors import UsageError
from toolkit.export.job import PrecisionOptions
from toolkit.tasks import Task


def calibration_feeds(bundle: Bundle, options: PrecisionOptions) -> list[dict[str, Any]]:
    """The --calib-data batches (inputs only) an INT8 quantiser calibrates on."""
    from toolkit.source.data import load_feeds

    if not options.calib_data:
        raise UsageError("--precision int8 needs calibration samples: --calib-data "
                         "FILE.npz|DIR|pkg.module:DataModule")
    feeds = load_feeds(options.calib_data, bundle.inputs, max_batches=options.calib_batches,
                       batch_size=calibration_batch(bundle), split="val", where="--calib-data")
    return [inputs_only(f) for f in feeds]


def check_precision_data(inputs: Any, precisions: Any, options: PrecisionOptions,
                         task: Task, section: Mapping[str, Any] | None = None
                         ) -> dict[str, Any] | None:
    """Validate calibration / evaluation data before anything is exported, so a bad option
    costs one line, not a half-made bundle. Returns one real input batch (or None)."""
    from toolkit.source.data import load_feeds

    real = None
    if "int8" in precisions or (task.golden_needs_real_data and options.calib_data):
        if not options.calib_data:
            raise UsageError("--precision int8 needs calibration samples: --calib-data "
                             "FILE.npz|DIR|pkg.module:DataModule")
        real = inputs_only(load_feeds(options.calib_data, inputs, max_batches=1, split="val",
                                       where="--calib-data")[0])
    if options.eval_data:
        (first,) = task.hook("eval_inputs")(options.eval_data, inputs, max_batches=1,
                                            section=section)
        real = real or first
    return real


JUDGING_BATCHES = 2  # real batches that judge each reduced precision (beside the task metric)
JUDGING_BATCH_SIZE = 8


def judging_feeds(inputs: Any, options: PrecisionOptions,
                  task: Task) -> tuple[list[dict[str, Any]], str | None]:
    """Real input batches reduced precisions are judged on, and where they came from:
    --eval-data (held out from calibration) when given, else --calib-data."""
    from toolkit.source.data import load_feeds
    from toolkit.spec import batch_range

    rng = batch_range(inputs)
    size = min(JUDGING_BATCH_SIZE, rng[2]) if rng else None
    if options.eval_data:
        feeds = task.hook("eval_inputs")(options.eval_data, inputs,
                                         max_batches=JUDGING_BATCHES, batch_size=size)
        return feeds, f"--eval-data {options.eval_data}"
    if not options.calib_data:
        return [], None
    feeds = [inputs_only(f) for f in load_feeds(options.calib_data, inputs,
                                                  max_batches=JUDGING_BATCHES,
                                                  batch_size=size, split="val",
                                                  where="--calib-data")]
    return feeds, f"--calib-data {options.calib_data}"


def calibration_batch(bundle: Bundle) -> int | None:
    """Calibrate on batches of up to 32 when the batch is dynamic (--calib-batches counts
    batches: at the opt batch of 1, 32 of them would be only 32 samples)."""
    from toolkit.spec import batch_range

    rng = batch_range(bundle.inputs)
    return min(rng[2], 32) if rng else None


def inputs_only(feed: Mapping[str, Any]) -> dict[str, Any]:
    from toolkit.source.data import split_labels

    return split_labels(feed)[0]


def accuracy_between(bundle: Bundle, fp32: Any, reduced: Any,
                     options: PrecisionOptions) -> dict[str, Any]:
    """The accuracy gate between two runners (not yet activated) of any format: the task's
    score of each on --eval-data, and the verdict on the drop."""
    from toolkit.parity.accuracy import score_gate
    section = bundle.detection
    evaluation = tasks.of(section).hook("evaluation")(str(options.eval_data), bundle.inputs,
                                                      section)
    scores = {}
    for label, runner in (("fp32", fp32), ("reduced", reduced)):
        with runner:
            scores[label] = evaluation(runner.infer)
    max_drop = options.max_accuracy_drop
    passed, message = score_gate(evaluation.metric, scores["fp32"]["score"],
                                 scores["reduced"]["score"], max_drop)
    return {"metric": evaluation.metric, "fp32": scores["fp32"], "reduced": scores["reduced"],
            "max_drop_points": max_drop, "passed": passed, "message": message,
            "data": str(options.eval_data)}
