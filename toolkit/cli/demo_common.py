"""What both demos share: the step printer and the latency table of a bundle."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape

from toolkit.cli.console import console, table_console


def step_printer(print_step: Callable[[Any], None]) -> Callable[[Any], None]:
    """The export's step line, with a reason already shown (TensorRT missing, once per
    precision) not repeated."""
    shown: set[str] = set()

    def on_step(step: Any) -> None:
        if step.status == "unavailable" and step.detail in shown:
            step = dataclasses.replace(step, detail="", error=None)
        shown.add(step.detail)
        print_step(step)

    return on_step


def bench_what_ran(bundle_dir: Path, formats: Sequence[str], precisions: Sequence[str],
                   batches: Sequence[int]) -> None:
    """Time the bundle's artifacts of these formats that exist (OpenVINO only where its
    extra is installed), and print the table."""
    from toolkit.bench.driver import plan_bench, run_plan
    from toolkit.bench.options import BenchOptions
    from toolkit.bench.render import bench_table
    from toolkit.bundle import Bundle

    present = {record.format for record in Bundle.open(bundle_dir).artifacts}
    chosen = [f for f in formats if f in present or f == "eager"]
    plan = plan_bench(bundle_dir, formats=chosen, precisions=list(precisions),
                      timing=BenchOptions(batches=tuple(batches), budget_s=0.5, warmup_s=0.2,
                                          min_iters=20))
    results = run_plan(plan, save=True,
                       on_note=lambda line: console.print(f"  [dim]{escape(line)}[/]"))
    table_console().print(bench_table(results, title=f"latency · {bundle_dir}"))
