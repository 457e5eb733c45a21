"""`toolkit select BUNDLE`: the verified artifact to ship, ranked on recorded bench results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli import options as opt
from toolkit.cli.console import console, json_to_stdout, table_console, write_json


def select_command(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="A bundle directory.")],
    objective: Annotated[str, typer.Option(
        help="latency (lowest p50) or throughput (most items/s) at --batch.")] = "latency",
    batch: Annotated[int | None, typer.Option(
        help="The batch size the choice is made for (default: the smallest).")] = None,
    latency_budget: Annotated[float | None, typer.Option(
        help="Milliseconds: the best throughput, at any measured batch, whose p99 fits.")
    ] = None,
    max_accuracy_drop: Annotated[float | None, typer.Option(
        help="Accuracy points a reduced precision may have lost against fp32.")] = None,
    device: opt.Device = "cpu",
    json_file: opt.JsonPath = None,
    target: Annotated[str | None, typer.Option(
        help="A device reached with --on: rank on what it measured (bench --on), among the "
        "artifacts it verified.", rich_help_panel="Devices (SSH)")] = None,
    on: opt.On = None,
    targets: opt.TargetsFile = None,
    parallel: opt.Parallel = None,
) -> int:
    """Choose the fastest artifact that passed parity (and its accuracy gate) for a device."""
    opt.finite(latency_budget=latency_budget, max_accuracy_drop=max_accuracy_drop)
    from toolkit.cli.console import check_writable_file
    from toolkit.deploy.select import NothingQualifies, select

    check_writable_file(json_file, "--json", [bundle_dir])
    json_to_stdout(json_file)
    if on:
        return _select_on(bundle_dir, on, targets, parallel, objective=objective.strip().lower(),
                          batch=batch, latency_budget=latency_budget,
                          max_accuracy_drop=max_accuracy_drop, json_file=json_file)
    try:
        selection = select(bundle_dir, objective=objective.strip().lower(), batch=batch,
                           latency_budget_ms=latency_budget,
                           max_accuracy_drop=max_accuracy_drop, device=device, target=target)
    except NothingQualifies as failed:
        _report(failed.selection, json_file)
        raise
    _report(selection, json_file)
    winner = selection.winner
    assert winner is not None and winner.row is not None
    from rich.markup import escape

    where = f"{selection.target} ({selection.device})" if selection.target else selection.device
    console.print(f"selected [bold]{winner.label}[/] ({escape(str(winner.record.path))}) for "
                  f"{escape(where)}, batch {winner.row.batch}"
                  + ("" if selection.recorded else " — not recorded"), highlight=False)
    console.print(f"next: toolkit deploy {escape(str(bundle_dir))} --triton REPO"
                  + (f" --target {escape(selection.target)}" if selection.target else ""),
                  highlight=False)
    return 0


def _report(selection: Any, json_file: Path | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    from toolkit.cli.console import err_console

    for note in selection.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    from toolkit.deploy.select import items_per_s

    objective = (f"throughput within p99 {selection.latency_budget_ms:g} ms"
                 if selection.latency_budget_ms is not None else selection.objective)
    table = Table("rank", "artifact", "batch", "p50 ms", "p99 ms", "items/s (p50)", "verdict",
                  title=f"select · {objective} · "
                  + (f"{escape(selection.target)} ({escape(selection.device)})"
                     if selection.target else escape(selection.device)),
                  title_justify="left")
    rank = 0
    for candidate in selection.candidates:
        row = candidate.row
        if candidate.excluded is None:
            rank += 1
        verdict = (f"excluded: {candidate.excluded}" if candidate.excluded
                   else "selected" if candidate is selection.winner
                   else f"lost: {candidate.lost}")
        table.add_row(str(rank) if candidate.excluded is None else "—", candidate.label,
                      str(row.batch) if row else "—", _ms(row.p50_ms if row else None),
                      _ms(row.p99_ms if row else None), _ms(items_per_s(row) if row else None),
                      escape(verdict))
    table_console().print(table)
    write_json(json_file, selection.to_dict())


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _select_on(bundle_dir: Path, on: list[str], targets: str | None, parallel: int | None, *,
               objective: str, batch: int | None, latency_budget: float | None,
               max_accuracy_drop: float | None, json_file: Path | None) -> int:
    """`select --on DEVICES`: verify and time the artifacts on each device (verify --on, then
    bench --on at --batch), then choose per device on its own numbers, as `select --target`
    does."""
    from rich.markup import escape

    from toolkit.cli.console import err_console
    from toolkit.deploy.select import NothingQualifies, select
    from toolkit.remote.fleet import run_fleet
    from toolkit.remote.session import Job
    from toolkit.remote.targets import resolve

    fleet = resolve(on, targets, parallel)

    def streamed(name: str, line: str) -> None:
        err_console.print(f"[dim]{escape(name)} │[/] {escape(line)}", highlight=False,
                          soft_wrap=True)

    checked = run_fleet(bundle_dir, fleet, Job("verify", ("{bundle}",)), on_line=streamed)
    args = ("{bundle}", *(("--batch", str(batch)) if batch is not None else ()))
    timed = run_fleet(bundle_dir, fleet, Job("bench", args), on_line=streamed)
    # a failed check there only removes candidates: exit 1 is for nothing qualifying
    rows, code = [], max((o.code for o in [*checked.outcomes, *timed.outcomes] if o.code != 1),
                         default=0)
    for outcome in timed.outcomes:
        name = outcome.target.name
        if outcome.code not in (0, 1):
            err_console.print(f"[red]{escape(name)}:[/] {escape(outcome.message)}",
                              highlight=False, soft_wrap=True)
            rows.append({"target": name, "exit": outcome.code, "message": outcome.message})
            continue
        try:
            chosen = select(bundle_dir, objective=objective, batch=batch,
                            latency_budget_ms=latency_budget,
                            max_accuracy_drop=max_accuracy_drop, target=name)
        except NothingQualifies as failed:
            _report(failed.selection, None)
            rows.append({"target": name, "exit": 1, "message": str(failed)})
            code = max(code, 1)
            continue
        _report(chosen, None)
        winner = chosen.winner
        assert winner is not None
        console.print(f"{escape(name)}: selected [bold]{winner.label}[/] "
                      f"({escape(str(winner.record.path))})", highlight=False)
        rows.append({"target": name, "exit": 0, **chosen.to_dict()})
    write_json(json_file, {"targets": rows})
    return code
