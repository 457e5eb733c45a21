"""Shared rich consoles and small formatting helpers for the commands."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def split_list(values: Sequence[str] | None) -> list[str]:
    """Comma lists and repeated options, flattened: ['a,b', 'c'] -> [a, b, c]."""
    out: list[str] = []
    for value in values or []:
        out += [part.strip() for part in value.split(",") if part.strip()]
    return out


def print_json(data: Any) -> None:
    # plain print: rich would wrap long lines and break the JSON
    print(json.dumps(data, indent=2, default=str))


def human_size(size: int | None) -> str:
    if size is None:
        return "—"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def check_writable_file(path: Any, option: str, reads: Sequence[Any] = ()) -> None:
    """Fail before the work, not after it, when a report can't be written, or would land in
    what the command reads: a path inside a bundle in `reads` (a directory), or equal to a
    file in `reads`, is refused (exit 2). A report file the user names is replaced (README:
    "Reports")."""
    import os

    from toolkit.errors import UsageError

    if path is None or str(path) == "-":
        return
    parent = Path(path).parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path}: directory {parent} doesn't exist or isn't writable")
    if Path(path).is_dir():
        raise UsageError(f"{option} {path} is a directory; name a file")
    inside = inside_of(Path(path), reads)
    if inside is not None:
        raise UsageError(f"{option} {path}: that is {inside}, which this command reads; "
                         "write the report somewhere else")


def inside_of(path: Path, reads: Sequence[Any]) -> str | None:
    """How `path` (resolved: links and '..' followed) meets what a command reads: inside a
    bundle directory, equal to one, or equal to a file; None when apart."""
    resolved = path.resolve()
    for read in reads:
        if read is None or str(read) == "-":
            continue
        target = Path(read).resolve()
        if resolved == target:
            return f"{read} itself"
        if target.is_dir() and target in resolved.parents:
            return f"inside the bundle {read}"
        if target.is_file() and resolved.parent == target.parent and (
                target.parent / "manifest.json").is_file():
            return f"inside the bundle of {read}"
    return None


STDOUT = Path("-")


def json_to_stdout(path: Path | None) -> bool:
    """`--json -`: JSON owns standard output, so the human report moves to standard error."""
    if path is not None and str(path) == str(STDOUT):
        console.stderr = True  # rich reads sys.stderr at write time
        return True
    return False


def reset_consoles() -> None:
    """Undo `json_to_stdout` (several commands may run in one process: tests, notebooks)."""
    console.stderr = False


def write_json(path: Path | None, data: Any) -> None:
    """--json PATH: '-' prints to standard output; a path is written atomically."""
    if path is None:
        return
    if str(path) == str(STDOUT):
        print_json(data)
        return
    from toolkit.bundle import write_json_atomic

    write_json_atomic(path, data)
    err_console.print(f"wrote {path}", highlight=False)


def table_console() -> Console:
    """The console for tables: piped output (CI logs, files) gets 160 columns, not rich's 80,
    which would cut artifact names and numbers."""
    if console.is_terminal:
        return console
    return Console(file=console.file, width=160, highlight=False)
