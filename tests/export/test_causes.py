"""Causes kept: a failed export names upstream's decisive lines in --input terms, and options
that can't apply to a source are refused with the reason."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from tests import models
from toolkit.cli.app import app

cli = CliRunner()


def test_a_pt2_guard_is_named_in_input_terms_with_torchs_fix(tmp_path):
    """A patch split needs H, W multiples of 14: torch's first line ('Constraints violated')
    dropped the guard and the fix, and the hint blamed 'a dimension the model fixes'."""
    report = tmp_path / "r.json"
    result = cli.invoke(app, ["export", "tests.models:patches14", "--input",
                              "x:1x3x112-224x112-224", "--to", "pt2", "--out",
                              str(tmp_path / "p"), "--json", str(report)])
    assert result.exit_code == 2, result.output
    [step] = json.loads(report.read_text())["steps"]
    assert step["status"] == "not-exported"
    detail = step["detail"]
    assert "x dimension 2 (112-224) must be a multiple of 14" in detail, detail
    assert "x_2 = 14*_x_2" in detail and "fixes a dimension" not in detail


@pytest.mark.parametrize("option", [["--task", "detection"], ["--nms", "iou=0.5"],
                                    ["--task", "none"], ["--max-detections", "10"]])
def test_detection_options_on_an_onnx_source_are_exit_2_with_the_reason(tmp_path, option):
    source = tmp_path / "mlp.onnx"
    torch.onnx.export(models.plain_mlp(), (torch.randn(2, 5),), str(source), dynamo=False,
                      input_names=["x"])
    out = tmp_path / "b"
    result = cli.invoke(app, ["export", str(source), "--to", "onnx", "--out", str(out),
                              *option])
    assert result.exit_code == 2, result.output
    assert "a model file (mlp.onnx) is exported as it is" in " ".join(result.output.split())
    assert not out.exists()


def test_the_dynamo_onnx_exporters_cause_is_kept_not_only_its_step(tmp_path):
    """torch.onnx's first line only says 'step 1/3'; the fallback note keeps why."""
    report = tmp_path / "r.json"
    result = cli.invoke(app, ["export", "tests.models:drifts_and_branches", "--input",
                              "x:1-4x4", "--to", "onnx", "--out", str(tmp_path / "d"),
                              "--json", str(report)])
    assert result.exit_code == 1, result.output  # the traced fallback drifts: a failed check
    [step] = json.loads(report.read_text())["steps"]
    assert "step 1/3" in step["detail"]
    assert "Could not guard on data-dependent expression" in step["detail"], step["detail"]


@pytest.mark.slow
def test_a_range_in_steps_exports_what_the_guard_asked_for(tmp_path):
    """`112-224/14`, the fix the message suggests: pt2 and ONNX keep H and W dynamic in
    multiples of 14, run a size between the corners like eager, and refuse a size off the
    step (AOTInductor compile: about 12 s on the 2-core EPYC)."""
    import numpy as np

    from toolkit import runtime
    from toolkit.errors import UsageError

    out = tmp_path / "p"
    result = cli.invoke(app, ["export", "tests.models:patches14", "--input",
                              "x:1-2x3x112-224/14x112-224/14", "--to", "onnx,pt2", "--out",
                              str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][0]["steps"] == [1, 1, 14, 14]
    x = np.random.default_rng(0).standard_normal((2, 3, 126, 182), dtype=np.float32)
    with torch.inference_mode():
        want = models.patches14()(torch.from_numpy(x)).numpy()
    for fmt in ("onnx", "pt2"):
        with runtime.load(out, fmt) as runner:
            got = next(iter(runner.infer({"x": x}).values()))
            np.testing.assert_allclose(got, want, atol=1e-4)
            with pytest.raises(UsageError):
                runner.infer({"x": x[:, :, :125]})
