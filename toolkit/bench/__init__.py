"""Bench: time runners and judge the numbers (numpy only at import).

`measurement` holds raw times and derives statistics, `timer` decides how long to run,
`results` writes and reads results files, `gate` compares with a baseline, `driver` runs a
bundle's artifacts through their runners, `render` draws tables, Markdown and plots.
"""

from toolkit.bench.gate import Comparison, check_regressions, compare, parse_threshold
from toolkit.bench.measurement import DEFAULTS, DeviceTimer, Measurement
from toolkit.bench.results import load_results, results_document, save_results
from toolkit.bench.timer import measure, time_once

__all__ = ["DEFAULTS", "Comparison", "DeviceTimer", "Measurement", "check_regressions",
           "compare", "load_results", "measure", "parse_threshold", "results_document",
           "save_results", "time_once"]
