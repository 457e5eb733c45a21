"""Golden samples of a detector are chosen from all the data given, not its first batch."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from toolkit.cli.app import app

cli = CliRunner()


def test_golden_images_are_chosen_where_the_detector_finds_something(tmp_path):
    """The first 6 of 12 images hold nothing: the export used to try only the first batch
    (then the noise example) and refused the export as vacuous."""
    images = np.zeros((12, 3, 32, 32), np.float32)
    images[6:] = np.linspace(0.6, 0.95, 6, dtype=np.float32)[:, None, None, None]
    calib = tmp_path / "calib.npz"
    np.savez(calib, images=images)
    out = tmp_path / "bright"
    result = cli.invoke(app, ["export", "tests.models:bright_detector", "--input",
                              "images:1-4x3x32x32", "--task", "detection", "--calib-data",
                              str(calib), "--to", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    golden = np.load(out / "golden.npz")
    chosen = [golden[k] for k in golden.files if k.endswith("images")]
    means = {round(float(m), 3) for batch in chosen for m in batch.mean(axis=(1, 2, 3))}
    # bright images only, several of them, spread over the data (its first and last)
    assert len(means & {0.6, 0.95}) == 2 and 0.0 not in means, means
