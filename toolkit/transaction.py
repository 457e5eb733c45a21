"""One writer per bundle, and writes that can be undone until the command succeeds.

`writing(root)` takes an exclusive lock on the bundle directory (flock on the directory
itself, so a read-only bundle needs no lock file) and opens a journal: every file the command
creates is remembered, every file it replaces or removes is first hard-linked aside. An
exception or an interrupt rolls the directory back to what it was; success drops the backups.
`bundle.atomic_path` and `remove_file` consult the journal, so writers need no extra calls.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from toolkit.errors import UsageError

BACKUP_PREFIX = ".toolkit-undo-"

# keyed by (bundle, thread): nested use in one thread joins; another thread is another writer
_journals: dict[tuple[Path, int], Journal] = {}
_locks: dict[tuple[Path, int], tuple[int, int]] = {}  # -> (fd, depth)


def _key(root: Path) -> tuple[Path, int]:
    return root.resolve(), threading.get_ident()


class Journal:
    """What one command changed in a bundle directory, and how to undo it."""

    def __init__(self, root: Path, created_root: bool, created_top: Path | None = None) -> None:
        self.root = root
        self.created_root = created_root
        self.created_top = created_top or root  # the outermost directory this command made
        self.created: list[Path] = []
        self.saved: dict[str, Path] = {}  # file name -> its copy from before the command
        self._backups: Path | None = None

    def before_change(self, path: Path) -> None:
        """Call before `path` (a file in the bundle) is created, replaced or removed."""
        if path.name in self.saved or path in self.created:
            return
        if not path.exists():
            self.created.append(path)
            return
        if self._backups is None:
            # a fresh, unguessable directory (O_EXCL): a bundle can't plant a link here
            self._backups = Path(tempfile.mkdtemp(prefix=BACKUP_PREFIX, dir=self.root))
        copy = self._backups / path.name
        try:
            os.link(path, copy)  # instant, and survives the rename that replaces `path`
        except OSError:
            shutil.copy2(path, copy)
        self.saved[path.name] = copy

    def rollback(self) -> None:
        if self.created_root:
            shutil.rmtree(self.created_top, ignore_errors=True)
            return
        for path in self.created:
            path.unlink(missing_ok=True)
        for name, copy in self.saved.items():
            os.replace(copy, self.root / name)
        self._drop_backups()

    def commit(self) -> None:
        self._drop_backups()

    def _drop_backups(self) -> None:
        if self._backups is not None:
            shutil.rmtree(self._backups, ignore_errors=True)
            self._backups = None


def journal_for(directory: Path) -> Journal | None:
    return _journals.get(_key(directory)) if _journals else None


def remove_file(path: Path) -> None:
    """Unlink a bundle file; inside `writing()` it comes back if the command fails."""
    journal = journal_for(path.parent)
    if journal is not None and path.exists():
        journal.before_change(path)
    path.unlink(missing_ok=True)


def _acquire(fd: int, mode: int, root: Path, wait_s: float, what: str) -> None:
    import fcntl

    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise UsageError(f"{root}: another toolkit command is using this bundle; "
                                 f"{what} again when it has finished") from None
            time.sleep(0.2)


@contextlib.contextmanager
def locked(root: Path, *, wait_s: float = 0.0, what: str = "write",
           shared: bool = False) -> Iterator[None]:
    """Hold the bundle's lock: exclusive for a writer, shared for a reader (verify, bench),
    which then sees no export half-way. UsageError (exit 2) when it isn't free within
    `wait_s` seconds. A thread that holds the shared lock and asks for the exclusive one
    lets go first (two readers upgrading at once would wait on each other), then takes the
    shared lock back."""
    import fcntl

    key = _key(root)
    if key in _locks:
        fd, depth, held_shared = _locks[key]
        upgrade = held_shared and not shared
        if upgrade:
            fcntl.flock(fd, fcntl.LOCK_UN)
            _acquire(fd, fcntl.LOCK_EX, root, wait_s, what)
        _locks[key] = (fd, depth + 1, held_shared and not upgrade)
        try:
            yield
        finally:
            if upgrade:
                fcntl.flock(fd, fcntl.LOCK_UN)
                _acquire(fd, fcntl.LOCK_SH, root, wait_s, what)
            fd, depth, _ = _locks[key]
            _locks[key] = (fd, depth - 1, held_shared)
        return
    fd = os.open(key[0], os.O_RDONLY)
    try:
        _acquire(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, root, wait_s, what)
        _locks[key] = (fd, 1, shared)
        try:
            yield
        finally:
            del _locks[key]
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def reading(root: Path, *, wait_s: float = 600.0) -> Iterator[None]:
    """A reader's hold on a bundle: waits (up to `wait_s`) for an export to finish, and keeps
    exports out while it reads. A directory that isn't there is left to the caller's error."""
    root = Path(root)
    if not root.is_dir():
        yield
        return
    with locked(root, wait_s=wait_s, what="read it", shared=True):
        yield


@contextlib.contextmanager
def writing(root: Path) -> Iterator[Journal]:
    """Lock `root` (created if missing) and journal every change; roll back on any failure,
    Ctrl-C included. Nested use in one process joins the outer journal."""
    if root.exists() and _key(root) in _journals:
        yield _journals[_key(root)]
        return
    created_root = not root.exists()
    top = root
    while created_root and not top.parent.exists():
        top = top.parent
    root.mkdir(parents=True, exist_ok=True)
    key = _key(root)
    with contextlib.ExitStack() as stack:
        # busy: the directory is the other writer's now, even if this call created it
        stack.enter_context(locked(root, what="export"))
        journal = Journal(key[0], created_root, top.resolve())
        _journals[key] = journal
        try:
            yield journal
        except BaseException:
            journal.rollback()
            raise
        else:
            journal.commit()
        finally:
            del _journals[key]
