"""The CLI as a user meets it: bad input gets one line and exit 2, nothing is left behind."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from toolkit.cli.app import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, code: int, *needles: str) -> None:
    text = result.output
    assert result.exit_code == code, text
    assert "Traceback" not in text
    for needle in needles:
        assert needle in text, text


def test_help_does_not_import_torch():
    code = ("import sys; from toolkit.cli.app import app; "
            "from typer.testing import CliRunner; r = CliRunner().invoke(app, ['--help']); "
            "assert r.exit_code == 0, r.output; assert 'torch' not in sys.modules, 'torch'; "
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_missing_checkpoint(tmp_path):
    out = tmp_path / "out"
    result = run("export", tmp_path / "nope.ckpt", "--out", out)
    assert_clean_error(result, 2, "not found")
    assert not out.exists()


def test_truncated_checkpoint(tmp_path, two_io_checkpoint):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(two_io_checkpoint.read_bytes()[:2000])
    result = run("export", broken, "--model", "tests.models:TwoInTwoOut", "--out",
                 tmp_path / "o")
    assert_clean_error(result, 2, "broken.ckpt")
    assert not (tmp_path / "o").exists()


def test_model_that_does_not_import(tmp_path, two_io_checkpoint):
    result = run("export", two_io_checkpoint, "--model", "nowhere.at_all:Net", "--out",
                 tmp_path / "o")
    assert_clean_error(result, 2, "--model", "nowhere.at_all")


def test_checkpoint_without_class_asks_for_model(tmp_path, two_io_checkpoint):
    result = run("export", two_io_checkpoint, "--out", tmp_path / "o")
    assert_clean_error(result, 2, "--model")


def test_state_that_does_not_fit_the_class(tmp_path, two_io_checkpoint):
    result = run("export", two_io_checkpoint, "--model", "tests.models:TupleOut", "--out",
                 tmp_path / "o")
    assert_clean_error(result, 2, "doesn't fit")
    assert not (tmp_path / "o").exists()


def test_malformed_input_option(tmp_path):
    result = run("export", "tests.models:plain_mlp", "--input", "x:3xbanana", "--out",
                 tmp_path / "o")
    assert_clean_error(result, 2, "--input", "banana")


def test_unknown_format_suggests(tmp_path):
    result = run("export", "tests.models:plain_mlp", "--input", "x:2x5", "--to", "onxx",
                 "--out", tmp_path / "o")
    assert_clean_error(result, 2, "did you mean 'onnx'")


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run("export", "tests.models:plain_mlp", "--input", "x:2x5", "--out",
                 blocker / "bundle")
    assert_clean_error(result, 2, "--out")


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_untrusted_pickle_is_refused_before_anything_runs(tmp_path, two_io_checkpoint):
    marker = tmp_path / "code-ran"
    ckpt = torch.load(two_io_checkpoint, weights_only=False)
    ckpt["hyper_parameters"]["evil"] = _Payload(str(marker))
    evil = tmp_path / "evil.ckpt"
    torch.save(ckpt, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    result = run("export", evil, "--model", "tests.models:TwoInTwoOut", "--out", tmp_path / "o")
    assert_clean_error(result, 2, "--trust-checkpoint")
    assert not marker.exists()


def test_json_output_and_inspect(tmp_path):
    import json

    out = tmp_path / "j"
    result = run("export", "tests.models:plain_mlp", "--input", "x:1-4x5", "--out", out,
                 "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # the human report went to stderr
    assert data["steps"][0]["status"] == "ok"
    shown = run("inspect", out, "--json", "-")
    assert shown.exit_code == 0
    assert json.loads(shown.stdout)["inputs"][0]["name"] == "x"
    written = run("inspect", out, "--json", tmp_path / "inspect.json")
    assert written.exit_code == 0
    assert json.loads((tmp_path / "inspect.json").read_text())["artifacts"][0]["format"] == "onnx"
    onnx_info = run("inspect", out / "model.onnx")
    assert onnx_info.exit_code == 0 and "x" in onnx_info.output


@pytest.mark.parametrize("args", [["verify"], ["bench"], ["inspect"]])
def test_commands_on_a_missing_bundle(tmp_path, args):
    result = run(*args, tmp_path / "missing")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_bad_precision_data_is_caught_before_anything_is_written(tmp_path):
    out = tmp_path / "p"
    no_calib = run("export", "tests.models:plain_mlp", "--input", "x:1-4x5",
                   "--precision", "fp32,int8", "--out", out)
    assert_clean_error(no_calib, 2, "--calib-data")
    missing = run("export", "tests.models:plain_mlp", "--input", "x:1-4x5",
                  "--precision", "fp32,int8", "--calib-data", tmp_path / "nope.npz",
                  "--out", out)
    assert_clean_error(missing, 2, "nope.npz")
    assert not out.exists()


def test_inputs_the_model_rejects_are_bad_input(tmp_path):
    result = run("export", "tests.models:small_cnn", "--input", "x:2x4x16x16", "--out",
                 tmp_path / "o")
    assert_clean_error(result, 2, "--input", "x[2, 4, 16, 16]")
    assert not (tmp_path / "o").exists()


def test_a_manifest_saying_trusted_never_unpickles(tmp_path, two_io_checkpoint, two_io_bundle):
    """Trust comes from the command line only: a bundle whose manifest claims its (malicious)
    source checkpoint is trusted still gets it refused by bench and verify."""
    import json
    import shutil

    marker = tmp_path / "code-ran"
    ckpt = torch.load(two_io_checkpoint, weights_only=False)
    ckpt["hyper_parameters"]["evil"] = _Payload(str(marker))
    evil = tmp_path / "evil.ckpt"
    torch.save(ckpt, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    bundle = tmp_path / "bundle"
    shutil.copytree(two_io_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["source"].update(path=str(evil), trusted=True, trusted_at_export=True)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    for args in (("bench", bundle, "--format", "eager", "--budget", "0.1"),
                 ("verify", bundle, "--format", "eager", "--no-record")):
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert "--trust-checkpoint" in result.output and "Traceback" not in result.output
        assert not marker.exists()
