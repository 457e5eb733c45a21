"""`DigitsCNN`: the classic small CIFAR-sized CNN, as a LightningModule.

3×32×32 → conv 3→64 (3×3, pad 1) → ReLU → max-pool 2 → conv 64→64 → ReLU → max-pool 2
→ fc 64·8·8→512 → ReLU → fc 512→10 logits.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

EXAMPLE_BATCH = 4  # > 1 so the exported batch dimension stays dynamic


def example_batch(batch: int = EXAMPLE_BATCH) -> torch.Tensor:
    """The first `batch` test images, preprocessed (float32 batch×3×32×32)."""
    from toolkit.demo.data import split_tensors

    return split_tensors("test", limit=batch)[0]


class DigitsCNN(pl.LightningModule):
    def __init__(self, num_classes: int = 10, channels: int = 64, hidden: int = 512,
                 lr: float = 3e-3, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(3, channels, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * 8 * 8, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        # Real test digits, not noise: exporters trace with them and the bundle keeps them
        # as its first golden sample, so reduced precisions calibrated on digits are checked
        # on the data they were calibrated for.
        self.example_input_array = example_batch()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        self.log(f"{stage}_loss", loss, prog_bar=stage != "train")
        self.log(f"{stage}_acc", acc, prog_bar=True)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                                     weight_decay=self.hparams.weight_decay)
        # One-cycle over the whole run: ≥ 97% test accuracy within two short CPU epochs.
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.hparams.lr,
                                                       total_steps=total)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Record the class the way LightningCLI does, so `toolkit export digits.ckpt` needs no
        # --model; load_from_checkpoint drops the key (not an __init__ argument).
        hparams = checkpoint.setdefault("hyper_parameters", {})
        hparams["_class_path"] = f"{type(self).__module__}.{type(self).__qualname__}"
