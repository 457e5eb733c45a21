"""A tiny LightningModule and its data for the callback tests (importable by subprocesses)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover
    import pytorch_lightning as pl


class TinyRegressor(pl.LightningModule):
    def __init__(self, hidden: int = 16, noisy: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 3))
        self.example_input_array = torch.randn(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.hparams.noisy:  # a model no artifact can match: parity must fail
            out = out + torch.rand_like(out)
        return out

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self):
        return _loader(0)

    def val_dataloader(self):
        return _loader(1)


def _loader(seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g)
    y = torch.stack([x[:, :3].sum(1), x[:, 3:6].sum(1), x[:, 6:].sum(1)], 1)
    return DataLoader(TensorDataset(x, y), batch_size=32)
