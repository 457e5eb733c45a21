"""`toolkit export SOURCE --to onnx,torchscript,pt2,trt`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

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

STATUS_STYLE = {"ok": "green", "exists": "dim", "parity-failed": "red", "failed": "red",
                "accuracy-failed": "red",
                "unavailable": "yellow", "skipped": "dim"}


def export_command(
    source: Annotated[str, typer.Argument(
        help="A Lightning .ckpt, a factory pkg.module:fn, an .onnx file, or a bundle dir.")],
    to: opt.ExportFormats = ["onnx"],  # noqa: B006 - typer reads the default
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Bundle directory (default: out/<source name>).")] = None,
    model: opt.ModelClass = None,
    weights: Annotated[Path | None, typer.Option(
        help="A state_dict file for a factory source.")] = None,
    input: Annotated[list[str] | None, typer.Option(
        "--input", "-i", help="NAME:SHAPE[:DTYPE], e.g. x:1-16x3x224x224. Repeatable.")] = None,
    static: Annotated[bool, typer.Option(
        help="Keep the example's batch fixed instead of dynamic 1-64.")] = False,
    precision: opt.ExportPrecisions = ["fp32"],  # noqa: B006 - typer reads the default
    device: opt.Device = "cpu",
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Check each artifact against the golden samples.")] = True,
    force: opt.Force = False,
    trust_checkpoint: opt.TrustCheckpoint = False,
    allow_modified: opt.AllowModified = False,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: exporter's).")] = None,
    torchscript_mode: Annotated[str, typer.Option(
        "--ts-mode", help="TorchScript: auto, trace or script.")] = "auto",
    calib_data: Annotated[str | None, typer.Option(
        help="INT8 calibration data: .npz, a directory of .npz, or pkg.module:DataModule.")] = None,
    calib_batches: Annotated[int, typer.Option(help="Calibration batches to use.")] = 32,
    calib_method: Annotated[str, typer.Option(
        help="INT8 calibration: minmax, entropy or percentile.")] = "minmax",
    eval_data: Annotated[str | None, typer.Option(
        help="Labelled data (.npz with 'labels', or DataModule) for the accuracy gate.")] = None,
    max_accuracy_drop: Annotated[float, typer.Option(
        help="Accuracy points a reduced precision may lose.")] = 1.0,
    int8_layout: Annotated[str, typer.Option(
        help="INT8 ONNX layout: cpu (uint8 activations, fastest on ONNX Runtime CPU), trt "
        "(symmetric int8 Q/DQ for TensorRT), both, or auto: cpu for --to onnx, trt for --to "
        "trt.")] = "auto",
    workspace: Annotated[str | None, typer.Option(
        help="TensorRT workspace pool limit, e.g. 4G.")] = None,
    opt_level: Annotated[int | None, typer.Option(
        help="TensorRT builder optimization level 0-5.")] = None,
    timing_cache: Annotated[Path | None, typer.Option(
        help="TensorRT timing cache file, reused across builds.")] = None,
    version_compatible: Annotated[bool, typer.Option(
        help="TensorRT: build a version-compatible engine.")] = False,
    hardware_compat: Annotated[str | None, typer.Option(
        help="TensorRT hardware compatibility: none, ampere+, same-compute-capability.")] = None,
    dla_core: Annotated[int | None, typer.Option(
        help="TensorRT: run on this DLA core, GPU fallback on.")] = None,
    via: Annotated[str, typer.Option(
        help="TensorRT route: onnx (parser), torch-compile or torchscript (Torch-TensorRT)."
    )] = "onnx",
    profile: Annotated[list[str] | None, typer.Option(
        help="Extra TensorRT optimization profile, --input syntax. Repeatable.")] = None,
    model_arg: opt.ModelArgs = None,
    task: Annotated[str, typer.Option(
        help="auto (a detector following torchvision's convention is found by itself), "
        "detection, or none.")] = "auto",
    max_detections: Annotated[int, typer.Option(
        help="Detection: K, the rows of boxes/scores/labels per image.")] = 100,
    nms: Annotated[str | None, typer.Option(
        help="Detection, raw-head models (boxes [B,N,4], scores [B,N,C]): append class-aware "
        "NMS, e.g. iou=0.45,score=0.25[,max=100].")] = None,
    json_path: opt.JsonPath = None,
) -> int:
    """Export SOURCE into a bundle of artifacts, each checked against the PyTorch outputs."""
    opt.finite(max_accuracy_drop=max_accuracy_drop)
    from toolkit.export.pipeline import export

    # pure option parsing (no TensorRT import): checked up front even when no engine is built
    trt_options = _trt_options(workspace, opt_level, timing_cache, version_compatible,
                               hardware_compat, dla_core, profile)
    precision_options = {
        "calib_data": calib_data, "calib_batches": calib_batches,
        "calib_method": calib_method, "eval_data": eval_data,
        "max_accuracy_drop": max_accuracy_drop, "int8_layout": int8_layout.strip().lower(),
    }
    check_writable_file(json_path, "--json")
    json_to_stdout(json_path)
    from rich.markup import escape

    console.print(f"[bold]toolkit export[/] {escape(source)} → {', '.join(split_list(to))}")
    result = export(
        source, split_list(to), out, model=model, weights=str(weights) if weights else None,
        inputs=split_list(input),
        static=static, trust_checkpoint=trust_checkpoint, force=force,
        allow_modified=allow_modified, precisions=split_list(precision), device=device,
        verify=verify, opset=opset,
        torchscript_mode=torchscript_mode, trt_options=trt_options, trt_via=via,
        precision_options=precision_options, on_step=print_step,
        model_args=model_arg or [], task=task, max_detections=max_detections, nms=nms,
    )
    print_summary(result)
    write_json(json_path, result.to_dict())
    return result.exit_code


def _trt_options(workspace, opt_level, timing_cache, version_compatible, hardware_compat,
                 dla_core, profile):
    from toolkit.tensorrt.options import build_options

    return build_options(
        workspace=workspace, optimization_level=opt_level,
        timing_cache=str(timing_cache) if timing_cache else None,
        version_compatible=version_compatible, hardware_compatibility=hardware_compat,
        dla_core=dla_core, profiles=profile or [],
    )


def print_step(step: Any) -> None:
    from rich.markup import escape

    style = STATUS_STYLE.get(step.status, "white")
    mark = {"ok": "✓", "exists": "•", "unavailable": "!", "skipped": "-"}.get(step.status, "✗")
    parity = f"  {parity_figure(step.parity)}" if step.parity else ""
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
    for command, why in ((f"toolkit verify {root}", "the full parity gate (--data: real data)"),
                         (f"toolkit bench {root}", "latency of every artifact"),
                         (f"toolkit export {root} --to trt", "on the target GPU, bundle copied")):
        console.print(f"  {command:<44} [dim]# {why}[/]", soft_wrap=True)


def parity_figure(parity: dict[str, Any]) -> str:
    """The one number that says how close an artifact is: the worst element error, or for a
    detector the matched detections and the worst IoU."""
    detection = parity.get("detection")
    if detection:
        iou = detection.get("worst_iou")
        judged = detection["reference"] - detection.get("tolerated_missing", 0)
        return (f"matched {detection['matched']}/{judged}, worst IoU "
                + (f"{iou:.4f}" if iou is not None else "—"))
    worst = max((o.get("max_abs", 0) or 0 for o in parity.get("outputs", {}).values()),
                default=None)
    return f"max abs err {worst:.2e}" if worst is not None else "—"
