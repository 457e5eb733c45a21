"""`toolkit bench BUNDLE`: latency of every artifact, a results JSON and a regression gate."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from toolkit import formats as format_table
from toolkit.bench.options import BenchOptions
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
from toolkit.groups import only
from toolkit.source.options import SourceOptions

DEFAULT_THRESHOLD = 5.0  # percent, for the comparison's status column without a gate


@takes_groups
def bench_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(
        help="A bundle directory, or one artifact file (a file that says its own inputs runs "
        "on its own).")],
    format: opt.Formats = None,
    precision: opt.Precisions = None,
    source: Annotated[SourceOptions, only("device", "trust_checkpoint", "allow_modified")
                      ] = SourceOptions(),  # noqa: B008 - expanded to flags
    timing: BenchOptions = BenchOptions(),  # noqa: B008 - expanded to flags
    json_path: opt.JsonPath = None,
    markdown: opt.MarkdownPath = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write a PNG: latency distributions and throughput against batch.")
    ] = None,
    baseline: Annotated[Path | None, typer.Option(
        help="A results JSON from an earlier 'toolkit bench --json' to compare against.")
    ] = None,
    fail_if_slower: Annotated[str | None, typer.Option(
        help="With --baseline: exit 1 when any p50 is slower by more than this, e.g. 5%.")
    ] = None,
    with_reference: Annotated[bool, typer.Option(
        f"--{format_table.REFERENCE}/--no-{format_table.REFERENCE}",
        help="Also time the reference (the PyTorch model), rebuilt from the manifest's source "
        f"(imports its factory or checkpoint class; same as --format {format_table.REFERENCE}"
        ",...).")
    ] = False,
    on: opt.On = None,
    targets: opt.TargetsFile = None,
    parallel: opt.Parallel = None,
) -> int:
    """Time each artifact's latency (p50/p90/p99, throughput, cold start) per batch size."""
    if on:
        from toolkit.cli.remote import on_devices

        return on_devices(ctx, Path(target), on, targets, parallel, json_path)
    from toolkit import bench as tb
    from toolkit.bench.driver import environment, plan_bench, run_plan
    from toolkit.errors import UsageError

    # Every option is checked before the first (possibly minutes-long) measurement.
    threshold = tb.parse_threshold(fail_if_slower) if fail_if_slower is not None else None
    if threshold is not None and baseline is None:
        raise UsageError("--fail-if-slower needs --baseline OLD.json to compare against")
    baseline_rows = tb.load_results(baseline) if baseline is not None else None
    for option, path in (("--json", json_path), ("--markdown", markdown), ("--plot", plot)):
        check_writable_file(path, option, reads=[target])
    json_to_stdout(json_path)
    formats = [format_table.canonical(f) for f in split_list(format)] or None
    from toolkit.transaction import reading

    with reading(target):  # an export running meanwhile is waited for
        plan = plan_bench(target, formats=formats, precisions=split_list(precision) or None,
                          timing=timing, include_eager=with_reference, source=source)

        console.print(
            f"[bold]toolkit bench[/] {escape(str(target))}: "
            f"{', '.join(e.name for e in plan.entries)} · batch "
            f"{','.join(map(str, plan.batches))} · {plan.device} · {plan.threads} threads",
            soft_wrap=True)

        def note(line: str) -> None:
            err_console.print(f"[yellow]note:[/] {escape(line)}", soft_wrap=True)

        results = run_plan(plan, on_result=_progress, on_note=note)
        if not results:
            raise UsageError(f"{target}: nothing could be benchmarked here (see the notes "
                             "above)")

    from toolkit.bench import render as report

    out = table_console()
    out.print(report.bench_table(results, title=f"latency · {escape(str(plan.target))}"))
    _print_warnings(results)
    env = environment(plan)
    rows = [m.to_row(include_times=True) for m in results]
    comparisons = None
    if baseline_rows is not None:
        comparisons = tb.compare(rows, baseline_rows, threshold if threshold is not None
                                 else DEFAULT_THRESHOLD)
        out.print(report.comparison_table(comparisons))
    if json_path is not None:
        doc = tb.results_document(rows, env, target=str(plan.target), command=_command_line(),
                                  settings={**timing.timing(), "seed": 0}, notes=plan.notes)
        if str(json_path) == "-":
            write_json(json_path, doc)
        else:
            tb.save_results(json_path, doc)
            err_console.print(f"wrote {json_path}")
    if markdown is not None:
        _write_markdown(markdown, results, env, plan, comparisons)
        console.print(f"wrote {markdown}")
    if plot is not None:
        report.plot(results, plot, title=f"toolkit bench {plan.target.name}")
        console.print(f"wrote {plot}")
    if comparisons is not None and threshold is not None:
        tb.check_regressions(comparisons)  # CheckFailed -> exit 1
        console.print(f"[green]no regression over {threshold:g}%[/]")
    return 0


def _progress(m: Any) -> None:
    from toolkit.bench.render import artifact_name, fmt_cold, fmt_ms

    console.print(
        f"  {artifact_name(m.labels):<18} batch {m.batch:<3} "
        f"p50 {fmt_ms(m.p50 * 1e3):>7} ms  p99 {fmt_ms(m.p99 * 1e3):>7} ms  "
        f"n={m.iterations:<5} cold {fmt_cold(m.cold_start_s * 1e3 if m.cold_start_s else None)}"
        + ("  [yellow]noisy[/]" if m.noisy else ""),
        highlight=False, soft_wrap=True)


def _print_warnings(results: list[Any]) -> None:
    """Each reason for distrust once, with the rows it applies to."""
    from toolkit.bench.render import artifact_name

    rows_by_reason: dict[str, list[str]] = {}
    for m in results:
        for line in m.warnings:
            name = f"{artifact_name(m.labels)} b{m.batch}"
            rows_by_reason.setdefault(line, []).append(name)
    for line, names in rows_by_reason.items():
        err_console.print(f"[yellow]warning:[/] {', '.join(names)}: {escape(line)}",
                          soft_wrap=True,
                          highlight=False)


def _write_markdown(path: Path, results: list[Any], env: dict[str, Any], plan: Any,
                    comparisons: Any) -> None:
    from toolkit.bench import render as report
    from toolkit.bundle import atomic_path

    text = report.bench_markdown(results, env, title=f"toolkit bench {plan.target.name}")
    if plan.notes:
        text += "\n## Notes\n\n" + "\n".join(f"- {n}" for n in plan.notes) + "\n"
    if comparisons is not None:
        text += "\n" + report.comparison_markdown(comparisons)
    with atomic_path(path, suffix=".md") as tmp:
        tmp.write_text(text, encoding="utf-8")


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["toolkit", *sys.argv[1:]])
