"""`toolkit demo --task detection`: a small raw-head detector trained with Lightning on
generated shapes, exported with NMS in the graph, verified by IoU matching, scored by mAP for
eager and each artifact, and timed. Offline, under three minutes on 2 CPU cores."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.cli.console import console, table_console
from toolkit.errors import BackendUnavailable, UsageError

MODEL_REF = "toolkit.demo.detector:ShapesDetector"
# Deployment thresholds written into the graph; mAP is measured through them.
NMS = "iou=0.5,score=0.1,max=20"
EPOCHS, QUICK_EPOCHS = 10, 4
TRAIN_IMAGES, EVAL_IMAGES, CALIB_IMAGES = 2000, 200, 128


def detection_demo(out: Path, *, epochs: int | None, quick: bool, force: bool,
                   seed: int) -> int:
    from toolkit.demo.detector import CHECKPOINT_NAME

    started = time.perf_counter()
    console.print("[bold]toolkit demo --task detection[/] — ShapesDetector (raw head, stride 8) "
                  "on generated rectangles, ellipses and triangles (3×64×64)")
    ckpt = out / CHECKPOINT_NAME
    _header(1, "train")
    if ckpt.is_file() and not force:
        console.print(f"  • reusing {ckpt}; pass --force to retrain")
    else:
        _train(out, epochs or (QUICK_EPOCHS if quick else EPOCHS), seed)

    _header(2, "evaluation and calibration data")
    eval_path, calib_path = _write_data(out / "data", seed)

    targets = ["onnx", "openvino", "torchscript"] + ([] if quick else ["pt2"]) + ["trt"]
    _header(3, f"export → {', '.join(targets)} with NMS ({NMS}), precisions fp32, fp16, int8")
    result = _export(ckpt, out / "bundle", targets, eval_path, calib_path, force)

    _header(4, "mAP on the test split, eager and every artifact")
    _print_map(out / "bundle", eval_path)

    _header(5, "latency (short runs; use toolkit bench for the full measurement)")
    _bench(out / "bundle")

    code = result.exit_code
    code = 0 if code == BackendUnavailable.exit_code else code
    colour = "green" if code == 0 else "red"
    console.print(f"[bold]bundle[/] {out / 'bundle'}   [{colour}]exit {code}[/]   "
                  f"{time.perf_counter() - started:.0f} s in all")
    return code


def _header(number: int, text: str) -> None:
    console.print(f"\n[bold cyan]{number}/5[/] [bold]{text}[/]")


def _train(out: Path, epochs: int, seed: int) -> None:
    from toolkit.demo.detector import train_detector

    console.print(f"  training {epochs} epochs on {TRAIN_IMAGES} images, CPU, seed {seed} …")
    started = time.perf_counter()
    train_detector(epochs=epochs, n_train=TRAIN_IMAGES, seed=seed, checkpoint_dir=out)
    console.print(f"  [green]✓[/] {out}  {time.perf_counter() - started:.1f}s")


def _write_data(data_dir: Path, seed: int) -> tuple[Path, Path]:
    from toolkit.demo.detection_data import make_detection_data

    data_dir.mkdir(parents=True, exist_ok=True)
    eval_path, calib_path = data_dir / "test.npz", data_dir / "calib.npz"
    np.savez(eval_path, **make_detection_data(EVAL_IMAGES, split="test", seed=seed))
    np.savez(calib_path, x=make_detection_data(CALIB_IMAGES, split="val", seed=seed)["x"])
    console.print(f"  [green]✓[/] {eval_path} ({EVAL_IMAGES} images with boxes and labels), "
                  f"{calib_path} ({CALIB_IMAGES} images)")
    return eval_path, calib_path


def _export(ckpt: Path, bundle_dir: Path, targets: list[str], eval_path: Path,
            calib_path: Path, force: bool) -> Any:
    from toolkit.cli.demo_common import step_printer
    from toolkit.cli.export import print_step, print_summary
    from toolkit.export.pipeline import (
        DetectionOptions,
        PrecisionOptions,
        SourceOptions,
        export,
    )

    result = export(
        str(ckpt), to=targets, out=bundle_dir, source_options=SourceOptions(model=MODEL_REF),
        force=force,
        detection=DetectionOptions(nms=NMS), precisions=["fp32", "fp16", "int8"],
        # percentile calibration: with minmax, the symmetric TensorRT layout moved one of
        # this detector's scores by 0.19 on the real test images (parity fails at 0.15)
        precision_options=PrecisionOptions(
            calib_data=str(calib_path), calib_batches=4, calib_method="percentile",
            eval_data=str(eval_path), max_accuracy_drop=1.0),
        on_step=step_printer(print_step))
    print_summary(result)
    if any(s.status == "unavailable" for s in result.steps):
        console.print("[yellow]note:[/] TensorRT not available on this machine (skipped; "
                      "the demo still passes)")
    return result


def _print_map(bundle_dir: Path, eval_path: Path) -> None:
    from rich.table import Table

    from toolkit import runtime
    from toolkit.bundle import Bundle, artifact_label
    from toolkit.parity.task_eval import detection_evaluation
    from toolkit.source.rebuild import source_model

    bundle = Bundle.open(bundle_dir)
    evaluation = detection_evaluation(str(eval_path), bundle.inputs,
                                      bundle.detection)
    table = Table("runs", "mAP@[.5:.95]", "mAP@.5", "vs eager", title_justify="left")
    with runtime.model_runner(source_model(bundle), "eager") as eager:
        reference = evaluation(eager.infer)
    table.add_row("eager PyTorch", f"{reference['map']:.2f}", f"{reference['map_50']:.2f}", "")
    for record in bundle.artifacts:
        name = artifact_label(record)
        try:
            with runtime.load_artifact(bundle, record) as runner:
                got = evaluation(runner.infer)
        except (BackendUnavailable, UsageError) as err:
            table.add_row(name, "—", "—", f"not run here: {str(err)[:60]}")
            continue
        table.add_row(name, f"{got['map']:.2f}", f"{got['map_50']:.2f}",
                      f"{got['map'] - reference['map']:+.2f}")
    table_console().print(table)


def _bench(bundle_dir: Path) -> None:
    from toolkit.cli.demo_common import bench_what_ran

    bench_what_ran(bundle_dir, ["onnx", "openvino", "torchscript", "eager"],
                   ["fp32", "fp16", "int8"], [1, 4])
