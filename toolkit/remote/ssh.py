"""The user's own OpenSSH client, driven as a subprocess: their ~/.ssh/config, keys, agent,
ProxyJump and known_hosts work unchanged, and one connection per device is multiplexed
(ControlMaster) for the few commands a job sends.

What the toolkit insists on, whatever the configuration says (command-line -o options win
over the config file): host keys are verified (an unknown or changed key stops the job, exit
2), nothing ever prompts (BatchMode), and a dead link is noticed within seconds
(ServerAlive). Remote command lines are built from quoted words (shlex.quote), so no name,
path or value reaches the remote shell as syntax.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from toolkit.errors import BackendUnavailable, UsageError
from toolkit.remote.targets import Target

# What the device side's exit codes mean here; anything else from the remote toolkit is
# its own exit code (1 a failed check, 2 bad input, 3 a missing backend).
SSH_FAILED = 255

_live: set[subprocess.Popen] = set()  # every ssh running, so Ctrl-C can end them all
_live_lock = threading.Lock()


class Unreachable(UsageError):
    """The device could not be reached or refused us (exit 2 for that device)."""


@dataclass
class Reply:
    code: int
    stdout: bytes
    stderr: str


class Connection:
    """ssh to one target, with a control socket private to this command."""

    def __init__(self, target: Target, ssh_config: str | None, control_dir: str) -> None:
        self.target = target
        self.ssh_config = ssh_config
        self.control_dir = control_dir

    def _base(self) -> list[str]:
        ssh = shutil.which("ssh")
        if ssh is None:
            raise BackendUnavailable("--on needs OpenSSH's client (ssh), which isn't on the "
                                     "PATH here; install openssh-client")
        argv = [ssh]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        argv += [
            "-o", "BatchMode=yes",  # never a password or passphrase prompt
            "-o", "StrictHostKeyChecking=yes",  # an unknown or changed host key stops us
            "-o", "ConnectTimeout=15",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
            "-o", "ControlMaster=auto",
            # one master per target, even for aliases of one host (%C hashes host, port, user)
            "-o", f"ControlPath={self.control_dir}/{self.target.name[:24]}-%C",
            "-o", "ControlPersist=30",  # bounded: a killed toolkit leaves no master for long
            "-T",  # no terminal: binary streams stay binary
        ]
        return argv

    def remote_line(self, args: Sequence[str]) -> str:
        """The command the remote shell runs: environment, the toolkit command, arguments,
        every word quoted."""
        words = [*(f"{k}={v}" for k, v in self.target.env), *self.target.toolkit, *args]
        for word in words:
            if "\x00" in word or "\n" in word or "\r" in word:
                raise UsageError(f"{self.target.name}: a remote argument holds a newline or "
                                 f"NUL ({word[:40]!r}); refusing to send it")
        prefix = ["env"] if self.target.env else []
        return " ".join(shlex.quote(w) for w in [*prefix, *words])

    def run(self, args: Sequence[str], *, stdin: bytes | IO[bytes] | None = None,
            hold_stdin: bool = False, on_line: Callable[[str], None] | None = None,
            max_stdout: int = 64 << 20, timeout_s: float | None = None) -> Reply:
        """Run the toolkit's device side there. stderr lines go to `on_line` as they come;
        stdout is collected up to `max_stdout` bytes (more ends the command: a device
        can't flood this machine)."""
        argv = [*self._base(), "--", self.target.destination, self.remote_line(args)]
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
        with _live_lock:
            _live.add(process)
        try:
            return self._talk(process, stdin, hold_stdin, on_line, max_stdout, timeout_s)
        finally:
            with _live_lock:
                _live.discard(process)
            if process.poll() is None:
                process.kill()
                process.wait()

    def _talk(self, process: subprocess.Popen, stdin: bytes | IO[bytes] | None,
              hold_stdin: bool, on_line: Callable[[str], None] | None, max_stdout: int,
              timeout_s: float | None) -> Reply:
        assert process.stdin and process.stdout and process.stderr
        errors: list[str] = []
        out = bytearray()
        overflow = threading.Event()

        def feed() -> None:
            try:
                if isinstance(stdin, bytes):
                    process.stdin.write(stdin)
                elif stdin is not None:
                    shutil.copyfileobj(stdin, process.stdin, 1 << 20)
                process.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # the remote stopped reading: its exit code says why
            finally:
                # held open while a remote command runs: its EOF is how the device side
                # learns that this side has gone (Ctrl-C, a dropped link)
                if not hold_stdin:
                    with contextlib.suppress(OSError):
                        process.stdin.close()

        def read_err() -> None:
            # a line is bounded too: a device can't grow this side's memory with one
            for raw in iter(lambda: process.stderr.readline(1 << 16), b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                errors.append(line)
                if len(errors) > 2000:
                    del errors[:1000]
                if on_line is not None:
                    on_line(line)

        def read_out() -> None:
            for block in iter(lambda: process.stdout.read(1 << 16), b""):
                out.extend(block)
                if len(out) > max_stdout:
                    overflow.set()
                    process.kill()
                    return

        threads = [threading.Thread(target=t, daemon=True) for t in (feed, read_err, read_out)]
        for thread in threads:
            thread.start()
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
            errors.append(f"timed out after {timeout_s:g} s")
        for thread in threads[1:]:
            thread.join(timeout=10)
        with contextlib.suppress(OSError):
            process.stdin.close()
        if overflow.is_set():
            raise UsageError(f"{self.target.name}: the device sent more than "
                             f"{max_stdout >> 20} MiB where this side expected less; refused")
        stderr = "\n".join(errors)
        if code == SSH_FAILED:
            raise _ssh_error(self.target, stderr)
        return Reply(code, bytes(out), stderr)

    def close(self) -> None:
        """Stop this target's control master, if one is running."""
        with contextlib.suppress(Exception):
            subprocess.run([*self._base(), "-O", "exit", "--", self.target.destination],
                           capture_output=True, timeout=10)


def _ssh_error(target: Target, stderr: str) -> UsageError:
    """ssh's own failure (exit 255) as one line naming the device."""
    lines = [line for line in stderr.splitlines() if line.strip()
             and "Warning: Permanently added" not in line]
    text = " ".join(lines)[-400:]
    host = target.destination
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in \
            text or "No ED25519 host key is known" in text or "host key is known" in text:
        return Unreachable(
            f"{target.name}: the host key of {host} is unknown or has changed; the toolkit "
            "never accepts one by itself: check it, then add it to known_hosts (connect once "
            "with ssh, or ssh-keyscan)")
    if "Permission denied" in text and "publickey" in text:
        return Unreachable(f"{target.name}: {host} refused the login (no usable key; the "
                           "toolkit never asks for a password: load a key in ssh-agent or "
                           f"name one in ~/.ssh/config) — {text[-160:]}")
    ssh_own = ("ssh:", "Connection refused", "Connection closed", "Connection reset",
               "Could not resolve", "timed out", "kex_exchange", "Broken pipe",
               "Connection to ", "No route")
    if any(marker in text for marker in ssh_own) or not text:
        return Unreachable(f"{target.name}: can't reach {host} or the link dropped: "
                           f"{text[-200:] or 'ssh ended without a word'}")
    return Unreachable(f"{target.name}: the command there ended abruptly (killed, or the link "
                       "dropped); nothing was recorded here, and the device's own bundle "
                       "recovers on the next run")


def stop_all() -> None:
    """Ctrl-C: end every ssh this process started (the device side sees its stdin close and
    stops its command)."""
    with _live_lock:
        running = list(_live)
    for process in running:
        with contextlib.suppress(OSError):
            process.kill()


@contextlib.contextmanager
def control_directory() -> Iterator[str]:
    """A private directory for the control sockets of one command; every master is told to
    exit at the end. (Unix socket paths are short: a short temp name.)"""
    path = tempfile.mkdtemp(prefix="tk-ssh-", dir="/tmp" if os.path.isdir("/tmp") else None)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
