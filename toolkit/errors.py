"""Typed errors: each carries the exit code the CLI turns it into (see DESIGN.md)."""

from __future__ import annotations


class ToolkitError(Exception):
    """A failure the user can act on; its message is one line, printed without a traceback."""

    exit_code = 2


class UsageError(ToolkitError):
    """Bad input or usage: a file, an option or a value the user gave."""

    exit_code = 2


class CheckFailed(ToolkitError):
    """A check ran and failed: parity, accuracy, a latency regression."""

    exit_code = 1


class BackendUnavailable(ToolkitError):
    """The backend isn't available on this machine (no GPU, TensorRT not installed, wrong GPU)."""

    exit_code = 3


class ExportFailed(ToolkitError):
    """An exporter could not convert the model; the message names the op or module."""

    exit_code = 2
