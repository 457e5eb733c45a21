"""Parity: does an artifact compute what the model computes?

The comparison knows no backend (after Polygraphy's comparator and Optimum's
`validate_model_outputs`): `tolerances` says how close is close enough, `metrics` measures,
`compare` judges one sample, `report` collects every sample of an artifact, `render` draws it.
`verify` runs artifacts to get the outputs; a format's `localize` hook finds the first
diverging node. `options` is the tolerance option group. The names below load on first use
(numpy), so the CLI can declare the option group without importing numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "OutputResult": "compare", "compare_output": "compare", "compare_sample": "compare",
    "HISTOGRAM_LABELS": "metrics", "ErrorMetrics": "metrics", "error_metrics": "metrics",
    "OutputSummary": "report", "ParityReport": "report", "check": "report",
    "_TASK_METRICS": "task_metrics", "get_task_metric": "task_metrics",
    "register_task_metric": "task_metrics", "task_metric_keys": "task_metrics",
    "PRESETS": "tolerances", "Tolerance": "tolerances", "Tolerances": "tolerances",
    "parse_tolerance_option": "tolerances", "tolerance_for": "tolerances",
    "tolerances_from_options": "tolerances",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"toolkit.parity.{_HOME[name]}"), name)
