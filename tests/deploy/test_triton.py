"""`toolkit deploy --triton`: each format's config parses with Triton's own protobuf schema,
its dims and types match the manifest, the model file is the bundle's (sha256), and the
client example judges replies by the bundle's parity preset."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from typer.testing import CliRunner

from toolkit.bundle import Bundle
from toolkit.cli.app import app

runner = CliRunner()


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def deploy(bundle: Path, repo: Path, *args: str):
    return runner.invoke(app, ["deploy", str(bundle), "--triton", str(repo), *args])


@pytest.mark.parametrize(("fmt", "platform", "file", "names"), [
    ("onnx", "onnxruntime_onnx", "model.onnx", None),  # the bundle's own names
    ("torchscript", "pytorch_libtorch", "model.pt", ["INPUT__0", "INPUT__1"]),
    ("pt2", "torch_aoti", "model.pt2", ["INPUT__0", "INPUT__1"]),
])
def test_each_format_becomes_a_schema_valid_model(two_io_bundle, tmp_path, fmt, platform, file,
                                                  names):
    repo = tmp_path / "repo"
    result = deploy(two_io_bundle, repo, "--format", fmt, "--name", f"two_io_{fmt}")
    assert result.exit_code == 0, result.output
    model = repo / f"two_io_{fmt}"
    config = parse(model / "config.pbtxt")
    bundle = Bundle.open(two_io_bundle)
    record = bundle.artifact(fmt)
    assert config.name == f"two_io_{fmt}" and config.platform == platform
    assert hashlib.sha256((model / "1" / file).read_bytes()).hexdigest() == record["sha256"]
    specs = bundle.inputs
    assert [i.name for i in config.input] == (names or [s.name for s in specs])
    if fmt == "pt2":  # torch_aoti serves batch 1 only: the batch is part of the dims
        assert config.max_batch_size == 0
        assert [list(i.dims) for i in config.input] == [[1, *s.max[1:]] for s in specs]
    else:
        assert config.max_batch_size == specs[0].max[0]
        assert [list(i.dims) for i in config.input] == [list(s.max[1:]) for s in specs]
        assert config.HasField("dynamic_batching")
    types = {"float32": model_config_pb2.TYPE_FP32, "int64": model_config_pb2.TYPE_INT64}
    assert [i.data_type for i in config.input] == [types[s.dtype] for s in specs]
    assert [o.data_type for o in config.output] == [types[o.dtype] for o in bundle.outputs]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    (warm,) = config.model_warmup
    for name, value in warm.inputs.items():
        data = (model / "warmup" / value.input_data_file).read_bytes()
        assert len(data) == int(np.prod(value.dims)) * 4, name
    assert (model / "client_example.py").is_file()
    assert model.stat().st_mode & 0o755 == 0o755  # readable by a server running as another user


def test_the_client_judges_replies_by_the_parity_preset(two_io_bundle, tmp_path):
    """ONNX Runtime stands in for the server (no Triton can run here): right replies pass,
    a reply off by 1 % fails."""
    from toolkit.backends.onnx.runner import OnnxRuntimeRunner

    repo = tmp_path / "repo"
    assert deploy(two_io_bundle, repo, "--format", "onnx", "--name", "m").exit_code == 0
    model = repo / "m"
    spec = importlib.util.spec_from_file_location("client_example", model / "client_example.py")
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    bundle = Bundle.open(model / "client_bundle")
    served = OnnxRuntimeRunner(model / "1" / "model.onnx", inputs=bundle.inputs,
                               outputs=bundle.outputs)
    with served:
        assert client.judge(served.infer, here=model).passed

        def off(feed):
            return {k: v * np.float32(1.01) for k, v in served.infer(feed).items()}

        assert not client.judge(off, here=model).passed


def test_the_selected_artifact_is_the_default(two_io_bundle, tmp_path):
    bundle = Path(shutil.copytree(two_io_bundle, tmp_path / "b"))
    no_choice = deploy(bundle, tmp_path / "repo")
    assert no_choice.exit_code == 2 and "toolkit select" in no_choice.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    record = next(r for r in manifest["artifacts"] if r["format"] == "torchscript")
    manifest["selected"] = {"artifact": "torchscript/fp32", "format": "torchscript",
                            "precision": "fp32", "path": record["path"],
                            "sha256": record["sha256"], "objective": "latency", "batch": 1,
                            "device": "cpu"}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = deploy(bundle, tmp_path / "repo")
    assert result.exit_code == 0, result.output
    assert parse(tmp_path / "repo" / "b" / "config.pbtxt").platform == "pytorch_libtorch"


def test_bad_input(two_io_bundle, tmp_path):
    repo = tmp_path / "repo"
    unknown = deploy(two_io_bundle, repo, "--format", "onnx2")
    assert unknown.exit_code == 2 and "onnx" in unknown.output
    in_process = deploy(two_io_bundle, repo, "--format", "compile")
    assert in_process.exit_code == 2, in_process.output
    bad_name = deploy(two_io_bundle, repo, "--format", "onnx", "--name", "../up")
    assert bad_name.exit_code == 2 and "--name" in bad_name.output
    assert not (tmp_path / "up").exists()
    # a failed artifact: refused unless --force
    failed = Path(shutil.copytree(two_io_bundle, tmp_path / "failed"))
    manifest = json.loads((failed / "manifest.json").read_text())
    manifest["artifacts"][0]["parity"]["passed"] = False
    (failed / "manifest.json").write_text(json.dumps(manifest))
    fmt = manifest["artifacts"][0]["format"]
    refused = deploy(failed, repo, "--format", fmt)
    assert refused.exit_code == 2 and "failed parity" in refused.output
    assert not (repo / "failed").exists()
    assert deploy(failed, repo, "--format", fmt, "--force").exit_code == 0
    # an existing model directory: refused unless --force
    again = deploy(two_io_bundle, repo, "--format", fmt, "--name", "failed")
    assert again.exit_code == 2 and "exists" in again.output
    replaced = deploy(two_io_bundle, repo, "--format", fmt, "--name", "failed", "--force")
    assert replaced.exit_code == 0, replaced.output
    assert [p.name for p in repo.iterdir()] == ["failed"]  # no staging left behind


def test_hostile_tensor_names_reach_neither_the_disk_nor_the_config(two_io_bundle, tmp_path):
    """A name is quoted as data in config.pbtxt (no field can be smuggled in) and never
    becomes a file path (warm-up files are named by position)."""
    from toolkit.bundle import sha256_file

    bundle = Path(shutil.copytree(two_io_bundle, tmp_path / "b"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    hostile = '../../escape" backend: "python'
    old = manifest["inputs"][0]["name"]
    manifest["inputs"][0]["name"] = hostile
    golden = dict(np.load(bundle / "golden.npz"))
    golden = {k.replace(f"/in/{old}", f"/in/{hostile}"): v for k, v in golden.items()}
    np.savez(bundle / "golden.npz", **golden)
    manifest["golden"]["sha256"] = sha256_file(bundle / "golden.npz")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = deploy(bundle, tmp_path / "repo", "--format", "onnx", "--force")
    assert result.exit_code == 0, result.output
    config = parse(tmp_path / "repo" / "b" / "config.pbtxt")
    assert config.input[0].name == hostile and not config.backend
    assert sorted(p.name for p in (tmp_path / "repo" / "b" / "warmup").iterdir()) == [
        "input_0", "input_1"]
    assert not list(tmp_path.rglob("escape*"))


def test_a_detectors_per_image_count_is_a_valid_triton_output(detector_onnx_bundle, tmp_path):
    """num_detections is one number per image ([B]); Triton refuses empty dims, so it is
    written as [ 1 ] reshaped to [ ]."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    out = detector_onnx_bundle  # deploy only reads it
    result = runner.invoke(app, ["deploy", str(out), "--triton", str(tmp_path / "repo"),
                                 "--format", "onnx"])
    assert result.exit_code == 0, result.output
    config = text_format.Parse((tmp_path / "repo" / "det" / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    count = next(o for o in config.output if o.name == "num_detections")
    assert list(count.dims) == [1] and count.HasField("reshape")
    assert list(count.reshape.shape) == []
    assert all(list(o.dims) for o in config.output)  # no output with empty dims


def test_a_golden_sample_that_does_not_fit_the_manifest_is_refused(two_io_bundle, tmp_path):
    """Triton would refuse to load a model whose warm-up request doesn't fit its inputs."""
    import shutil

    import numpy as np

    from toolkit.bundle import Bundle, GoldenSample

    copy = tmp_path / "b"
    shutil.copytree(two_io_bundle, copy)
    bundle = Bundle.open(copy)
    samples = bundle.golden()
    first = samples[0]
    wrong = {k: np.zeros((1, 99), np.float32) for k in first.inputs}
    bundle.save_golden([GoldenSample(wrong, first.outputs), *samples[1:]])
    bundle.save()
    result = runner.invoke(app, ["deploy", str(copy), "--triton", str(tmp_path / "repo"),
                                 "--format", "onnx"])
    assert result.exit_code == 2, result.output
    assert "golden sample 0" in " ".join(result.output.split())
    assert not (tmp_path / "repo" / "b").exists()


def test_a_full_disk_during_deploy_is_bad_input_and_leaves_nothing(two_io_bundle, tmp_path,
                                                                    monkeypatch):
    import errno

    from toolkit.deploy import triton as deploy_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(deploy_module.shutil, "copyfile", full)
    repo = tmp_path / "new" / "repo"
    result = runner.invoke(app, ["deploy", str(two_io_bundle), "--triton", str(repo),
                                 "--format", "onnx"])
    assert result.exit_code == 2, result.output
    assert "No space left on device" in " ".join(result.output.split())
    assert not (tmp_path / "new").exists()  # the REPO this call created is gone too


def test_concurrent_deploys_to_one_name_never_overwrite_each_other(two_io_bundle, tmp_path):
    import subprocess
    import sys

    repo = tmp_path / "repo"
    command = [sys.executable, "-m", "toolkit.cli.app", "deploy", str(two_io_bundle),
               "--triton", str(repo), "--format", "onnx", "--name", "net"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(6)]
    codes = [p.wait(timeout=300) for p in procs]
    outputs = [p.stdout.read() for p in procs]
    assert sorted(codes) == [0, 2, 2, 2, 2, 2], outputs
    assert all("exists; pass --force" in o for o, c in zip(outputs, codes) if c == 2)
    assert sorted(p.name for p in repo.iterdir()) == ["net"]


def test_deploy_waits_for_the_repository_lock(two_io_bundle, tmp_path):
    """The --force decision and the write happen under REPO's lock: while another deploy holds
    it, this one writes nothing."""
    import subprocess
    import sys
    import time

    from toolkit import transaction

    repo = tmp_path / "repo"
    repo.mkdir()
    command = [sys.executable, "-m", "toolkit.cli.app", "deploy", str(two_io_bundle),
               "--triton", str(repo), "--format", "onnx", "--name", "net"]
    with transaction.locked(repo):
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        # a writer kept waiting announces itself in REPO: proof it reached the lock
        marker = f"{transaction.WRITER_PREFIX}{proc.pid}-"
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(marker) for p in repo.iterdir()):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the deploy never reached the lock"
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()
        assert not (repo / "net").exists()
    assert proc.wait(timeout=120) == 0, proc.stdout.read()
    assert (repo / "net" / "config.pbtxt").is_file()
