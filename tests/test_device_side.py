"""The device side needs no PyTorch: inspect, verify and bench an ONNX artifact of a bundle in
a process where importing torch or Lightning fails, with the same results as with torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--budget", "0.2", "--warmup", "0.1", "--min-iters", "5", "--batch", "1,3"]


def toolkit(*args: object, torch: bool, block: str = "") -> subprocess.CompletedProcess:
    entry = [str(ROOT / "tests" / "no_torch.py")] if not torch else ["-m", "toolkit.cli.app"]
    env = {**os.environ, "TOOLKIT_TEST_BLOCK": block}
    return subprocess.run([sys.executable, *entry, *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def device_bundle(two_io_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("device") / "bundle"
    shutil.copytree(two_io_bundle, copy)
    return copy


def test_the_blocker_really_blocks_torch(device_bundle):
    result = subprocess.run([sys.executable, "-c", "import runpy, sys; sys.argv=['x']; "
                             "exec(open('tests/no_torch.py').read().split('if __name__')[0]); "
                             "sys.meta_path.insert(0, _Blocker()); import torch"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and "blocked" in result.stderr


def test_inspect_without_torch(device_bundle, tmp_path):
    result = toolkit("inspect", device_bundle, "--json", "-", torch=False)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert {"onnx", "torchscript", "pt2"} <= {a["format"] for a in info["artifacts"]}


def test_verify_onnx_without_torch_matches_with_torch(device_bundle, tmp_path):
    args = ("verify", device_bundle, "--format", "onnx", "--no-record", "--json", "-")
    without = toolkit(*args, torch=False)
    assert without.returncode == 0, without.stderr
    with_torch = toolkit(*args, torch=True)
    assert with_torch.returncode == 0, with_torch.stderr
    a, b = json.loads(without.stdout), json.loads(with_torch.stdout)
    assert a["passed"] and b["passed"]
    assert [r["outputs"] for r in a["reports"]] == [r["outputs"] for r in b["reports"]]


def test_verify_everything_without_torch_checks_onnx_and_says_what_it_skipped(device_bundle):
    result = toolkit("verify", device_bundle, "--no-record", torch=False)
    assert result.returncode == 0, result.stderr
    assert "torchscript/fp32 not checked here" in result.stderr
    assert "toolkit[export]" in result.stderr
    named = toolkit("verify", device_bundle, "--format", "torchscript", "--no-record",
                    torch=False)
    assert named.returncode == 3 and "Traceback" not in named.stderr


def test_bench_onnx_without_torch(device_bundle, tmp_path):
    out = tmp_path / "bench.json"
    result = toolkit("bench", device_bundle, "--format", "onnx", *FAST, "--json", out,
                     torch=False)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["results"]
    assert sorted((r["format"], r["batch"]) for r in rows) == [("onnx", 1), ("onnx", 3)]
    assert all(r["p50_ms"] > 0 for r in rows)


def test_trt_export_without_torch_or_tensorrt_exits_3_and_names_the_extra(device_bundle):
    result = toolkit("export", device_bundle, "--to", "trt", torch=False)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "toolkit[trt]" in result.stdout + result.stderr
    assert not list(device_bundle.glob("*.engine"))


def test_help_does_not_import_torch():
    code = ("import sys; from toolkit.cli.app import app; "
            "print('torch' in sys.modules, 'onnxruntime' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_without_onnxruntime_verify_exits_3_and_names_the_extra(device_bundle):
    result = toolkit("verify", device_bundle, "--format", "onnx", "--no-record", torch=False,
                     block="onnxruntime")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "toolkit[onnxruntime]" in result.stderr and "Traceback" not in result.stderr


def test_bench_with_nothing_runnable_exits_3_and_names_each_extra(device_bundle):
    result = toolkit("bench", device_bundle, *FAST, torch=False, block="onnxruntime,openvino")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "toolkit[onnxruntime]" in result.stderr and "toolkit[export]" in result.stderr
    if "openvino" in {a["format"] for a in json.loads(
            (device_bundle / "manifest.json").read_text())["artifacts"]}:
        assert "toolkit[openvino]" in result.stderr


def test_select_and_deploy_without_torch(device_bundle, tmp_path):
    """On a device: select times what it can run (ONNX), excludes what it can't with the
    reason, and deploys the choice to a Triton repository — no torch anywhere."""
    bundle = tmp_path / "b"
    shutil.copytree(device_bundle, bundle)
    chosen = toolkit("select", bundle, "--batch", "1", "--json", "-", torch=False)
    assert chosen.returncode == 0, chosen.stderr
    doc = json.loads(chosen.stdout)
    # the fastest of what runs without torch: ONNX Runtime or OpenVINO
    assert doc["selected"]["artifact"] in ("onnx/fp32", "openvino/fp32")
    excluded = {c["artifact"]: c["excluded"] for c in doc["candidates"]}
    assert "can't run here" in excluded["torchscript/fp32"]
    deployed = toolkit("deploy", bundle, "--triton", tmp_path / "repo", torch=False)
    assert deployed.returncode == 0, deployed.stderr
    served = {"onnx/fp32": ["model.onnx"], "openvino/fp32": ["model.xml", "model.bin"]}
    for name in served[doc["selected"]["artifact"]]:
        assert (tmp_path / "repo" / "b" / "1" / name).is_file()
