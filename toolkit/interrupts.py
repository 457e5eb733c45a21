"""Ctrl-C and SIGTERM end a command with exit 130, whatever code was running when they came.

Libraries catch more than they should: torch.onnx turns a KeyboardInterrupt raised inside
torch.export into a TorchExportError, which a fallback path would then treat as an ordinary
exporter failure. The handler therefore also records that a signal came, and the toolkit checks
that record where it could have been swallowed (`raise_if_pending`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_CODE = 130  # 128 + SIGINT, what shells report for Ctrl-C

_received: list[int] = []
_changes: list[str] = []  # what the command's writes came to: "completed", "rolled back"


def record_change(outcome: str) -> None:
    """A bundle or repository change finished ("completed") or was undone ("rolled back"):
    what an interrupt's message then says."""
    _changes.append(outcome)


def what_happened() -> str:
    """The interrupt message's account of the command's changes."""
    if not _changes:
        return "nothing was being changed"
    if _changes[-1] == "completed":
        return "the change it was making had been completed and was kept"
    return "the change it was making was rolled back"


def _handler(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def pending() -> bool:
    return bool(_received)


def raise_if_pending() -> None:
    """Re-raise an interrupt that a library caught and turned into something else."""
    if _received:
        raise KeyboardInterrupt(signal.Signals(_received[0]).name)


@contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (recorded) while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    _received.clear()
    _changes.clear()
    for sig in previous:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _received.clear()  # what came belongs to this block; the next starts clean
        _changes.clear()
