"""toolkit/transaction.py on its own: a write journals what it changes and is undone on
failure (two writers, and a killed one: tests/test_crash.py, tests/cli/test_security.py)."""

from __future__ import annotations

import pytest

from toolkit import transaction
from toolkit.bundle import publish


def test_a_failed_write_puts_every_changed_file_back(tmp_path):
    root = tmp_path / "b"
    root.mkdir()
    (root / "kept.txt").write_text("before")
    with pytest.raises(RuntimeError), transaction.writing(root):
        new = root / "kept.txt.tmp"
        new.write_text("after")
        publish(new, root / "kept.txt")
        made = root / "new.txt.tmp"
        made.write_text("made")
        publish(made, root / "new.txt")
        raise RuntimeError("the export failed")
    assert (root / "kept.txt").read_text() == "before"
    assert not (root / "new.txt").exists()
    assert not transaction.needs_recovery(root)


def test_a_successful_write_commits_and_leaves_no_journal(tmp_path):
    root = tmp_path / "b"
    with transaction.writing(root):
        new = root / "a.tmp"
        new.write_text("x")
        publish(new, root / "a.txt")
    assert (root / "a.txt").read_text() == "x" and not transaction.needs_recovery(root)


def test_a_directory_the_failed_write_made_is_removed(tmp_path):
    root = tmp_path / "new" / "b"
    with pytest.raises(RuntimeError), transaction.writing(root):
        raise RuntimeError("failed before anything was written")
    assert not (tmp_path / "new").exists()


def test_a_child_forked_while_the_lock_is_held_does_not_keep_it(tmp_path):
    """Libraries fork behind the toolkit's back (OpenVINO's telemetry sender): a child that
    lives on must not hold the bundle locked once the parent lets go."""
    import fcntl
    import os
    import signal
    import time

    root = tmp_path / "bundle"
    root.mkdir()
    ready, told = os.pipe()
    with transaction.locked(root):
        child = os.fork()
        if child == 0:  # the forked sender, hanging (bounded: the test kills it)
            os.write(told, b"1")  # past fork(): its hooks have run
            time.sleep(30)
            os._exit(0)
    try:
        assert os.read(ready, 1) == b"1"
        fd = os.open(root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free at once, child or not
        finally:
            os.close(fd)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(ready)
        os.close(told)
