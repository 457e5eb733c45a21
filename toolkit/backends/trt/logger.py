"""TensorRT's logger: one per process, as TensorRT keeps one (NVIDIA/TensorRT#1475).

The first logger given to a Builder, Runtime or parser receives every later message of the
process, whichever logger those objects were given. So toolkit makes one, hands the same one
to every object, and reads the errors a step produced from a mark taken before the step.
"""

from __future__ import annotations

import weakref
from collections import deque
from typing import Any

from toolkit.backends.trt.compat import last_errors

_LOGGERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
KEEP = 200  # messages kept; a step's errors are the last few


def process_logger(trt: Any) -> Any:
    """The process's one trt.ILogger, made on first use; it keeps warnings and errors."""
    logger = _LOGGERS.get(trt)
    if logger is None:
        logger = _make(trt)
        _LOGGERS[trt] = logger
    return logger


def _make(trt: Any) -> Any:
    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: deque[tuple[str, str]] = deque(maxlen=KEEP)
            self.count = 0  # messages ever logged, so marks survive the deque's trimming
            self.threshold = int(trt.ILogger.Severity.WARNING)

        def log(self, severity: Any, msg: str) -> None:
            # Severity values rise as messages get less severe (INTERNAL_ERROR = 0).
            if int(severity) <= self.threshold:
                self.messages.append((severity.name, msg))
                self.count += 1

        def mark(self) -> int:
            return self.count

        def since(self, mark: int) -> list[tuple[str, str]]:
            """Messages logged after `mark` (as many as are still kept)."""
            fresh = self.count - mark
            return list(self.messages)[-fresh:] if fresh > 0 else []

    return _Logger()


def claim_process_logger(trt: Any) -> Any:
    """Make toolkit's logger the process's before a library that brings its own (Torch-
    TensorRT) makes its first Builder: a Runtime given ours first keeps every later message,
    so the errors of a step toolkit runs after that library reach the user. Returns it."""
    logger = process_logger(trt)
    trt.Runtime(logger)
    return logger


def errors_since(logger: Any, mark: int, fallback: str = "no reason given") -> str:
    """The last error lines TensorRT logged after `mark`, for the message the user sees."""
    return last_errors(logger.since(mark)) or fallback
