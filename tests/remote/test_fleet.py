"""`--on`: a bundle made here built, verified and timed on devices over a real SSH server, and
what they found brought back into the one manifest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.remote.lab import Lab
from toolkit.cli.app import app

FAST = ["--budget", "0.2", "--warmup", "0.05", "--min-iters", "5", "--batch", "1"]


def toolkit(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def tree(root: Path) -> dict[str, str]:
    """Every file of a directory, by content: the bundle byte for byte."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made_here(cnn_onnx_torchscript_bundle: Path) -> Path:
    """A bundle exported on the workstation: ONNX (which devices run) and TorchScript (which
    a device without torch can't). Shared: each test works on a copy (`bundle`)."""
    return cnn_onnx_torchscript_bundle


@pytest.fixture
def bundle(made_here: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "cnn"
    shutil.copytree(made_here, copy)
    return copy


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_the_whole_loop(lab: Lab, bundle: Path, tmp_path: Path):
    """export here -> engine built on dev-trt -> verify and bench on three devices -> select
    and deploy per device; the manifest holds each device's records and the engine."""
    on = ["--targets", lab.targets]
    code, out = toolkit("export", bundle, "--to", "trt", "--on", "dev-trt", *on)
    assert code == 0, out
    doc = manifest(bundle)
    engines = [a for a in doc["artifacts"] if a["format"] == "trt"]
    assert [(e["path"], e["target"]) for e in engines] == [("model@dev-trt.engine", "dev-trt")]
    assert engines[0]["parity"]["passed"]
    assert (bundle / "model@dev-trt.engine").is_file()
    # the device as it described itself: TensorRT there is the conformance fake's 10.13
    assert doc["targets"]["dev-trt"]["runtimes"]["trt"].startswith("10.13")
    assert "trt" in doc["targets"]["dev-trt"]["backends"]

    code, out = toolkit("verify", bundle, "--on", "dev-a,dev-ov,dev-trt", *on)
    assert code == 0, out
    doc = manifest(bundle)
    onnx = next(a for a in doc["artifacts"] if a["format"] == "onnx")
    assert set(onnx["on_device"]) == {"dev-a", "dev-ov", "dev-trt"}
    assert all(r["parity"]["passed"] for r in onnx["on_device"].values())
    ts = next(a for a in doc["artifacts"] if a["format"] == "torchscript")
    assert ts.get("on_device", {}) == {}  # no torch on any device: never sent, never judged

    code, out = toolkit("bench", bundle, "--on", "dev-a,dev-ov,dev-trt", *on, *FAST)
    assert code == 0, out
    doc = manifest(bundle)
    onnx = next(a for a in doc["artifacts"] if a["format"] == "onnx")
    assert all(r["bench"]["rows"][0]["p50_ms"] > 0 for r in onnx["on_device"].values())
    engine = next(a for a in doc["artifacts"] if a["format"] == "trt")
    assert engine["bench"]["rows"][0]["p50_ms"] > 0  # the fake's timing: conformance

    code, out = toolkit("select", bundle, "--target", "dev-a", "--json", "-")
    assert code == 0, out
    assert json.loads(out[out.index("{"):])["selected"]["artifact"] == "onnx/fp32"
    assert manifest(bundle)["targets"]["dev-a"]["selected"]["artifact"] == "onnx/fp32"
    code, out = toolkit("deploy", bundle, "--triton", tmp_path / "repo", "--target", "dev-a")
    assert code == 0, out
    assert (tmp_path / "repo" / "cnn" / "1" / "model.onnx").is_file()

    text = (bundle / "manifest.json").read_text()  # no destination, key path or device paths
    assert "client_key" not in text and "127.0.0.1" not in text and str(lab.dir) not in text

    code, out = toolkit("inspect", bundle, "--json", "-")
    assert code == 0, out
    info = json.loads(out[out.index("{"):])
    assert set(info["devices"]) == {"dev-a", "dev-ov", "dev-trt"}
    assert info["devices"]["dev-a"]["selected"] == "onnx/fp32"
    rows = {(a["format"], a["target"]): a for a in info["artifacts"]}
    assert rows[("trt", "dev-trt")]["parity"] == "pass"
    assert rows[("onnx", None)]["on_device"]["dev-ov"]["parity"] == "pass"
    assert rows[("onnx", None)]["on_device"]["dev-ov"]["bench"]["p50_ms"]["1"] > 0


def test_second_run_sends_nothing(lab: Lab, bundle: Path):
    on = ["--targets", lab.targets, "--json", "-"]
    code, first = toolkit("verify", bundle, "--on", "fan-00", *on)  # a fresh store
    assert code == 0, first
    code, second = toolkit("verify", bundle, "--on", "fan-00", *on)
    assert code == 0, second
    sent = [json.loads(o[o.index("{"):])["targets"][0]["sent_files"] for o in (first, second)]
    assert sent[0] >= 2 and sent[1] == 0


def test_unknown_host_key_is_exit_2_naming_the_host(lab: Lab, bundle: Path):
    before = tree(bundle)
    code, out = toolkit("verify", bundle, "--on", "stranger", "--targets", lab.targets)
    assert code == 2, out
    assert "host key" in out and "127.0.0.1" not in out.split("stranger")[0]
    assert tree(bundle) == before


def test_a_device_missing_the_backend_is_exit_3_and_the_others_finish(lab: Lab, bundle: Path):
    code, out = toolkit("export", bundle, "--to", "trt", "--on", "dev-a,dev-trt", "--targets",
                        lab.targets, "--json", "-")
    assert code == 3, out
    rows = {r["target"]: r for r in json.loads(out[out.index("{"):])["targets"]}
    assert rows["dev-a"]["exit"] == 3 and "tensorrt" in rows["dev-a"]["message"]
    assert rows["dev-trt"]["exit"] == 0
    assert (bundle / "model@dev-trt.engine").is_file()


def test_a_toolkit_too_old_for_the_schema_is_refused_before_any_work(lab: Lab, bundle: Path):
    before = tree(bundle)
    code, out = toolkit("verify", bundle, "--on", "dev-old", "--targets", lab.targets)
    assert code == 2, out
    assert "upgrade" in out and "schema" in out
    assert not (lab.workdir("dev-old") / "bundles").exists() or not any(
        (lab.workdir("dev-old") / "bundles").iterdir())
    assert tree(bundle) == {k: v for k, v in before.items()}


def test_a_hostile_device_is_refused_and_nothing_lands(lab: Lab, bundle: Path, tmp_path: Path):
    before = tree(bundle)
    code, out = toolkit("export", bundle, "--to", "trt", "--on", "dev-hostile", "--targets",
                        lab.targets, "--json", "-")
    assert code == 2, out
    assert "did not ask for" in json.loads(out[out.index("{"):])["targets"][0]["message"]
    assert tree(bundle) == before
    assert not list(lab.dir.parent.rglob("escaped.txt"))
    # a device claiming a 16 TiB engine is refused before anything is fetched
    code, out = toolkit("export", bundle, "--to", "trt", "--on", "dev-huge", "--targets",
                        lab.targets, "--json", "-")
    assert code == 2, out
    assert "refused" in json.loads(out[out.index("{"):])["targets"][0]["message"]
    assert tree(bundle) == before


@pytest.mark.parametrize("name", ["dev-a;touch /tmp/x", "$(id)", "a\nb", "-oProxyCommand=x"])
def test_target_names_with_shell_characters_are_refused(lab: Lab, bundle: Path, name: str):
    code, out = toolkit("verify", bundle, "--on", name, "--targets", lab.targets)
    assert code == 2, out
    assert "Traceback" not in out


# -- faults, played for real ---------------------------------------------------------------------
def _start(*args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "toolkit.cli.app", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for(condition, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text(
        ).split()[2]


def test_a_connection_cut_mid_sync_leaves_the_bundle_and_the_rerun_completes(lab: Lab,
                                                                              bundle: Path):
    before = tree(bundle)
    store = lab.workdir("shared-a") / "store"
    running = _start("verify", bundle, "--on", "dev-stall-put", "--targets", lab.targets)
    _wait_for(lambda: store.is_dir() and any(store.glob(".tmp-*")), "a partial upload")
    # the link drops: the workstation's ssh dies mid-transfer
    subprocess.run(["pkill", "-KILL", "-f", "ssh .*dev-stall-put"], check=False)
    out, _ = running.communicate(timeout=60)
    assert running.returncode == 2, out
    assert "Traceback" not in out
    assert tree(bundle) == before  # byte for byte
    code, out = toolkit("verify", bundle, "--on", "dev-resume", "--targets", lab.targets)
    assert code == 0, out
    assert not list(store.glob(".tmp-*"))  # the cut upload's leftovers went with the rerun
    assert manifest(bundle)["artifacts"][0]["on_device"]["dev-resume"]["parity"]["passed"]


def test_a_device_killed_mid_build_leaves_the_bundle_and_the_rerun_recovers(lab: Lab,
                                                                            bundle: Path):
    before = tree(bundle)
    # the device's export kills itself (SIGKILL) with the engine and its manifest written,
    # just before its journal commits: the remote bundle keeps the journal
    code, out = toolkit("export", bundle, "--to", "trt", "--on", "dev-crash", "--targets",
                        lab.targets)
    assert code == 2, out
    assert tree(bundle) == before
    remote = next((lab.workdir("shared-t") / "bundles").iterdir())
    assert (remote / ".toolkit-journal").exists()
    code, out = toolkit("export", bundle, "--to", "trt", "--on", "dev-trt-again", "--targets",
                        lab.targets)
    assert code == 0, out
    assert (bundle / "model@dev-trt-again.engine").is_file()
    assert not (remote / ".toolkit-journal").exists()


def test_ctrl_c_ends_the_remote_command(lab: Lab, bundle: Path):
    before = tree(bundle)
    marker = lab.workdir("shared-a") / "stalled.pid"
    marker.unlink(missing_ok=True)
    running = _start("verify", bundle, "--on", "dev-stall-run", "--targets", lab.targets)
    _wait_for(marker.is_file, "the remote command to start")
    remote_pid = int(marker.read_text())
    os.killpg(running.pid, signal.SIGINT)
    out, _ = running.communicate(timeout=60)
    assert running.returncode == 130, out
    _wait_for(lambda: not _alive(remote_pid), "the remote command to end", timeout_s=20)
    assert tree(bundle) == before


def test_sixteen_devices_take_about_as_long_as_the_slowest(lab: Lab, bundle: Path):
    """Fan-out: 16 targets (aliases onto the loopback server), a bench each, in parallel; the
    wall time is near the slowest device's, not the sum (benchmarks/remote_fleet.py says by
    how much, per fleet size)."""
    code, out = toolkit("bench", bundle, "--on", "@fan", "--targets", lab.targets, "--budget",
                        "0.05", "--warmup", "0", "--min-iters", "3", "--batch", "1", "--json",
                        "-")
    assert code == 0, out
    doc = json.loads(out[out.index("{"):])
    times = [t["phases_s"]["done"] for t in doc["targets"]]
    assert len(times) == 16 and all(t["exit"] == 0 for t in doc["targets"])
    assert doc["wall_s"] < 0.5 * sum(times), (doc["wall_s"], times)
    assert doc["wall_s"] < 1.5 * max(times), (doc["wall_s"], times)
    onnx = manifest(bundle)["artifacts"][0]
    assert len([r for r in onnx["on_device"].values() if r["bench"]]) == 16


def test_a_full_disk_on_the_device_is_exit_2_naming_it_and_the_free_space(lab: Lab,
                                                                         bundle: Path):
    where = lab.workdir("full")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"can't mount a small tmpfs here to fill ({done.stderr.strip()})")
    try:
        before = tree(bundle)
        code, out = toolkit("verify", bundle, "--on", "dev-full", "--targets", lab.targets,
                            "--json", "-")
        assert code == 2, out
        row = json.loads(out[out.index("{"):])["targets"][0]
        assert "disk full" in row["message"] and "KiB free" in row["message"], row
        assert tree(bundle) == before
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_a_rerun_keeps_the_engine_and_a_changed_onnx_makes_it_stale(lab: Lab, bundle: Path,
                                                                    tmp_path: Path):
    on = ["--on", "dev-trt", "--targets", lab.targets]
    code, out = toolkit("export", bundle, "--to", "trt", "--precision", "fp32,fp16", *on)
    assert code == 0, out  # fp16 derived on a device without torch
    engines = {a["precision"]: a for a in manifest(bundle)["artifacts"] if a["format"] == "trt"}
    assert set(engines) == {"fp32", "fp16"} and (bundle / "model.fp16@dev-trt.engine").is_file()
    assert engines["fp32"]["built_from"]["model.onnx"] == manifest(bundle)["artifacts"][0][
        "sha256"]
    code, out = toolkit("export", bundle, "--to", "trt", *on, "--json", "-")
    assert code == 0, out
    row = json.loads(out[out.index("{"):])["targets"][0]
    assert row["pulled"] == [] and row["sent_files"] == 0  # kept there, not sent back
    code, out = toolkit("bench", bundle, *on, *FAST)
    assert code == 0, out
    # the bundle's ONNX changes here: the engine built from the old one can't be shipped
    doc = manifest(bundle)
    doc["artifacts"][0]["sha256"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(doc))
    code, out = toolkit("deploy", bundle, "--triton", tmp_path / "repo", "--target", "dev-trt",
                        "--format", "trt")
    assert code == 2 and "changed since" in out, out
    code, out = toolkit("select", bundle, "--target", "dev-trt", "--json", "-")
    assert code == 1, out
    assert all(c["excluded"] for c in json.loads(out[out.index("{"):])["candidates"])


def test_export_on_into_a_read_only_bundle_is_refused_before_any_work(lab: Lab, bundle: Path):
    before = tree(bundle)
    os.chmod(bundle, 0o555)
    try:
        code, out = toolkit("export", bundle, "--to", "trt", "--on", "dev-trt", "--targets",
                            lab.targets)
    finally:
        os.chmod(bundle, 0o755)
    assert code == 2 and "read-only" in out, out
    assert tree(bundle) == before


def test_a_format_the_device_cant_run_is_exit_3_naming_what_it_lacks(lab: Lab, bundle: Path):
    code, out = toolkit("verify", bundle, "--on", "dev-a", "--format", "torchscript",
                        "--targets", lab.targets, "--json", "-")
    assert code == 3, out
    message = json.loads(out[out.index("{"):])["targets"][0]["message"]
    assert "torch" in message and "toolkit[export]" in message


@pytest.mark.parametrize("option", [["--format", "nosuch"], ["--precision", "fp9"]])
def test_bad_names_are_refused_here_before_any_connection(bundle: Path, tmp_path: Path,
                                                          option: list[str]):
    targets = tmp_path / "targets.toml"  # a device that can't be reached: never tried
    targets.write_text('[targets.far]\nssh = "far.invalid"\n')
    code, out = toolkit("verify", bundle, "--on", "far", "--targets", targets, *option)
    assert code == 2, out
    assert "unknown" in out and "far.invalid" not in out
