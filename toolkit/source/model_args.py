"""`--model-arg NAME=VALUE`: keyword arguments for a factory, as Python literals.

Values are read with `ast.literal_eval`, which evaluates no code: numbers, strings, None,
True/False, and tuples/lists/dicts of them. Anything else is refused in one line.
"""

from __future__ import annotations

import ast
import keyword
from collections.abc import Iterable
from typing import Any

from toolkit.errors import UsageError

EXAMPLE = "--model-arg num_classes=5 --model-arg weights=None --model-arg name='small'"


def parse_model_arg(text: str) -> tuple[str, Any]:
    """'num_classes=5' -> ('num_classes', 5); UsageError naming what is wrong."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep:
        raise UsageError(f"--model-arg {text!r}: expected NAME=VALUE, e.g. {EXAMPLE}")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(f"--model-arg {text!r}: {name!r} is not a Python argument name")
    value = value.strip()
    if not value:
        raise UsageError(f"--model-arg {text!r}: no value after '='; write None for none")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        hint = f" (quote text: {name}='{value}')" if value.isidentifier() else ""
        raise UsageError(f"--model-arg {text!r}: {value!r} is not a Python literal{hint}; "
                         "numbers, 'strings', None, True/False and tuples/lists of them "
                         "work") from None
    return name, parsed


def parse_model_args(texts: Iterable[str] | None) -> dict[str, Any]:
    """Every --model-arg, once each; a repeated name is an error (which one wins is unclear)."""
    args: dict[str, Any] = {}
    for text in texts or []:
        name, value = parse_model_arg(text)
        if name in args:
            raise UsageError(f"--model-arg {name} is given twice")
        args[name] = value
    return args
