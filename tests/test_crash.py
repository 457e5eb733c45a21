"""A bundle survives a killed process: the export is killed (SIGKILL, from a test-only hook at
named points of the journal's protocol) and the next command, whichever it is, puts the bundle
back as it was, or keeps a finished export, and leaves no temp file or journal behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.transaction import CRASH_ENV, JOURNAL, TEMP_PREFIX

MLP = ["tests.models:plain_mlp", "--input", "x:1-4x5"]


def toolkit(*args: object, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.run([sys.executable, "-m", "toolkit.cli.app", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def command(*args: object) -> subprocess.CompletedProcess:
    """A toolkit command in this process (saves a Python start; the kills need a real one)."""
    from typer.testing import CliRunner

    from toolkit.cli.app import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    return subprocess.CompletedProcess(args, result.exit_code, result.output, result.output)


def snapshot(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.iterdir()) if p.is_file()}


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()
                  if p.name == JOURNAL or p.name.startswith(TEMP_PREFIX))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from toolkit.export.pipeline import export

    out = tmp_path_factory.mktemp("crash") / "mlp"
    result = export(MLP[0], ["onnx"], out, inputs=[MLP[2]])
    assert result.exit_code == 0, result.to_dict()
    return out


@pytest.fixture
def bundle(exported, tmp_path) -> Path:
    copy = tmp_path / "mlp"
    shutil.copytree(exported, copy)
    return copy


def killed(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == -signal.SIGKILL


# after-publish: the fresh --out and the --force over another model's bundle below
@pytest.mark.parametrize("point", ["after-backup", "before-commit"])
def test_an_export_killed_before_it_commits_is_rolled_back_by_the_next_command(bundle, point):
    before = snapshot(bundle)
    result = toolkit("export", *MLP, "--to", "onnx", "--precision", "fp32,fp16", "--out", bundle,
                     "--force", crash_at=point)
    assert killed(result), (result.returncode, result.stderr)
    assert leftovers(bundle), "the kill left the journal the next command needs"
    shown = toolkit("inspect", bundle)
    assert shown.returncode == 0, shown.stderr
    assert "rolled back an export that was killed" in shown.stderr
    assert snapshot(bundle) == before  # every file byte for byte, replaced ones put back
    assert leftovers(bundle) == []
    assert command("verify", bundle).returncode == 0


def test_a_killed_force_over_another_models_bundle_gets_the_old_bundle_back(bundle):
    before = snapshot(bundle)
    result = toolkit("export", "tests.models:small_cnn", "--to", "onnx,torchscript", "--out",
                     bundle, "--force", crash_at="after-publish")
    assert killed(result), result.stderr
    verified = command("verify", bundle, "--no-record")  # recovers first, then reads
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert snapshot(bundle) == before and leftovers(bundle) == []


def test_an_export_killed_after_it_committed_is_kept(bundle):
    result = toolkit("export", bundle, "--to", "onnx", "--precision", "fp32,fp16",
                     crash_at="committed")
    assert killed(result), result.stderr
    verified = command("verify", bundle, "--precision", "fp16")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert leftovers(bundle) == [] and "model.fp16.onnx" in snapshot(bundle)


def test_a_killed_export_into_a_new_directory_leaves_nothing_and_can_be_run_again(tmp_path):
    out = tmp_path / "fresh"
    result = toolkit("export", *MLP, "--to", "onnx", "--out", out, crash_at="after-publish")
    assert killed(result), result.stderr
    assert leftovers(out)
    again = command("export", *MLP, "--to", "onnx", "--out", out)  # no --force needed
    assert again.returncode == 0, again.stderr
    assert leftovers(out) == []
    assert command("verify", out).returncode == 0


def test_a_reader_of_a_killed_fresh_export_finds_no_half_bundle(tmp_path):
    out = tmp_path / "fresh"
    assert killed(toolkit("export", *MLP, "--to", "onnx", "--out", out,
                          crash_at="journal-open"))
    shown = command("inspect", out)
    assert shown.returncode == 2 and "Traceback" not in shown.stderr
    assert not out.exists()  # the killed command made it; its rollback removes it


def test_a_planted_journal_names_nothing_outside_the_bundle(bundle, tmp_path):
    """A bundle is input nobody here wrote: its journal may name any path."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    journal = bundle / JOURNAL
    journal.mkdir()
    (journal / "intent.json").write_text(
        '{"version": 1, "state": "open", "created_root": true, '
        f'"created": ["../victim.txt", "{victim}"], "saved": []}}')
    before = snapshot(bundle)
    shown = toolkit("inspect", bundle)
    assert shown.returncode == 0, shown.stderr
    assert victim.read_text() == "keep me" and snapshot(bundle) == before
    assert leftovers(bundle) == []


# -- a full disk ------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a given size (needs the right to mount, as root in a container has)."""
    mounted: list[Path] = []

    def make(size_kib: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs",
                               str(where)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"can't mount a small tmpfs here to fill ({done.stderr.strip()})")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


@pytest.mark.parametrize("to", ["torchscript"])  # onnx: the existing bundle's test below
def test_a_full_disk_is_one_line_exit_2_and_leaves_nothing(small_disk, to):
    out = small_disk(24) / "b"  # the golden samples fit; the model doesn't
    # in process: the disk is really full, and only a kill needs a process of its own
    result = command("export", "tests.models:small_cnn", "--to", to, "--out", out)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_a_full_disk_leaves_an_existing_bundle_as_it_was(small_disk, exported):
    size = sum(p.stat().st_size for p in exported.iterdir()) // 1024
    bundle = small_disk(size + 12) / "mlp"
    shutil.copytree(exported, bundle)
    before = snapshot(bundle)
    result = command("export", *MLP, "--to", "onnx,torchscript", "--out", bundle, "--force")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "No space left on device" in result.stderr
    assert snapshot(bundle) == before and leftovers(bundle) == []


# -- writers and readers ----------------------------------------------------------------------
def test_steady_readers_cannot_starve_an_export(bundle):
    """Readers keep overlapping (one always holds the shared lock); an export announces that
    it waits, new readers let it go first, and it gets the bundle within a second or two."""
    import threading
    import time

    from toolkit.transaction import reading, writing

    stop = time.monotonic() + 5.0
    got_it: list[float] = []

    def reader(offset: float) -> None:
        time.sleep(offset)
        while time.monotonic() < stop:
            with reading(bundle):
                time.sleep(0.3)

    readers = [threading.Thread(target=reader, args=(i * 0.1,)) for i in range(4)]
    for thread in readers:
        thread.start()
    time.sleep(1.0)
    asked = time.monotonic()
    with writing(bundle):
        got_it.append(time.monotonic() - asked)
    for thread in readers:
        thread.join()
    assert got_it and got_it[0] < 3.0, got_it
    assert not any(p.name.startswith(".toolkit-writer-") for p in bundle.iterdir())


def test_a_usage_error_is_found_before_the_lock(bundle):
    """An export with a bad precision is told so at once, even while the bundle is busy."""
    import time

    from toolkit.transaction import locked

    with locked(bundle):
        started = time.monotonic()
        result = toolkit("export", bundle, "--to", "torchscript", "--precision", "fp16")
        assert result.returncode == 2 and "not supported for torchscript" in result.stderr
        assert time.monotonic() - started < 60


def test_enospc_at_each_write_of_an_export_rolls_the_bundle_back(bundle, monkeypatch):
    """Where a small filesystem can't be mounted, the same logic: a full disk injected at the
    first, second, ... rename an export makes (its artifacts, golden samples, manifest)."""
    import errno

    from typer.testing import CliRunner

    import toolkit.bundle
    import toolkit.export.pipeline
    from toolkit.cli.app import app

    real = toolkit.bundle.publish
    argv = ["export", *MLP, "--to", "onnx,torchscript", "--out", str(bundle), "--force"]
    calls: list[int] = []

    def failing_at(n: int):
        def publish(written, destination):
            calls.append(1)
            if len(calls) == n:
                raise OSError(errno.ENOSPC, "No space left on device", str(destination))
            return real(written, destination)
        return publish

    before = snapshot(bundle)
    n = 1
    while True:
        calls.clear()
        patched = failing_at(n)
        monkeypatch.setattr(toolkit.bundle, "publish", patched)
        monkeypatch.setattr(toolkit.export.pipeline, "publish", patched)
        result = CliRunner().invoke(app, argv)
        if len(calls) < n:  # every write has had its turn; the last run succeeded
            assert result.exit_code == 0, result.output
            break
        assert result.exit_code == 2, (n, result.output)
        assert "No space left on device" in result.output, (n, result.output)
        assert snapshot(bundle) == before and leftovers(bundle) == [], n
        n += 1
    assert n > 3  # artifacts, golden samples and the manifest were each tried
