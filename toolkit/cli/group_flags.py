"""Expand option groups into a command's flags.

A command declares `precision: PrecisionOptions` like any parameter; `@takes_groups` swaps that
parameter for the group's flags (each from its field's `flag(...)`, shown under the group's own
panel in --help) and, when typer calls the command, builds the group object from them. A group's
checks run there, before the command's body: a bad value is exit 2 before anything heavy loads.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, get_type_hints

import typer

from toolkit.groups import FIELD_DEFAULT, Flag, flags_of, is_group


def takes_groups(command: Callable[..., Any]) -> Callable[..., Any]:
    hints = get_type_hints(command, include_extras=True)
    parameters: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, list[tuple[str, str]]]] = {}
    for param in inspect.signature(command).parameters.values():
        annotation = hints.get(param.name, param.annotation)
        if not is_group(annotation):
            parameters.append(param.replace(annotation=annotation))
            continue
        expanded = []
        for field, how in flags_of(annotation):
            parameters.append(_cli_parameter(annotation, field, how, param.kind))
            expanded.append((field.name, how.parameter))
        groups[param.name] = (annotation, expanded)
    names = [p.name for p in parameters]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:  # a programming error, caught by every test that builds the app
        raise TypeError(f"{command.__name__}: flags declared twice: {', '.join(clashes)}")

    @functools.wraps(command)
    def run(**values: Any) -> Any:
        for name, (group, expanded) in groups.items():
            values[name] = group(**{field: values.pop(parameter)
                                    for field, parameter in expanded})
        return command(**values)

    del run.__wrapped__  # typer reads the signature below, not the command's
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        parameters, return_annotation=hints.get("return", inspect.Signature.empty))
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    return run


def _cli_parameter(group: type, field: dataclasses.Field[Any], how: Flag,
                   kind_of_parameter: Any) -> inspect.Parameter:
    kind = how.cli_type if how.cli_type is not None else field.type
    if isinstance(kind, str):  # `from __future__ import annotations` in the group's module
        kind = get_type_hints(group)[field.name]
    default = field.default if how.cli_default == FIELD_DEFAULT else how.cli_default
    option = typer.Option(*how.name.split(" "), help=how.help,
                          rich_help_panel=getattr(group, "title", group.__name__))
    return inspect.Parameter(how.parameter, kind_of_parameter, default=default,
                             annotation=Annotated[kind, option])
