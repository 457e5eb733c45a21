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
#: (each image's boxes, scores, labels; each image's instance output) -> COCO stats
InstanceScore = Callable[[list[Any], list[np.ndarray]], dict[str, float]]
EVAL_BATCH = 8  # images per call when the batch is dynamic


@dataclass
class TaskEvaluation:
    """One task's score of a predict function on one labelled data set."""

    metric: str  # what `score` is, for messages: 'top-1 accuracy', 'mAP@[.5:.95]'
    data: str
    run: Callable[[Predict], dict[str, Any]]  # -> {"score": fraction in [0, 1], ...}

    def __call__(self, predict: Predict) -> dict[str, Any]:
        return self.run(predict)


def classification_evaluation(path: str, inputs: Sequence[TensorSpec],
                              section: Mapping[str, Any] | None = None) -> TaskEvaluation:
    from toolkit.source.data import split_labels

    feeds = _labelled_feeds(path, inputs, max_batches=None)

    def run(predict: Predict) -> dict[str, Any]:
        result = classification_accuracy(lambda feed: predict(split_labels(feed)[0]), feeds)
        return {**result, "score": result["accuracy"]}

    return TaskEvaluation("top-1 accuracy", str(path), run)


def detection_evaluation(path: str, inputs: Sequence[TensorSpec],
                         section: Mapping[str, Any] | None = None) -> TaskEvaluation:
    """COCO box mAP; for an instance bundle whose data holds the task's ground truth (masks,
    keypoints, oriented boxes) the task's own metric is the score, box mAP beside it."""
    from toolkit.detection.coco_map import detection_map
    from toolkit.detection.eval_data import check_classes, predictions_from_outputs
    from toolkit.detection.instance_parity import extra_output
    from toolkit.source.data import load_detection_data

    data = load_detection_data(path, inputs)
    check_classes(data, (section or {}).get("classes"))
    max_detections = int((section or {}).get("max_detections", 100))
    extra = extra_output(section)
    task_metric = _instance_metric(extra, data, section) if extra else None
    note = None
    if extra and task_metric is None:
        note = (f"--eval-data {path} holds no ground truth for {extra}: scored (and gated) on "
                "box mAP alone")

    def run(predict: Predict) -> dict[str, Any]:
        predictions, extras = [], []
        for feed, keep in batches(data.inputs, inputs):
            outputs = predict(feed)
            predictions += predictions_from_outputs(outputs, f"--eval-data {path}")[:keep]
            if task_metric is not None:
                extras += _per_image(outputs, extra)[:keep]
        result = detection_map(predictions, data.ground_truth, max_detections=max_detections)
        out: dict[str, Any] = {**result, "n": len(data), "score": result["map"] / 100.0}
        if task_metric is not None:
            scores = task_metric[1](predictions, extras)
            out = {**{f"box_{k}": v for k, v in result.items()}, **scores, "n": len(data),
                   "score": scores["map"] / 100.0}
        if note:
            out["note"] = note
        return out

    metric = task_metric[0] if task_metric is not None else "mAP@[.5:.95]"
    return TaskEvaluation(metric, str(path), run)


def _per_image(outputs: Mapping[str, Any], name: str) -> list[np.ndarray]:
    """Each image's rows of an instance output, cut at num_detections."""
    if name not in outputs:
        raise UsageError(f"the artifact returns no {name} output (has {sorted(outputs)})")
    counts = np.asarray(outputs["num_detections"]).reshape(-1)
    values = np.asarray(outputs[name])
    return [values[i, :int(n)] for i, n in enumerate(counts)]


def _instance_metric(extra: str, data: Any, section: Mapping[str, Any] | None
                     ) -> tuple[str, InstanceScore] | None:
    """(the metric's name, predictions + per-image extras -> its COCO stats), or None when the
    data has no ground truth for `extra`."""
    from toolkit.detection import task_map

    info = (section or {}).get("instances") or {}
    k = int((section or {}).get("max_detections", 100))
    labels = [lab for _, lab in data.ground_truth]
    if extra == "masks" and data.has_masks:
        stride = int(info.get("mask_stride") or 1)

        def masks(predictions: list[Any], extras: list[np.ndarray]) -> dict[str, float]:
            preds = [(m, s, lab) for (_, s, lab), m in zip(predictions, extras)]
            return task_map.segmentation_map(preds, list(zip(data.masks, labels)),
                                             stride=stride, max_detections=k)
        return "mask mAP@[.5:.95]", masks
    if extra == "keypoints" and data.has_keypoints:
        def keypoints(predictions: list[Any], extras: list[np.ndarray]) -> dict[str, float]:
            preds = [(b, kp, s, lab) for (b, s, lab), kp in zip(predictions, extras)]
            truth = [(b, kp, lab) for (b, lab), kp in zip(data.ground_truth, data.keypoints)]
            return task_map.keypoint_map(preds, truth, max_detections=k)
        return "keypoint mAP@[.5:.95] (OKS)", keypoints
    if extra == "oriented_boxes" and data.has_obb:
        def oriented(predictions: list[Any], extras: list[np.ndarray]) -> dict[str, float]:
            preds = [(o, s, lab) for (_, s, lab), o in zip(predictions, extras)]
            return task_map.obb_map(preds, list(zip(data.obb, labels)), max_detections=k)
        return "rotated-box mAP@[.5:.95]", oriented
    return None


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


# -- the task table's `eval_inputs` hooks: batches of the labelled data's inputs ---------------
def _labelled_feeds(path: str, inputs: Sequence[TensorSpec], *, max_batches: int | None,
                    batch_size: int | None = None) -> list[dict[str, np.ndarray]]:
    from toolkit.source.data import load_feeds

    feeds = load_feeds(path, inputs, max_batches=max_batches, batch_size=batch_size,
                       split="test", where="--eval-data")
    if not all("labels" in f for f in feeds):
        raise UsageError(f"--eval-data {path}: needs 'labels' beside the inputs")
    return feeds


def classification_inputs(path: str, inputs: Sequence[TensorSpec], *, max_batches: int,
                          batch_size: int | None = None,
                          section: Mapping[str, Any] | None = None
                          ) -> list[dict[str, np.ndarray]]:
    """Input batches of labelled classification data (the labels checked, then dropped)."""
    from toolkit.source.data import split_labels

    feeds = _labelled_feeds(path, inputs, max_batches=max_batches, batch_size=batch_size)
    return [split_labels(feed)[0] for feed in feeds]


def detection_inputs(path: str, inputs: Sequence[TensorSpec], *, max_batches: int,
                     batch_size: int | None = None,
                     section: Mapping[str, Any] | None = None) -> list[dict[str, np.ndarray]]:
    """Image batches of detection data (its boxes and labels checked on load): of
    `batch_size`, else of a fixed batch's size, else of up to 4 images."""
    from toolkit.detection.eval_data import check_classes
    from toolkit.source.data import load_detection_data

    data = load_detection_data(path, inputs)
    check_classes(data, (section or {}).get("classes"))
    images = data.inputs
    count = len(next(iter(images.values())))
    rng = batch_range(inputs)
    step = batch_size or (min(4, rng[2]) if rng
                          else next((s.opt[0] for s in inputs if s.rank), 1))
    return [{k: v[i:i + step] for k, v in images.items()}
            for i in range(0, min(count, step * max_batches), step)]
