"""Bench: time runners and judge the numbers.

`measurement` holds raw times and derives statistics, `timer` decides how long to run,
`results` writes and reads results files, `gate` compares with a baseline, `driver` runs a
bundle's artifacts through their runners, `render` draws tables, Markdown and plots, `options`
is the timing option group. The names below load on first use, so the CLI can declare the
option group without importing numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "Comparison": "gate", "check_regressions": "gate", "compare": "gate",
    "parse_threshold": "gate", "DEFAULTS": "options", "DeviceTimer": "measurement",
    "Measurement": "measurement", "load_results": "results", "results_document": "results",
    "save_results": "results", "measure": "timer", "time_once": "timer",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"toolkit.bench.{_HOME[name]}"), name)
