"""toolkit/manifest.py on its own: the schema every manifest read and write goes through."""

from __future__ import annotations

import copy

import pytest

from toolkit.errors import UsageError
from toolkit.manifest import (
    SCHEMA_VERSION,
    ArtifactRecord,
    artifact,
    plain_file_name,
    to_json,
    validate,
)

SHA = "0" * 64


def _manifest(**over: object) -> dict:
    data = {
        "schema": SCHEMA_VERSION, "toolkit_version": "0.1.0",
        "inputs": [{"name": "x", "dtype": "float32", "min": [1, 3], "opt": [2, 3],
                    "max": [8, 3]}],
        "outputs": [{"name": "y", "dtype": "float32"}],
        "source": {"kind": "factory", "path": "pkg:make"},
        "artifacts": [{"format": "onnx", "precision": "fp32", "path": "model.onnx",
                       "sha256": SHA}],
    }
    data.update(over)
    return data


def test_a_valid_manifest_comes_back_with_typed_artifacts_and_round_trips():
    checked = validate(_manifest(), "m.json")
    (record,) = checked["artifacts"]
    assert isinstance(record, ArtifactRecord) and record.path == "model.onnx"
    assert record.layout is None and record.files == []  # defaults, typed
    again = validate(to_json(checked), "m.json")
    assert to_json(again) == to_json(checked)


@pytest.mark.parametrize("name", ["../x.onnx", "/etc/passwd", "a/b.onnx", "..", "~x", ""])
def test_a_path_must_be_a_plain_name_inside_the_bundle(name):
    with pytest.raises(ValueError):
        plain_file_name(name)
    data = _manifest()
    data["artifacts"][0]["path"] = name
    with pytest.raises(UsageError, match="m.json: field 'artifacts.0.path'"):
        validate(data, "m.json")


def test_types_are_strict_and_the_message_names_the_field():
    data = _manifest()
    data["artifacts"][0]["size_bytes"] = "12"
    with pytest.raises(UsageError, match="artifacts.0.size_bytes"):
        validate(data, "m.json")


def test_a_newer_schema_is_refused_and_an_older_one_migrated():
    with pytest.raises(UsageError, match="newer than this toolkit"):
        validate(_manifest(schema=SCHEMA_VERSION + 1, toolkit_version="9.0.0"), "m.json")
    old = _manifest(schema=1)
    old["artifacts"].append({"format": "onnx", "precision": "int8", "path": "model.int8.onnx",
                             "sha256": SHA, "transform": {"profile": "cpu"}})
    checked = validate(old, "m.json")
    assert checked["schema"] == SCHEMA_VERSION
    assert checked["artifacts"][1].layout == "cpu"  # kept in the old transform summary


def test_two_records_of_one_artifact_or_one_file_are_refused():
    data = _manifest()
    data["artifacts"].append(copy.deepcopy(data["artifacts"][0]))
    with pytest.raises(UsageError, match="share a format"):
        validate(data, "m.json")
    data["artifacts"][1].update(precision="fp16")
    with pytest.raises(UsageError, match="same file"):
        validate(data, "m.json")


def test_unknown_formats_and_in_process_formats_are_not_artifacts():
    with pytest.raises(UsageError, match="unknown format"):
        artifact({"format": "nope", "path": "m.x", "sha256": SHA})
    with pytest.raises(UsageError, match="runs in-process"):
        artifact({"format": "eager"})


def test_a_saved_format_needs_its_hash_and_its_companions():
    with pytest.raises(UsageError, match="needs its file name"):
        artifact({"format": "onnx", "path": "model.onnx"})
    with pytest.raises(UsageError, match="consists of"):
        artifact({"format": "openvino", "path": "model.xml", "sha256": SHA})


def test_a_format_checks_its_own_record_fields():
    """A format's record_fields model (here ExecuTorch's, pydantic only: nothing of
    ExecuTorch is imported) is applied to the fields only it writes."""
    ok = artifact({"format": "executorch", "path": "model.pte", "sha256": SHA,
                   "delegated_ops": 3, "portable_ops": 1})
    assert ok.delegated_ops == 3
    with pytest.raises(UsageError, match="executorch field .*portable_ops"):
        artifact({"format": "executorch", "path": "model.pte", "sha256": SHA,
                  "portable_ops": "1"})


def test_nesting_deeper_than_a_manifest_is_refused():
    deep: dict = {}
    cursor = deep
    for _ in range(40):
        cursor["a"] = {}
        cursor = cursor["a"]
    with pytest.raises(UsageError, match="nested more than"):
        validate(_manifest(training=deep), "m.json")
