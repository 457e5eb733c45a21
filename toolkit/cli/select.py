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
) -> int:
    """Choose the fastest artifact that passed parity (and its accuracy gate) for a device."""
    opt.finite(latency_budget=latency_budget, max_accuracy_drop=max_accuracy_drop)
    from toolkit.cli.console import check_writable_file
    from toolkit.deploy.select import NothingQualifies, select

    check_writable_file(json_file, "--json", [bundle_dir])
    json_to_stdout(json_file)
    try:
        selection = select(bundle_dir, objective=objective.strip().lower(), batch=batch,
                           latency_budget_ms=latency_budget,
                           max_accuracy_drop=max_accuracy_drop, device=device)
    except NothingQualifies as failed:
        _report(failed.selection, json_file)
        raise
    _report(selection, json_file)
    winner = selection.winner
    assert winner is not None and winner.row is not None
    from rich.markup import escape

    console.print(f"selected [bold]{winner.label}[/] ({escape(str(winner.record.path))}) for "
                  f"{escape(selection.device)}, batch {winner.row.batch}"
                  + ("" if selection.recorded else " — not recorded"), highlight=False)
    console.print(f"next: toolkit deploy {escape(str(bundle_dir))} --triton REPO",
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
                  title=f"select · {objective} · {escape(selection.device)}",
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
