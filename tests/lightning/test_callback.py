"""ExportCallback: the verified bundle comes out of the training run, under DDP too."""

from __future__ import annotations

import csv
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.lightning.tiny import TinyRegressor, pl
from toolkit import BenchOptions, BuildOptions, DetectionOptions, PrecisionOptions
from toolkit.bundle import Bundle
from toolkit.errors import CheckFailed, UsageError
from toolkit.lightning import ExportCallback

ROOT = Path(__file__).resolve().parents[2]


def trainer(tmp_path: Path, callback: ExportCallback, **kwargs) -> pl.Trainer:
    return pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, default_root_dir=tmp_path,
                      enable_progress_bar=False, enable_model_summary=False,
                      logger=pl.loggers.CSVLogger(tmp_path / "logs"), callbacks=[callback],
                      **kwargs)


def logged(tmp_path: Path) -> dict[str, str]:
    (metrics,) = (tmp_path / "logs").rglob("metrics.csv")
    values: dict[str, str] = {}
    for row in csv.DictReader(metrics.open()):
        values.update({k: v for k, v in row.items() if v})
    return values


def test_fit_end_exports_a_verified_bundle_and_logs_parity(tmp_path):
    model = TinyRegressor()
    callback = ExportCallback(tmp_path / "bundle", to=("onnx", "torchscript"),
                              bench=BenchOptions(batches=(1, 2), budget_s=1.0, warmup_s=0.3,
                                                 min_iters=20))
    trainer(tmp_path, callback).fit(model)
    bundle = Bundle.open(tmp_path / "bundle")
    assert {r["format"] for r in bundle.artifacts} == {"onnx", "torchscript"}
    assert all(r["parity"]["passed"] for r in bundle.artifacts)
    assert all(r["bench"]["rows"] for r in bundle.artifacts)
    training = bundle.manifest["training"]
    assert (training["epochs_completed"], training["world_size"]) == (2, 1)
    assert training["global_step"] > 0 and training["weights"] == "end of training"
    metrics = logged(tmp_path)
    assert metrics["export/onnx_fp32/parity_passed"] == "1.0"
    assert float(metrics["export/onnx_fp32/p50_ms_b1"]) > 0
    # the training run's own module is untouched: mode, device, gradients
    assert model.training and next(model.parameters()).requires_grad
    assert next(model.parameters()).device.type == "cpu" and model.trainer is not None
    # the golden outputs are the final weights' outputs
    sample = bundle.golden()[0]
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(sample.inputs["x"])).numpy()
    np.testing.assert_allclose(sample.outputs["output"], want, rtol=1e-6, atol=1e-6)


def test_failure_raises_by_default_and_warns_when_asked(tmp_path):
    noisy = TinyRegressor(noisy=True)
    with pytest.raises(CheckFailed, match="parity-failed"):
        trainer(tmp_path / "a", ExportCallback(tmp_path / "a" / "bundle")).fit(noisy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(tmp_path / "b", ExportCallback(tmp_path / "b" / "bundle", on_failure="warn")
                ).fit(TinyRegressor(noisy=True))
    assert any("parity-failed" in str(w.message) for w in caught)
    assert logged(tmp_path / "b")["export/onnx_fp32/parity_passed"] == "0.0"


@pytest.mark.parametrize(("kwargs", "message"), [
    (lambda: {"to": "onx"}, "did you mean 'onnx'"),
    (lambda: {"precision": "fp64"}, "unknown precision"),
    (lambda: {"precision": ("fp32", "int8")}, "needs calibration samples"),
    (lambda: {"on_failure": "ignore"}, "use raise or warn"),
    (lambda: {"detection": DetectionOptions(nms="iou=3")}, "iou must be in [0, 1]"),
    (lambda: {"precision": ()}, "at least one"),
    (lambda: {"device": "tpu"}, "use cpu or cuda"),
    (lambda: {"precision_options": PrecisionOptions(calib_data="/nonexistent.npz"),
              "precision": ("fp32", "int8")}, "no such file"),
    (lambda: {"bench": BenchOptions(batches=(0,))}, "--batch '0'"),
    (lambda: {"tensorrt": BuildOptions(workspace="lots")}, "--workspace 'lots'"),
])
def test_bad_arguments_fail_at_construction(tmp_path, kwargs, message):
    """The group objects are the CLI's: each checks itself, with the flag's name."""
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ExportCallback(tmp_path / "b", **kwargs())


def test_an_unwritable_or_foreign_out_fails_at_construction(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a writable directory"):
        ExportCallback(tmp_path / "file" / "bundle")
    with pytest.raises(UsageError, match="not a writable directory"):
        ExportCallback("/proc/toolkit-bundle")  # root may "access" it; nothing can be made
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="is not a bundle"):
        ExportCallback(tmp_path / "busy")


def test_best_checkpoint_exports_follow_the_best_weights(tmp_path):
    checkpoint = pl.callbacks.ModelCheckpoint(monitor="val_loss", dirpath=tmp_path / "ckpt")
    callback = ExportCallback(tmp_path / "bundle", on_best=True)
    t = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, default_root_dir=tmp_path,
                   enable_progress_bar=False, enable_model_summary=False, logger=False,
                   callbacks=[checkpoint, callback])
    t.fit(TinyRegressor())
    training = Bundle.open(tmp_path / "bundle").manifest["training"]
    assert training["checkpoint"] == checkpoint.best_model_path  # the last export: fit end
    assert Bundle.open(tmp_path / "bundle").artifact("onnx")["parity"]["passed"]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_verified_bundle(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tests/lightning/ddp_run.py"),
                             str(tmp_path)], capture_output=True, text=True, timeout=240,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    bundles = [p.parent for p in tmp_path.rglob("manifest.json")]
    assert bundles == [tmp_path / "bundle"]  # exactly one, by rank zero
    bundle = Bundle.open(tmp_path / "bundle")
    assert bundle.manifest["training"]["world_size"] == 2
    assert all(r["parity"]["passed"] for r in bundle.artifacts)
    assert not [p for p in (tmp_path / "bundle").iterdir() if p.name.startswith(".")]
    final = TinyRegressor.load_from_checkpoint(tmp_path / "final.ckpt", map_location="cpu")
    sample = bundle.golden()[0]
    with torch.no_grad():
        want = final.eval()(torch.from_numpy(sample.inputs["x"])).numpy()
    np.testing.assert_allclose(sample.outputs["output"], want, rtol=1e-6, atol=1e-6)
    assert logged(tmp_path)["export/torchscript_fp32/parity_passed"] == "1.0"
    # the checkpoint a DDP run saves exports like any other
    from toolkit.export.pipeline import SourceOptions, export

    again = export(str(tmp_path / "final.ckpt"), ["onnx"], tmp_path / "from-ckpt",
                   source_options=SourceOptions(model="tests.lightning.tiny:TinyRegressor"))
    assert again.exit_code == 0, again.to_dict()


def test_lightning_cli_configures_the_callback(tmp_path):
    """The callback from LightningCLI's command-line strings (jsonargparse), in process: a
    subprocess spent most of its 13 s importing torch and Lightning again."""
    from lightning.pytorch.cli import LightningCLI

    out = tmp_path / "cli-bundle"
    LightningCLI(TinyRegressor, args=[
        "fit", "--trainer.max_epochs=1", "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=toolkit.lightning.ExportCallback",
        f"--trainer.callbacks.out={out}", "--trainer.callbacks.to=[onnx,torchscript]"])
    assert {r["format"] for r in Bundle.open(out).artifacts} == {"onnx", "torchscript"}


@pytest.mark.parametrize(("files", "kind"), [
    (["latest", "zero_to_fp32.py"], "DeepSpeed"),
    ([".metadata", "__0_0.distcp"], "FSDP"),
])
def test_sharded_checkpoint_directories_say_how_to_consolidate(tmp_path, files, kind):
    from typer.testing import CliRunner

    from toolkit.cli.app import app

    shards = tmp_path / "epoch=3.ckpt"
    shards.mkdir()
    for name in files:
        (shards / name).write_text("x")
    result = CliRunner().invoke(app, ["export", str(shards), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and kind in result.output and "consolidate" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_demo_on_two_ddp_processes(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "toolkit.cli.app", "demo", "--devices", "2",
                             "--quick", "--out", str(out)], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "world size 2" in result.stdout
    bundle = Bundle.open(out / "bundle")
    assert bundle.manifest["training"]["world_size"] == 2
    assert {(r["format"], r["precision"]) for r in bundle.artifacts} == {
        ("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"), ("torchscript", "fp32")}
    assert all(r["parity"]["passed"] for r in bundle.artifacts)


def test_any_exception_on_rank_zero_follows_the_failure_policy(tmp_path):
    import threading

    class HoldsALock(TinyRegressor):
        def __init__(self) -> None:
            super().__init__()
            self.lock = threading.Lock()  # deepcopy can't copy it

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(tmp_path, ExportCallback(tmp_path / "bundle", on_failure="warn")
                ).fit(HoldsALock())
    assert any("could not copy HoldsALock" in str(w.message) for w in caught)
    with pytest.raises(CheckFailed, match="could not copy"):
        trainer(tmp_path / "r", ExportCallback(tmp_path / "r" / "bundle")).fit(HoldsALock())


def test_a_bundle_that_appears_in_out_after_construction_is_not_replaced(tmp_path, two_io_bundle):
    """force=False holds at export time too: a bundle written into `out` while training ran
    is someone else's (issue: the second adversarial round)."""
    import shutil

    out = tmp_path / "bundle"
    callback = ExportCallback(out)
    shutil.copytree(two_io_bundle, out)  # appears after the callback was made
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(CheckFailed, match="holds a bundle already"):
        trainer(tmp_path, callback).fit(TinyRegressor())
    assert (out / "manifest.json").read_bytes() == before
    forced = ExportCallback(tmp_path / "forced")
    trainer(tmp_path / "f", forced).fit(TinyRegressor())
    assert Bundle.open(tmp_path / "forced").artifacts  # its own first export needs no force
