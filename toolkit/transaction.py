"""One writer per bundle, and writes that are undone, even after a kill -9, until the command
succeeds.

`writing(root)` takes an exclusive lock on the bundle directory (flock on the directory itself,
so a read-only bundle needs no lock file) and opens a journal on disk, `root/.toolkit-journal/`:
before a file is created its name is written there, before one is replaced or removed it is
hard-linked there, each record flushed (fsync) before the change it announces. The manifest is
written last (an atomic rename); then the journal is marked committed and removed. An exception
or an interrupt rolls the directory back at once. A killed process leaves the journal behind:
the next toolkit command to open the bundle (export, verify, bench, select, deploy, inspect)
takes the exclusive lock, which no live writer holds, and finishes the job — an uncommitted
journal is rolled back (files it created and temp files removed, replaced ones put back), a
committed one just removed. `bundle.atomic_path`, `bundle.publish` and `remove_file` consult
the journal, so writers need no extra calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import interrupts
from toolkit.errors import UsageError

JOURNAL = ".toolkit-journal"  # the journal directory inside the bundle
INTENT = "intent.json"
TEMP_PREFIX = ".toolkit-tmp-"  # files being written (renamed into place when finished)
OLD_BACKUP_PREFIX = ".toolkit-undo-"  # left by versions whose journal lived in memory
MAX_INTENT_BYTES = 1 << 20  # a journal lists file names: kilobytes; more is not one of ours
MAX_MARKER_BYTES = 256
#: test-only: the named point at which the process kills itself (SIGKILL), to prove recovery
CRASH_ENV = "TOOLKIT_TEST_CRASH_AT"

# keyed by (bundle, thread): nested use in one thread joins; another thread is another writer
_journals: dict[tuple[Path, int], Journal] = {}
_locks: dict[tuple[Path, int], tuple[int, int, bool]] = {}  # -> (fd, depth, shared)


def _drop_locks_in_child() -> None:
    """A forked child shares the lock's open file: while it lives, the lock outlives this
    process's hold. Libraries fork behind our back (a model converter's telemetry forks a
    sender, and a SIGTERM that the deferred-interrupt handler holds back left it hanging with
    a bundle locked for 600 s), so the child closes its copies; never flock(LOCK_UN) here,
    which would release the parent's lock."""
    for fd, _, _ in _locks.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _locks.clear()


os.register_at_fork(after_in_child=_drop_locks_in_child)


def _key(root: Path) -> tuple[Path, int]:
    return root.resolve(), threading.get_ident()


def crash_point(name: str) -> None:
    """Die here, as kill -9 would, when the test hook names this point."""
    if os.environ.get(CRASH_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def fsync_directory(directory: Path) -> None:
    """Make a rename or link in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the rename still holds
        pass
    finally:
        os.close(fd)


class Journal:
    """What one command changes in a bundle directory, and how to undo it, kept on disk."""

    def __init__(self, root: Path, created_root: bool, created_top: Path | None = None) -> None:
        self.root = root
        self.created_root = created_root
        self.created_top = created_top or root  # the outermost directory this command made
        self.created: list[str] = []  # names of files the command creates
        self.saved: list[str] = []  # names of files it replaces or removes (copies kept)
        self.dir = root / JOURNAL
        try:
            os.mkdir(self.dir, 0o700)  # O_EXCL: recovery has removed any earlier one
            fsync_directory(root)  # the journal's entry is on disk before the first change
            crash_point("journal-made")
            self._write("open")
        except BaseException:  # a full disk at the first record: nothing of ours stays
            self.rollback()
            raise
        crash_point("journal-open")

    def _write(self, state: str) -> None:
        data = {"version": 1, "state": state, "pid": os.getpid(),
                "created_root": self.created_root, "created": self.created,
                "saved": self.saved}
        tmp = self.dir / (INTENT + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.dir / INTENT)
        fsync_directory(self.dir)

    def before_change(self, path: Path) -> None:
        """Call before `path` (a file in the bundle) is created, replaced or removed."""
        name = path.name
        if name in self.saved or name in self.created:
            return
        if not path.exists():
            self.created.append(name)
            self._write("open")
            return
        copy = self.dir / name
        try:
            os.link(path, copy)  # instant, and survives the rename that replaces `path`
        except OSError:  # a filesystem without hard links: a copy, on disk before it counts
            shutil.copy2(path, copy)
            fd = os.open(copy, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.saved.append(name)
        self._write("open")  # fsyncs the journal directory: the backup's entry is durable
        crash_point("after-backup")

    def rollback(self) -> None:
        if self.created_root:
            shutil.rmtree(self.created_top, ignore_errors=True)
            return
        _undo(self.root, self.created, self.saved)

    def commit(self) -> None:
        fsync_directory(self.root)  # every rename of the command is on disk before the mark
        crash_point("before-commit")
        self._write("committed")
        crash_point("committed")
        _remove_journal(self.root)


def _undo(root: Path, created: list[str], saved: list[str]) -> None:
    """Put a bundle directory back: created files go, replaced ones come back from the
    journal, temp files and the journal itself are removed."""
    journal = root / JOURNAL
    for name in created:
        if name not in saved:
            (root / name).unlink(missing_ok=True)
    for name in saved:
        copy = journal / name
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISREG(os.lstat(copy).st_mode):
                os.replace(copy, root / name)
    fsync_directory(root)
    _remove_journal(root)


def _remove_journal(root: Path) -> None:
    for entry in list(os.scandir(root)):
        if entry.name == JOURNAL or entry.name.startswith((TEMP_PREFIX, OLD_BACKUP_PREFIX,
                                                           WRITER_TEMP_PREFIX)):
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:  # a file, or a link planted in a hostile bundle: removed, never followed
                path.unlink(missing_ok=True)


def _plain_names(values: Any) -> list[str]:
    """File names a journal lists, each a plain name inside the bundle (a hostile bundle's
    journal may say anything)."""
    if not isinstance(values, list):
        raise ValueError("not a list")
    names = [v for v in values if isinstance(v, str) and v and "/" not in v and "\\" not in v
             and "\0" not in v and v not in (".", "..", JOURNAL)]
    if len(names) != len(values):
        raise ValueError("a name that is not a plain file name")
    return names


@dataclass(frozen=True)
class Intent:
    """A journal's record, as read back from a bundle (which anyone may have written)."""

    state: str  # "open" or "committed"
    created_root: bool
    created: list[str]
    saved: list[str]


def read_intent(journal: Path) -> Intent | None:
    """The journal's record; None when the killed command made none. A record that is not
    one this toolkit writes (a link, a FIFO or device, too big, too deep, wrong types, a
    name that is a directory) is exit 2 naming it: read like any bundle input, never
    followed, never blocked on."""
    path = journal / INTENT
    try:
        data = read_small_file(path, MAX_INTENT_BYTES)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise _bad_journal(path, str(err)) from None
    try:
        if _nesting(data) > 2:  # ours is an object of lists; a deep one would recurse
            raise ValueError("nested deeper than a journal is")
        raw = json.loads(data.decode("utf-8"))  # the journal's own JSON, checked here
        if not isinstance(raw, dict) or raw.get("version") != 1:
            raise ValueError("not a version-1 journal record")
        state, created_root = raw.get("state"), raw.get("created_root")
        if state not in ("open", "committed") or not isinstance(created_root, bool):
            raise ValueError("state or created_root of the wrong kind")
        intent = Intent(state, created_root, _plain_names(raw.get("created")),
                        _plain_names(raw.get("saved")))
    except (ValueError, RecursionError) as err:
        raise _bad_journal(path, str(err).splitlines()[0][:120]) from None
    for name in intent.created:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(journal.parent / name).st_mode):
                raise _bad_journal(path, f"it names the directory '{name}'")
    return intent


def read_small_file(path: Path, limit: int) -> bytes:
    """A regular file's bytes, at most `limit`: a link is not followed, and a FIFO or device
    is never opened (lstat first; O_NONBLOCK too, should one be swapped in meanwhile)."""
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise ValueError("not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{info.st_size} bytes, more than {limit}")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"more than {limit} bytes")
    return data


def _nesting(data: bytes) -> int:
    """How deep JSON brackets go, strings skipped: checked before parsing, which recurses."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _bad_journal(path: Path, why: str) -> UsageError:
    return UsageError(f"{path}: not a journal this toolkit writes ({why}); nothing was "
                      f"changed — remove {path.parent} and check the bundle (toolkit verify)")


def needs_recovery(root: Path) -> bool:
    try:
        return any(entry.name == JOURNAL or entry.name.startswith((TEMP_PREFIX,
                                                                   OLD_BACKUP_PREFIX))
                   for entry in os.scandir(root))
    except OSError:
        return False


def recover(root: Path, *, wait_s: float = 600.0) -> str | None:
    """Finish what a killed writer left in `root`, under the exclusive lock; returns what was
    done, for a note (None when nothing was left). A journal of this process's own running
    command is never touched."""
    root = Path(root)
    if _key(root) in _journals or not needs_recovery(root):
        return None
    if not os.access(root, os.W_OK):
        raise UsageError(f"{root}: an export was interrupted here (kill, power loss) and the "
                         "directory is read-only, so it can't be put back; make it writable "
                         "and run the command again")
    with locked(root, wait_s=wait_s, what="use it"):
        if not needs_recovery(root):  # another command recovered it meanwhile
            return None
        journal = root / JOURNAL
        intent = None
        if journal.is_dir() and not journal.is_symlink():
            intent = read_intent(journal)
        if intent is not None and intent.state == "open":
            _undo(root, intent.created, intent.saved)
            if intent.created_root:
                with contextlib.suppress(OSError):
                    os.rmdir(root)  # the killed command made it, and it is empty again
            what = "rolled back an export that was killed before it finished"
        else:  # committed, or only temp files: nothing to put back
            unrecorded = intent is None and journal.is_dir() and not journal.is_symlink()
            _remove_journal(root)
            if unrecorded:  # killed before its first record: a directory it made goes too
                with contextlib.suppress(OSError):
                    os.rmdir(root)
            what = ("removed what a finished export left behind"
                    if intent is not None else "removed temp files a killed command left "
                    "behind")
        import logging

        logging.getLogger("toolkit").warning("note: %s: %s", root, what)
        return f"{root}: {what}"


def journal_for(directory: Path) -> Journal | None:
    return _journals.get(_key(directory)) if _journals else None


def remove_file(path: Path) -> None:
    """Unlink a bundle file; inside `writing()` it comes back if the command fails."""
    journal = journal_for(path.parent)
    if journal is not None and path.exists():
        journal.before_change(path)
    path.unlink(missing_ok=True)


WRITER_PREFIX = ".toolkit-writer-"  # a writer waiting for readers to finish: <pid>-<thread>
WRITER_TEMP_PREFIX = ".toolkit-writing-"  # a marker being written (renamed when complete)
WRITER_WAIT_S = 600.0  # how long an export waits for the commands using its bundle


def _acquire(fd: int, mode: int, root: Path, wait_s: float, what: str) -> None:
    """flock with a bound. A writer that has to wait says so in the directory, and readers
    arriving meanwhile let it go first: steady reads can't starve an export."""
    import fcntl

    deadline = time.monotonic() + wait_s
    if mode == fcntl.LOCK_SH:
        _wait_for_writers(root, deadline, what)
    marker: Path | None = None
    try:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    waited = f" (waited {wait_s:.0f} s)" if wait_s >= 1 else ""
                    raise UsageError(f"{root}: another toolkit command is using this bundle"
                                     f"{waited}; {what} again when it has finished") from None
                if mode == fcntl.LOCK_EX and marker is None:
                    marker = _announce_writer(root)
                time.sleep(0.05)
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)


def _announce_writer(root: Path) -> Path | None:
    """A marker readers trust only while its proof holds: this process's pid, start time and
    boot, written whole (a temp name, then a rename) so a reader never sees half of it."""
    suffix = f"{os.getpid()}-{threading.get_ident()}"
    marker, temp = root / f"{WRITER_PREFIX}{suffix}", root / f"{WRITER_TEMP_PREFIX}{suffix}"
    try:
        fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, process_proof(os.getpid()).encode())
        finally:
            os.close(fd)
        os.rename(temp, marker)
    except OSError:  # a read-only bundle: it has no writers to wait for anyway
        with contextlib.suppress(OSError):
            temp.unlink()
        return None
    return marker


def process_proof(pid: int) -> str:
    """What tells this process from any other with its pid: the boot it runs in and its start
    time (/proc/<pid>/stat, field 22). Empty where /proc isn't there (then the pid alone)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return f"{pid}\n"
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    start = stat_line[stat_line.rindex(")") + 2:].split()[19]
    return f"{pid} {start} {boot}\n"


def _marker_is_live(root: Path, name: str) -> bool:
    """A marker names a live writer only when its pid's proof is the one it carries: a
    touched file, or one copied from another machine or left by a dead process, is stale."""
    pid = name[len(WRITER_PREFIX):].split("-")[0]
    if not (pid.isascii() and pid.isdigit()) or not _alive(int(pid)):
        return False
    try:
        carried = read_small_file(root / name, MAX_MARKER_BYTES).decode("ascii")
    except (OSError, ValueError):
        return False
    return carried.split() == process_proof(int(pid)).split() and bool(carried.strip())


def _wait_for_writers(root: Path, deadline: float, what: str) -> None:
    """A reader waits while a live writer waits (a stale marker is removed: its process is
    gone, or isn't the one that wrote it); bounded by the reader's own deadline."""
    while True:
        waiting = False
        try:
            entries = [e.name for e in os.scandir(root) if e.name.startswith(WRITER_PREFIX)]
        except OSError:
            return
        for name in entries:
            if _marker_is_live(root, name):
                waiting = True
            else:
                with contextlib.suppress(OSError):
                    (root / name).unlink()
        if not waiting:
            return
        if time.monotonic() >= deadline:
            raise UsageError(f"{root}: an export is waiting to change this bundle; {what} "
                             "again when it has finished")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


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
    recover(root, wait_s=wait_s)
    if not root.is_dir():  # a killed export made it, and its rollback took it away
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
    if root.is_dir():
        recover(root)  # a killed export's leftovers first (a directory it made goes with them)
    created_root = not root.exists()
    top = root
    while created_root and not top.parent.exists():
        top = top.parent
    root.mkdir(parents=True, exist_ok=True)
    key = _key(root)
    with contextlib.ExitStack() as stack:
        # busy: the directory is the other writer's now, even if this call created it
        stack.enter_context(locked(root, wait_s=WRITER_WAIT_S, what="export"))
        if not created_root:
            recover(root)  # a killed export's leftovers first (the lock is ours: joined)
        journal = Journal(key[0], created_root, top.resolve())
        _journals[key] = journal
        try:
            yield journal
            journal.commit()  # a commit that fails (a full disk) is rolled back too
        except BaseException:
            journal.rollback()
            interrupts.record_change("rolled back")
            raise
        finally:
            del _journals[key]
        interrupts.record_change("completed")
