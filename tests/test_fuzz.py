"""Property-based checks of what users and bundles feed the toolkit: any `--input` string and
any manifest either works or gives one line and exit 2, never a traceback or another code."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.errors import UsageError
from toolkit.spec import TensorSpec, parse_input

runner = CliRunner()

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3),
    max_leaves=8,
)
DIM = st.one_of(st.integers(-3, 2**40).map(str), st.text("0123456789-x:", max_size=6))
INPUT_TEXT = st.one_of(
    st.text(max_size=40),
    st.builds(lambda name, dims, dtype: f"{name}:{'x'.join(dims)}{dtype}",
              st.text(max_size=4), st.lists(DIM, max_size=5),
              st.sampled_from(["", ":int64", ":fp16", ":nope", ":"])),
)


@settings(max_examples=400, deadline=None)
@given(INPUT_TEXT)
def test_the_input_grammar_parses_or_says_why_in_one_line(text: str) -> None:
    try:
        spec = parse_input(text)
    except UsageError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert isinstance(spec, TensorSpec) and spec.name
    assert parse_input(spec.describe()) == spec  # what it prints, it reads back


@pytest.fixture(scope="module")
def bundle(cnn_onnx_bundle: Path) -> Path:
    return cnn_onnx_bundle  # read only: each example works on a copy


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a JSON document, the document itself included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _replace(document: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return document


def _mutated(bundle: Path, data: st.DataObject) -> Any:
    """The bundle's manifest with one value, anywhere in it, replaced by any JSON value."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    path = data.draw(st.sampled_from(_paths(manifest)), label="path")
    return _replace(manifest, path, data.draw(JSON, label="value"))


def _check(bundle_dir: Path, manifest: Any, commands: list[list[str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "b"
        shutil.copytree(bundle_dir, copy)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        for command in commands:
            result = runner.invoke(app, [command[0], str(copy), *command[1:]])
            assert result.exit_code in (0, 1, 2), (command, result.output)
            assert "Traceback" not in result.output, result.output
            assert "internal error" not in result.output, result.output
            if result.exit_code == 2:
                errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
                assert len(errors) == 1, result.output


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_manifest_is_read_or_refused_in_one_line(bundle: Path, data: st.DataObject) -> None:
    _check(bundle, _mutated(bundle, data), [["inspect"]])


@pytest.mark.parametrize("value", [True, 0, "x", {"format": "onnx"}])
def test_artifacts_that_are_not_a_list_are_refused(bundle: Path, value: Any) -> None:
    """Found by the fuzz above: `"artifacts": true` was iterated before validation (an
    internal error), and `0` would have read as an empty list."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"] = value
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "b"
        shutil.copytree(bundle, copy)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        result = runner.invoke(app, ["inspect", str(copy)])
    assert result.exit_code == 2, result.output
    assert "field 'artifacts'" in result.output, result.output


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_verify_and_bench_survive_any_manifest(bundle: Path, data: st.DataObject) -> None:
    _check(bundle, _mutated(bundle, data), [["verify", "--no-record"],
                             ["bench", "--budget", "0.01", "--batch", "1", "--min-iters", "2"]])


# -- options: every group, the device and the deploy name ----------------------------------
NUMBERISH = st.sampled_from(["nan", "inf", "-inf", "1e309", "²", "١", "-1", "0", "0.5", "3",
                             "1,8", "1,,2", " 4 ", "1e-3", "x:1-2-4x3", "iou=2", "ampere+"])
VALUE = st.one_of(NUMBERISH, st.text(max_size=12))


def _groups_command():
    """A command taking every option group, as the CLI expands them."""
    import typer

    from toolkit import (
        BenchOptions,
        BuildOptions,
        DetectionOptions,
        PrecisionOptions,
        ToleranceOptions,
    )
    from toolkit.cli.group_flags import takes_groups
    from toolkit.groups import flags_of

    groups = (PrecisionOptions, BuildOptions, DetectionOptions, BenchOptions, ToleranceOptions)

    def command(p=None, t=None, d=None, b=None, o=None) -> None:
        pass

    for name, group in zip("ptdbo", groups, strict=True):
        command.__annotations__[name] = group
    app_ = typer.Typer()
    app_.command()(takes_groups(command))
    flags = [how.name.split()[0] for group in groups for _, how in flags_of(group)]
    return app_, flags


GROUPS_APP, GROUP_FLAGS = _groups_command()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(GROUP_FLAGS), VALUE), max_size=4))
def test_any_option_group_value_works_or_is_one_line_exit_2(pairs) -> None:
    argv = [part for flag, value in pairs for part in
            ((flag,) if flag in ("--version-compatible",) else (flag, value))]
    result = runner.invoke(GROUPS_APP, argv)
    if result.exit_code == 0:
        return
    error = result.exception
    # typer's own usage errors exit 2 (SystemExit); the groups' own checks raise UsageError
    assert isinstance(error, (UsageError, SystemExit)), (argv, repr(error))
    if isinstance(error, UsageError):
        assert "\n" not in str(error) and "--" in str(error), (argv, str(error))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=10))
@example("cuda:١")  # an Arabic-Indic digit: `\d` took it, torch then failed (exit 1)
@example("cuda:0\n")
def test_a_device_is_cpu_or_cuda_n_in_ascii_or_refused(text: str) -> None:
    from toolkit.spec import check_device

    try:
        device = check_device(text)
    except UsageError as err:
        assert "\n" not in str(err).replace(repr(text), "")
        return
    assert device.isascii() and (device == "cpu" or device.startswith("cuda"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=140))
def test_a_deploy_name_is_plain_ascii_or_refused(text: str) -> None:
    from toolkit.deploy.triton import model_name

    try:
        name = model_name(None, text)  # type: ignore[arg-type]
    except UsageError:
        return
    assert name == text and name.isascii() and name.isprintable() and "\n" not in name
    assert 1 <= len(name) <= 128 and "/" not in name


JOURNAL_RECORD = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 2, "1"]), "state": st.sampled_from(
        ["open", "committed", "other", 1]), "created_root": st.sampled_from([True, False, 0]),
     "created": st.lists(st.sampled_from(["model.onnx", "", "..", "a/b", "sub", 3]),
                         max_size=3),
     "saved": st.lists(st.text(max_size=6), max_size=2)})


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON.map(json.dumps), JOURNAL_RECORD.map(json.dumps),
                 st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
                 st.integers(0, 3000).map(lambda n: "[" * n + "]" * (n % 2) * n)))
@example("[" * 100_000)
def test_any_journal_record_is_read_or_refused_in_one_line(text: str) -> None:
    """What a bundle's .toolkit-journal/intent.json holds: a record, or exit 2 naming it."""
    from toolkit.transaction import INTENT, Intent, read_intent

    with tempfile.TemporaryDirectory() as where:
        journal = Path(where) / "journal"
        journal.mkdir()
        (Path(where) / "sub").mkdir()
        (journal / INTENT).write_text(text, encoding="latin-1")
        try:
            intent = read_intent(journal)
        except UsageError as err:
            assert "intent.json" in str(err) and "\n" not in str(err)
            return
        assert isinstance(intent, Intent) and intent.state in ("open", "committed")
        assert all(isinstance(n, str) and "/" not in n and n not in ("", "..")
                   for n in intent.created + intent.saved)
        assert "sub" not in intent.created  # a directory is never a file to delete
