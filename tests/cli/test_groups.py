"""Option groups are declared once: the CLI's flags come from the group's fields, and the CLI,
`toolkit.export(...)` and ExportCallback take the same objects (Polygraphy's tools/args)."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from toolkit import (
    BenchOptions,
    BuildOptions,
    DetectionOptions,
    OnnxOptions,
    OpenVINOOptions,
    PrecisionOptions,
    SourceOptions,
    ToleranceOptions,
    TorchScriptOptions,
)
from toolkit.cli.app import app
from toolkit.cli.group_flags import takes_groups
from toolkit.errors import UsageError
from toolkit.groups import flags_of, only

cli = CliRunner()
GROUPS = (PrecisionOptions, BuildOptions, DetectionOptions, BenchOptions, ToleranceOptions,
          OnnxOptions, TorchScriptOptions, OpenVINOOptions, SourceOptions)
#: which command shows which groups (export: each format's own group, from the table)
COMMANDS = {"export": (SourceOptions, PrecisionOptions, DetectionOptions, BuildOptions,
                       OnnxOptions, TorchScriptOptions, OpenVINOOptions),
            "bench": (BenchOptions,), "verify": (SourceOptions, ToleranceOptions)}
#: the source group's fields a command takes, when it takes some (`only(...)`)
SOURCE_SUBSETS = {"bench": ("--device", "--trust-checkpoint", "--allow-modified"),
                  "deploy": ("--allow-modified",)}
#: a command's own flag that shares a name with a source flag (deploy's --device: Triton's
#: instance kind, not where the source runs)
OWN = {"deploy": ("--device",)}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_of_a_group_is_on_its_command_under_the_groups_panel(command):
    text = cli.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    for group in COMMANDS[command]:
        assert group.title in text
        for _, how in flags_of(group):
            assert how.name.split()[0].split("/")[0] in text, (group.__name__, how.name)


@pytest.mark.parametrize("command", sorted(SOURCE_SUBSETS))
def test_a_command_taking_part_of_the_source_group_shows_only_that_part(command):
    text = cli.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    taken = SOURCE_SUBSETS[command]
    for _, how in flags_of(SourceOptions):
        flag = how.name.split("/")[0]
        if flag not in OWN.get(command, ()):
            assert (re.search(rf"{flag}\b(?!-)", text) is not None) == (flag in taken), (
                command, flag)


def test_the_source_group_travels_whole_from_the_flags():
    result, built = capture(SourceOptions)(
        "--model", "pkg.mod:Net", "--model-arg", "num_classes=5", "--model-arg", "name='x'",
        "--trust-checkpoint", "--device", "cuda:1")
    assert result.exit_code == 0, result.output
    assert built == SourceOptions(model="pkg.mod:Net", model_args=("num_classes=5", "name='x'"),
                                  trust_checkpoint=True, device="cuda:1")
    assert built.factory_args() == {"num_classes": 5, "name": "x"}
    # from Python, a mapping of values (anything a factory takes) is as good as the texts,
    # and the group stays hashable like every other
    given = SourceOptions(model_args={"num_classes": 5})
    assert given.factory_args() == {"num_classes": 5}
    assert hash(given) == hash(SourceOptions(model_args={"num_classes": 5}))


def test_only_is_for_an_option_group():
    def command(size: Annotated[int, only("device")] = 1) -> None:
        pass

    with pytest.raises(TypeError, match="needs an option group"):
        takes_groups(command)


def capture(group: type):
    """A command taking `group`; returns the object typer built from the flags."""
    seen = []

    def command(options=None) -> None:
        seen.append(options)

    command.__annotations__["options"] = group
    runner = typer.Typer()
    runner.command()(takes_groups(command))
    return lambda *argv: (cli.invoke(runner, list(argv)), seen[-1] if seen else None)


def test_the_cli_builds_the_very_object_the_python_api_takes():
    invoke = capture(PrecisionOptions)
    result, built = invoke("--calib-data", "c.npz", "--calib-batches", "4")
    assert result.exit_code == 0, result.output
    assert built == PrecisionOptions(calib_data="c.npz", calib_batches=4)
    result, built = capture(OnnxOptions)("--int8-layout", " CPU ", "--opset", "17")
    assert built == OnnxOptions(opset=17, int8_layout="cpu")
    result, built = capture(BuildOptions)("--workspace", "1G", "--hardware-compat", "Ampere_Plus",
                                          "--profile", "x:1-2-4x3", "--via", "dynamo")
    assert built == BuildOptions(workspace=2**30, hardware_compatibility="ampere+",
                                 extra_profiles=("x:1-2-4x3",), via="torch-compile")
    result, built = capture(BenchOptions)("--batch", "1,8", "-b", "16", "--budget", "2")
    assert built == BenchOptions(batches=(1, 8, 16), budget_s=2.0)
    result, built = capture(DetectionOptions)("--nms", "iou=0.5,score=0.1", "--max-detections",
                                              "7")
    assert built.nms is not None and built.nms.max_detections == 7
    assert built == DetectionOptions(max_detections=7, nms="iou=0.5,score=0.1")


@pytest.mark.parametrize(("group", "argv", "flag"), [
    (PrecisionOptions, ["--calib-batches", "0"], "--calib-batches"),
    (PrecisionOptions, ["--max-accuracy-drop", "nan"], "--max-accuracy-drop"),
    (BuildOptions, ["--workspace", "lots"], "--workspace"),
    (BuildOptions, ["--via", "magic"], "--via"),
    (OnnxOptions, ["--opset", "3"], "--opset"),
    (OnnxOptions, ["--int8-layout", "gpu"], "--int8-layout"),
    (TorchScriptOptions, ["--ts-mode", "compile"], "--ts-mode"),
    (OpenVINOOptions, ["--openvino-quantizer", "magic"], "--openvino-quantizer"),
    (BenchOptions, ["--batch", "²"], "--batch"),
    (BenchOptions, ["--warmup", "inf"], "--warmup"),
    (DetectionOptions, ["--task", "segment"], "--task"),
    (ToleranceOptions, ["--tol", "logits:atol"], "--tol"),
    (ToleranceOptions, ["--atol", "-1"], "--atol"),
    (SourceOptions, ["--device", "gpu"], "--device"),
    (SourceOptions, ["--model-arg", "x=os.system"], "--model-arg"),
])
def test_a_group_checks_itself_naming_the_flag(group, argv, flag):
    """Both ways in: the flag on a command, and the object built in Python."""
    result, _ = capture(group)(*argv)
    assert isinstance(result.exception, UsageError) and flag in str(result.exception)
    names = {how.parameter: f.name for f, how in flags_of(group)}
    key = names[argv[0].lstrip("-").replace("-", "_")]
    value = argv[1]
    typed = {f.name: f for f in fields(group)}[key]
    if "float" in str(typed.type):
        value = float(value)
    elif key in ("batches", "per_output", "model_args"):
        value = (value,)
    elif "int" in str(typed.type) and key != "workspace":
        value = int(value)
    with pytest.raises(UsageError, match=flag):
        group(**{key: value})


def test_a_flag_declared_twice_is_refused_when_the_command_is_made():
    def command(a: PrecisionOptions = PrecisionOptions(),  # noqa: B008 - a group, as the CLI
                b: PrecisionOptions = PrecisionOptions()) -> None:  # noqa: B008 - likewise
        pass

    with pytest.raises(TypeError, match="declared twice: calib_batches"):
        takes_groups(command)


def test_export_callback_keeps_the_group_objects_it_was_given(tmp_path):
    pytest.importorskip("lightning")
    from toolkit.lightning import ExportCallback

    calib = tmp_path / "c.npz"
    calib.write_bytes(b"")
    precision = PrecisionOptions(calib_data=str(calib), calib_method="entropy")
    tensorrt = BuildOptions(workspace="2G", optimization_level=4)
    detection = DetectionOptions(nms="iou=0.6,score=0.2")
    callback = ExportCallback(tmp_path / "b", precision=("fp32", "int8"),
                              precision_options=precision, backends=[tensorrt],
                              detection=detection, bench=BenchOptions(batches=(2,)))
    assert callback.options.precision_options is precision
    assert callback.options.backend("trt") is tensorrt
    assert callback.options.backend("onnx") == OnnxOptions()
    assert callback.detection is detection and callback.bench == BenchOptions(batches=(2,))


def test_every_group_is_importable_from_toolkit_without_numpy():
    import subprocess
    import sys

    code = ("import sys, toolkit; [getattr(toolkit, n) for n in "
            f"{[g.__name__ for g in GROUPS]}]; import toolkit.cli.app; "
            "print('numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
