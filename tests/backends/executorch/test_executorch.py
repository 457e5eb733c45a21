"""ExecuTorch (`--to executorch`): torch.export -> XNNPACK-lowered .pte, fp32 and PT2E INT8,
run by ExecuTorch's own Python runtime on this CPU, judged like every other format."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

# Found, not imported: `executorch.exir` takes 6-9 s to import, which each xdist worker would
# pay while collecting; only the worker that runs these tests imports it.
if importlib.util.find_spec("executorch") is None:
    pytest.skip("the 'executorch' extra is not installed", allow_module_level=True)

from toolkit import formats, runtime
from toolkit.bundle import Bundle
from toolkit.cli.app import app
from toolkit.errors import UsageError
from toolkit.manifest import validate

cli = CliRunner()


def run(*args: object):
    return cli.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained digits classifier exported once to fp32 and INT8 .pte, with its data."""
    from tests.models import save_checkpoint, train_digits8x8

    work = tmp_path_factory.mktemp("executorch")
    model, splits = train_digits8x8(steps=200)
    save_checkpoint(model, work / "digits.ckpt")
    np.savez(work / "calib.npz", x=splits["x_train"][:256])
    np.savez(work / "eval.npz", x=splits["x_test"], labels=splits["y_test"])
    result = run("export", work / "digits.ckpt", "--model", "tests.models:Digits8x8",
                 "--to", "pte", "--precision", "fp32,int8", "--calib-data",
                 work / "calib.npz", "--eval-data", work / "eval.npz", "--out", work / "b")
    assert result.exit_code == 0, result.output
    return {"work": work, "bundle": work / "b", "output": result.output}


def test_fp32_and_int8_programs_pass_parity_and_the_accuracy_gate(digits):
    bundle = Bundle.open(digits["bundle"])
    fmt = formats.get("executorch")
    fp32, int8 = bundle.artifact("executorch", "fp32"), bundle.artifact("executorch", "int8")
    assert fp32.path == "model.pte" and int8.path == "model.int8.pte"
    assert fp32.parity.passed and int8.parity.passed
    assert int8.accuracy.passed
    assert int8.accuracy.reduced.score >= int8.accuracy.fp32.score - 1.0
    # its own record fields, typed by the backend's model
    own = fmt.fields_of(int8)
    assert own.delegate == "xnnpack" and own.delegated_ops > 0 and own.calibration_samples
    assert own.quantizer.startswith("XNNPACKQuantizer")
    assert fmt.fields_of(fp32).quantizer is None
    # the libraries it was made with, and the INT8 program's weights in 8 bits
    assert set(fp32.tools) >= {"torch", "executorch"} and "onnx" not in fp32.tools
    assert int8.size_bytes < fp32.size_bytes / 2
    assert "ExecuTorch" in fp32.exporter


def test_verify_bench_and_select_take_it_like_any_format(digits):
    out = digits["bundle"]
    result = run("verify", out, "--format", "executorch")
    assert result.exit_code == 0, result.output
    result = run("bench", out, "--format", "executorch", "--batch", "1", "--budget", "0.3",
                 "--warmup", "0.1", "--json", digits["work"] / "bench.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((digits["work"] / "bench.json").read_text())["results"]
    assert {(r["format"], r["precision"]) for r in rows} >= {("executorch", "fp32"),
                                                             ("executorch", "int8")}
    assert all(r["p50_ms"] > 0 for r in rows)


def test_outputs_match_the_pytorch_model_on_real_digits(digits):
    """Beyond the golden samples: the INT8 program's top-1 on held-out digits agrees with the
    PyTorch model's on nearly all of them."""
    images = np.load(digits["work"] / "eval.npz")["x"][:64]
    with runtime.load(digits["bundle"], format="eager", trust_checkpoint=True) as eager:
        want = eager.infer({"x": images})
    with runtime.load(digits["bundle"], format="executorch", precision="int8") as pte:
        got = pte.infer({"x": images})
    name = next(iter(want))
    agree = (want[name].argmax(1) == got[name].argmax(1)).mean()
    assert agree >= 0.95, agree


def test_a_lone_pte_says_its_inputs_and_runs(digits):
    lone = digits["work"] / "lone.pte"
    shutil.copy(digits["bundle"] / "model.pte", lone)
    result = run("inspect", lone, "--json", digits["work"] / "lone.json")
    assert result.exit_code == 0, result.output
    info = json.loads((digits["work"] / "lone.json").read_text())
    assert info["inputs"][0]["shape"][1:] == [1, 8, 8] and info["inputs"][0]["dtype"] == \
        "float32"
    with runtime.load(lone) as runner:
        batch = runner.inputs[0].opt[0]
        out = runner.infer({"input_0": np.zeros((batch, 1, 8, 8), np.float32)})
    assert next(iter(out.values())).shape == (batch, 10)


def test_a_damaged_program_is_refused_in_one_line(digits, tmp_path):
    bad = tmp_path / "bad.pte"
    data = bytearray((digits["bundle"] / "model.pte").read_bytes())
    data[8:4096] = bytes(len(data[8:4096]))  # the flatbuffer's tables zeroed
    bad.write_bytes(bytes(data))
    result = run("inspect", bad)
    assert result.exit_code == 2 and "won't load as an ExecuTorch program" in result.output
    assert "Traceback" not in result.output


def test_its_record_fields_are_checked_with_the_manifest(digits):
    data = json.loads((digits["bundle"] / "manifest.json").read_text())
    record = next(a for a in data["artifacts"] if a["format"] == "executorch")
    record["delegated_ops"] = "12"  # strict: a string is not a count
    with pytest.raises(UsageError, match="executorch field .*delegated_ops"):
        validate(data, "manifest.json")
    record["delegated_ops"] = -1
    with pytest.raises(UsageError, match="delegated_ops"):
        validate(data, "manifest.json")


def test_without_the_extra_the_export_says_which_to_install(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "executorch.exir", None)  # import fails as if absent
    result = run("export", "tests.models:small_cnn", "--to", "executorch", "--out",
                 tmp_path / "b")
    assert result.exit_code == 3, result.output
    assert "pip install 'toolkit[executorch]'" in result.output


def test_a_detector_with_nms_in_its_graph_is_refused_by_name(trained, tmp_path):
    """ExecuTorch has no torchvision::nms kernel: refused before lowering, in one line, with
    what to do instead; the raw head (no --nms) exports and passes."""
    ckpt = trained["dir"] / "shapes_detector.ckpt"
    result = run("export", ckpt, "--model", "toolkit.demo.detector:ShapesDetector", "--nms",
                 "iou=0.5,score=0.3,max=20", "--to", "executorch", "--out", tmp_path / "det")
    assert result.exit_code == 2, result.output
    assert "torchvision::nms" in result.output and "raw head without --nms" in result.output
    assert "Traceback" not in result.output
    result = run("export", ckpt, "--model", "toolkit.demo.detector:ShapesDetector", "--to",
                 "executorch", "--out", tmp_path / "raw")
    assert result.exit_code == 0, result.output
    assert Bundle.open(tmp_path / "raw").artifact("executorch", "fp32").parity.passed


def test_without_torch_a_pte_is_refused_with_what_it_needs(digits):
    """ExecuTorch's Python runtime links libtorch: on a device without torch, verify says so
    (exit 3, one line) instead of a traceback, and still checks what it can."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    result = subprocess.run(
        [sys.executable, str(root / "tests" / "no_torch.py"), "verify", str(digits["bundle"]),
         "--format", "executorch", "--precision", "fp32"],
        capture_output=True, text=True, timeout=120, cwd=root)
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert "toolkit[executorch]" in output and "links libtorch" in output
    assert "Traceback" not in output
