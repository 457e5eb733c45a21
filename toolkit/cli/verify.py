"""`toolkit verify BUNDLE`: exit 0 only when every checked artifact matches its reference."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli import options as opt
from toolkit.cli.console import console, json_to_stdout, split_list, table_console, write_json
from toolkit.cli.group_flags import takes_groups
from toolkit.parity.options import ToleranceOptions
from toolkit.source.options import SourceOptions


@takes_groups
def verify_command(
    ctx: typer.Context,
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="A bundle directory.")],
    format: opt.Formats = None,
    precision: opt.Precisions = None,
    against: Annotated[str | None, typer.Option(
        help="Compare with the live PyTorch model from this SOURCE (.ckpt or factory).")] = None,
    reference: Annotated[str | None, typer.Option(
        help="Compare with another format's fp32 artifact of the bundle (FORMAT).")
    ] = None,
    data: Annotated[str | None, typer.Option(
        help="Real samples: .npz, a directory of .npz, or pkg.module:DataModule.")] = None,
    data_batches: Annotated[int, typer.Option(help="Batches of --data to use.")] = 8,
    tolerance: ToleranceOptions = ToleranceOptions(),  # noqa: B008 - expanded to flags
    localize: Annotated[bool, typer.Option(
        help="For a failing artifact of a format that can say, name the first diverging "
        "node and its module.")] = False,
    source: SourceOptions = SourceOptions(),  # noqa: B008 - expanded to flags
    json_file: opt.JsonPath = None,
    markdown: opt.MarkdownPath = None,
    record: Annotated[bool, typer.Option(
        "--record/--no-record", help="Store results in the manifest.")] = True,
    on: opt.On = None,
    targets: opt.TargetsFile = None,
    parallel: opt.Parallel = None,
) -> int:
    """Prove every artifact computes what the model computes (exit 1 when one doesn't)."""
    from toolkit.cli.console import check_writable_file
    from toolkit.parity.verify import verify_bundle

    reads = [bundle_dir, data, against]
    check_writable_file(json_file, "--json", reads)
    check_writable_file(markdown, "--markdown", reads)
    if on:
        from toolkit.cli.remote import on_devices

        return on_devices(ctx, bundle_dir, on, targets, parallel, json_file)

    json_to_stdout(json_file)
    outcome = verify_bundle(
        bundle_dir, formats=split_list(format), against=against, reference=reference,
        data=data, data_batches=data_batches, tolerance=tolerance, localize=localize,
        record=record, precisions=split_list(precision), source=source,
    )
    _report(outcome, json_file, markdown)
    return 0 if outcome.passed else 1


def _report(outcome: Any, json_file: Path | None, markdown: Path | None) -> None:
    from rich.markup import escape

    from toolkit.bundle import atomic_path
    from toolkit.cli.console import err_console
    from toolkit.parity.render import print_reports, to_markdown

    for note in outcome.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    print_reports(outcome.reports, console=table_console(),
                  divergences=outcome.divergences)
    write_json(json_file, outcome.to_dict())
    if markdown:
        with atomic_path(markdown, suffix=".md") as tmp:
            tmp.write_text(to_markdown(outcome.reports, outcome.divergences) + "\n")
        console.print(f"wrote {markdown}")
