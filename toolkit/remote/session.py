"""One command on one device: probe, send what is missing, run, bring back what it made.

Nothing here writes into the local bundle: what a device sends back (its manifest, the files
it built) is checked as untrusted input — schema-validated, plain names, bounded sizes,
sha256 — and handed to `merge` as a `DeviceOutcome`; files wait in a private temp directory
until then. A device that fails in any way is an outcome with its exit code and one line,
never an exception that stops the other devices.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit import formats
from toolkit import manifest as schema
from toolkit.bundle import GOLDEN, Bundle, artifact_key
from toolkit.errors import ToolkitError, UsageError
from toolkit.manifest import ArtifactRecord, DeviceRecord
from toolkit.remote.device import EXTRA_MODULES, copy_hashed
from toolkit.remote.ssh import Connection
from toolkit.remote.targets import Target

MAX_ANSWER = 64 << 20  # a manifest and a results document
MAX_PULL = 16 << 30  # the largest artifact a device may send back
EXIT_CODES = (0, 1, 2, 3, 130)
# Fields of a record that are one machine's findings: a device starts without them.
_FINDINGS = ("parity", "bench", "accuracy", "on_device", "target", "notes", "built_from")


@dataclass(frozen=True)
class Job:
    """What to run on each device: the command, its arguments ('{bundle}' marks the
    bundle's place), and the formats whose files it needs."""

    command: str  # export, verify, bench, select, inspect
    args: tuple[str, ...]
    builds: tuple[str, ...] = ()  # export: the formats built there


@dataclass
class Pulled:
    """An artifact a device made, its files waiting in a temp directory."""

    record: ArtifactRecord  # as the device recorded it (its own file names)
    files: dict[str, Path]  # remote name -> local temp file, checked


@dataclass
class DeviceOutcome:
    target: Target
    code: int = 0
    message: str = ""
    device: DeviceRecord | None = None
    manifest: schema.Manifest | None = None  # the device's bundle afterwards, validated
    result: Any = None  # the command's own --json document there
    pulled: list[Pulled] = field(default_factory=list)
    sent_bytes: int = 0
    sent_files: int = 0
    basis: dict[str, str] = field(default_factory=dict)  # file -> sha256 the device had
    phases: dict[str, float] = field(default_factory=dict)
    tempdir: tempfile.TemporaryDirectory | None = None

    def close(self) -> None:
        if self.tempdir is not None:
            self.tempdir.cleanup()
            self.tempdir = None


def bundle_id(bundle: Bundle) -> str:
    """The remote bundle's directory name: the local name and the bundle's identity (its
    source, inputs and place here), so two bundles — two copies of one included — never
    share one, and a re-run finds its own. (Its files come from the store: a moved bundle
    sends nothing again.)"""
    import re

    shown = bundle.manifest.to_json()  # as the file holds it: the name is stable
    identity = json.dumps([shown.get("source"), shown.get("inputs"), shown.get("created_at"),
                           str(bundle.root.resolve())], sort_keys=True, default=str)
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", bundle.name)[:48].strip("-.") or "bundle"
    return f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def _runs_there(record: ArtifactRecord, backends: set[str]) -> bool:
    return formats.get(record.format).extra in backends


def _wanted(bundle: Bundle, target: Target, job: Job) -> list[ArtifactRecord]:
    """Which records a device needs for the job (before knowing what it can run)."""
    mine = [r for r in bundle.target_artifacts(target.name) if r.path]
    if job.command == "export":  # what it builds from, and what it built before (kept there
        # unless --force, as a local export keeps what exists)
        sources = {s for name in job.builds for s in formats.get(name).builds_from}
        return [r for r in bundle.artifacts if r.format in sources and r.path] + mine
    return [r for r in bundle.artifacts if r.path] + mine


def projection(bundle: Bundle, records: list[ArtifactRecord]) -> dict[str, Any]:
    """The manifest a device gets: the bundle's, with only the artifacts it needs and none of
    another machine's findings (its results are its own)."""
    doc = schema.to_json(bundle.manifest)
    for key in ("selected", "targets", "bench"):
        doc.pop(key, None)
    doc["artifacts"] = [{k: v for k, v in r.to_json().items() if k not in _FINDINGS}
                        for r in records]
    return doc


def _file_hashes(bundle: Bundle, records: list[ArtifactRecord]) -> dict[str, tuple[str, Path]]:
    """name -> (sha256, local path) for every file sent: golden samples, then artifacts
    (their hashes checked here first: a changed file never leaves this machine)."""
    golden = bundle.manifest.golden
    files = {GOLDEN: (golden.sha256, bundle.golden_path)} if golden is not None else {}
    for record in records:
        bundle.checked_path(record)
        for path, sha in zip(bundle.files_of(record),
                             [*(f.sha256 for f in record.files), record.sha256]):
            files[path.name] = (str(sha), path)
    return files


def _tar_stream(paths: list[tuple[str, Path]]) -> io.BufferedReader:
    """A tar of the files, named by sha256, produced by a thread into a pipe."""
    import os

    read_fd, write_fd = os.pipe()

    def produce() -> None:
        with os.fdopen(write_fd, "wb") as sink:
            try:
                with tarfile.open(fileobj=sink, mode="w|") as archive:
                    for sha, path in paths:
                        archive.add(path, arcname=sha, recursive=False)
            except (BrokenPipeError, OSError):
                pass

    threading.Thread(target=produce, daemon=True).start()
    return os.fdopen(read_fd, "rb")


def _answer(reply: Any, what: str, target: Target) -> dict[str, Any]:
    try:
        data = json.loads(reply.stdout)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        last = reply.stderr.strip().splitlines()[-1:] or ["no answer"]
        raise _DeviceFailed(reply.code if reply.code in EXIT_CODES and reply.code else 2,
                            f"{what} failed there: {last[0][:300]}")
    return data


class _DeviceFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def run_on(bundle: Bundle, target: Target, job: Job, connection: Connection,
           on_line: Callable[[str], None], on_phase: Callable[[str], None]) -> DeviceOutcome:
    """The job on one device, as an outcome (never raises for the device's own failures)."""
    import time

    outcome = DeviceOutcome(target)
    started = time.perf_counter()

    def phase(name: str) -> None:
        outcome.phases[name] = round(time.perf_counter() - started, 3)
        on_phase(name)

    try:
        _run_on(bundle, target, job, connection, on_line, phase, outcome)
    except _DeviceFailed as failed:
        outcome.code, outcome.message = failed.code, str(failed)
    except ToolkitError as err:
        outcome.code, outcome.message = err.exit_code, str(err)
    except OSError as err:
        outcome.code, outcome.message = 2, f"{target.name}: {err}"
    phase("done")
    return outcome


def _run_on(bundle: Bundle, target: Target, job: Job, connection: Connection,
            on_line: Callable[[str], None], phase: Callable[[str], None],
            outcome: DeviceOutcome) -> None:
    records = _wanted(bundle, target, job)
    hashes = _file_hashes(bundle, records)
    phase("probe")
    reply = connection.run(["_device", "probe", "--workdir", target.workdir],
                           stdin=json.dumps({"want": sorted({h for h, _ in hashes.values()})})
                           .encode(), max_stdout=1 << 20, timeout_s=120)
    info = _answer(reply, "probe", target)
    outcome.device = device_record(info)
    _check_compatible(info, target)
    backends = set(outcome.device.backends)
    if job.command == "export":
        lacking = [n for n in job.builds if formats.get(n).extra not in backends]
        if lacking:
            extra = formats.get(lacking[0]).extra
            raise _DeviceFailed(3, f"--to {','.join(lacking)} needs "
                                f"{EXTRA_MODULES.get(extra, extra)} there, which {target.name} "
                                f"lacks; install toolkit[{extra}] on the device")
    else:
        named = _named_formats(job.args)
        lacking = sorted({r.format for r in records if not _runs_there(r, backends)
                          and r.format in named})
        if lacking:  # asked for by name, and the device can't run it: a missing backend
            extra = formats.get(lacking[0]).extra
            raise _DeviceFailed(3, f"--format {','.join(lacking)}: {target.name} can't run it "
                                f"(no {EXTRA_MODULES.get(extra, extra)} there; install "
                                f"toolkit[{extra}] on the device)")
        records = [r for r in records if _runs_there(r, backends)]
        if not records:
            raise _DeviceFailed(3, f"none of the bundle's artifacts runs on {target.name} "
                                f"(it has: {', '.join(sorted(backends)) or 'no runtime'})")
    hashes = _file_hashes(bundle, records)
    # what a build there starts from: the bundle's own files (not the device's earlier builds)
    outcome.basis = {name: sha for name, (sha, _) in
                     _file_hashes(bundle, [r for r in records if r.target is None]).items()}
    missing = set(info.get("missing") or [])
    send = sorted({(sha, path) for sha, path in hashes.values() if sha in missing})
    if send:
        phase("sync")
        size = sum(path.stat().st_size for _, path in send)
        free = info.get("free_bytes")
        if isinstance(free, int) and size > free:  # said before a byte is sent
            raise _DeviceFailed(2, f"disk full on {target.name}: the files need "
                                f"{_size(size)}, {_size(free)} free in {target.workdir}; free "
                                "space there, or give it another workdir")
        with _tar_stream(send) as stream:
            reply = connection.run(["_device", "put", "--workdir", target.workdir],
                                   stdin=stream, on_line=on_line, max_stdout=1 << 20)
        if reply.code != 0:
            raise _DeviceFailed(reply.code if reply.code in EXIT_CODES else 2,
                                _last_line(reply.stderr, "sending the files failed"))
        outcome.sent_files, outcome.sent_bytes = len(send), size
    phase(job.command)
    bid = bundle_id(bundle)
    doc = projection(bundle, records)
    header = json.dumps({"manifest": doc, "files": {n: h for n, (h, _) in hashes.items()},
                         "args": [job.command, *job.args]}).encode() + b"\n"
    reply = connection.run(["_device", "run", "--workdir", target.workdir, "--bundle", bid],
                           stdin=header, hold_stdin=True, on_line=on_line,
                           max_stdout=MAX_ANSWER)
    answer = _answer(reply, job.command, target)
    code = answer.get("exit")
    if code not in EXIT_CODES:
        raise _DeviceFailed(2, f"the device answered exit code {code!r}")
    outcome.code = code
    outcome.result = answer.get("result")
    if answer.get("manifest") is not None:
        try:
            outcome.manifest = schema.validate(answer["manifest"], f"{target.name}'s manifest")
        except UsageError as err:
            raise _DeviceFailed(2, f"refused what the device sent: {err}") from None
    if code != 0 and not outcome.message:
        outcome.message = _last_line(reply.stderr, f"{job.command} exited {code} there")
    if outcome.manifest is not None and job.command == "export":
        new = [r for r in outcome.manifest.artifacts
               if r.format in job.builds and r.path and not _sent(r, records)]
        if new:
            phase("pull")
            _pull(new, target, bid, connection, outcome)


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count // 1024} KiB"


def _named_formats(args: tuple[str, ...]) -> set[str]:
    """The formats a command line names with --format/-f (canonical names)."""
    named: set[str] = set()
    for flag, value in zip(args, args[1:]):
        if flag in ("--format", "-f"):
            for part in value.split(","):
                # a name the table doesn't know: the device's own command says what's wrong
                with contextlib.suppress(UsageError):
                    named.add(formats.canonical(part.strip()))
    return named


def _sent(record: ArtifactRecord, records: list[ArtifactRecord]) -> bool:
    return any(artifact_key(r)[:3] == artifact_key(record)[:3] and r.sha256 == record.sha256
               for r in records)


def _last_line(stderr: str, default: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else default


def device_record(info: dict[str, Any]) -> DeviceRecord:
    from toolkit.bundle import now

    keys = set(DeviceRecord.model_fields) - {"selected", "probed_at"}
    fields = {k: info[k] for k in keys if info.get(k) is not None}
    for key, value in list(fields.items()):  # a device's words are bounded text
        if isinstance(value, str):
            fields[key] = value[:200]
    if isinstance(fields.get("runtimes"), dict):  # versions of the formats this toolkit knows
        from toolkit import formats

        fields["runtimes"] = {name: version[:64] for name, version in fields["runtimes"].items()
                              if name in formats.TABLE and isinstance(version, str)}
    try:
        return DeviceRecord.model_validate({**fields, "probed_at": now()})
    except Exception as err:  # pydantic's ValidationError: the device's own words
        raise _DeviceFailed(2, f"the device described itself in a form this toolkit "
                            f"refuses ({str(err).splitlines()[0][:160]})") from None


def _check_compatible(info: dict[str, Any], target: Target) -> None:
    from toolkit.manifest import SCHEMA_VERSION

    schema_there = info.get("schema")
    if not isinstance(schema_there, int) or schema_there < SCHEMA_VERSION:
        raise _DeviceFailed(
            2, f"the toolkit there ({info.get('toolkit_version')}) reads manifest schema "
            f"{schema_there} at most; this bundle is schema {SCHEMA_VERSION}: upgrade it on "
            f"{target.name} (pip install -U toolkit)")


def _pull(new: list[ArtifactRecord], target: Target, bid: str, connection: Connection,
          outcome: DeviceOutcome) -> None:
    """Fetch what the device built: only the names its (validated) records list, each no
    larger than recorded and with the recorded sha256."""
    expected: dict[str, tuple[str, int | None]] = {}
    for record in new:
        sizes = {f.name: f.size_bytes for f in record.files}
        main_size = (record.size_bytes - sum(sizes.values())) if record.size_bytes else None
        expected[record.path] = (str(record.sha256), main_size)
        for f in record.files:
            expected[f.name] = (f.sha256, f.size_bytes)
    total = sum(size or 0 for _, size in expected.values())
    if total > MAX_PULL or any(size is None for _, size in expected.values()):
        raise _DeviceFailed(2, f"the device's records claim {total} bytes (or no size) for "
                            "what it built; refused")
    outcome.tempdir = tempfile.TemporaryDirectory(prefix="toolkit-pull-")
    folder = Path(outcome.tempdir.name)
    reply = connection.run(["_device", "get", "--workdir", target.workdir, "--bundle", bid,
                            *expected], max_stdout=total + (1 << 20) * (len(expected) + 1))
    if reply.code != 0:
        raise _DeviceFailed(reply.code if reply.code in EXIT_CODES else 2,
                            _last_line(reply.stderr, "fetching what it built failed"))
    got: dict[str, Path] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(reply.stdout), mode="r:") as archive:
            for member in archive:
                name = member.name
                if name not in expected or name in got or not member.isfile():
                    raise _DeviceFailed(2, f"the device sent {name[:80]!r}, which this side "
                                        "did not ask for; refused")
                sha, size = expected[name]
                if member.size != size:
                    raise _DeviceFailed(2, f"{name}: the device sent {member.size} bytes, its "
                                        f"record says {size}; refused")
                source = archive.extractfile(member)
                assert source is not None
                local = folder / f"f{len(got)}"
                if copy_hashed(source, local) != sha:
                    raise _DeviceFailed(2, f"{name}: its sha256 differs from the device's "
                                        "record; refused")
                got[name] = local
    except tarfile.TarError as err:
        raise _DeviceFailed(2, f"what the device sent is not the archive asked for ({err})") \
            from None
    if set(got) != set(expected):
        raise _DeviceFailed(2, f"the device sent {sorted(got)}, not {sorted(expected)}")
    for record in new:
        names = [record.path, *(f.name for f in record.files)]
        outcome.pulled.append(Pulled(record, {n: got[n] for n in names}))
