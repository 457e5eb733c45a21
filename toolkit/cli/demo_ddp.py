"""`toolkit demo --devices N`: the digits CNN trained with strategy='ddp' on N CPU processes
(gloo), the bundle written by `toolkit.lightning.ExportCallback` at the end of fit.

Lightning's DDP launcher starts ranks 1..N-1 by running this same command again; they train,
meet rank zero at the callback's barrier while it exports, and print nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from toolkit.cli.console import console
from toolkit.errors import BackendUnavailable

CALIB_SAMPLES = 256


def is_worker_rank() -> bool:
    """True in a process Lightning's DDP launcher started for a rank other than zero."""
    return int(os.environ.get("LOCAL_RANK", "0")) != 0 or int(os.environ.get("NODE_RANK",
                                                                              "0")) != 0


def ddp_demo(out: Path, *, devices: int, epochs: int, quick: bool, seed: int) -> int:
    import pytorch_lightning as pl
    import torch

    from toolkit.demo.data import DigitsDataModule, write_split_npz
    from toolkit.demo.model import DigitsCNN
    from toolkit.demo.train import _quiet_lightning
    from toolkit.export.job import PrecisionOptions
    from toolkit.lightning import ExportCallback

    worker = is_worker_rank()
    started = time.perf_counter()
    data_dir = out / "data"
    if not worker:
        console.print(f"[bold]toolkit demo --devices {devices}[/] — DigitsCNN, strategy='ddp' "
                      f"on {devices} CPU processes (gloo); the bundle comes from "
                      "ExportCallback at the end of fit")
        eval_path = write_split_npz(data_dir / "test.npz", "test")
        calib_path = write_split_npz(data_dir / "calib.npz", "train", limit=CALIB_SAMPLES)
    else:
        eval_path, calib_path = data_dir / "test.npz", data_dir / "calib.npz"
    _quiet_lightning()
    pl.seed_everything(seed, workers=True, verbose=False)
    targets = ("onnx", "torchscript") if quick else ("onnx", "torchscript", "pt2")
    callback = ExportCallback(
        out / "bundle", to=targets, precision=("fp32", "fp16", "int8"),
        precision_options=PrecisionOptions(calib_data=str(calib_path),
                                           eval_data=str(eval_path)),
        on_failure="warn",
        force=True)  # every rank builds it; only rank zero exports
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=devices, strategy="ddp",
        deterministic=True, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, callbacks=[callback])
    model = DigitsCNN()
    trainer.fit(model, datamodule=DigitsDataModule(seed=seed))
    if torch.distributed.is_initialized():  # a clean exit on every rank (no gloo teardown)
        torch.distributed.destroy_process_group()
    if worker:
        return 0
    accuracy = _accuracy(model.eval(), DigitsDataModule(seed=seed), torch)
    result = callback.result
    from toolkit.cli.export import print_summary

    print_summary(result)
    code = result.exit_code
    code = 0 if code == BackendUnavailable.exit_code else code
    training = result.bundle.manifest.training or {}
    console.print(f"[bold]test accuracy[/] {accuracy:.2%} (PyTorch, world size "
                  f"{training.get('world_size')}, epochs {training.get('epochs_completed')})")
    colour = "green" if code == 0 else "red"
    console.print(f"[bold]bundle[/] {out / 'bundle'}   [{colour}]exit {code}[/]   "
                  f"{time.perf_counter() - started:.0f} s in all")
    return code


def _accuracy(model: object, datamodule: object, torch: object) -> float:
    """Test-split accuracy in plain PyTorch (no second Trainer inside the DDP process group)."""
    datamodule.setup("test")  # type: ignore[attr-defined]
    correct = total = 0
    with torch.inference_mode():  # type: ignore[attr-defined]
        for x, y in datamodule.test_dataloader():  # type: ignore[attr-defined]
            correct += int((model(x).argmax(1) == y).sum())  # type: ignore[operator]
            total += len(y)
    return correct / max(total, 1)
