"""A job on every device named by `--on`, in parallel, and what they found brought into the
one manifest.

Each device runs in a thread of its own (at most `parallel` at once) through its own ssh
connection; one that fails is reported with its exit code and never stops the others. Their
results are merged at the end, one device after another, under the bundle's exclusive lock
and journal: a file a device built becomes that device's artifact (`model@NAME.plan`,
`target: NAME`), what a device found for an artifact made here goes to the record's
`on_device[NAME]`, and the device's identity to the manifest's `targets[NAME]`.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit import formats, transaction
from toolkit.bundle import GOLDEN, Bundle, atomic_path, writable
from toolkit.manifest import ArtifactRecord, DeviceResults
from toolkit.remote import ssh
from toolkit.remote.session import DeviceOutcome, Job, Pulled, run_on
from toolkit.remote.targets import Fleet


@dataclass
class FleetResult:
    outcomes: list[DeviceOutcome]
    wall_s: float
    recorded: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """The worst device's: 0 ok, 1 a failed check, 2 bad input or unreachable, 3 a
        backend missing there (130: interrupted there)."""
        return max((o.code for o in self.outcomes), default=0)

    def to_dict(self) -> list[dict[str, Any]]:
        return [{"target": o.target.name, "exit": o.code, "message": o.message,
                 "device": o.device.to_json() if o.device else None,
                 "result": o.result, "sent_files": o.sent_files, "sent_bytes": o.sent_bytes,
                 "pulled": [p.record.path for p in o.pulled], "phases_s": o.phases}
                for o in self.outcomes]


def run_fleet(root: Path, fleet: Fleet, job: Job, *,
              on_line: Callable[[str, str], None] = lambda target, line: None,
              on_phase: Callable[[str, str], None] = lambda target, phase: None,
              record: bool = True) -> FleetResult:
    from toolkit.transaction import reading

    with reading(root):  # a consistent snapshot: an export running is waited for
        bundle = Bundle.open(root)
    started = time.perf_counter()
    outcomes: list[DeviceOutcome] = []
    with ssh.control_directory() as control:
        connections = {t.name: ssh.Connection(t, fleet.ssh_config, control)
                       for t in fleet.targets}
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=fleet.parallel)
        try:
            futures = [pool.submit(run_on, bundle, t, job, connections[t.name],
                                   lambda line, n=t.name: on_line(n, line),
                                   lambda phase, n=t.name: on_phase(n, phase))
                       for t in fleet.targets]
            outcomes = [f.result() for f in futures]
        except BaseException:  # Ctrl-C: every ssh ends, so every remote command ends
            ssh.stop_all()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)
            for connection in connections.values():
                connection.close()
    result = FleetResult(outcomes, time.perf_counter() - started)
    # only what a device ran to the end (passed or failed its checks) is recorded: a device
    # that was unreachable, refused or interrupted leaves the bundle exactly as it was
    finished = [o for o in outcomes if o.code in (0, 1) and o.manifest is not None]
    try:
        if record and finished:
            result.recorded = merge(root, job, finished)
            if not result.recorded:
                result.notes.append(f"{root} is read-only: the devices' results were not "
                                    "recorded")
    finally:
        for outcome in outcomes:
            outcome.close()
    return result


def local_name(remote_name: str, target: str, suffix: str) -> str:
    """model.plan -> model@NAME.plan; model.fp16.plan -> model.fp16@NAME.plan. '@'
    is in no variant and no target name, so two (variant, device) pairs never share a name."""
    stem = remote_name[: -len(suffix)] if suffix and remote_name.endswith(suffix) else \
        remote_name
    return f"{stem}@{target}{suffix if remote_name.endswith(suffix) else ''}"


def merge(root: Path, job: Job, outcomes: list[DeviceOutcome]) -> bool:
    """Every device's results into the manifest; False when the bundle is read-only."""
    if not writable(root):
        return False
    with transaction.writing(root):
        bundle = Bundle.open(root)
        for outcome in outcomes:
            _merge_one(bundle, job, outcome)
        bundle.save()
    return True


def _merge_one(bundle: Bundle, job: Job, outcome: DeviceOutcome) -> None:
    name = outcome.target.name
    if outcome.device is not None:
        device = outcome.device.model_copy()
        old = bundle.targets.get(name)
        if old is not None and old.selected is not None:
            device.selected = old.selected  # the choice made there stays until made again
        bundle.manifest.targets = {**bundle.targets, name: device}
    basis = {n: sha for n, sha in outcome.basis.items() if n != GOLDEN}
    for pulled in outcome.pulled:
        _place(bundle, name, pulled, basis)
    if outcome.manifest is None:
        return
    pulled_keys = {(p.record.format, p.record.precision, p.record.layout)
                   for p in outcome.pulled}
    for remote in outcome.manifest.artifacts:
        key = (remote.format, remote.precision, remote.layout)
        if key in pulled_keys:
            continue
        findings = DeviceResults(parity=remote.parity, bench=remote.bench,
                                 accuracy=remote.accuracy)
        mine = _match(bundle.target_artifacts(name), remote)
        if mine is not None:  # built on this device: its own results, the newest of each kind
            mine.parity = remote.parity or mine.parity
            mine.bench = remote.bench or mine.bench
            mine.accuracy = remote.accuracy or mine.accuracy
            continue
        here = _match(bundle.artifacts, remote)
        if here is not None and (findings.parity or findings.bench or findings.accuracy):
            old = here.on_device.get(name)
            merged = DeviceResults(
                parity=findings.parity or (old.parity if old else None),
                bench=findings.bench or (old.bench if old else None),
                accuracy=findings.accuracy or (old.accuracy if old else None))
            here.on_device = {**here.on_device, name: merged}


def _match(records: list[ArtifactRecord], remote: ArtifactRecord) -> ArtifactRecord | None:
    for record in records:
        if (record.format, record.precision, record.layout, record.sha256) == (
                remote.format, remote.precision, remote.layout, remote.sha256):
            return record
    return None


def _place(bundle: Bundle, target: str, pulled: Pulled, basis: dict[str, str]) -> None:
    """A device-built artifact into the bundle under names of its own, its record marked as
    that device's."""
    remote = pulled.record
    declared = formats.get(remote.format)
    path = local_name(remote.path or declared.filename(remote.precision, remote.layout),
                      target, declared.suffix)
    renames = {remote.path: path}
    for companion, wanted in zip(remote.files, declared.companions(path)):
        renames[companion.name] = wanted
    old = next((r for r in bundle.target_artifacts(target)
                if (r.format, r.precision, r.layout) ==
                (remote.format, remote.precision, remote.layout)), None)
    if old is not None:
        for file in bundle.files_of(old):
            if file.name not in renames.values():
                transaction.remove_file(file)
    for remote_name in [f.name for f in remote.files] + [remote.path]:
        with atomic_path(bundle.root / renames[remote_name], suffix=".part") as tmp:
            shutil.copyfile(pulled.files[remote_name], tmp)
    fields = remote.to_json()
    fields.pop("on_device", None)
    fields.update(path=path, target=target,
                  files=[{**f.to_json(), "name": renames[f.name]} for f in remote.files],
                  built_from=dict(basis))
    bundle.record_artifact(fields)
