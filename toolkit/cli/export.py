"""`toolkit export SOURCE --to FORMAT[,FORMAT...]`: the formats come from the table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit import formats
from toolkit.cli import options as opt
from toolkit.cli.console import (
    check_writable_file,
    console,
    err_console,
    json_to_stdout,
    split_list,
    table_console,
    write_json,
)
from toolkit.cli.group_flags import takes_groups
from toolkit.detection.options import DetectionOptions
from toolkit.export.job import BackendOptions, PrecisionOptions
from toolkit.source.options import SourceOptions

STATUS_STYLE = {"ok": "green", "exists": "dim", "parity-failed": "red", "failed": "red",
                "accuracy-failed": "red", "not-exported": "yellow",
                "unavailable": "yellow"}


@takes_groups
def export_command(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(
        help="A Lightning .ckpt, a factory pkg.module:fn, a model file that starts a bundle, "
        "or a bundle dir.")],
    to: opt.ExportFormats = [formats.DEFAULT_TARGET],  # noqa: B006 - typer reads the default
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Bundle directory (default: out/<source name>).")] = None,
    weights: Annotated[Path | None, typer.Option(
        help="A state_dict file for a factory source.")] = None,
    input: Annotated[list[str] | None, typer.Option(
        "--input", "-i", help="NAME:SHAPE[:DTYPE], e.g. x:1-16x3x224x224. Repeatable.")] = None,
    static: Annotated[bool, typer.Option(
        help="Keep the example's batch fixed instead of dynamic 1-64.")] = False,
    precision: opt.ExportPrecisions = ["fp32"],  # noqa: B006 - typer reads the default
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Check each artifact against the golden samples.")] = True,
    force: opt.Force = False,
    source_options: SourceOptions = SourceOptions(),  # noqa: B008 - expanded to flags
    precision_options: PrecisionOptions = PrecisionOptions(),  # noqa: B008 - expanded to flags
    backends: BackendOptions = BackendOptions(),  # noqa: B008 - each format's group, as flags
    detection: DetectionOptions = DetectionOptions(),  # noqa: B008 - expanded to flags
    json_path: opt.JsonPath = None,
    on: opt.On = None,
    targets: opt.TargetsFile = None,
    parallel: opt.Parallel = None,
) -> int:
    """Export SOURCE into a bundle of artifacts, each checked against the PyTorch outputs."""
    from toolkit.export.pipeline import export

    check_writable_file(json_path, "--json", [out, source, weights])
    if on:  # built on the devices themselves, from a bundle's files
        return _export_on(ctx, source, split_list(to), on, targets, parallel, json_path)
    json_to_stdout(json_path)
    from rich.markup import escape

    console.print(f"[bold]toolkit export[/] {escape(source)} → {', '.join(split_list(to))}")
    result = export(
        source, split_list(to), out, weights=str(weights) if weights else None,
        inputs=split_list(input), static=static, force=force,
        precisions=split_list(precision), verify=verify, source_options=source_options,
        precision_options=precision_options, backends=backends, detection=detection,
        on_step=print_step,
    )
    print_summary(result)
    write_json(json_path, result.to_dict())
    return result.exit_code


def print_step(step: Any) -> None:
    from rich.markup import escape

    style = STATUS_STYLE.get(step.status, "white")
    mark = {"ok": "✓", "exists": "•", "unavailable": "!"}.get(step.status, "✗")
    parity = f"  {parity_figure(step.parity.to_json())}" if step.parity else ""
    console.print(
        f"  [{style}]{mark}[/] {step.target:<12} {step.variant:<8} "
        f"{step.seconds:6.1f}s  [{style}]{step.status}[/]{parity}", highlight=False)
    if step.detail and step.status != "ok":
        (err_console if step.error else console).print(f"      {escape(step.detail)}",
                                                       highlight=False, soft_wrap=True)
    elif step.detail:
        console.print(f"      [dim]{escape(step.detail)}[/]", highlight=False, soft_wrap=True)


def print_summary(result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from toolkit.bundle import variant_label
    from toolkit.cli.console import human_size

    bundle = result.bundle
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    coded = [s for s in result.steps if s.status.code]
    if coded:  # each format's own code, and why the process exits with the worst
        each = ", ".join(f"{s.target} {s.variant} {s.status} ({s.status.code})" for s in coded)
        console.print(f"exit {result.exit_code}: {escape(each)} [dim](a failed check 1 > "
                      "not made 2 > backend missing 3)[/]", highlight=False, soft_wrap=True)
    table = Table(title=f"bundle {escape(str(bundle.root))}", title_justify="left")
    for column in ("format", "precision", "file", "size", "parity", "worst error"):
        table.add_column(column)
    for record in bundle.artifacts:
        parity = record.parity
        verdict = ("[green]pass[/]" if parity.passed else "[red]FAIL[/]") \
            if parity else "[dim]not checked[/]"
        table.add_row(record.format, variant_label(record), escape(str(record.path)),
                      human_size(record.size_bytes), verdict,
                      parity_figure(parity.to_json()) if parity else "—")
    if not bundle.artifacts:
        return
    table_console().print(table)
    root = escape(str(bundle.root))
    console.print("[bold]next:[/]")
    steps = [(f"toolkit verify {root}", "the full parity gate (--data: real data)"),
             (f"toolkit bench {root}", "latency of every artifact")]
    elsewhere = _built_on_target(installed=False)
    if elsewhere:  # their runtime isn't here: they are built where they run
        steps.append((f"toolkit export {root} --to {','.join(elsewhere)}",
                      "on the target (bundle copied, or --on TARGET)"))
    for command, why in steps:
        console.print(f"  {command:<44} [dim]# {why}[/]", soft_wrap=True)


def _built_on_target(installed: bool | None = None) -> list[str]:
    """The formats built from a bundle's files rather than the model (what `--on` builds), or
    those of them whose runtime is (or isn't) installed here."""
    from toolkit import formats

    return [f.name for f in formats.exportable() if f.builds_from
            and (installed is None or f.installed == installed)]


def parity_figure(parity: dict[str, Any]) -> str:
    """The one number that says how close an artifact is: the worst element error, or for a
    detector the matched detections and the worst IoU."""
    detection = parity.get("detection")
    if detection:
        iou = detection.get("worst_iou")
        judged = detection["reference"] - detection.get("tolerated_missing", 0)
        from toolkit.detection.instance_parity import headline

        extra = headline(parity.get("instances"))
        return (f"matched {detection['matched']}/{judged}, worst IoU "
                + (f"{iou:.4f}" if iou is not None else "—") + (f", {extra}" if extra else ""))
    worst = max((o.get("max_abs", 0) or 0 for o in parity.get("outputs", {}).values()),
                default=None)
    return f"max abs err {worst:.2e}" if worst is not None else "—"


def _export_on(ctx: typer.Context, source: str, to: list[str], on: list[str],
               targets: str | None,
               parallel: int | None, json_path: Path | None) -> int:
    from toolkit.bundle import Bundle
    from toolkit.cli.remote import on_devices
    from toolkit.errors import UsageError

    on_target = ",".join(_built_on_target())
    if not Bundle.is_bundle(source):
        raise UsageError(f"--on builds from a bundle: export {source} here first (--out DIR), "
                         f"then toolkit export DIR --to {on_target} --on TARGET")
    names = [formats.canonical(f) for f in to]
    from_model = [n for n in names if not formats.get(n).builds_from]
    if from_model:
        raise UsageError(f"--to {','.join(from_model)} --on: these are exported from the model "
                         "here; on a device the toolkit builds what comes from the bundle's "
                         f"files ({on_target})")
    return on_devices(ctx, Path(source), on, targets, parallel, json_path,
                      builds=tuple(names))
