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
    shown = toolkit("inspect", bundle)  # a bad journal: exit 2 naming it, nothing obeyed
    assert shown.returncode == 2 and "intent.json" in shown.stderr, shown.stderr
    assert victim.read_text() == "keep me" and snapshot(bundle) == before


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


def test_a_full_disk_during_a_pt2_package_is_exit_2_and_no_abort(small_disk):
    """torch's zip writer, failing inside, used to abort the process (exit 134) as the error
    was collected; in a process of its own, since that abort would take pytest with it."""
    out = small_disk(200) / "b"  # the golden samples fit; the package doesn't
    result = toolkit("export", "tests.models:small_cnn", "--to", "pt2", "--out", out)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "No space left on device" in result.stderr and "terminate" not in result.stderr
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
        while time.monotonic() < stop and not got_it:  # overlapping until the export is in
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


# -- power cut: what is on disk before each change (issue 29) ----------------------------------
class OsCalls:
    """An interposed os layer: fsync, replace, unlink, link and mkdir, recorded in order with
    the path each touched (fsync's descriptor read back through /proc)."""

    def __init__(self, monkeypatch, *, hard_links: bool) -> None:
        import toolkit.transaction as tx

        self.calls: list[tuple[str, str]] = []
        real = {name: getattr(os, name) for name in ("fsync", "replace", "unlink", "mkdir",
                                                     "link")}

        def fsync(fd):
            self.calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            return real["fsync"](fd)

        def recorded(name):
            def call(src, *args, **kwargs):
                self.calls.append((name, os.fspath(Path(src).resolve())))
                return real[name](src, *args, **kwargs)
            return call

        def link(src, dst, *args, **kwargs):
            if not hard_links:
                raise OSError(1, "Operation not permitted")  # as vfat or some FUSE mounts
            return real["link"](src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "fsync", fsync)
        for name in ("replace", "unlink", "mkdir"):
            monkeypatch.setattr(os, name, recorded(name))
        monkeypatch.setattr(os, "link", link)
        assert tx.os is os  # the module under test calls these very functions

    def index(self, call: str, path: Path, after: int = -1) -> int:
        wanted = (call, str(path.resolve()))
        return next(i for i, c in enumerate(self.calls) if i > after and c == wanted)


def test_the_journal_directory_is_on_disk_before_the_first_change(bundle, monkeypatch):
    from toolkit.bundle import write_json_atomic
    from toolkit.transaction import writing

    calls = OsCalls(monkeypatch, hard_links=True)
    with writing(bundle):
        write_json_atomic(bundle / "new.json", {"a": 1})
    made = calls.index("mkdir", bundle / JOURNAL)
    synced = calls.index("fsync", bundle, after=made)  # the bundle's entry for the journal
    first_record = calls.index("replace", bundle / JOURNAL / "intent.json.tmp")
    first_change = next(i for i, c in enumerate(calls.calls)
                        if c[0] == "replace" and Path(c[1]).name.startswith(TEMP_PREFIX))
    assert made < synced < first_record < first_change, calls.calls


def test_a_copied_backup_is_on_disk_before_the_original_goes(bundle, monkeypatch):
    """Without hard links the backup is a copy: its data and its directory entry are synced
    before the original is unlinked, so a power cut can't leave rollback an empty file."""
    from toolkit.transaction import remove_file, writing

    original = (bundle / "model.onnx").read_bytes()
    calls = OsCalls(monkeypatch, hard_links=False)
    with pytest.raises(RuntimeError), writing(bundle):
        remove_file(bundle / "model.onnx")
        copy_synced = calls.index("fsync", bundle / JOURNAL / "model.onnx")
        dir_synced = calls.index("fsync", bundle / JOURNAL, after=copy_synced)
        removed = calls.index("unlink", bundle / "model.onnx")
        assert copy_synced < dir_synced < removed, calls.calls
        raise RuntimeError("roll it back")
    assert (bundle / "model.onnx").read_bytes() == original


def test_a_journal_that_can_not_be_written_leaves_no_temp_file(bundle, monkeypatch):
    import errno

    from toolkit.transaction import writing

    real = os.replace

    def full(src, dst, *args, **kwargs):
        if Path(src).name == "intent.json.tmp":
            raise OSError(errno.ENOSPC, "No space left on device", str(src))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    before = snapshot(bundle)
    with pytest.raises(OSError), writing(bundle):
        pass
    assert leftovers(bundle) == [] and snapshot(bundle) == before


def test_a_fresh_export_killed_before_its_first_record_leaves_nothing(tmp_path):
    out = tmp_path / "fresh"
    assert killed(toolkit("export", *MLP, "--to", "onnx", "--out", out,
                          crash_at="journal-made"))
    assert out.is_dir()  # the kill left the directory and an empty journal
    shown = command("inspect", out)
    assert shown.returncode == 2 and "Traceback" not in shown.stderr
    assert not out.exists()


# -- writer markers carry proof ---------------------------------------------------------------
def test_a_marker_without_proof_is_stale_and_removed(bundle):
    """`touch B/.toolkit-writer-1`: pid 1 lives, but it is not the writer that made this."""
    import time

    from toolkit.transaction import WRITER_PREFIX, _wait_for_writers

    touched = bundle / f"{WRITER_PREFIX}1"
    touched.touch()
    copied = bundle / f"{WRITER_PREFIX}{os.getpid()}-7"  # copied from another machine
    copied.write_text(f"{os.getpid()} 12345 00000000-0000-0000-0000-000000000000\n")
    _wait_for_writers(bundle, time.monotonic() + 1.0, "read it")  # returns: nobody waits
    assert not touched.exists() and not copied.exists()


def test_a_live_writers_marker_is_waited_for(bundle):
    import time

    from toolkit.errors import UsageError
    from toolkit.transaction import WRITER_PREFIX, _wait_for_writers, process_proof

    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        marker = bundle / f"{WRITER_PREFIX}{sleeper.pid}-1"
        marker.write_text(process_proof(sleeper.pid))
        with pytest.raises(UsageError, match="waiting to change"):
            _wait_for_writers(bundle, time.monotonic() + 0.3, "read it")
        assert marker.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
