"""Rendering of benchmark results: rich tables, Markdown, PNG plots, regression comparisons.

Rendering only: every number comes from the rows `Measurement.to_row` writes (or from
Measurements, which are turned into rows). rich is imported by the table functions and
matplotlib by `plot`, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from toolkit.bench.gate import Comparison
from toolkit.bench.measurement import Measurement
from toolkit.bundle import label_of
from toolkit.errors import BackendUnavailable, UsageError
from toolkit.formats import REFERENCE, get

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

Row = Mapping[str, Any]
SPEEDUP = f"vs {REFERENCE}"  # the column of speed-ups against the reference row
REFERENCE_TITLE = get(REFERENCE).title


# -- formatting -----------------------------------------------------------------------------
def fmt_ms(value: float | None) -> str:
    """Milliseconds with about three significant digits."""
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_cold(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms / 1e3:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def artifact_name(row: Row) -> str:
    fmt, precision = row.get("format"), row.get("precision")
    if fmt is None:
        return "?"
    if not precision:
        return str(fmt)
    return label_of(str(fmt), str(precision), row.get("layout"))


def note(row: Row) -> str:
    """The noise marker: why a row's numbers deserve a second look."""
    notes = [str(row["session_note"])] if row.get("session_note") else []
    if row.get("noisy"):
        notes.append(f"noisy (CV {row.get('cv', 0.0):.0%})")
    if row.get("stable") is False:
        notes.append("unstable")
    return ", ".join(notes)


def _rows(items: Iterable[Row | Measurement], include_times: bool = False) -> list[Row]:
    return [
        item.to_row(include_times=include_times) if isinstance(item, Measurement) else item
        for item in items
    ]


def speedups(rows: Sequence[Row]) -> list[float | None]:
    """Per row: reference p50 / row p50, against the reference row of the same batch, device
    and threads (a reference row that differs only in threads counts when it is the only one);
    None where there is no such row."""
    baseline = [r for r in rows if r.get("format") == REFERENCE and r.get("p50_ms")]

    def base(r: Row) -> float | None:
        same = [e for e in baseline
                if (e.get("batch"), e.get("device")) == (r.get("batch"), r.get("device"))]
        exact = [e for e in same if e.get("threads") == r.get("threads")]
        pick = exact or (same if len(same) == 1 else [])
        return pick[0]["p50_ms"] if pick else None

    out: list[float | None] = []
    for r in rows:
        b, p50 = base(r), r.get("p50_ms")
        out.append(b / p50 if b is not None and p50 else None)
    return out


def _columns(rows: Sequence[Row]) -> list[tuple[str, bool]]:
    """(header, right-aligned) per column; threads and GPU time only when rows have them."""
    cols = [("artifact", False), ("device", False)]
    if any(r.get("threads") is not None for r in rows):
        cols.append(("threads", True))
    cols += [("batch", True), ("p50 ms", True), ("p99 ms", True)]
    if any(r.get("gpu_p50_ms") is not None for r in rows):
        cols.append(("GPU p50 ms", True))
    cols += [("items/s", True), (SPEEDUP, True), ("cold start", True), ("note", False)]
    return cols


def _cells(rows: Sequence[Row]) -> list[list[str]]:
    headers = [name for name, _ in _columns(rows)]
    cells = []
    for row, speedup in zip(rows, speedups(rows), strict=True):
        values = {
            "artifact": artifact_name(row),
            "device": str(row.get("device") or "—"),
            "threads": str(row.get("threads") or "—"),
            "batch": str(row.get("batch", "—")),
            "p50 ms": fmt_ms(row.get("p50_ms")),
            "p99 ms": fmt_ms(row.get("p99_ms")),
            "GPU p50 ms": fmt_ms(row.get("gpu_p50_ms")),
            "items/s": fmt_rate(row.get("throughput")),
            SPEEDUP: "—" if speedup is None else f"{speedup:.2f}×",
            "cold start": fmt_cold(row.get("cold_start_ms")),
            "note": note(row),
        }
        cells.append([values[h] for h in headers])
    return cells


# -- bench rows -----------------------------------------------------------------------------
def bench_table(items: Iterable[Row | Measurement], *, title: str | None = None) -> Table:
    """A rich Table of bench rows: latency, throughput, speed-up against the reference, cold
    start."""
    from rich.table import Table

    rows = _rows(items)
    table = Table(title=title, header_style="bold")
    for name, right in _columns(rows):
        table.add_column(name, justify="right" if right else "left",
                         style="yellow" if name == "note" else None)
    for cells in _cells(rows):
        table.add_row(*cells)
    if any(note(r) for r in rows):
        table.caption = "noisy/unstable: variance too high to trust small differences"
    return table


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]], right: set[int]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def environment_markdown(environment: Mapping[str, Any]) -> str:
    """A bullet list of the machine and library versions (nested dicts flattened)."""
    lines = []
    for key, value in environment.items():
        if isinstance(value, Mapping):
            inner = ", ".join(f"{k} {v}" for k, v in value.items())
            lines.append(f"- **{key}**: {inner or '—'}")
        elif isinstance(value, (list, tuple)):
            lines.append(f"- **{key}**: {', '.join(map(str, value)) or '—'}")
        else:
            lines.append(f"- **{key}**: {'—' if value is None else value}")
    return "\n".join(lines)


def bench_markdown(
    items: Iterable[Row | Measurement],
    environment: Mapping[str, Any] | None = None,
    *,
    title: str = "Benchmark",
) -> str:
    """Markdown of the bench table, the noisy rows named, and an environment section."""
    rows = _rows(items)
    cols = _columns(rows)
    right = {i for i, (_, is_right) in enumerate(cols) if is_right}
    header = [name for name, _ in cols]
    parts = [f"# {title}", "", _md_table(header, _cells(rows), right), ""]
    parts.append(
        "Latencies are per call (one batch) in milliseconds; items/s is batch / mean latency; "
        f"“{SPEEDUP}” is the reference's ({REFERENCE_TITLE}) p50 / this p50 at the same batch "
        "and device."
        + (" GPU p50 is device time alone (CUDA events)." if "GPU p50 ms" in header else "")
    )
    flagged = [r for r in rows if note(r)]
    if flagged:
        parts += ["", "High run-to-run variance; re-run on an idle machine before trusting "
                      "small differences:", ""]
        parts += [f"- {_label(r)} batch {r.get('batch')}: {note(r)}" for r in flagged]
    if environment:
        parts += ["", "## Environment", "", environment_markdown(environment)]
    return "\n".join(parts) + "\n"


# -- regression comparison ------------------------------------------------------------------
COMPARISON_COLUMNS = ("configuration", "baseline p50 ms", "new p50 ms", "change", "status")


def _comparison_cells(comparisons: Sequence[Comparison]) -> list[list[str]]:
    cells = []
    for c in comparisons:
        change = c.change_pct
        status = c.status + (" (noisy)" if c.noisy and c.status != "same" else "")
        cells.append([
            c.name,
            fmt_ms(c.baseline_p50_ms),
            fmt_ms(c.new_p50_ms),
            "—" if change is None else f"{change:+.1f}%",
            status,
        ])
    return cells


def comparison_table(comparisons: Sequence[Comparison], *, title: str | None = None) -> Table:
    from rich.table import Table

    style = {"regressed": "bold red", "improved": "green", "new": "cyan", "missing": "yellow"}
    threshold = comparisons[0].threshold_pct if comparisons else 0.0
    table = Table(title=title or f"Against the baseline (fail over +{threshold:g}%)",
                  header_style="bold")
    for i, name in enumerate(COMPARISON_COLUMNS):
        table.add_column(name, justify="right" if i in (1, 2, 3) else "left")
    for c, cells in zip(comparisons, _comparison_cells(comparisons), strict=True):
        table.add_row(*cells, style=style.get(c.status))
    return table


def comparison_markdown(comparisons: Sequence[Comparison], *, title: str | None = None) -> str:
    threshold = comparisons[0].threshold_pct if comparisons else 0.0
    header = title or f"Against the baseline (fail over +{threshold:g}%)"
    body = _md_table(COMPARISON_COLUMNS, _comparison_cells(comparisons), {1, 2, 3})
    regressed = sum(c.regressed for c in comparisons)
    verdict = f"**{regressed} regressed**" if regressed else "No regression."
    return f"## {header}\n\n{body}\n\n{verdict}\n"


# -- plot ------------------------------------------------------------------------------------
def _label(row: Row) -> str:
    device = f" {row['device']}" if row.get("device") else ""
    return f"{artifact_name(row)}{device}"


def plot(items: Iterable[Row | Measurement], path: str | os.PathLike[str], *,
         title: str | None = None) -> None:
    """Write a PNG: the latency distribution of each configuration (box plots of the raw
    times) beside throughput against batch size per artifact. Rows need raw `times_ms`
    (`to_row(include_times=True)`) to appear in the distribution panel."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise BackendUnavailable(
            "plotting needs matplotlib: pip install 'toolkit[plot]' (or pip install matplotlib)"
        ) from None
    from toolkit.bundle import atomic_path

    rows = _rows(items, include_times=True)
    if not rows:
        raise UsageError("plot: no benchmark results to plot")
    # Figure + Agg canvas directly: no pyplot global state, no display needed
    fig = Figure(figsize=(12, max(4.0, 0.45 * len(rows) + 1.5)), layout="constrained")
    FigureCanvasAgg(fig)
    dist, rate = fig.subplots(1, 2, width_ratios=(3, 2))
    _plot_distribution(dist, rows)
    _plot_throughput(rate, rows)
    if title:
        fig.suptitle(title)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def _plot_distribution(ax: Any, rows: Sequence[Row]) -> None:
    timed = [r for r in rows if r.get("times_ms")]
    if not timed:
        ax.text(0.5, 0.5, "no raw times in these results", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    data = [r["times_ms"] for r in timed]
    labels = [f"{_label(r)} b{r.get('batch')}" for r in timed]
    style = {"whis": (1, 99), "showmeans": True, "flierprops": {"markersize": 2, "alpha": 0.4}}
    try:
        ax.boxplot(data, orientation="horizontal", **style)
    except TypeError:  # matplotlib < 3.10 has no `orientation`
        ax.boxplot(data, vert=False, **style)
    ax.set_yticks(range(1, len(labels) + 1), labels)
    ax.invert_yaxis()  # first row on top, as in the table
    low = min(min(d) for d in data)
    high = max(max(d) for d in data)
    if low > 0 and high / low > 20:  # artifacts an order of magnitude apart
        ax.set_xscale("log")
    ax.set_xlabel("latency per call (ms); whiskers p1–p99, triangle = mean")
    ax.set_title("Latency distribution")
    ax.grid(axis="x", alpha=0.3)


def _plot_throughput(ax: Any, rows: Sequence[Row]) -> None:
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r.get("throughput") is not None and r.get("batch") is not None:
            series.setdefault(_label(r), []).append((int(r["batch"]), float(r["throughput"])))
    for label, points in series.items():
        points.sort()
        ax.plot([b for b, _ in points], [t for _, t in points], marker="o", label=label)
    batches = sorted({b for pts in series.values() for b, _ in pts})
    if len(batches) > 1 and batches[0] > 0 and batches[-1] / batches[0] >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("items / s (batch / mean latency)")
    ax.set_title("Throughput")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize="small")
