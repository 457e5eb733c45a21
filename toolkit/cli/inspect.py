"""`toolkit inspect BUNDLE|FILE`: inputs, outputs, shapes, dtypes, sizes, opset, versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli import options as opt
from toolkit.cli.console import check_writable_file, console, human_size, json_to_stdout, write_json


def inspect_command(
    ctx: typer.Context,
    target: Annotated[Path, typer.Argument(help="A bundle directory or an artifact file.")],
    json_path: opt.JsonPath = None,
    on: opt.On = None,
    targets: opt.TargetsFile = None,
    parallel: opt.Parallel = None,
    layers: Annotated[bool, typer.Option(
        "--layers", help="Each artifact's compute layers: the precision each runs in (int8, "
                         "fp16, bf16, fp32), the share of MACs at each, and the measured "
                         "sensitivity of the layers INT8 kept in float.")] = False,
) -> int:
    """Show what a bundle or artifact holds, with each artifact's parity and latest p50 (and
    per device, for devices reached with --on)."""
    from toolkit.bundle import Bundle
    from toolkit.errors import UsageError

    check_writable_file(json_path, "--json", [target])
    if on:
        from toolkit.cli.remote import on_devices

        return on_devices(ctx, target, on, targets, parallel, json_path)
    json_to_stdout(json_path)
    if target.is_dir():
        from toolkit.transaction import reading

        with reading(target):  # an export running meanwhile is waited for; a killed one undone
            bundle = Bundle.open(target)
            info = _bundle_info(bundle)
            if layers:
                from toolkit.cli.layers import bundle_layers

                bundle_layers(bundle, info)
    elif target.is_file():
        info = _file_info(target)
        if layers:
            from toolkit.cli.layers import file_layers

            file_layers(target, info)
    else:
        raise UsageError(f"{target} not found")
    _render(info)
    if layers:
        from toolkit.cli.layers import render_layers

        render_layers(info)
    write_json(json_path, info)
    return 0


def _bundle_info(bundle: Any) -> dict[str, Any]:
    from toolkit.bundle import variant_label

    artifacts = []
    for record in bundle.all_artifacts:
        row = {k: getattr(record, k) for k in ("format", "precision", "layout", "path",
                                               "size_bytes", "exporter", "opset", "nodes",
                                               "device", "sha256", "target")}
        row["on_device"] = {
            name: {"parity": None if found.parity is None else
                   ("pass" if found.parity.passed else "FAIL"),
                   "bench": latest_p50(found.bench.to_json() if found.bench and
                                       found.bench.sha256 == record.sha256 else None)}
            for name, found in record.on_device.items()}
        row["variant"] = variant_label(record)
        row["files"] = [f.name for f in record.files]
        parity = record.parity
        row["parity"] = None if parity is None else ("pass" if parity.passed else "FAIL")
        row["bench"] = latest_p50(record.bench.to_json() if record.bench else None)
        accuracy = record.accuracy
        if accuracy:
            row["accuracy"] = {"metric": accuracy.metric or "accuracy",
                               "fp32": accuracy.fp32.score, "score": accuracy.reduced.score,
                               "passed": accuracy.passed}
        artifacts.append(row)
    # what inspect prints is the manifest's JSON (its sections as the file holds them)
    shown = bundle.manifest.to_json()
    reference = {name: latest_p50(record)
                 for name, record in (bundle.manifest.bench or {}).items()}
    return {
        "bundle": str(bundle.root), "inputs": shown["inputs"], "outputs": shown["outputs"],
        "source": shown.get("source"), "golden": shown.get("golden"), "artifacts": artifacts,
        "environment": shown.get("environment"), "reference_bench": reference,
        "task": shown.get("task"), "detection": shown.get("detection"),
        "devices": {name: {k: v for k, v in device.to_json().items() if k != "selected"}
                    | {"selected": device.selected.artifact if device.selected else None}
                    for name, device in bundle.targets.items()},
    }


def latest_p50(bench: dict[str, Any] | None) -> dict[str, Any] | None:
    """The latest bench of one artifact: p50 ms per batch, with where and when it ran."""
    if not bench or not bench.get("rows"):
        return None
    return {"p50_ms": {str(row["batch"]): row.get("p50_ms") for row in bench["rows"]},
            "device": bench.get("device"), "threads": bench.get("threads"),
            "date": bench.get("date")}


def _p50_text(bench: dict[str, Any] | None) -> str:
    if not bench:
        return "—"
    cells = [f"{ms:.2f} (b{batch})" for batch, ms in bench["p50_ms"].items() if ms is not None]
    return " ".join(cells) + f" · {bench.get('device')}"


def _file_info(path: Path) -> dict[str, Any]:
    from toolkit.bundle import Bundle

    if Bundle.is_bundle(path.parent):
        info = _bundle_info(Bundle.open(path.parent))
        info["artifacts"] = [a for a in info["artifacts"] if a["path"] == path.name]
        if info["artifacts"]:
            return info
    from toolkit import formats

    fmt = formats.by_suffix(path.suffix)
    if fmt is not None and fmt.inspect is not None:
        return fmt.hook("inspect")(path)
    return {"file": str(path), "size_bytes": path.stat().st_size,
            "note": "inputs and outputs are recorded in the bundle's manifest.json"}


def _escaped(value: Any) -> Any:
    """Every string as inert text: a manifest's or a model file's strings are neither rich
    markup nor terminal control sequences (ESC, OSC and C1 controls are shown escaped)."""
    from rich.markup import escape

    from toolkit.spec import CONTROL_CHARS

    if isinstance(value, str):
        return escape(CONTROL_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}", value))
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


def _render(info: dict[str, Any]) -> None:
    from rich.table import Table


    info = _escaped(info)
    title = info.get("bundle") or info.get("file")
    console.print(f"[bold]{title}[/]")
    if "size_bytes" in info:
        console.print(f"size {human_size(info['size_bytes'])}")
    if info.get("inputs"):
        table = Table("input", "dtype", "shape", "min", "opt", "max", title_justify="left")
        for spec in info["inputs"]:
            table.add_row(spec["name"], str(spec["dtype"]), str(spec.get("shape")),
                          str(spec.get("min", "")), str(spec.get("opt", "")),
                          str(spec.get("max", "")))
        console.print(table)
    if info.get("outputs"):
        table = Table("output", "dtype", "shape")
        for spec in info["outputs"]:
            table.add_row(spec["name"], str(spec["dtype"]), str(spec.get("shape", "")))
        console.print(table)
    if info.get("artifacts"):
        table = Table("format", "precision", "file", "size", "exporter", "opset", "nodes",
                      "parity", "p50 ms (batch)", title="artifacts", title_justify="left")
        for a in info["artifacts"]:
            files = " + ".join([str(a.get("path")), *a.get("files", [])])
            table.add_row(a["format"], a.get("variant") or a["precision"], files,
                          human_size(a.get("size_bytes")), str(a.get("exporter") or ""),
                          str(a.get("opset") or ""), str(a.get("nodes") or ""),
                          str(a.get("parity") or "not checked"), _p50_text(a.get("bench")))
        for name, bench in (info.get("reference_bench") or {}).items():
            table.add_row(name, "fp32", "(in-process)", "", "", "", "", "", _p50_text(bench))
        console.print(table)
    if info.get("devices"):
        _device_matrix(info)
    for key in ("opset", "nodes", "producer"):
        if key in info:
            console.print(f"{key}: {info[key]}")
    if info.get("ops"):
        top = ", ".join(f"{op}×{n}" for op, n in list(info["ops"].items())[:12])
        console.print(f"ops: {top}")
    if info.get("detection"):
        det = info["detection"]
        nms = f", NMS IoU {det['nms_iou']}" if det.get("nms_iou") is not None else ""
        console.print(f"task: {det.get('task') or 'detection'} ({det.get('convention')}), "
                      f"K={det.get('max_detections')}, score threshold "
                      f"{det.get('score_threshold')}{nms}; outputs num_detections, boxes "
                      f"(xyxy px), scores, labels{_instance_outputs(det)}")
    for a in info.get("artifacts") or []:
        acc = a.get("accuracy")
        if acc and acc.get("score") is not None:
            console.print(f"{a['format']}/{a['precision']}: {acc['metric']} "
                          f"{acc['score']:.2%} (fp32 {acc['fp32']:.2%}) "
                          f"{'within' if acc['passed'] else 'OUTSIDE'} the gate")
    if info.get("source"):
        src = info["source"]
        console.print(f"source: {src.get('kind')} {src.get('path')} ({src.get('class', '')})")
    env = info.get("environment")
    if env:
        libs = ", ".join(f"{k} {v}" for k, v in (env.get("libraries") or {}).items())
        console.print(f"exported on: {env.get('cpu')} · python {env.get('python')} · {libs}")
    if info.get("note"):
        console.print(info["note"])


def _device_matrix(info: dict[str, Any]) -> None:
    """Artifact × device: parity and the smallest batch's p50 as each device found them (an
    artifact built on a device shows only there)."""
    from rich.table import Table

    devices = list(info["devices"])

    def cell(a: dict[str, Any], name: str) -> str:
        if a.get("target") not in (None, name):
            return ""
        found = {"parity": a.get("parity"), "bench": a.get("bench")} \
            if a.get("target") == name else (a.get("on_device") or {}).get(name)
        return _cell(found)

    def label(a: dict[str, Any]) -> str:
        return f"{a['format']}/{a.get('variant') or a['precision']}" + (
            f" @{a['target']}" if a.get("target") else "")

    title = "on devices (parity · p50 ms)"
    if len(devices) <= 6:  # artifacts down, devices across
        table = Table("artifact", "built on", *devices, title=title, title_justify="left")
        for a in info["artifacts"]:
            table.add_row(label(a), a.get("target") or "here",
                          *[cell(a, name) for name in devices])
    else:  # a fleet: devices down, so every column stays readable
        shown = [a for a in info["artifacts"] if not a.get("target")] + \
            [a for a in info["artifacts"] if a.get("target")]
        table = Table("device", *[label(a) for a in shown], title=title, title_justify="left")
        for name in devices:
            table.add_row(name, *[cell(a, name) for a in shown])
    console.print(table)
    for name, device in info["devices"].items():
        from toolkit.cli.remote import runtime_versions

        what = ", ".join([*(str(device[k]) for k in ("gpu", "cpu") if device.get(k)),
                          *filter(None, [runtime_versions(device), device.get("l4t")])])
        chosen = f" · selected {device['selected']}" if device.get("selected") else ""
        console.print(f"{name}: {device.get('hostname')} · {what} · toolkit "
                      f"{device.get('toolkit_version')}{chosen}")


def _cell(found: dict[str, Any] | None) -> str:
    if not found or (found.get("parity") is None and not found.get("bench")):
        return "—"
    bench = found.get("bench") or {}
    p50 = [ms for ms in (bench.get("p50_ms") or {}).values() if ms is not None]
    mark = {"pass": "[green]✓[/]", "FAIL": "[red]✗[/]"}.get(found.get("parity") or "", "·")
    return f"{mark} {p50[0]:.2f}" if p50 else mark


def _instance_outputs(section: dict[str, Any]) -> str:
    """', masks [.., H/4, W/4] (probability > 0.5)' and the like, from a detection section."""
    info = section.get("instances") or {}
    output = info.get("output")
    if output == "masks":
        return (f", masks at 1/{info.get('mask_stride')} of the input (probability > "
                f"{info.get('mask_threshold')})")
    if output == "keypoints":
        return f", keypoints [{info.get('keypoints')}, 3] (x, y px, score)"
    if output == "oriented_boxes":
        return f", oriented_boxes (cx, cy, w, h px, angle: {info.get('angle')})"
    return ""
