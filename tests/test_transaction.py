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
