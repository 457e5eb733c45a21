"""Whether a module can be imported here, found without importing it: what the format table,
the device probe and the tests ask of a backend's runtime. Depends on nothing in the toolkit."""

from __future__ import annotations

import sys


def module_available(module: str) -> bool:
    """Whether `module` can be imported here, looked up without importing it (a module
    blocked in sys.modules, as an edge device's test harness does, counts as absent)."""
    import importlib.util

    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
