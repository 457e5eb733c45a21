"""`toolkit inspect --layers`: each artifact's compute layers, the precision each runs in, the
share of MACs at each precision, and the measured sensitivity of the layers INT8 kept in float
(from the accuracy-controlled search's record)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.cli.console import console
from toolkit.errors import ToolkitError

FULL_TABLE = 40  # layers listed one by one up to this many; past it, those off the majority


def bundle_layers(bundle: Any, info: dict[str, Any]) -> None:
    """Adds `layers` to each artifact row of `info` (inspect's bundle info)."""
    from toolkit import formats

    shapes = {spec.name: list(spec.opt) for spec in bundle.inputs}
    records = {(r.format, r.precision, r.path): r for r in bundle.all_artifacts}
    for row in info.get("artifacts") or []:
        record = records.get((row["format"], row["precision"], row["path"]))
        fmt = formats.get(row["format"])
        if record is None or fmt.layers is None or record.path is None:
            row["layers"] = {"unavailable": f"no per-layer reading of {row['format']} files "
                             "here"}
            continue
        try:
            report = fmt.hook("layers")(bundle.path_of(record), shapes,
                                        getattr(record, "inference_precision", None))
        except ToolkitError as err:  # a backend missing here: said for this artifact only
            row["layers"] = {"unavailable": str(err)}
            continue
        row["layers"] = report.to_dict()
        fallback = _fallback_of(bundle, record, fmt)
        if fallback:
            row["layers"]["fallback"] = fallback


def file_layers(path: Path, info: dict[str, Any]) -> None:
    from toolkit import formats
    from toolkit.bundle import Bundle

    if info.get("artifacts") and Bundle.is_bundle(path.parent):
        bundle_layers(Bundle.open(path.parent), info)
        return
    fmt = formats.by_suffix(path.suffix)
    if fmt is None or fmt.layers is None:
        info["layers"] = {"unavailable": f"no per-layer reading of {path.suffix} files"}
        return
    shapes = {}
    if fmt.describe is not None:
        shapes = {spec.name: list(spec.opt) for spec in fmt.hook("describe")(path)[0]}
    info["layers"] = fmt.hook("layers")(path, shapes, None).to_dict()


def _fallback_of(bundle: Any, record: Any, fmt: Any) -> dict[str, Any] | None:
    """The accuracy-controlled search that made this file, or the file it was built from."""
    candidates = [record]
    for name in fmt.builds_from:
        found = bundle.artifact(name, record.precision, fmt.int8_layout_needed)
        if found is not None:
            candidates.append(found)
    for candidate in candidates:
        transform = getattr(candidate, "transform", None)
        if isinstance(transform, dict) and isinstance(transform.get("fallback"), dict):
            fallback = transform["fallback"]
            ranking = {r.get("node"): r for r in fallback.get("ranking") or []
                       if isinstance(r, dict)}
            kept = [str(n) for n in fallback.get("kept_fp32") or []]
            gained = _recovered_when_added(fallback)
            return {"gate": fallback.get("gate"), "passed": fallback.get("passed"),
                    "kept_fp32": [{"node": n, "recovered": gained.get(n),
                                   "alone": ranking.get(n, {}).get("recovered"),
                                   "mac_share": ranking.get(n, {}).get("mac_share")}
                                  for n in kept],
                    "from": candidate.path}
    return None


def _recovered_when_added(fallback: dict[str, Any]) -> dict[str, float]:
    """What each kept layer recovered of the output error in the round that added it (on top
    of those kept before: a layer may help only beside another)."""
    gained: dict[str, float] = {}
    before = fallback.get("full_int8_output_error")
    wide = None
    for trial in fallback.get("tried") or []:
        if not isinstance(trial, dict):
            continue
        if trial.get("wide") != wide:  # the wide pass starts again from full INT8
            before, wide = fallback.get("full_int8_output_error"), trial.get("wide")
        error = trial.get("output_error")
        if isinstance(before, (int, float)) and isinstance(error, (int, float)):
            gained[str(trial.get("added"))] = float(before) - float(error)
        before = error
    return gained


def render_layers(info: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    rows = [(f"{a['format']}/{a.get('variant') or a['precision']}", a.get("layers"))
            for a in info.get("artifacts") or []]
    if "layers" in info:
        rows.append((str(info.get("file")), info["layers"]))
    for label, report in rows:
        if not report:
            continue
        if "unavailable" in report:
            console.print(f"[bold]{escape(label)}[/] layers: {escape(report['unavailable'])}")
            continue
        shares = report["mac_share"]
        counts = report["layer_counts"]
        summary = " · ".join(f"{p} {100 * shares.get(p, 0):.2f}% of MACs ({n} "
                             f"layer{'s' if n != 1 else ''})" for p, n in counts.items())
        console.print(f"[bold]{escape(label)}[/] layers: {escape(summary)}")
        console.print(f"  read from {escape(report['source'])}")
        for warning in report.get("warnings") or []:
            console.print(f"  [yellow]{escape(warning)}[/]")
        layers = report["layers"]
        majority = max(shares, key=lambda p: shares[p]) if shares else None
        shown = layers if len(layers) <= FULL_TABLE else \
            [layer for layer in layers if layer["precision"] != majority]
        kept = {k["node"]: k for k in (report.get("fallback") or {}).get("kept_fp32", [])}
        if shown:
            table = Table("layer", "op", "precision", "MACs",
                          "kept by the search (output error recovered when added)")
            for layer in shown:
                sensitivity = kept.get(layer["name"])
                table.add_row(escape(layer["name"]), layer["op"], layer["precision"],
                              f"{layer['macs']:,}" if layer["macs"] is not None else "?",
                              f"yes ({sensitivity['recovered']:.3g})"
                              if sensitivity and sensitivity["recovered"] is not None
                              else ("yes" if sensitivity else ""))
            console.print(table)
        if len(shown) < len(layers):
            rest = len(layers) - len(shown)
            console.print(f"  {'the other' if shown else 'all'} {rest} layers at {majority} "
                          "(each one in --json)")
