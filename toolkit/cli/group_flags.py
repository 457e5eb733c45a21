"""Expand option groups into a command's flags.

A command declares `precision: PrecisionOptions` like any parameter; `@takes_groups` swaps that
parameter for the group's flags (each from its field's `flag(...)`, shown under the group's own
panel in --help) and, when typer calls the command, builds the group object from them. A
parameter declared `BackendOptions` grows the flags of every format's own group (the table's
`Format.options`), each under its format's panel: a new format's flags need no CLI edit. A group's
checks run there, before the command's body: a bad value is exit 2 before anything heavy loads.
`Annotated[Group, only("a", "b")]` takes those fields of a group alone (the others keep their
defaults).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import typer

from toolkit.export.job import BackendOptions
from toolkit.groups import FIELD_DEFAULT, Flag, Only, flags_of, is_group

Expanded = list[tuple[str, str]]  # (the group's field, the command's parameter)


def takes_groups(command: Callable[..., Any]) -> Callable[..., Any]:
    hints = get_type_hints(command, include_extras=True)
    parameters: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, Expanded]] = {}
    backend_groups: dict[str, list[tuple[type, Expanded]]] = {}

    def expand(group: type, kind: Any, subset: Only | None = None) -> Expanded:
        chosen = flags_of(group, subset)
        parameters.extend(_cli_parameter(group, f, how, kind) for f, how in chosen)
        return [(f.name, how.parameter) for f, how in chosen]

    for param in inspect.signature(command).parameters.values():
        annotation = hints.get(param.name, param.annotation)
        subset = None
        if get_origin(annotation) is Annotated:  # Annotated[Group, only(...)]
            base, *extras = get_args(annotation)
            subset = next((e for e in extras if isinstance(e, Only)), None)
            if subset is not None:
                if not is_group(base):  # a programming error, caught when the app is built
                    raise TypeError(f"{command.__name__}: only(...) needs an option group, "
                                    f"not {base!r}")
                annotation = base
        if annotation is BackendOptions:
            from toolkit import formats

            backend_groups[param.name] = [(group, expand(group, param.kind))
                                          for _, group in formats.option_groups()]
        elif is_group(annotation):
            groups[param.name] = (annotation, expand(annotation, param.kind, subset))
        else:
            parameters.append(param.replace(annotation=annotation))
    names = [p.name for p in parameters]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:  # a programming error, caught by every test that builds the app
        raise TypeError(f"{command.__name__}: flags declared twice: {', '.join(clashes)}")

    @functools.wraps(command)
    def run(**values: Any) -> Any:
        def build(group: type, expanded: Expanded) -> Any:
            return group(**{field: values.pop(parameter) for field, parameter in expanded})

        for name, (group, expanded) in groups.items():
            values[name] = build(group, expanded)
        for name, members in backend_groups.items():
            values[name] = BackendOptions(tuple(build(g, e) for g, e in members))
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
