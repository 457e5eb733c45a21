"""Train TinyRegressor with strategy='ddp' on 2 CPU processes (gloo) and the ExportCallback:
`python tests/lightning/ddp_run.py OUT_DIR`. Lightning re-launches this script for rank 1."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.lightning.tiny import TinyRegressor, pl
from toolkit import BenchOptions
from toolkit.lightning import ExportCallback


def main(out: Path) -> None:
    pl.seed_everything(0, workers=True)
    trainer = pl.Trainer(
        strategy="ddp", devices=2, accelerator="cpu", max_epochs=2, deterministic=True,
        default_root_dir=str(out / "run"), enable_progress_bar=False,
        enable_model_summary=False, logger=pl.loggers.CSVLogger(str(out / "logs")),
        callbacks=[ExportCallback(out / "bundle", to=("onnx", "torchscript"),
                                  bench=BenchOptions(batches=(1, 4), budget_s=1.0,
                                                     warmup_s=0.3, min_iters=20))])
    trainer.fit(TinyRegressor())
    trainer.save_checkpoint(out / "final.ckpt")  # a collective: every rank calls it


if __name__ == "__main__":
    main(Path(sys.argv[1]))
