"""Task metrics: what agreement means for a kind of output (top-k for class scores),
registered by name so --tol and presets can refer to them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from toolkit.errors import UsageError, did_you_mean

# -- task metrics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputInfo:
    """What a task metric may look at to decide whether it applies to an output."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class TaskMetric:
    name: str
    keys: tuple[str, ...]
    applies: Callable[[OutputInfo, np.ndarray], bool]
    fn: Callable[[np.ndarray, np.ndarray], tuple[dict[str, float], int]]
    description: str = ""


_TASK_METRICS: dict[str, TaskMetric] = {}


def register_task_metric(
    name: str,
    applies: Callable[[OutputInfo, np.ndarray], bool],
    fn: Callable[[np.ndarray, np.ndarray], tuple[dict[str, float], int]],
    *,
    keys: Sequence[str],
    description: str = "",
    replace: bool = False,
) -> None:
    """Register a task metric.

    `applies(info, expected)` says whether it fits an output; `fn(expected, actual)` returns
    ({key: value}, weight) for one sample, where each value is a mean over `weight` rows, so
    the report can aggregate samples exactly. Metrics only inform unless a tolerance sets a
    minimum for one of their keys (`task_min`, or `--tol NAME:top1=0.99`).
    """
    if name in _TASK_METRICS and not replace:
        raise ValueError(f"task metric '{name}' is already registered")
    taken = task_metric_keys() - set(_TASK_METRICS[name].keys if name in _TASK_METRICS else ())
    clash = taken & set(keys)
    if clash:
        raise ValueError(f"task metric '{name}': keys {sorted(clash)} are already taken")
    _TASK_METRICS[name] = TaskMetric(name, tuple(keys), applies, fn, description)


def get_task_metric(name: str) -> TaskMetric:
    if name not in _TASK_METRICS:
        raise UsageError(
            f"unknown task metric '{name}'; registered: {', '.join(sorted(_TASK_METRICS))}"
            f"{did_you_mean(name, _TASK_METRICS)}"
        )
    return _TASK_METRICS[name]


def task_metrics() -> list[str]:
    return sorted(_TASK_METRICS)


def task_metric_keys() -> set[str]:
    return {key for metric in _TASK_METRICS.values() for key in metric.keys}


def _is_class_scores(info: OutputInfo, expected: np.ndarray) -> bool:
    return len(info.shape) == 2 and info.shape[0] > 0 and info.shape[1] > 1 and np.issubdtype(
        expected.dtype, np.floating
    )


def _topk_agreement(expected: np.ndarray, actual: np.ndarray) -> tuple[dict[str, float], int]:
    # top1: the arg-max class agrees; top5: mean overlap of the two top-5 sets.
    k = min(5, expected.shape[1])
    exp = np.nan_to_num(expected.astype(np.float64), nan=-np.inf)
    act = np.nan_to_num(actual.astype(np.float64), nan=-np.inf)
    top1 = float(np.mean(exp.argmax(axis=1) == act.argmax(axis=1)))
    exp_k = np.argsort(-exp, axis=1, kind="stable")[:, :k]
    act_k = np.argsort(-act, axis=1, kind="stable")[:, :k]
    pairs = zip(exp_k.tolist(), act_k.tolist(), strict=True)
    overlap = [len(set(e) & set(a)) / k for e, a in pairs]
    return {"top1": top1, "top5": float(np.mean(overlap))}, int(expected.shape[0])


register_task_metric(
    "topk", _is_class_scores, _topk_agreement, keys=("top1", "top5"),
    description="class scores [batch, classes]: top-1 agreement and top-5 set overlap",
)
