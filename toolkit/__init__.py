"""toolkit: export a trained model into verified, benchmarked deployment artifacts.

Importing this package is cheap: torch and the backends load only when a function needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.version import __version__ as __version__

if TYPE_CHECKING:  # pragma: no cover
    from toolkit.bench.options import BenchOptions as BenchOptions
    from toolkit.detection.options import DetectionOptions as DetectionOptions
    from toolkit.export.job import PrecisionOptions as PrecisionOptions
    from toolkit.export.pipeline import export as export
    from toolkit.parity.options import ToleranceOptions as ToleranceOptions
    from toolkit.source.options import SourceOptions as SourceOptions

#: `toolkit.export(...)` and the option groups the CLI, the Python API and ExportCallback share,
#: loaded on first use: `import toolkit` stays free of torch and numpy
_PUBLIC = {
    "export": "toolkit.export.pipeline", "BenchOptions": "toolkit.bench.options",
    "DetectionOptions": "toolkit.detection.options", "PrecisionOptions": "toolkit.export.job",
    "ToleranceOptions": "toolkit.parity.options", "SourceOptions": "toolkit.source.options",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if not name.startswith("_") and name.endswith("Options"):
        # each format's own group (toolkit.BuildOptions, toolkit.OnnxOptions ...), as the
        # format table declares it: export(..., backends=[toolkit.OnnxOptions(opset=17)])
        from toolkit import formats

        for _, group in formats.option_groups():
            if group.__name__ == name:
                return group
    raise AttributeError(name)
