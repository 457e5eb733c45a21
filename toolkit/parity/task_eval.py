"""How a task scores a model on labelled data, through any runner: top-1 accuracy for
classifiers, COCO mAP@[.5:.95] for detectors. Reduced precisions are gated on the drop."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.errors import UsageError
from toolkit.parity.accuracy import classification_accuracy
from toolkit.spec import TensorSpec, batch_range

Predict = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]
EVAL_BATCH = 8  # images per call when the batch is dynamic


@dataclass
class TaskEvaluation:
    """One task's score of a predict function on one labelled data set."""

    metric: str  # what `score` is, for messages: 'top-1 accuracy', 'mAP@[.5:.95]'
    data: str
    run: Callable[[Predict], dict[str, Any]]  # -> {"score": fraction in [0, 1], ...}

    def __call__(self, predict: Predict) -> dict[str, Any]:
        return self.run(predict)


def classification_evaluation(path: str, inputs: Sequence[TensorSpec]) -> TaskEvaluation:
    from toolkit.source.data import load_feeds, split_labels

    feeds = load_feeds(path, inputs, max_batches=None, split="test", where="--eval-data")
    if not all("labels" in f for f in feeds):
        raise UsageError(f"--eval-data {path}: needs 'labels' beside the inputs")

    def run(predict: Predict) -> dict[str, Any]:
        result = classification_accuracy(lambda feed: predict(split_labels(feed)[0]), feeds)
        return {**result, "score": result["accuracy"]}

    return TaskEvaluation("top-1 accuracy", str(path), run)


def detection_evaluation(path: str, inputs: Sequence[TensorSpec],
                         max_detections: int = 100) -> TaskEvaluation:
    from toolkit.detection.coco_map import detection_map
    from toolkit.detection.eval_data import predictions_from_outputs
    from toolkit.source.data import load_detection_data

    data = load_detection_data(path, inputs)

    def run(predict: Predict) -> dict[str, Any]:
        predictions = []
        for feed, keep in batches(data.inputs, inputs):
            outputs = predict(feed)
            predictions += predictions_from_outputs(outputs, f"--eval-data {path}")[:keep]
        result = detection_map(predictions, data.ground_truth, max_detections=max_detections)
        return {**result, "n": len(data), "score": result["map"] / 100.0}

    return TaskEvaluation("mAP@[.5:.95]", str(path), run)


def batches(arrays: Mapping[str, np.ndarray], inputs: Sequence[TensorSpec]
            ) -> list[tuple[dict[str, np.ndarray], int]]:
    """Cut n samples into batches the model accepts: (feed, how many rows are real). A fixed
    batch is filled up by repeating the last sample; the repeats' outputs are dropped."""
    n = len(next(iter(arrays.values())))
    rng = batch_range(inputs)
    size = (min(rng[2], EVAL_BATCH) if rng else next((s.opt[0] for s in inputs if s.rank), 1))
    out = []
    for start in range(0, n, size):
        feed = {s.name: arrays[s.name][start:start + size] for s in inputs}
        keep = len(next(iter(feed.values())))
        if rng is None and keep < size:
            feed = {k: np.concatenate([v, np.repeat(v[-1:], size - keep, axis=0)])
                    for k, v in feed.items()}
        elif rng is not None and keep < rng[0]:
            feed = {k: np.concatenate([v, np.repeat(v[-1:], rng[0] - keep, axis=0)])
                    for k, v in feed.items()}
        out.append((feed, keep))
    return out


def task_evaluation(path: str, inputs: Sequence[TensorSpec],
                    detection: Mapping[str, Any] | None) -> TaskEvaluation:
    """The evaluation for a bundle's task (its manifest's `detection` section, if any)."""
    if detection:
        return detection_evaluation(path, inputs, int(detection.get("max_detections", 100)))
    return classification_evaluation(path, inputs)
