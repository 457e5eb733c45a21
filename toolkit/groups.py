"""Option groups, declared once (Polygraphy's `tools/args` is the model).

A group is a frozen dataclass that checks itself, and reads the command line's spellings (a size
text, a comma list), in `__post_init__` (UsageError naming the flag): one place, whether the
values came from typer or from Python.
Each field the command line sets carries its flag and help through `flag(...)`; the CLI expands a
group into those flags (`toolkit/cli/group_flags.py`), and `toolkit.export(...)`, `ExportCallback`
and the commands take the same objects. Pure: no typer, no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

CLI = "toolkit.cli"  # the metadata key of a field the command line sets
FIELD_DEFAULT = "<the field's default>"  # a Flag's cli_default when it has none of its own


@dataclass(frozen=True)
class Flag:
    """How one group field appears on the command line."""

    name: str  # --opt-level, or --verify/--no-verify for a switch
    help: str
    #: the type typer parses (None: the field's own); e.g. str for a size the group reads itself
    cli_type: Any = None
    cli_default: Any = FIELD_DEFAULT

    @property
    def parameter(self) -> str:
        """The keyword the command's expanded signature uses: `--opt-level` -> `opt_level`."""
        return self.name.split()[0].split("/")[0].lstrip("-").replace("-", "_")


def flag(default: Any, name: str, help: str, **how: Any) -> Any:
    """A dataclass field whose command-line flag is `name`."""
    meta = {CLI: Flag(name, help, **how)}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or None as a group field's default")
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Only:
    """`Annotated[Group, only("a", "b")]`: a command takes these fields of a group as flags;
    the others keep their defaults (bench reads the source's device, not its factory)."""

    fields: tuple[str, ...]


def only(*names: str) -> Only:
    return Only(names)


def flags_of(group: type, subset: Only | None = None
             ) -> list[tuple[dataclasses.Field[Any], Flag]]:
    """The fields of a group that the command line sets, in declaration order (those of
    `subset` alone when given; a name that is no such field is a programming error)."""
    found = [(f, f.metadata[CLI]) for f in dataclasses.fields(group) if CLI in f.metadata]
    if subset is None:
        return found
    unknown = set(subset.fields) - {f.name for f, _ in found}
    if unknown:
        raise TypeError(f"{group.__name__} has no flag fields {sorted(unknown)}")
    return [(f, how) for f, how in found if f.name in subset.fields]


def is_group(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation) and bool(
        flags_of(annotation))


def comma_list(values: Any) -> tuple[str, ...]:
    """`--x a,b --x c` -> ('a', 'b', 'c')."""
    if values is None:
        return ()
    items = [values] if isinstance(values, str) else values
    return tuple(p.strip() for item in items for p in str(item).split(",") if p.strip())
