"""The Typer app, and the one place that turns exceptions into a message and an exit code.

Start-up imports only typer and rich: `toolkit --help` never loads torch.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import typer
from rich.markup import escape

from toolkit import formats, interrupts
from toolkit.cli import bench, demo, deploy, export, inspect, remote, select, verify
from toolkit.cli.console import err_console
from toolkit.cli.console import reset_consoles as finally_reset
from toolkit.environment import TORCH_PYTREE_LOGGER, torch_enum_notice
from toolkit.errors import ToolkitError, disk_error


def _overview() -> str:
    saved = [f.title or f.name for f in formats.exportable() if f.saved]
    return (f"Export trained PyTorch / Lightning models to {', '.join(saved[:-1])} and "
            f"{saved[-1]}; prove each artifact matches the model; benchmark its latency.\n\n"
            "Exit codes: 0 ok · 1 a check failed · 2 bad input · 3 backend not available here.")


app = typer.Typer(
    name="toolkit",
    help=_overview(),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def exit_codes(command: Callable[..., int | None]) -> Callable[..., None]:
    """Run a command; map its result and the toolkit's errors to exit codes (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        if not os.environ.get("TOOLKIT_DEBUG"):
            # Library deprecation chatter (PyTorch's, onnxscript's) drowns the report; the
            # toolkit states legacy formats itself.
            warnings.filterwarnings("ignore")
            # torch warns at import on CPU-only machines that it found no CUDA runtime
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            # a line per enum when torchao is imported (by transformers, or a runtime)
            logging.getLogger(TORCH_PYTREE_LOGGER).addFilter(torch_enum_notice)
        with interrupts.handled():
            code = _run(command, args, kwargs)
        finally_reset()
        if code:
            raise typer.Exit(code)

    return wrapper


def _run(command: Callable[..., int | None], args: Any, kwargs: Any) -> int:
    try:
        code = command(*args, **kwargs) or 0
        interrupts.raise_if_pending()  # a library swallowed it: still an interrupt
        return code
    except KeyboardInterrupt:
        return _interrupted()
    except ToolkitError as error:
        if interrupts.pending():  # the error is what the interrupt became
            return _interrupted()
        if os.environ.get("TOOLKIT_DEBUG"):
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False,
                          soft_wrap=True)
        return error.exit_code
    except (typer.Exit, typer.Abort):
        finally_reset()
        raise
    except Exception as error:  # a bug here or in a library: one line, no traceback
        if interrupts.pending():
            return _interrupted()
        if os.environ.get("TOOLKIT_DEBUG"):
            raise
        disk = disk_error(error)
        if disk is not None:  # a full or read-only disk: bad input, exit 2
            err_console.print(f"[bold red]error:[/] {escape(str(disk))}", highlight=False,
                              soft_wrap=True)
            return disk.exit_code
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        err_console.print(
            f"[bold red]internal error:[/] {type(error).__name__}: {escape(first[:300])} "
            "(set TOOLKIT_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
        return 1


def _interrupted() -> int:
    finally_reset()
    err_console.print(f"[bold red]interrupted:[/] stopped; {interrupts.what_happened()}",
                      highlight=False, soft_wrap=True)
    return interrupts.EXIT_CODE


app.command("export")(exit_codes(export.export_command))
app.command("inspect")(exit_codes(inspect.inspect_command))
app.command("verify")(exit_codes(verify.verify_command))
app.command("bench")(exit_codes(bench.bench_command))
app.command("select")(exit_codes(select.select_command))
app.command("deploy")(exit_codes(deploy.deploy_command))
app.command("demo")(exit_codes(demo.demo_command))

targets_app = typer.Typer(help="Devices reached over SSH (--on): what each one has.",
                          no_args_is_help=True, add_completion=False)
targets_app.command("probe")(exit_codes(remote.probe_command))
app.add_typer(targets_app, name="targets")
# the far end of --on: what the workstation runs on a device over SSH
device_app = typer.Typer(hidden=True, no_args_is_help=True, add_completion=False)


def device_run(workdir: remote.Workdir, bundle: remote.BundleId) -> int:
    import sys

    from toolkit.remote.device import run

    return run(workdir, bundle, sys.stdin.buffer, sys.stdout.buffer, run_cli)


def run_cli(argv: list[str]) -> int:
    """A toolkit command in this process (the device side of --on), its human output on
    stderr (streamed to the workstation line by line); stdout is kept for the answer."""
    import sys

    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        return int(app(args=argv, prog_name="toolkit", standalone_mode=False) or 0)
    except SystemExit as err:
        return err.code if isinstance(err.code, int) else 2
    except Exception as err:  # typer's usage errors, raised in non-standalone mode
        show = getattr(err, "show", None)
        if show is None:
            raise
        show()
        return int(getattr(err, "exit_code", 2) or 2)
    finally:
        sys.stdout = real_stdout


for _name, _command in (("probe", remote.device_probe), ("put", remote.device_put),
                        ("run", device_run), ("get", remote.device_get)):
    device_app.command(_name)(exit_codes(_command))
app.add_typer(device_app, name="_device", hidden=True)


class _PipeSafe:
    """Standard output that stops writing, instead of raising, once the reader has gone: a
    closed pipe must not roll an export back."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._closed = False

    def write(self, text: str) -> int:
        if not self._closed:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._closed = True
        return len(text)

    def flush(self) -> None:
        if not self._closed:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._closed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main() -> None:
    import signal
    import sys

    # Until a command installs its own handlers (while Python and typer start up), Ctrl-C and
    # SIGTERM still end with 130 and no traceback: nothing has been written yet.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.stdout = _PipeSafe(sys.stdout)  # `toolkit export ... | head`: the export still lands
    try:
        app(prog_name="toolkit")
    except KeyboardInterrupt:
        sys.exit(interrupts.EXIT_CODE)


if __name__ == "__main__":
    main()
