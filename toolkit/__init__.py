"""toolkit: export a trained model into verified, benchmarked deployment artifacts.

Importing this package is cheap: torch and the backends load only when a function needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from toolkit.export.pipeline import export as export


def __getattr__(name: str) -> Any:
    # `toolkit.export(...)` mirrors the CLI without importing torch at `import toolkit`.
    if name == "export":
        from toolkit.export.pipeline import export

        return export
    raise AttributeError(name)
