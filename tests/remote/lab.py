"""A real OpenSSH server on 127.0.0.1, and simulated devices behind Host aliases.

The server runs as the test user on a free port with a host key made for the session, accepts
one client key, and listens on loopback only; it is stopped (with every connection it
served) when the session ends. The client side is the user's own `ssh`, configured by a
config file of its own (`Host dev-*` aliases), exactly as `--on` uses it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"dev-a": "plain", "dev-ov": "ov", "dev-trt": "trt", "dev-old": "old",
         "dev-hostile": "hostile"}
# devices for faults: (kind, working directory, environment); two names on one working
# directory are one device, once misbehaving and once healthy (the rerun)
FAULTS = {
    "dev-stall-put": ("plain", "shared-a", {"TOOLKIT_TEST_DEVICE_STALL": "put"}),
    "dev-stall-run": ("plain", "shared-a", {"TOOLKIT_TEST_DEVICE_STALL": "run"}),
    "dev-resume": ("plain", "shared-a", {}),
    "dev-crash": ("trt", "shared-t", {"TOOLKIT_TEST_CRASH_AT": "before-commit"}),
    "dev-trt-again": ("trt", "shared-t", {}),
    "dev-full": ("plain", "full", {}),  # a test mounts a small disk there
    "dev-huge": ("hostile", "huge", {"TOOLKIT_TEST_HOSTILE": "huge"}),
}
FANOUT = 16


@dataclass
class Lab:
    dir: Path
    port: int
    ssh_config: Path
    targets: Path  # the targets file naming every simulated device
    process: subprocess.Popen

    def workdir(self, name: str) -> Path:
        return self.dir / "devices" / name


class Missing(Exception):
    """OpenSSH isn't installed here."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sshd() -> str | None:
    found = shutil.which("sshd") or "/usr/sbin/sshd"
    return found if os.path.exists(found) else None


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "toolkit-test", "-f",
                    str(path)], check=True)


def _toml_list(words: list[str]) -> str:
    return "[" + ", ".join(f'"{w}"' for w in words) + "]"


@contextlib.contextmanager
def ssh_lab(directory: Path) -> Iterator[Lab]:
    """Start the server and write the client side; stop it all at the end."""
    sshd = _sshd()
    if sshd is None or shutil.which("ssh") is None:
        raise Missing("OpenSSH's server or client is not installed (.ci/run installs "
                      "openssh-server from Debian's packages)")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _keygen(d / "host_key")
    _keygen(d / "client_key")
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = _free_port()
    (d / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
MaxStartups 200
MaxSessions 200
LogLevel ERROR
""")
    with open(d / "sshd.log", "wb") as log:
        process = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")],
                                   stdout=subprocess.DEVNULL, stderr=log,
                                   start_new_session=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {(d / 'sshd.log').read_text()}") \
                    from None
            time.sleep(0.1)
    host_key = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (d / "empty_known_hosts").write_text("")
    user = getpass.getuser()
    common = f"""\
    HostName 127.0.0.1
    Port {port}
    User {user}
    IdentityFile {d}/client_key
    IdentitiesOnly yes
    GlobalKnownHostsFile /dev/null
    LogLevel ERROR
"""
    (d / "ssh_config").write_text(
        f"Host stranger\n{common}    UserKnownHostsFile {d}/empty_known_hosts\n\n"
        f"Host dev-* fan-*\n{common}    UserKnownHostsFile {d}/known_hosts\n")
    python = sys.executable
    launcher = str(ROOT / "tests" / "remote" / "device_env.py")
    lines = [f'[ssh]\nconfig = "{d}/ssh_config"\n\n[fleet]\nparallel = 16\n']
    devices = {name: (kind, name, {}) for name, kind in KINDS.items()}
    devices.update({f"fan-{i:02d}": ("plain", f"fan-{i:02d}", {}) for i in range(FANOUT)})
    devices.update(FAULTS)
    for name, (kind, workdir, extra) in devices.items():
        env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}
        pairs = ", ".join(f'{k} = "{v}"' for k, v in env.items())
        lines.append(f"[targets.{name}]\ntoolkit = {_toml_list([python, launcher, kind])}\n"
                     f'workdir = "{d}/devices/{workdir}"\nenv = {{ {pairs} }}\n')
    lines.append("[groups]\nfan = " + _toml_list([f"fan-{i:02d}" for i in range(FANOUT)])
                 + "\n")
    (d / "targets.toml").write_text("\n".join(lines))
    try:
        yield Lab(d, port, d / "ssh_config", d / "targets.toml", process)
    finally:
        # the server and every session it forked (one per connection) go together
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        # and what a test left running on a "device" (a stalled command whose link was cut):
        # every such process names its working directory under the lab's
        subprocess.run(["pkill", "-KILL", "-f", str(d)], check=False)
