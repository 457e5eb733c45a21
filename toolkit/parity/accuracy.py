"""Task accuracy of a model through any backend, and the gate that bounds a precision's drop.

Backend-free: the caller passes `predict` (a Runner's `infer`, an ORT session wrapper...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from toolkit.errors import UsageError

LABELS = "labels"

Predict = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]


def _pick_output(outputs: Mapping[str, np.ndarray], output_name: str | None) -> np.ndarray:
    if output_name is not None:
        if output_name not in outputs:
            raise UsageError(
                f"output '{output_name}' not produced; outputs are {', '.join(outputs)}"
            )
        return np.asarray(outputs[output_name])
    return np.asarray(next(iter(outputs.values())))


def classification_accuracy(
    predict: Predict,
    feeds_with_labels: Iterable[Mapping[str, np.ndarray]],
    output_name: str | None = None,
) -> dict[str, Any]:
    """Top-1 accuracy of `predict` over labelled feeds (logits argmax over the last axis).

    Labels may be class indices or one-hot rows. Returns {"accuracy", "correct", "n"}.
    """
    correct = total = 0
    for i, feed in enumerate(feeds_with_labels):
        if LABELS not in feed:
            raise UsageError(
                f"--eval-data batch {i} has no labels; store them as 'labels' in the npz or "
                "return (inputs..., label) from the dataloader"
            )
        inputs = {k: v for k, v in feed.items() if k != LABELS}
        logits = _pick_output(predict(inputs), output_name)
        labels = np.asarray(feed[LABELS])
        if labels.ndim == logits.ndim and labels.shape == logits.shape:
            labels = labels.argmax(axis=-1)  # one-hot
        labels = _class_indices(labels, logits, i)
        pred = logits.reshape(len(labels), -1).argmax(axis=-1) if logits.size else logits
        if len(pred) != len(labels):
            raise UsageError(
                f"--eval-data batch {i}: {len(labels)} labels for {len(pred)} predictions"
            )
        correct += int((pred == labels).sum())
        total += len(labels)
    if total == 0:
        raise UsageError("--eval-data: no labelled samples to measure accuracy on")
    return {"accuracy": correct / total, "correct": correct, "n": total}


def _class_indices(labels: np.ndarray, logits: np.ndarray, batch: int) -> np.ndarray:
    """Labels as class indices, or exit 2 naming the first bad one: a label the model can't
    output (99, -3, 0.5) or of the wrong rank would make the gate score nothing."""
    where = f"--eval-data batch {batch}: labels"
    if labels.ndim != 1:
        raise UsageError(f"{where} have shape {list(labels.shape)}; give one class index per "
                         "sample (or one-hot rows)")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
        index = int(np.argwhere(~(np.isfinite(labels) & (labels == np.round(labels))))[0][0])
        raise UsageError(f"{where}[{index}] is {labels[index]}, not a class index")
    classes = logits.shape[-1] if logits.ndim > 1 else None
    indices = labels.astype(np.int64)
    bad = (indices < 0) | (indices >= classes if classes else False)
    if bad.any():
        index = int(np.argwhere(bad)[0][0])
        raise UsageError(f"{where}[{index}] is {labels[index]}; the model has {classes} "
                         f"classes (0-{(classes or 1) - 1})")
    return indices


def accuracy_gate(
    fp32_acc: float, reduced_acc: float, max_drop_points: float = 1.0, label: str = "reduced"
) -> tuple[bool, str]:
    """Pass when accuracy drops by at most `max_drop_points` percentage points."""
    return score_gate("accuracy", fp32_acc, reduced_acc, max_drop_points, label)


def score_gate(metric: str, fp32: float, reduced: float, max_drop_points: float,
               label: str = "reduced") -> tuple[bool, str]:
    """Pass when the score (a fraction) drops by at most `max_drop_points` points. A reference
    that scores nothing proves nothing: the gate fails as vacuous."""
    if max_drop_points < 0:
        raise UsageError(f"--max-accuracy-drop must be >= 0, got {max_drop_points}")
    if fp32 <= 0:
        return False, (f"vacuous: fp32 scores {fp32:.2%} {metric} on --eval-data, so the "
                       f"{label} model's score proves nothing; check the labels")
    drop = (fp32 - reduced) * 100.0
    verdict = "within" if drop <= max_drop_points + 1e-9 else "exceeds"
    return verdict == "within", (
        f"{label} {metric} {reduced:.2%} vs fp32 {fp32:.2%}: drop {drop:+.2f} points "
        f"{verdict} the {max_drop_points:g}-point limit")

