"""The embedded demo: packaged data, the DataModule, DigitsCNN and a short real training run.

The full `toolkit demo` (training plus every export) runs in `make demo`, not here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit.demo import data
from toolkit.demo.data import DigitsDataModule, npz_split, write_split_npz
from toolkit.demo.model import DigitsCNN
from toolkit.spec import TensorSpec

X_SPEC = TensorSpec("x", "float32", (1, 3, 32, 32), (4, 3, 32, 32), (64, 3, 32, 32))


# -- packaged data -------------------------------------------------------------------------
def test_packaged_npz_is_small_complete_and_split():
    assert data.DIGITS_NPZ.is_file()
    assert data.DIGITS_NPZ.stat().st_size < 100 * 1024
    raw = data.load_raw()
    assert raw["images"].shape == (1797, 8, 8) and raw["images"].dtype == np.uint8
    assert int(raw["images"].max()) == 16
    counts = [int((raw["split"] == i).sum()) for i in range(3)]
    assert sum(counts) == 1797 and min(counts) > 100
    # Stratified: every digit appears in every split.
    for i in range(3):
        assert set(np.unique(raw["labels"][raw["split"] == i])) == set(range(10))


def test_packaged_npz_loads_without_scikit_learn(monkeypatch):
    """In process (a subprocess spent 10 s importing torch and Lightning for this)."""
    monkeypatch.setitem(sys.modules, "sklearn", None)  # any sklearn import now fails
    split = data.npz_split("test")
    assert (split["x"].shape, split["x"].dtype, split["labels"].dtype) == (
        (360, 3, 32, 32), np.float32, np.int64)


def test_pyproject_ships_the_npz_as_package_data():
    import tomllib

    config = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["toolkit.demo"]
    assert any(data.DIGITS_NPZ.match(p) for p in patterns)


def test_npz_split_shapes_dtypes_and_normalisation():
    train = npz_split("train")
    assert train["x"].shape == (1258, 3, 32, 32) and train["x"].dtype == np.float32
    assert train["labels"].dtype == np.int64 and set(np.unique(train["labels"])) == set(range(10))
    # Normalised with the training split's own statistics.
    assert abs(float(train["x"].mean())) < 0.01
    assert abs(float(train["x"].std()) - 1.0) < 0.01
    assert np.array_equal(train["x"][:, 0], train["x"][:, 2])  # grey copied to 3 channels
    with pytest.raises(Exception, match="not one of"):
        npz_split("holdout")


def test_written_npz_feeds_the_precision_data_loader(tmp_path):
    from toolkit.source.data import load_feeds

    path = write_split_npz(tmp_path / "sub" / "eval.npz", "val", limit=20)
    feeds = load_feeds(str(path), [X_SPEC], batch_size=8, where="--eval-data")
    assert [f["x"].shape[0] for f in feeds] == [8, 8, 4]
    assert all(f["labels"].dtype == np.int64 for f in feeds)


def test_datamodule_by_reference_without_arguments():
    from toolkit.source.data import load_feeds

    feeds = load_feeds("toolkit.demo.data:DigitsDataModule", [X_SPEC], split="test",
                       max_batches=2, where="--calib-data")
    assert feeds[0]["x"].shape == (64, 3, 32, 32) and feeds[0]["x"].dtype == np.float32
    assert feeds[0]["labels"].shape == (64,)


def test_datamodule_loaders():
    dm = DigitsDataModule(batch_size=16, limit=40)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert sum(len(b[1]) for b in dm.val_dataloader()) == 40
    assert sum(len(b[1]) for b in dm.test_dataloader()) == 40
    # The seeded shuffle repeats.
    again = next(iter(DigitsDataModule(batch_size=16, limit=40).train_dataloader()))
    assert torch.equal(y, again[1])


# -- model ---------------------------------------------------------------------------------
def test_model_shapes_and_hyperparameters():
    model = DigitsCNN(hidden=32).eval()
    example = model.example_input_array
    assert example.shape[0] >= 2 and tuple(example.shape[1:]) == (3, 32, 32)
    # Real digits, so golden samples are in the distribution INT8 is calibrated on.
    assert np.array_equal(example.numpy(), npz_split("test", limit=len(example))["x"])
    with torch.no_grad():
        assert model(example).shape == (example.shape[0], 10)
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert model.hparams.hidden == 32
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (3, 64, (3, 3), (1, 1)), (64, 64, (3, 3), (1, 1))]
    fcs = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(64 * 8 * 8, 32), (32, 10)]


# -- training ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return train_small(out / "a")


def train_small(out: Path) -> tuple[Path, float]:
    from toolkit.demo.train import train

    return train(out, epochs=1, seed=0, limit=400, batch_size=32)


@pytest.mark.slow
def test_one_epoch_on_a_subset_learns(trained):
    ckpt, accuracy = trained
    assert ckpt.is_file() and not list(ckpt.parent.glob(".*.tmp"))
    assert accuracy > 0.5  # chance is 0.1


@pytest.mark.slow
def test_training_is_deterministic(trained, tmp_path):
    first = torch.load(trained[0], map_location="cpu", weights_only=True)["state_dict"]
    second_ckpt, second_acc = train_small(tmp_path)
    second = torch.load(second_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert second_acc == trained[1]
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow
def test_checkpoint_loads_for_export_without_model_option(trained):
    from toolkit.source.load import load_model

    loaded = load_model(str(trained[0]))  # the class comes from the checkpoint
    assert loaded.source["class"] == "toolkit.demo.model:DigitsCNN"
    assert [s.name for s in loaded.inputs] == ["x"]
    assert loaded.inputs[0].has_dynamic_batch


# -- command -------------------------------------------------------------------------------
def test_demo_refuses_a_foreign_non_empty_out_dir(tmp_path):
    from typer.testing import CliRunner

    from toolkit.cli.app import app

    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "not empty" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
