"""Data files are input nobody here wrote: a corrupt zip, NaN or infinite inputs, labels the
model can't output or of the wrong rank are exit 2 naming the file, the array and the first
bad index; a gate whose reference scores nothing fails as vacuous (issue: second adversarial
round, data rows)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.parity.accuracy import score_gate

cli = CliRunner()
RNG = np.random.default_rng(0)


def x(n: int = 8) -> np.ndarray:
    return RNG.standard_normal((n, 3, 16, 16)).astype(np.float32)


def clean(result, *needles: str) -> None:
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in text and "internal error" not in text
    for needle in needles:
        assert needle in text, text


def test_a_corrupt_npz_is_bad_input(cnn_onnx_bundle, tmp_path):
    broken = tmp_path / "data.npz"
    np.savez(broken, x=x())
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated zip
    clean(cli.invoke(app, ["verify", str(cnn_onnx_bundle), "--data", str(broken),
                           "--against", "tests.models:small_cnn", "--no-record"]),
          "not a readable .npz")


def test_nan_inputs_are_named_with_their_index(cnn_onnx_bundle, tmp_path):
    values = x()
    values[1, 2, 3, 4] = np.nan
    np.savez(tmp_path / "data.npz", x=values)
    clean(cli.invoke(app, ["verify", str(cnn_onnx_bundle), "--data",
                           str(tmp_path / "data.npz"), "--against", "tests.models:small_cnn",
                           "--no-record"]),
          "array 'x' holds nan at index [1, 2, 3, 4]")


@pytest.mark.parametrize(("labels", "needle"), [
    (np.array([0, 1, 2, 2, 99, 1, 2, 3]), "labels[0] is 99; the model has 5 classes"),
    (np.array([0, -3, 1, 2, 0, 1, 2, 3]), "labels[1] is -3"),
    (np.array([0.5, 1, 1, 2, 0, 1, 2, 3]), "labels[0] is 0.5, not a class index"),
    (np.zeros((8, 2), np.int64), "labels have shape [2, 2]"),
])
def test_labels_the_model_cannot_output_are_bad_input(tmp_path, labels, needle):
    np.savez(tmp_path / "eval.npz", x=x(), labels=labels)
    result = cli.invoke(app, ["export", "tests.models:small_cnn", "--to", "onnx",
                              "--precision", "fp32,fp16", "--eval-data",
                              str(tmp_path / "eval.npz"), "--out", str(tmp_path / "b")])
    clean(result, needle)


def test_a_gate_whose_reference_scores_nothing_is_vacuous():
    passed, message = score_gate("accuracy", 0.0, 0.0, 1.0)
    assert not passed and message.startswith("vacuous")
    assert score_gate("accuracy", 0.9, 0.895, 1.0)[0]
