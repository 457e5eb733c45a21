"""The device side of `--on`: what `toolkit _device ...` does on the far end of the SSH link.

It needs no torch: only the toolkit's core dependencies (numpy, pydantic ...) and the
runtimes the device has. Files arrive content-addressed in `WORKDIR/store/<sha256>` (a second
run sends nothing the device already holds); a bundle is laid out in `WORKDIR/bundles/<id>/`
from the store and the manifest the workstation sends, and the toolkit command runs on it in
this process, its own journal and locks protecting the remote bundle as they protect any
other. While the command runs, standard input stays open: its end means the workstation has
gone (Ctrl-C, a dropped link), and the command is stopped as SIGTERM would (rolled back,
exit 130).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from toolkit import formats
from toolkit.errors import UsageError
from toolkit.modules import module_available

STORE = "store"
BUNDLES = "bundles"
RESULTS = "results"
MAX_HEADER = 64 << 20
_SHA = re.compile(r"^[0-9a-f]{64}$")
_BUNDLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# the pip extra of a format -> the module whose import makes it runnable here
EXTRA_MODULES = {f.extra: f.runtime_module for f in formats.all_formats()}


def _workdir(path: str) -> Path:
    root = Path(path).expanduser()
    try:
        (root / STORE).mkdir(parents=True, exist_ok=True)
        (root / BUNDLES).mkdir(exist_ok=True)
        (root / RESULTS).mkdir(exist_ok=True)
    except OSError as err:
        raise UsageError(f"working directory {root}: {err.strerror}") from None
    return root


def copy_hashed(source: BinaryIO, path: Path) -> str:
    """Copy a stream into a new file, flushed to disk; its sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        while block := source.read(1 << 20):
            digest.update(block)
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())
    return digest.hexdigest()


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _disk_full(root: Path) -> UsageError:
    free = free_bytes(root)
    amount = f"{free / 2**20:.1f} MiB" if free >= 2**20 else f"{free // 1024} KiB"
    return UsageError(f"disk full on {socket.gethostname()} in {root} ({amount} free); free "
                      "space there, or give the target another workdir")


# -- probe ------------------------------------------------------------------------------------
def _read_text(path: str, limit: int = 4096) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(limit).strip() or None
    except OSError:
        return None


def _nvidia_smi() -> dict[str, str]:
    """GPU name, compute capability and driver from nvidia-smi, when the device has one."""
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {}
    try:
        out = subprocess.run([smi, "--query-gpu=name,compute_cap,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    if not out:
        return {}
    parts = [p.strip() for p in out[0].split(",")]
    return dict(zip(("gpu", "compute_capability", "driver"), parts))


def _runtime_facts(backends: list[str], describe_gpu: bool) -> tuple[dict[str, str],
                                                                     dict[str, str]]:
    """What each installed format's runtime says of this device (`Format.device_facts`): its
    version, by format, and the GPU when nvidia-smi couldn't say (a Jetson's)."""
    versions: dict[str, str] = {}
    gpu: dict[str, str] = {}
    for fmt in formats.all_formats():
        if not (fmt.device_facts and fmt.extra in backends):
            continue
        with contextlib.suppress(Exception):  # a broken runtime says nothing
            facts = fmt.hook("device_facts")(describe_gpu)
            if facts.get("version"):
                versions[fmt.name] = str(facts["version"])
            gpu.update({k: str(facts[k]) for k in ("gpu", "compute_capability")
                        if facts.get(k)})
    return versions, gpu


def _gpu_without_smi(runtime: dict[str, str]) -> dict[str, str]:
    """A Jetson has no nvidia-smi (JetPack 5 and older): its board name from the device tree,
    and the GPU's name and compute capability from a runtime that can say."""
    found: dict[str, str] = {}
    board = _read_text("/proc/device-tree/model", 200)
    if board:
        found["gpu"] = board.rstrip("\x00")
    found.update(runtime)
    return found


def probe(workdir: str, want: list[str]) -> dict[str, Any]:
    """What this device is and has, and which of `want` (sha256) its store lacks."""
    from toolkit import environment
    from toolkit.manifest import SCHEMA_VERSION
    from toolkit.version import __version__

    root = _workdir(workdir)
    backends = sorted(extra for extra, module in EXTRA_MODULES.items() if module_available(module))
    store = root / STORE
    missing = [h for h in want if not _SHA.match(h) or not (store / h).is_file()]
    l4t = _read_text("/etc/nv_tegra_release", 200)
    smi = _nvidia_smi()
    runtimes, runtime_gpu = _runtime_facts(backends, describe_gpu=not smi)
    gpu = smi or _gpu_without_smi(runtime_gpu)
    return {
        "hostname": socket.gethostname(),
        "toolkit_version": __version__,
        "schema": SCHEMA_VERSION,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": environment.cpu_model(),
        "cpu_flags": environment.cpu_flags(),
        **gpu,
        "runtimes": runtimes,
        "l4t": l4t.splitlines()[0][:120] if l4t else None,
        "backends": backends,
        "free_bytes": free_bytes(root),
        "missing": missing,
    }


# -- store ------------------------------------------------------------------------------------
def put(workdir: str, stream: BinaryIO) -> dict[str, Any]:
    """Files from a tar stream on stdin into the store, each named by its sha256 and checked
    against it before it is renamed into place (a cut link leaves only temp files, which the
    next put removes)."""
    root = _workdir(workdir)
    store = root / STORE
    for stale in store.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            stale.unlink()
    received = []
    tmp = store / ".tmp-none"
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                if not member.isfile() or not _SHA.match(member.name):
                    raise UsageError(f"store: refusing tar member {member.name[:80]!r}")
                source = archive.extractfile(member)
                assert source is not None
                tmp = store / f".tmp-{member.name}-{os.getpid()}"
                if copy_hashed(source, tmp) != member.name:
                    tmp.unlink()
                    raise UsageError(f"store: {member.name[:12]}… arrived with another sha256")
                os.replace(tmp, store / member.name)
                received.append(member.name)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            tmp.unlink(missing_ok=True)  # the partial file goes first: the free space is real
            raise _disk_full(root) from None
        raise
    except tarfile.TarError as err:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"store: the stream was cut ({err}); run the command again") from None
    return {"received": received}


# -- run --------------------------------------------------------------------------------------
def _bundle_dir(root: Path, bundle_id: str) -> Path:
    if not _BUNDLE_ID.match(bundle_id):
        raise UsageError(f"bundle id {bundle_id!r} is not a plain name")
    return root / BUNDLES / bundle_id


def stage(root: Path, bundle_id: str, manifest: dict[str, Any], files: dict[str, str]) -> Path:
    """Lay the bundle out from the store: each listed file linked to its content, the
    manifest written last. A journal left by a killed command there is recovered first."""
    from toolkit import transaction
    from toolkit.bundle import MANIFEST, write_json_atomic
    from toolkit.manifest import plain_file_name, validate

    directory = _bundle_dir(root, bundle_id)
    directory.mkdir(parents=True, exist_ok=True)
    transaction.recover(directory)
    validate(manifest, "the workstation's manifest")
    with transaction.locked(directory, wait_s=600, what="lay out the bundle"):
        for name, digest in files.items():
            plain_file_name(name)
            if not _SHA.match(digest) or not (root / STORE / digest).is_file():
                raise UsageError(f"{name}: not in the device's store; run the command again")
            target = directory / name
            if target.is_file() and not target.is_symlink() and _same_inode(
                    target, root / STORE / digest):
                continue
            tmp = directory / f"{transaction.TEMP_PREFIX}{name}"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            try:
                os.link(root / STORE / digest, tmp)
            except OSError:  # a filesystem without hard links
                shutil.copyfile(root / STORE / digest, tmp)
            os.replace(tmp, target)
        write_json_atomic(directory / MANIFEST, manifest)
    return directory


def _read_line(fd: int) -> bytes:
    """One line from the descriptor, unbuffered (nothing past it is taken from the stream
    the watcher reads next)."""
    data = bytearray()
    while len(data) <= MAX_HEADER:
        block = os.read(fd, 1)
        if not block or block == b"\n":
            break
        data += block
    return bytes(data)


def _same_inode(a: Path, b: Path) -> bool:
    sa, sb = a.stat(), b.stat()
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _watch_stdin(done: threading.Event, stream: BinaryIO) -> None:
    """The workstation holds our stdin open while the command runs; EOF means it is gone.
    (Read from the file descriptor: a thread blocked inside the buffered reader would hold its
    lock at exit and abort the interpreter.)"""
    fd = stream.fileno()

    def watch() -> None:
        while os.read(fd, 1 << 16):
            pass
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def run(workdir: str, bundle_id: str, stdin: BinaryIO, stdout: BinaryIO,
        run_cli: Callable[[list[str]], int]) -> int:
    """Read the header (one JSON line: manifest, files, args), stage, run the toolkit command
    on the staged bundle, and answer with one JSON document: the exit code, the command's
    own --json result, and the bundle's manifest afterwards."""
    root = _workdir(workdir)
    line = _read_line(stdin.fileno())
    try:
        header = json.loads(line)
        manifest, files, args = header["manifest"], header["files"], header["args"]
        if not (isinstance(files, dict) and isinstance(args, list)
                and all(isinstance(a, str) for a in args)):
            raise ValueError("bad header")
    except (ValueError, KeyError, TypeError):
        raise UsageError("run: the request is not one the toolkit sends") from None
    done = threading.Event()
    _watch_stdin(done, stdin)
    try:
        directory = stage(root, bundle_id, manifest, files)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(root) from None
        raise
    result_path = root / RESULTS / f"{bundle_id}.{os.getpid()}.json"
    argv = [str(directory) if a == "{bundle}" else a for a in args]
    argv += ["--json", str(result_path)]
    code = run_cli(argv)
    done.set()
    result = None
    if result_path.is_file():
        with contextlib.suppress(ValueError, OSError):
            result = json.loads(result_path.read_text(encoding="utf-8"))
        result_path.unlink(missing_ok=True)
    manifest_after = _read_manifest(directory)
    _keep_in_store(root, directory, manifest_after)
    answer = {"exit": code, "result": result, "bundle": str(directory),
              "manifest": manifest_after}
    stdout.write(json.dumps(answer, default=str).encode())
    stdout.flush()
    return 0


def _keep_in_store(root: Path, directory: Path, manifest: Any) -> None:
    """Files the command made (what it built) are linked into the store under their sha256, so
    the next projection that lists them finds them here instead of sending them back."""
    store = root / STORE
    records = manifest.get("artifacts") if isinstance(manifest, dict) else None
    for entry in records if isinstance(records, list) else []:  # the JSON, as it was written
        if not isinstance(entry, dict):
            continue
        files = [(entry.get("path"), entry.get("sha256"))]
        files += [(f.get("name"), f.get("sha256")) for f in entry.get("files") or []
                  if isinstance(f, dict)]
        for name, sha in files:
            if not (isinstance(name, str) and isinstance(sha, str) and _SHA.match(sha)):
                continue
            path = directory / name
            if (store / sha).exists() or path.is_symlink() or not path.is_file():
                continue
            with contextlib.suppress(OSError):
                os.link(path, store / sha)


def _read_manifest(directory: Path) -> Any:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    return None


# -- get --------------------------------------------------------------------------------------
def get(workdir: str, bundle_id: str, names: list[str], stdout: BinaryIO) -> int:
    """The named files of the remote bundle, as a tar stream."""
    from toolkit.manifest import plain_file_name

    directory = _bundle_dir(_workdir(workdir), bundle_id)
    buffer = stdout
    with tarfile.open(fileobj=buffer, mode="w|") as archive:
        for name in names:
            plain_file_name(name)
            path = directory / name
            if path.is_symlink() or not path.is_file():
                raise UsageError(f"{name}: not a file of the bundle on this device")
            archive.add(path, arcname=name, recursive=False)
    stdout.flush()
    return 0

