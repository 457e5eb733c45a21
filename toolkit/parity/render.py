"""Render ParityReports: a rich table, the failure detail, and Markdown of the same.

The table has one row per (artifact, output): the worst of every statistic over all samples.
The detail names what a user needs to act on a failure: which outputs and samples, how many
elements, the worst element, where the errors fall (decade histogram), the smallest atol that
would have passed, and hints such as swapped outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from toolkit.parity.metrics import HISTOGRAM_LABELS
from toolkit.parity.report import OutputSummary, ParityReport, format_ranges

_STATUS_TEXT = {
    "pass": "pass", "fail": "FAIL", "missing": "MISSING", "extra": "EXTRA",
    "shape": "SHAPE", "dtype": "DTYPE",
}
_BARS = " ▁▂▃▄▅▆▇█"


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}e}" if value else "0"


def _cos(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6f}"


def histogram_text(counts: Sequence[int]) -> str:
    """`1e-7 ▇ 40 · 1e-6 ▂ 3`: decades of |error| holding elements, lower bound first."""
    top = max(counts, default=0)
    if not top:
        return "-"
    cells = []
    for label, count in zip(HISTOGRAM_LABELS, counts, strict=True):
        if count:
            bar = _BARS[max(1, round(count / top * (len(_BARS) - 1)))]
            cells.append(f"{label} {bar} {count}")
    return " · ".join(cells)


def _rows(reports: Sequence[ParityReport]) -> list[tuple[ParityReport, OutputSummary]]:
    return [(report, s) for report in reports for s in report.summaries()]


def _detail_lines(report: ParityReport) -> list[str]:
    """Plain-text lines describing every failure of one report (empty when it passed)."""
    lines: list[str] = []
    task_fail = report.task_failures()
    for s in report.summaries():
        if s.passed:
            continue
        where = f"samples {format_ranges(s.failed_samples)}" if s.failed_samples else "all samples"
        lines.append(f"{report.artifact} · {s.output}: {_STATUS_TEXT[s.status]} on {where} "
                     f"of {s.samples} (tolerance {s.tolerance.describe()})")
        reasons = dict.fromkeys(
            reason for r in report.results if r.output == s.output for reason in r.reasons)
        lines += [f"  - {reason}" for reason in list(reasons)[:5]]
        lines += [f"  - {msg}" for msg in task_fail.get(s.output, [])]
        if s.numel:
            lines.append(f"  elements out of tolerance: {s.violations}/{s.numel} "
                         f"({s.violations / s.numel:.2%}); NaN {s.nan_actual}, Inf {s.inf_actual}")
            if s.worst is not None:
                lines.append(f"  worst element: sample {s.worst_sample} index "
                             f"{list(s.worst.index)} expected {s.worst.expected:.6g} got "
                             f"{s.worst.actual:.6g} (|err| {_num(s.worst.abs_error)})")
            lines.append(f"  |error| histogram: {histogram_text(s.histogram)}")
            lines.append(f"  would pass with atol >= {_num(s.required_atol)} "
                         f"(rtol {s.tolerance.rtol:g}, satol {s.tolerance.satol:g}); "
                         f"min cosine {_cos(s.min_cosine)}")
        notes = dict.fromkeys(n for r in report.results if r.output == s.output for n in r.notes)
        lines += [f"  note: {note}" for note in notes]
    return lines


def failure_details(reports: Sequence[ParityReport]) -> list[str]:
    lines: list[str] = []
    for report in reports:
        lines += _detection_lines(report)
        lines += _detail_lines(report)
    return lines


def _detection_lines(report: ParityReport) -> list[str]:
    """A detection report's failures, with the first offending images."""
    if not hasattr(report, "detection_failures") or report.passed:
        return []
    lines = [f"{report.artifact} · detections: " + "; ".join(report.detection_failures())]
    combined = report.combined
    for image in (combined.offending_images[:3] if combined is not None else []):
        lines += [f"  - image {image.index}: {problem}" for problem in image.problems[:3]]
    lines += [f"  - {error}" for error in report.errors[:3]]
    return lines


def detection_rows(reports: Sequence[ParityReport]) -> list[list[str]]:
    """artifact, precision, samples, matched, worst IoU, max score diff, missing, extra, status"""
    rows = []
    for report in reports:
        combined = getattr(report, "combined", None)
        if combined is None:
            continue
        rows.append([report.artifact, report.precision, str(report.samples),
                     f"{combined.matched}/{combined.reference - combined.tolerated_missing}"
                     f" ({combined.matched_fraction:.1%})"
                     + (f" +{combined.tolerated_missing} borderline"
                        if combined.tolerated_missing else ""),
                     f"{combined.worst_iou:.4f}" if combined.worst_iou is not None else "—",
                     _num(combined.max_score_diff), f"{combined.missing}",
                     f"{combined.extra}", "pass" if report.passed else "FAIL"])
        instances = getattr(report, "instances", None)
        if instances is not None:  # masks, keypoints or oriented boxes: one more column
            from toolkit.detection.instance_parity import headline

            rows[-1].insert(-1, headline(instances.to_dict()) or "—")
    return rows


DETECTION_COLUMNS = ("artifact", "precision", "samples", "matched", "worst IoU",
                     "max score diff", "missing", "extra", "status")


def parity_table(reports: Sequence[ParityReport], title: str | None = "Parity") -> Any:
    """A rich Table: artifact, precision, output, max abs, p99 abs, max rel, cosine, status."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in ("artifact", "precision", "output"):
        table.add_column(name)
    for name in ("max abs", "p99 abs", "max rel", "cosine", "atol needed"):
        table.add_column(name, justify="right")
    table.add_column("status")
    for report, s in _rows(reports):
        style = "green" if s.passed else "bold red"
        table.add_row(
            report.artifact, report.precision, escape(s.output), _num(s.max_abs),
            _num(s.p99_abs),
            _num(s.max_rel), _cos(s.min_cosine), _num(s.required_atol),
            f"[{style}]{_STATUS_TEXT[s.status]}[/]",
        )
    return table


def print_reports(
    reports: Sequence[ParityReport],
    console: Any = None,
    divergences: Mapping[str, Any] | None = None,
) -> None:
    """Table, then each failure's detail, then localisation results (artifact -> Divergence)."""
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    if any(report.results for report in reports):
        console.print(parity_table(reports))
    rows = detection_rows(reports)
    if rows:
        from rich.table import Table

        columns = DETECTION_COLUMNS if all(len(r) == len(DETECTION_COLUMNS) for r in rows) \
            else (*DETECTION_COLUMNS[:-1], "instances", DETECTION_COLUMNS[-1])
        rows = [r if len(r) == len(columns) else [*r[:-1], "—", r[-1]] for r in rows]
        table = Table(*columns, title="Detection parity (IoU-matched)", title_justify="left")
        for row in rows:
            style = "green" if row[-1] == "pass" else "bold red"
            table.add_row(*row[:-1], f"[{style}]{row[-1]}[/]")
        console.print(table)
    for line in failure_details(reports):
        style = "red" if not line.startswith(" ") else None
        console.print(escape(line), style=style, highlight=False)
    for artifact, div in (divergences or {}).items():
        text = div.describe() if div is not None else "no intermediate tensor diverges"
        console.print(escape(f"{artifact}: {text}"), highlight=False)
    for report in reports:
        console.print(escape(report.summary_line()),
                      style="green" if report.passed else "bold red", highlight=False)


def to_markdown(
    reports: Sequence[ParityReport], divergences: Mapping[str, Any] | None = None
) -> str:
    """The same table and failure detail as Markdown."""
    lines = [
        "| artifact | precision | output | max abs | p99 abs | max rel | cosine | atol needed "
        "| status |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for report, s in _rows(reports):
        status = _STATUS_TEXT[s.status]
        lines.append(
            f"| {report.artifact} | {report.precision} | `{s.output}` | {_num(s.max_abs)} | "
            f"{_num(s.p99_abs)} | {_num(s.max_rel)} | {_cos(s.min_cosine)} | "
            f"{_num(s.required_atol)} | {status if s.passed else f'**{status}**'} |"
        )
    rows = detection_rows(reports)
    if rows:
        lines += ["", "| " + " | ".join(DETECTION_COLUMNS) + " |",
                  "|" + "---|" * len(DETECTION_COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    for report in reports:
        lines.append(f"- {report.summary_line()} — tolerance {report.tolerances.describe()}, "
                     f"{report.samples} sample(s), {report.date}")
    details = failure_details(reports)
    if details:
        lines += ["", "### Failures", ""]
        for line in details:
            lines.append(f"    {line}" if line.startswith("  ") else f"- {line}")
    if divergences:
        lines += ["", "### First divergence", ""]
        for artifact, div in divergences.items():
            text = div.describe() if div is not None else "no intermediate tensor diverges"
            lines.append(f"- {artifact}: {text}")
    return "\n".join(lines) + "\n"
