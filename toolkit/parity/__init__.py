"""Parity: does an artifact compute what the model computes? (numpy only at import)

The comparison knows no backend (after Polygraphy's comparator and Optimum's
`validate_model_outputs`): `tolerances` says how close is close enough, `metrics` measures,
`compare` judges one sample, `report` collects every sample of an artifact, `render` draws it.
`verify` runs artifacts to get the outputs; `localize` finds the first diverging ONNX node.
"""

from toolkit.parity.compare import OutputResult, compare_output, compare_sample
from toolkit.parity.metrics import HISTOGRAM_LABELS, ErrorMetrics, error_metrics
from toolkit.parity.report import OutputSummary, ParityReport, check
from toolkit.parity.task_metrics import (
    _TASK_METRICS,
    get_task_metric,
    register_task_metric,
    task_metric_keys,
)
from toolkit.parity.tolerances import (
    PRESETS,
    Tolerance,
    Tolerances,
    parse_tolerance_option,
    tolerance_for,
    tolerances_from_options,
)

__all__ = [
    "HISTOGRAM_LABELS", "PRESETS", "_TASK_METRICS", "ErrorMetrics", "OutputResult",
    "OutputSummary", "ParityReport", "Tolerance", "Tolerances", "check", "compare_output",
    "compare_sample", "error_metrics", "get_task_metric", "parse_tolerance_option",
    "register_task_metric", "task_metric_keys", "tolerance_for", "tolerances_from_options",
]
