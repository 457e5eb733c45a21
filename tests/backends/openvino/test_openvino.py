"""OpenVINO IR (`--to openvino`): converted from the bundle's ONNX, run by real OpenVINO on this
CPU with its inference precision set and recorded; two files per artifact (model.xml +
model.bin), hashed, checked, deployed together."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("openvino", reason="the 'openvino' extra is not installed")

from toolkit import runtime
from toolkit.backends.openvino.export import BF16_FLAGS, check_bf16_here
from toolkit.bundle import Bundle, sha256_file
from toolkit.cli.app import app
from toolkit.environment import cpu_flags
from toolkit.errors import UsageError

cli = CliRunner()
HAS_BF16 = any(flag in cpu_flags() for flag in BF16_FLAGS)


def run(*args: object):
    return cli.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def ov_bundle(cnn_onnx_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The device workflow: a bundle holding only ONNX gets OpenVINO IR, no model needed."""
    out = tmp_path_factory.mktemp("ov") / "cnn"
    shutil.copytree(cnn_onnx_bundle, out)
    precisions = "fp32,bf16" if HAS_BF16 else "fp32"
    result = run("export", out, "--to", "openvino", "--precision", precisions)
    assert result.exit_code == 0, result.output
    return out


def test_export_writes_two_files_hashed_with_the_precision_recorded(ov_bundle):
    record = Bundle.open(ov_bundle).artifact("openvino", "fp32")
    assert record["path"] == "model.xml"
    assert [f["name"] for f in record["files"]] == ["model.bin"]
    assert record["files"][0]["sha256"] == sha256_file(ov_bundle / "model.bin")
    assert record["sha256"] == sha256_file(ov_bundle / "model.xml")
    assert record["size_bytes"] == sum((ov_bundle / n).stat().st_size
                                       for n in ("model.xml", "model.bin"))
    assert record["inference_precision"] == "f32"
    assert record["cpu_flags"] == cpu_flags()
    assert record["from_onnx"] == "model.onnx"
    assert record["parity"]["passed"]


def test_fp32_runs_in_f32_even_where_openvino_would_pick_bf16(ov_bundle):
    import openvino as ov

    with runtime.load(ov_bundle, format="openvino") as runner:
        used = str(runner._compiled.get_property("INFERENCE_PRECISION_HINT"))
        sample = Bundle.open(ov_bundle).golden()[0]
        got = runner.infer(sample.inputs)
    assert "float32" in used or used == "f32"
    for name, want in sample.outputs.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5)
    default = str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    if HAS_BF16:  # the silent switch this format exists to prevent
        assert "bfloat16" in default


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no AMX-BF16 or AVX512_BF16")
def test_bf16_runs_in_bf16_and_passes_its_own_preset(ov_bundle):
    record = Bundle.open(ov_bundle).artifact("openvino", "bf16")
    assert record["path"] == "model.bf16.xml" and record["inference_precision"] == "bf16"
    assert [f["name"] for f in record["files"]] == ["model.bf16.bin"]
    assert record["parity"]["passed"] and record["parity"]["tolerance"]["precision"] == "bf16"
    with runtime.load(ov_bundle, format="openvino", precision="bf16") as runner:
        assert "bfloat16" in str(runner._compiled.get_property("INFERENCE_PRECISION_HINT"))


def test_bf16_needs_native_bf16_and_says_which_instruction_sets():
    check_bf16_here(["avx2", "avx512f", "avx512_bf16"])
    check_bf16_here(["amx_bf16"])
    with pytest.raises(UsageError, match="AMX-BF16 or AVX512_BF16.*avx2, avx512_vnni"):
        check_bf16_here(["avx2", "avx512_vnni"])


@pytest.mark.skipif(HAS_BF16, reason="this CPU has native bf16: the refusal can't happen here")
def test_bf16_is_refused_on_a_cpu_without_it(cnn_onnx_bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(cnn_onnx_bundle, out)
    result = run("export", out, "--to", "openvino", "--precision", "bf16")
    assert result.exit_code == 2, result.output
    assert "AVX512_BF16" in result.output and "Traceback" not in result.output


def test_a_changed_or_missing_weights_file_is_caught(ov_bundle, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(ov_bundle, changed)
    blob = bytearray((changed / "model.bin").read_bytes())
    blob[100] ^= 0xFF
    (changed / "model.bin").write_bytes(bytes(blob))
    verify = run("verify", changed, "--format", "openvino", "--precision", "fp32")
    assert verify.exit_code == 1 and "model.bin changed since it was exported" in verify.output
    bench = run("bench", changed, "--format", "openvino", "--budget", "0.05", "--batch", "1")
    assert bench.exit_code == 2 and "model.bin" in bench.output
    missing = tmp_path / "missing"
    shutil.copytree(ov_bundle, missing)
    (missing / "model.bin").unlink()
    result = run("verify", missing)  # that artifact fails; the others are still verified
    text = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 1 and "model.bin is listed in the manifest but missing" in text
    assert "PASS onnx/fp32" in text


def test_a_record_that_lists_other_files_is_refused(ov_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(ov_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for record in manifest["artifacts"]:
        if record["format"] == "openvino":
            record["files"] = [{**record["files"][0], "name": "golden.npz"}]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = run("inspect", copy)
    assert result.exit_code == 2 and "consists of" in result.output


def test_bench_times_it_with_its_hint(ov_bundle):
    result = run("bench", ov_bundle, "--format", "openvino", "--budget", "0.1", "--batch", "1",
                 "--json", "-")
    assert result.exit_code == 0, result.output
    assert "OpenVINO LATENCY, f32" in result.output


def test_deploy_writes_the_ir_pair_and_the_precision_for_tritons_backend(ov_bundle, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    result = run("deploy", ov_bundle, "--triton", tmp_path / "repo", "--format", "openvino",
                 "--precision", "fp32", "--name", "cnn_ov")
    assert result.exit_code == 0, result.output
    entry = tmp_path / "repo" / "cnn_ov"
    assert sha256_file(entry / "1" / "model.xml") == sha256_file(ov_bundle / "model.xml")
    assert sha256_file(entry / "1" / "model.bin") == sha256_file(ov_bundle / "model.bin")
    config = text_format.Parse((entry / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    assert config.backend == "openvino" and not config.platform
    # the backend can't pin f32 (it reads HINT_BF16 only): deploy says so
    assert "HINT_BF16" not in config.parameters and "INFERENCE_PRECISION_HINT" not in (
        config.parameters)
    assert "no setting that pins f32" in " ".join(result.output.split())


def test_a_bundle_written_before_companion_files_still_verifies(cnn_onnx_bundle, tmp_path):
    """Schema 2 (no `files`): migrated on read, verified, and rewritten as schema 3."""
    from toolkit.manifest import SCHEMA_VERSION

    old = tmp_path / "old"
    shutil.copytree(cnn_onnx_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["schema"] = 2
    for record in manifest["artifacts"]:
        record.pop("files", None)
    (old / "manifest.json").write_text(json.dumps(manifest))
    result = run("verify", old)
    assert result.exit_code == 0, result.output
    assert json.loads((old / "manifest.json").read_text())["schema"] == SCHEMA_VERSION


def test_int8_ir_on_a_trained_classifier(tmp_path):
    """A trained digits classifier: the INT8 IR, converted from the Q/DQ ONNX, keeps its
    accuracy. NNCF's route (--openvino-quantizer nncf): tests/export/test_int8_fallback.py."""
    from tests.models import save_checkpoint, train_digits8x8

    model, splits = train_digits8x8(steps=200)
    ckpt = tmp_path / "digits.ckpt"
    save_checkpoint(model, ckpt)
    np.savez(tmp_path / "calib.npz", x=splits["x_train"][:256])
    np.savez(tmp_path / "eval.npz", x=splits["x_test"], labels=splits["y_test"])
    out = tmp_path / "b"
    result = run("export", ckpt, "--model", "tests.models:Digits8x8", "--to", "openvino",
                 "--precision", "fp32,int8", "--calib-data", tmp_path / "calib.npz",
                 "--eval-data", tmp_path / "eval.npz", "--out", out,
                 "--openvino-quantizer", "qdq")  # the default, said
    assert result.exit_code == 0, result.output
    record = Bundle.open(out).artifact("openvino", "int8")
    assert record["inference_precision"] == "f32" and record["from_onnx"] == "model.int8.onnx"
    assert record["parity"]["passed"] and record["accuracy"]["passed"]
    assert record["accuracy"]["reduced"]["score"] >= record["accuracy"]["fp32"]["score"] - 1.0


def test_the_detector_is_judged_by_iou_matching(trained, detector_onnx_bundle, tmp_path):
    """From the shared bundle of the detector with NMS appended (its ONNX is what OpenVINO
    converts, so it isn't exported twice)."""
    out = shutil.copytree(detector_onnx_bundle, tmp_path / "det")
    result = run("export", out, "--to", "openvino")
    assert result.exit_code == 0, result.output
    record = Bundle.open(out).artifact("openvino", "fp32")
    detection = record["parity"]["detection"]  # matched by IoU and label, not elementwise
    assert record["parity"]["passed"] and detection["passed"] and not detection["vacuous"]
    assert detection["matched_fraction"] == 1.0 and detection["worst_iou"] > 0.999
    images = trained["val"]["x"][:3]
    with runtime.load(out, format="openvino") as runner:
        got = runner.infer({"x": images})
    assert got["boxes"].shape == (3, 20, 4) and got["labels"].dtype == np.int64
    assert (got["num_detections"] > 0).all()


def test_a_precision_openvino_does_not_carry_is_refused_before_anything_is_written(
        cnn_onnx_bundle, tmp_path):
    fresh = tmp_path / "fresh"
    result = run("export", "tests.models:small_cnn", "--to", "openvino", "--precision",
                 "fp16", "--out", fresh)
    assert result.exit_code == 2 and "not supported for openvino" in result.output
    assert not fresh.exists()
    copy = tmp_path / "copy"
    shutil.copytree(cnn_onnx_bundle, copy)
    before = sorted(p.name for p in copy.iterdir())
    result = run("export", copy, "--to", "openvino", "--precision", "fp16")
    assert result.exit_code == 2 and "supported: fp32, bf16, int8" in result.output
    assert sorted(p.name for p in copy.iterdir()) == before
    # a precision one asked format carries is fine; the others export what they carry
    result = run("export", copy, "--to", "onnx,openvino", "--precision", "fp32,fp16")
    assert result.exit_code == 0, result.output
    formats = {(r.format, r.precision) for r in Bundle.open(copy).artifacts}
    assert formats == {("onnx", "fp32"), ("onnx", "fp16"), ("openvino", "fp32")}



@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no AMX-BF16 or AVX512_BF16")
def test_verify_says_when_the_bf16_ir_was_made_for_another_cpu(ov_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(ov_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for record in manifest["artifacts"]:
        if record["format"] == "openvino" and record["precision"] == "bf16":
            record["cpu_flags"] = [*record["cpu_flags"], "amx_bf16"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = run("verify", copy, "--format", "openvino", "--precision", "bf16", "--no-record")
    assert result.exit_code == 0, result.output
    assert "exported on a CPU with" in " ".join(result.output.split())
