"""Import a user's object from `pkg.module:attr` or `path/to/file.py:attr`."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from toolkit.errors import UsageError


def import_object(ref: str, option: str = "--model") -> Any:
    """Import `pkg.module:attr` or `path/to/file.py:attr` (the current directory is importable)."""
    module_name, sep, attr = ref.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{option} '{ref}' must look like pkg.module:Name")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise UsageError(f"{option} '{ref}': file {file} not found")
            spec = importlib.util.spec_from_file_location(file.stem, file)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[file.stem] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except UsageError:
        raise
    except Exception as err:  # the user's module may fail in any way while importing
        raise UsageError(
            f"{option} '{ref}': importing {module_name} failed ({type(err).__name__}: {err})"
        ) from err
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{option} '{ref}': {module_name} has no attribute '{attr}'")
        obj = getattr(obj, part)
    return obj
