"""Bad input is exit 2 with one line, never accepted and never an internal error (issue:
the second adversarial round's option rows)."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app

cli = CliRunner()


@pytest.fixture(scope="module")
def bundle(cnn_onnx_bundle, tmp_path_factory):
    copy = tmp_path_factory.mktemp("validation") / "cnn"
    shutil.copytree(cnn_onnx_bundle, copy)
    return copy


def one_clean_line(result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309"])
def test_float_options_must_be_finite(bundle, value):
    one_clean_line(cli.invoke(app, ["verify", str(bundle), "--atol", value]), "--atol")
    one_clean_line(cli.invoke(app, ["select", str(bundle), "--max-accuracy-drop", value]),
                   "--max-accuracy-drop")
    one_clean_line(cli.invoke(app, ["bench", str(bundle), "--budget", value]), "--budget")
    one_clean_line(cli.invoke(app, ["bench", str(bundle), "--warmup", value]), "--warmup")


def test_batch_digits_are_ascii(bundle):
    one_clean_line(cli.invoke(app, ["bench", str(bundle), "--batch", "²"]), "--batch")


@pytest.mark.parametrize("name", ["net\n", "net\r", "a b"])
def test_model_names_match_whole(bundle, tmp_path, name):
    result = cli.invoke(app, ["deploy", str(bundle), "--triton", str(tmp_path / "repo"),
                              "--format", "onnx", "--name", name])
    one_clean_line(result, "--name")
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


@pytest.mark.parametrize("device", ["banana", "", "nan", "cpu\n"])
def test_deploy_checks_the_device_as_every_command_does(bundle, tmp_path, device):
    result = cli.invoke(app, ["deploy", str(bundle), "--triton", str(tmp_path / "repo"),
                              "--format", "onnx", "--device", device])
    one_clean_line(result, "--device")


def test_inspect_shows_a_model_files_strings_as_inert_text(tmp_path):
    """Tensor names and the producer come from the file: ESC/OSC sequences and C1 controls
    must not reach the terminal."""
    import onnx
    from onnx import TensorProto, helper

    evil = "x\x1b]0;pwned\x07\x9b2J"
    graph = helper.make_graph([helper.make_node("Relu", [evil], ["y"])], "g",
                              [helper.make_tensor_value_info(evil, TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, producer_name="p\x1b[31mred",
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = cli.invoke(app, ["inspect", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x9b" not in result.output and "\x07" not in (
        result.output)
    assert "\\x1b" in result.output


def test_c1_controls_in_a_manifests_tensor_name_are_refused(bundle, tmp_path):
    import json

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["outputs"][0]["name"] = "out\u009b2J"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    one_clean_line(cli.invoke(app, ["inspect", str(copy)]), "tensor name")
