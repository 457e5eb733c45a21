"""`toolkit demo`: train the demo CNN on the packaged digits, export it everywhere, check it.

Runs offline on a fresh machine in a few minutes on 2 CPU cores: the data ships inside the
package (toolkit/demo/digits.npz), so nothing is downloaded.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.console import console
from toolkit.errors import BackendUnavailable, UsageError

MODEL_REF = "toolkit.demo.model:DigitsCNN"
QUICK_EPOCHS = 1
CALIB_SAMPLES = 256  # from the training split; int8 wants >= 100 samples
OUR_ENTRIES = ("digits.ckpt", "shapes_detector.ckpt", "data", "bundle")


def demo_command(
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Directory for the checkpoint, the data files and the bundle.")]
    = Path("out/demo"),
    epochs: Annotated[int | None, typer.Option(
        min=1, help="Training epochs (default 3; 1 with --quick).")] = None,
    quick: Annotated[bool, typer.Option(
        help="Train one epoch and skip the slow pt2 (AOTInductor) compile.")] = False,
    force: Annotated[bool, typer.Option(
        help="Retrain and replace the checkpoint and every artifact.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for weights and data order.")] = 0,
    task: Annotated[str, typer.Option(
        help="classification (digits CNN) or detection (a shapes detector with NMS).")]
    = "classification",
    devices: Annotated[int, typer.Option(
        min=1, help="Train with strategy='ddp' on this many CPU processes; the bundle comes "
        "from ExportCallback (classification).")] = 1,
) -> int:
    """Train a small model with Lightning on embedded data (digits, or generated shapes for
    --task detection), export it to every format this machine supports, verify each artifact
    and print the summary."""
    from toolkit.demo.train import CHECKPOINT_NAME, DEFAULT_EPOCHS

    if task not in ("classification", "detection"):
        raise UsageError(f"--task {task}: use classification or detection")
    if task == "detection":
        from toolkit.cli.demo_detection import detection_demo

        out = out if out != Path("out/demo") else Path("out/demo-detection")
        _check_out(out)
        return detection_demo(out, epochs=epochs, quick=quick, force=force, seed=seed)

    if devices > 1:
        from toolkit.cli.demo_ddp import ddp_demo, is_worker_rank

        if task != "classification":
            raise UsageError("--devices runs the classification demo under DDP; the detection "
                             "demo trains on one process")
        if not is_worker_rank():
            _check_out(out)
        return ddp_demo(out, devices=devices, epochs=epochs or (
            QUICK_EPOCHS if quick else DEFAULT_EPOCHS), quick=quick, seed=seed)
    started = time.perf_counter()
    _check_out(out)
    n_epochs = epochs or (QUICK_EPOCHS if quick else DEFAULT_EPOCHS)
    console.print("[bold]toolkit demo[/] — DigitsCNN on scikit-learn's handwritten digits "
                  "(packaged; 8×8 upscaled to 3×32×32)")

    ckpt = out / CHECKPOINT_NAME
    _header(1, "train")
    if ckpt.is_file() and not force:
        accuracy = _reuse_checkpoint(ckpt, epochs is not None)
    else:
        accuracy = _train(out, n_epochs, seed)

    _header(2, "evaluation and calibration data")
    eval_path, calib_path = _write_data(out / "data")

    # OpenVINO where its extra is installed (make demo's dev install has it); else skipped
    targets = ["onnx", "openvino", "torchscript"] + ([] if quick else ["pt2"]) + ["trt"]
    precisions = ["fp32", "fp16", "int8"]
    _header(3, f"export → {', '.join(targets)}   precisions {', '.join(precisions)}")
    code = _export(ckpt, out / "bundle", targets, precisions, eval_path, calib_path, force)
    if code == 0:
        from toolkit.cli.demo_common import bench_what_ran

        bench_what_ran(out / "bundle", ["onnx", "openvino"], ["fp32", "int8"], [1])

    seconds = time.perf_counter() - started
    colour = "green" if code == 0 else "red"
    console.print(f"[bold]test accuracy[/] {accuracy:.2%} (PyTorch, {ckpt})")
    console.print(f"[bold]bundle[/] {out / 'bundle'}   [{colour}]exit {code}[/]   "
                  f"{seconds:.0f} s in all")
    return code


def _header(number: int, text: str) -> None:
    console.print(f"\n[bold cyan]{number}/3[/] [bold]{text}[/]")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; choose a directory")
    # Write only into a new directory or one an earlier demo made: never litter a user's folder.
    if out.is_dir() and any(out.iterdir()) and not any((out / e).exists() for e in OUR_ENTRIES):
        raise UsageError(f"--out {out} is not empty and holds no earlier demo; choose a new "
                         "directory")


def _train(out: Path, epochs: int, seed: int) -> float:
    from toolkit.demo.train import train

    console.print(f"  training {epochs} epoch{'s' * (epochs != 1)} on CPU (seed {seed}) …")
    started = time.perf_counter()
    ckpt, accuracy = train(out, epochs=epochs, seed=seed)
    console.print(f"  [green]✓[/] {ckpt}  test accuracy {accuracy:.2%}  "
                  f"{time.perf_counter() - started:.1f}s")
    return accuracy


def _reuse_checkpoint(ckpt: Path, epochs_given: bool) -> float:
    from toolkit.demo.data import DigitsDataModule
    from toolkit.demo.model import DigitsCNN
    from toolkit.demo.train import evaluate

    note = " (--epochs ignored)" if epochs_given else ""
    console.print(f"  • reusing {ckpt}{note}; pass --force to retrain")
    try:
        model = DigitsCNN.load_from_checkpoint(str(ckpt), map_location="cpu",
                                               weights_only=True)
    except Exception as err:  # truncated file, another model's checkpoint, ...
        raise UsageError(f"{ckpt} can't be loaded as the demo model ({type(err).__name__}); "
                         "pass --force to retrain it") from err
    accuracy = evaluate(model, DigitsDataModule())
    console.print(f"  [green]✓[/] test accuracy {accuracy:.2%}")
    return accuracy


def _write_data(data_dir: Path) -> tuple[Path, Path]:
    """Labelled test split for the accuracy gate; a slice of train to calibrate INT8."""
    from toolkit.demo.data import write_split_npz

    eval_path = write_split_npz(data_dir / "test.npz", "test")
    calib_path = write_split_npz(data_dir / "calib.npz", "train", limit=CALIB_SAMPLES)
    console.print(f"  [green]✓[/] {eval_path} (labelled test split), {calib_path} "
                  f"({CALIB_SAMPLES} training images)")
    return eval_path, calib_path


def _export(ckpt: Path, bundle_dir: Path, targets: list[str], precisions: list[str],
            eval_path: Path, calib_path: Path, force: bool) -> int:
    from toolkit.cli.demo_common import step_printer
    from toolkit.cli.export import print_step, print_summary
    from toolkit.export.pipeline import PrecisionOptions, SourceOptions, export

    result = export(
        str(ckpt), to=targets, out=bundle_dir, source_options=SourceOptions(model=MODEL_REF),
        force=force,
        precisions=precisions,
        precision_options=PrecisionOptions(
            calib_data=str(calib_path), calib_batches=CALIB_SAMPLES,  # i.e. all of it
            calib_method="minmax", eval_data=str(eval_path), max_accuracy_drop=1.0),
        on_step=step_printer(print_step),
    )
    print_summary(result)
    code = result.exit_code
    unavailable = [s for s in result.steps if s.status == "unavailable"]
    if unavailable:
        names = sorted({f"{s.target}" for s in unavailable})
        console.print(f"[yellow]note:[/] {', '.join(names)} not available on this machine "
                      "(skipped; the demo still passes)")
    # A backend missing here is expected on a CPU-only machine, not a failure of the demo.
    return 0 if code == BackendUnavailable.exit_code else code
