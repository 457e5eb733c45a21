"""Records are typed (issue: typed records end to end): the toolkit's own code reads an
artifact record's attributes, never `record["format"]` or `record.get("precision", "fp32")`.
The mapping view `_Record` keeps is for readers outside the package (tests, scripts)."""

from __future__ import annotations

import ast
from pathlib import Path

from toolkit.bundle import Bundle
from toolkit.manifest import ArtifactRecord

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"
#: names that hold artifact records in the toolkit's code
RECORD_NAMES = {"record", "rec", "current", "made", "onnx_record", "ref_record",
                "reference_record", "fp32_graph", "winner", "candidate"}


def _record_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name) and node.id in RECORD_NAMES:
        return node.id
    if isinstance(node, ast.Attribute) and node.attr == "record":
        return "….record"
    return None


def test_toolkit_code_reads_records_by_attribute():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "manifest.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Subscript) and _record_name(node.value)
                    and isinstance(node.slice, ast.Constant)
                    and isinstance(node.slice.value, str)):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "get" and _record_name(node.func.value)):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    # the TensorRT runner keeps its engine record as JSON (the pure preflight reads it)
    allowed = {p for p in found if p.startswith("backends/trt/runner.py")}
    assert sorted(set(found) - allowed) == []


def test_bundles_hand_out_typed_records_with_their_defaults(cnn_onnx_bundle):
    record = Bundle.open(cnn_onnx_bundle).artifact("onnx")
    assert isinstance(record, ArtifactRecord)
    assert record.precision == "fp32" and record.layout is None and record.files == []
    assert record.parity is not None and record.parity.passed is True
    # the JSON view readers outside the package use
    assert record["parity"]["passed"] is True and record.get("missing", 7) == 7
