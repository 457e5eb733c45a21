"""Train DigitsCNN on the packaged digits with Lightning's Trainer; save a checkpoint."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

CHECKPOINT_NAME = "digits.ckpt"
DEFAULT_EPOCHS = 3


def _quiet_lightning() -> None:
    # The demo prints its own steps; Lightning's banners and hints about workers/logging on
    # a small in-memory dataset would bury them.
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric",
                 "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")


def make_trainer(epochs: int, deterministic: bool = True, **overrides: Any) -> Any:
    import pytorch_lightning as pl

    options: dict[str, Any] = dict(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        deterministic=deterministic,
    )
    options.update(overrides)
    return pl.Trainer(**options)


def evaluate(model: Any, datamodule: Any) -> float:
    """Test-split accuracy (0..1) of `model` through Lightning's test loop."""
    _quiet_lightning()
    results = make_trainer(1).test(model, datamodule=datamodule, verbose=False)
    return float(results[0]["test_acc"])


def train(
    out_dir: str | Path,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    *,
    limit: int | None = None,
    batch_size: int = 64,
    lr: float = 3e-3,
) -> tuple[Path, float]:
    """Train, test and save `out_dir/digits.ckpt`; returns (checkpoint path, test accuracy).

    Seeded and deterministic: the same seed gives the same weights on the same machine.
    `limit` caps the samples per split (for quick tests).
    """
    import pytorch_lightning as pl

    from toolkit.demo.data import DigitsDataModule
    from toolkit.demo.model import DigitsCNN

    _quiet_lightning()
    pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = DigitsDataModule(batch_size=batch_size, limit=limit, seed=seed)
    model = DigitsCNN(lr=lr)
    trainer = make_trainer(epochs)
    trainer.fit(model, datamodule=datamodule)
    accuracy = float(trainer.test(model, datamodule=datamodule, verbose=False)[0]["test_acc"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT_NAME
    # Write beside, then rename: an interrupted run leaves no half-written checkpoint.
    tmp = out / f".{CHECKPOINT_NAME}.tmp"
    trainer.save_checkpoint(tmp, weights_only=True)
    tmp.replace(ckpt)
    return ckpt, accuracy
