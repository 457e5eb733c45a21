"""The demo's data: scikit-learn's handwritten digits, shipped inside the package.

`digits.npz` holds the 1797 raw 8×8 images (uint8, 0..16), their labels and a fixed
train/val/test split (see make_data.py). Here they become what the classic CIFAR-sized CNN
takes: float32 N×3×32×32, upscaled bilinearly and normalised with the training set's
statistics. Nothing is downloaded and scikit-learn isn't needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from toolkit.errors import UsageError

DIGITS_NPZ = Path(__file__).with_name("digits.npz")
SPLITS = ("train", "val", "test")
INPUT_NAME = "x"  # DigitsCNN.forward(x): exported files and npz feeds use this name
IMAGE_SIZE = 32
CHANNELS = 3
NUM_CLASSES = 10
PIXEL_MAX = 16.0  # sklearn digits are integers 0..16
# Mean and std of the training split after scaling to [0, 1] and bilinear upscaling;
# fixed numbers so deployment code can reproduce the preprocessing exactly.
MEAN = 0.3056
STD = 0.3242


def load_raw(path: Path = DIGITS_NPZ) -> dict[str, np.ndarray]:
    """The packaged arrays: images uint8 N×8×8, labels uint8 N, split uint8 N (0/1/2)."""
    if not path.is_file():
        raise UsageError(
            f"demo data {path} is missing; reinstall toolkit, or regenerate it with "
            "`python -m toolkit.demo.make_data` (needs scikit-learn)"
        )
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in ("images", "labels", "split")}


def split_mask(raw: dict[str, np.ndarray], split: str) -> np.ndarray:
    if split not in SPLITS:
        raise UsageError(f"demo data split '{split}' is not one of {', '.join(SPLITS)}")
    return raw["split"] == SPLITS.index(split)


def to_input(images: np.ndarray) -> Any:
    """uint8 N×8×8 -> float32 torch tensor N×3×32×32, upscaled and normalised."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(PIXEL_MAX).unsqueeze(1)
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    x = (x - MEAN) / STD
    return x.expand(-1, CHANNELS, -1, -1).contiguous()


def split_tensors(split: str, limit: int | None = None) -> tuple[Any, Any]:
    """(x float32 N×3×32×32, labels int64 N) tensors for one split, optionally the first N."""
    import torch

    raw = load_raw()
    mask = split_mask(raw, split)
    images, labels = raw["images"][mask], raw["labels"][mask]
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return to_input(images), torch.from_numpy(labels.astype(np.int64))


def npz_split(split: str, limit: int | None = None) -> dict[str, np.ndarray]:
    """One split as numpy: {'x': float32 N×3×32×32, 'labels': int64 N}."""
    x, labels = split_tensors(split, limit)
    return {INPUT_NAME: x.numpy(), "labels": labels.numpy()}


def write_split_npz(path: str | Path, split: str = "test", limit: int | None = None) -> Path:
    """Write a split as an .npz for --eval-data / --calib-data (arrays 'x' and 'labels')."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **npz_split(split, limit))
    return path


class DigitsDataModule(pl.LightningDataModule):
    """Train/val/test loaders over the packaged digits; buildable with no arguments."""

    def __init__(self, batch_size: int = 64, limit: int | None = None, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.limit = limit  # cap on samples per split, for quick tests
        self.seed = seed
        self._datasets: dict[str, Any] = {}

    def setup(self, stage: str | None = None) -> None:
        from torch.utils.data import TensorDataset

        for split in SPLITS:
            if split not in self._datasets:
                self._datasets[split] = TensorDataset(*split_tensors(split, self.limit))

    def _loader(self, split: str, shuffle: bool) -> Any:
        import torch
        from torch.utils.data import DataLoader

        if split not in self._datasets:
            self.setup()
        # A seeded generator keeps the shuffle order the same from run to run.
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(self._datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          generator=generator, num_workers=0)

    def train_dataloader(self) -> Any:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> Any:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> Any:
        return self._loader("test", shuffle=False)
