"""Feeds from .npz files, directories of them and a real LightningDataModule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolkit.errors import UsageError
from toolkit.source.data import load_feeds, split_labels
from toolkit.spec import TensorSpec, parse_input

DYNAMIC = [parse_input("x:1-4-16x3")]
STATIC = [TensorSpec.static("x", (4, 3))]


def _write(path: Path, n: int = 10, **extra: np.ndarray) -> Path:
    rng = np.random.default_rng(n)
    arrays = {"x": rng.standard_normal((n, 3)), "labels": np.arange(n) % 2, **extra}
    np.savez(path, **arrays)
    return path


def test_npz_split_into_opt_batches_with_labels(tmp_path: Path) -> None:
    feeds = load_feeds(str(_write(tmp_path / "d.npz")), DYNAMIC)
    assert [len(f["x"]) for f in feeds] == [4, 4, 2]
    assert feeds[0]["x"].dtype == np.float32  # fp64 data cast to the input's dtype
    inputs, labels = split_labels(feeds[2])
    assert list(inputs) == ["x"] and labels.tolist() == [0, 1]


def test_batch_size_max_batches_and_static_tail(tmp_path: Path) -> None:
    path = str(_write(tmp_path / "d.npz"))
    assert [len(f["x"]) for f in load_feeds(path, DYNAMIC, batch_size=8)] == [8, 2]
    assert len(load_feeds(path, DYNAMIC, max_batches=2)) == 2
    assert [len(f["x"]) for f in load_feeds(path, STATIC)] == [4, 4]  # tail of 2 dropped
    with pytest.raises(UsageError, match="batch size 32 is outside"):
        load_feeds(path, DYNAMIC, batch_size=32)


def test_directory_of_npz(tmp_path: Path) -> None:
    for i in range(3):
        _write(tmp_path / f"part{i}.npz", n=4)
    feeds = load_feeds(str(tmp_path), DYNAMIC)
    assert len(feeds) == 3 and all(f["x"].shape == (4, 3) for f in feeds)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"image": np.zeros((4, 3), np.float32)}, r"no array named 'x' \(found image\)"),
        ({"x": np.zeros((4, 5), np.float32)}, r"input 'x' has shape \[4, 5\]"),
        ({"x": np.zeros((4, 3), np.int64)}, "input 'x' has dtype int64"),
    ],
)
def test_mismatch_is_a_usage_error(tmp_path: Path, arrays: dict, match: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UsageError, match=match) as info:
        load_feeds(str(path), DYNAMIC, where="--calib-data")
    assert info.value.exit_code == 2 and "--calib-data" in str(info.value)


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="file not found"):
        load_feeds(str(tmp_path / "missing.npz"), DYNAMIC)
    with pytest.raises(UsageError, match="holds no .npz"):
        load_feeds(str(tmp_path), DYNAMIC)
    with pytest.raises(UsageError, match="importing"):
        load_feeds("no_such_pkg.mod:DM", DYNAMIC)
    with pytest.raises(UsageError, match="expected a .npz"):
        load_feeds(str(tmp_path / "data.csv"), DYNAMIC)


# -- a real LightningDataModule ----------------------------------------------------------------
pl = pytest.importorskip("pytorch_lightning")
torch = pytest.importorskip("torch")


class TupleDataModule(pl.LightningDataModule):
    """Yields (x, label) batches of 4 from a TensorDataset, like most image DataModules."""

    def setup(self, stage: str) -> None:
        assert stage in ("validate", "test")
        x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
        self.dataset = torch.utils.data.TensorDataset(x, torch.arange(10) % 2)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.dataset, batch_size=4)

    test_dataloader = val_dataloader


class DictDataModule(TupleDataModule):
    def val_dataloader(self) -> list[dict[str, torch.Tensor]]:
        return [{"x": torch.ones(2, 3), "label": torch.tensor([1, 0])}]


def test_lightning_datamodule_tuple_batches() -> None:
    feeds = load_feeds(f"{__name__}:TupleDataModule", DYNAMIC, max_batches=2, split="test")
    assert [f["x"].shape for f in feeds] == [(4, 3), (4, 3)]
    assert feeds[0]["labels"].tolist() == [0, 1, 0, 1]


def test_lightning_datamodule_dict_batches() -> None:
    (feed,) = load_feeds(f"{__name__}:DictDataModule", DYNAMIC)
    assert feed["x"].dtype == np.float32 and feed["labels"].tolist() == [1, 0]


def test_lightning_batch_with_too_few_tensors() -> None:
    specs = [*DYNAMIC, parse_input("mask:1-4-16x3")]
    with pytest.raises(UsageError, match="mask"):
        load_feeds(f"{__name__}:TupleDataModule", specs)
