"""Typed errors: each carries the exit code the CLI turns it into (see DESIGN.md)."""

from __future__ import annotations

import contextlib
import errno
import re


class ToolkitError(Exception):
    """A failure the user can act on; its message is one line, printed without a traceback.
    One line by construction: a value the user gave (an option, a name) may hold a newline,
    which is shown escaped."""

    exit_code = 2

    def __init__(self, message: object = "", *args: object) -> None:
        text = str(message)
        if "\n" in text or "\r" in text:
            text = text.replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(text, *args)


class UsageError(ToolkitError):
    """Bad input or usage: a file, an option or a value the user gave."""

    exit_code = 2


class CheckFailed(ToolkitError):
    """A check ran and failed: parity, accuracy, a latency regression."""

    exit_code = 1


class BackendUnavailable(ToolkitError):
    """The backend isn't available on this machine (no GPU, runtime not installed, wrong GPU)."""

    exit_code = 3


class ExportFailed(ToolkitError):
    """An exporter could not convert the model; the message names the op or module."""

    exit_code = 2


#: what a full or read-only disk raises: bad input (the place given), not a bug
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def disk_error(err: BaseException, directory: object = None) -> UsageError | None:
    """A full disk, an exhausted quota, a read-only mount or a file-size limit, as one line
    naming the directory written (and what is free there); None for any other error."""
    if not isinstance(err, OSError) or err.errno not in DISK_ERRNOS:
        return None
    where = directory or err.filename
    prefix = f"{where}: " if where else ""
    free = ""
    if directory is not None and err.errno == errno.ENOSPC:
        import shutil

        with contextlib.suppress(OSError):
            free = f" ({shutil.disk_usage(str(directory)).free // 1024} KiB free there)"
    return UsageError(f"{prefix}{err.strerror or err}{free} — nothing partial was kept; free "
                      "space (or choose a writable place) and run the command again")


def did_you_mean(word: str, choices: object) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' (for one-line error messages)."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)  # type: ignore[call-overload]
    return f" (did you mean '{close[0]}'?)" if close else ""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_line(err: BaseException, limit: int = 300) -> str:
    """The error's first meaningful line, without terminal colours or 'Next steps' boilerplate."""
    text = _ANSI.sub("", str(err)).strip()
    line = next((ln for ln in text.splitlines() if ln.strip()), type(err).__name__)
    line = line.split("Next steps:")[0].strip()
    return f"{type(err).__name__}: {line[:limit]}"
