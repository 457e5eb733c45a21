"""A LightningDataModule of the demo's test images, as a user would pass --eval-data with."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from toolkit.demo.detection_data import make_detection_data

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover
    import pytorch_lightning as pl


class ShapesEval(pl.LightningDataModule):
    def test_dataloader(self) -> DataLoader:
        data = make_detection_data(96, split="test", seed=3)
        tensors = (torch.from_numpy(data["x"]), torch.from_numpy(data["boxes"]),
                   torch.from_numpy(data["labels"]))
        return DataLoader(TensorDataset(*tensors), batch_size=32)
