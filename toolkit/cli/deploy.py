"""`toolkit deploy BUNDLE --triton REPO`: the selected artifact as a Triton model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli import options as opt
from toolkit.cli.console import console, json_to_stdout, write_json
from toolkit.cli.group_flags import takes_groups
from toolkit.groups import only
from toolkit.source.options import SourceOptions


@takes_groups
def deploy_command(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="A bundle directory.")],
    triton: Annotated[Path, typer.Option(
        help="The Triton model repository to write REPO/NAME into.")],
    name: Annotated[str | None, typer.Option(
        help="Model name in the repository (default: the bundle directory's name).")] = None,
    format: Annotated[str | None, typer.Option(
        help="Serve this format instead of the selected artifact.")] = None,
    precision: Annotated[str | None, typer.Option(help="With --format: its precision.")] = None,
    device: Annotated[str | None, typer.Option(
        help="cpu or cuda: the instance kind (default: what the artifact was selected or "
        "compiled for; engines always run on the GPU).")] = None,
    force: Annotated[bool, typer.Option(
        help="Replace REPO/NAME; deploy an artifact that failed or skipped parity.")] = False,
    source: Annotated[SourceOptions, only("allow_modified")
                      ] = SourceOptions(),  # noqa: B008 - expanded to flags
    json_file: opt.JsonPath = None,
    target: Annotated[str | None, typer.Option(
        help="A device reached with --on: deploy what was selected (or built) for it.",
        rich_help_panel="Devices (SSH)")] = None,
) -> int:
    """Write a Triton model repository entry: config.pbtxt (checked against Triton's schema),
    the model file, a warm-up request and a client example that checks the served model."""
    from rich.markup import escape

    from toolkit.bundle import Bundle, artifact_label
    from toolkit.cli.console import check_writable_file, err_console
    from toolkit.deploy.triton import build, deployable, model_name, write
    from toolkit.spec import canonical_precision, check_device
    from toolkit.transaction import reading

    if device is not None:
        check_device(device)  # the same check as every other --device
    # the entry being written counts as read: --json REPO/NAME/config.pbtxt would replace it
    check_writable_file(json_file, "--json", [bundle_dir, triton / (name or bundle_dir.name)])
    json_to_stdout(json_file)
    with reading(bundle_dir):  # an export running meanwhile is waited for
        bundle = Bundle.open(bundle_dir)
        bundle.allow_modified = source.allow_modified
        record = deployable(bundle, format,
                            canonical_precision(precision) if precision else None, force,
                            target=target)
        selected = bundle.manifest.selected
        if target is not None:
            chosen_there = bundle.targets.get(target)
            selected = chosen_there.selected if chosen_there else None
        model = build(bundle, record, model_name(bundle, name),
                      device=device or (selected.device if selected and format is None
                                        else None))
        target = write(bundle, model, triton, force=force)
    for note in model.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    console.print(f"wrote [bold]{escape(str(target))}[/]: {artifact_label(record)} as "
                  f"{model.config.splitlines()[1].split(': ')[1]} (schema-checked; not served "
                  "here)", highlight=False)
    console.print(f"serve: tritonserver --model-repository {escape(str(triton))}\n"
                  f"check: python {escape(str(target / 'client_example.py'))} --url "
                  "localhost:8001", highlight=False)
    write_json(json_file, {"model": str(target), "artifact": artifact_label(record),
                           "config": model.config, "inputs": model.inputs,
                           "outputs": model.outputs, "notes": model.notes})
    return 0
