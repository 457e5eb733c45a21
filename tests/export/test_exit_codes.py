"""Exit codes CI can trust: a made artifact that fails a check is exit 1, whatever else could
not be made; each format keeps its own status and code in the JSON and the summary."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.errors import ExportFailed, UsageError
from toolkit.export.job import Step, StepStatus, steps_exit_code

cli = CliRunner()


def test_a_failed_check_outranks_a_format_that_could_not_be_made():
    parity = Step("onnx", status=StepStatus.PARITY_FAILED)
    limit = Step("pt2", status=StepStatus.NOT_EXPORTED, error=ExportFailed("torch.export"))
    usage = Step("trt", status=StepStatus.FAILED, error=UsageError("bad"))
    missing = Step("trt", status=StepStatus.UNAVAILABLE)
    ok = Step("torchscript", status=StepStatus.OK)
    assert steps_exit_code([limit, parity, ok]) == 1
    assert steps_exit_code([usage, parity]) == 1
    assert steps_exit_code([limit, missing, ok]) == 2
    assert steps_exit_code([missing, ok]) == 3
    assert steps_exit_code([ok]) == 0
    assert [s.to_dict()["code"] for s in (parity, limit, usage, missing, ok)] == [1, 2, 2, 3, 0]


def test_one_format_unexportable_and_another_failing_parity_exits_1(tmp_path):
    """torch.export can't branch on a value (pt2 not exported: 2); the TorchScript trace
    computes something else (parity failed: 1). The process says 1: the model drifted."""
    out, report = tmp_path / "mixed", tmp_path / "report.json"
    result = cli.invoke(app, ["export", "tests.models:drifts_and_branches", "--input",
                              "x:1-4x4", "--to", "torchscript,pt2", "--out", str(out),
                              "--json", str(report)])
    assert result.exit_code == 1, result.output
    data = json.loads(report.read_text())
    steps = {s["target"]: s for s in data["steps"]}
    assert (steps["torchscript"]["status"], steps["torchscript"]["code"]) == ("parity-failed", 1)
    assert (steps["pt2"]["status"], steps["pt2"]["code"]) == ("not-exported", 2)
    assert data["exit_code"] == 1
    text = " ".join(result.output.split())
    assert "exit 1: torchscript fp32 parity-failed (1), pt2 fp32 not-exported (2)" in text
