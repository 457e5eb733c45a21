"""Options shared by several commands, declared once so each means the same everywhere.

Help texts that list formats come from the format table, so a new format appears in every
command's --help without touching the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit import formats

_ALL = formats.help_text()
_EXPORTABLE = formats.help_text(formats.exportable())
_PRECISIONS = ", ".join(dict.fromkeys(p for f in formats.all_formats() for p in f.precisions))

Formats = Annotated[list[str] | None, typer.Option(
    "--format", "-f", help=f"Formats to use: {_ALL}. Comma list or repeated. "
    "Default: every artifact of the bundle.")]
ExportFormats = Annotated[list[str], typer.Option(
    "--to", "-t", help=f"Formats to export: {_EXPORTABLE}. Comma list or repeated.")]
Precisions = Annotated[list[str] | None, typer.Option(
    "--precision", "-p", help=f"Precisions: {_PRECISIONS} (comma list). Default: all there are.")]
ExportPrecisions = Annotated[list[str], typer.Option(
    "--precision", "-p", help=f"Precisions to export: {_PRECISIONS} (reduced ones apply to "
    f"{', '.join(f.name for f in formats.all_formats() if len(f.precisions) > 1)}).")]
# the device select ranks for (a command's source device is SourceOptions.device)
Device = Annotated[str, typer.Option(help="cpu or cuda (cuda:N).")]
Force = Annotated[bool, typer.Option(help="Replace what exists.")]
JsonPath = Annotated[Path | None, typer.Option(
    "--json", help="Write the results as JSON to this path ('-' for standard output, with the "
    "human report on standard error).")]
MarkdownPath = Annotated[Path | None, typer.Option(help="Write a Markdown report here.")]


def finite(**options: float | None) -> None:
    """Every float option given is a real number: `--atol nan` would pass every check, and
    `1e309` reads as infinity (exit 2 naming the option)."""
    import math

    from toolkit.errors import UsageError

    for name, value in options.items():
        if value is not None and not math.isfinite(value):
            raise UsageError(f"--{name.replace('_', '-')} {value}: give a finite number")


# --on: devices over SSH (toolkit/remote)
On = Annotated[list[str] | None, typer.Option(
    "--on", help="Run this on devices over SSH: targets-file names, @groups or SSH "
    "destinations (Host aliases, user@host), comma list. Results come back into the bundle.",
    rich_help_panel="Devices (SSH)")]
TargetsFile = Annotated[str | None, typer.Option(
    "--targets", help="The targets file (default $TOOLKIT_TARGETS, else "
    "~/.config/toolkit/targets.toml).", rich_help_panel="Devices (SSH)")]
Parallel = Annotated[int | None, typer.Option(
    "--parallel", help="Devices at once (default: the targets file's fleet.parallel, 8).",
    rich_help_panel="Devices (SSH)")]
