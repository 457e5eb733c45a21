"""The bundle: a directory of artifacts indexed by manifest.json, with golden samples.

Every write is atomic (temp file in the same directory, then rename), so a crash or a failed
export never leaves a half-written manifest or artifact behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import environment, transaction
from toolkit import manifest as schema
from toolkit.errors import UsageError
from toolkit.manifest import ArtifactRecord, GoldenRecord
from toolkit.spec import OutputSpec, TensorSpec

MANIFEST = "manifest.json"
GOLDEN = schema.GOLDEN_NAME
SCHEMA_VERSION = schema.SCHEMA_VERSION
MAX_MANIFEST_BYTES = 64 << 20  # a manifest is kilobytes; anything this big is not one


class ArtifactModified(UsageError):
    """A file's sha256 differs from the one the manifest recorded when it was written."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `destination`; rename it into place only on success."""
    destination = Path(destination)
    journal = transaction.journal_for(destination.parent)
    if journal is not None:
        journal.before_change(destination)  # undone if the command fails or is interrupted
    handle, tmp = tempfile.mkstemp(
        prefix=f"{transaction.TEMP_PREFIX}{destination.name}.", suffix=suffix or ".tmp",
        dir=destination.parent)
    os.close(handle)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        publish(tmp_path, destination)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def publish(written: Path, destination: Path) -> None:
    """Rename a finished file into place, readable as the umask allows (mkstemp makes 0600
    files; a bundle is copied to devices and read by other users); inside `writing()` the
    command's failure puts back what was there."""
    journal = transaction.journal_for(destination.parent)
    if journal is not None:
        journal.before_change(destination)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(written, 0o666 & ~umask)
    fd = os.open(written, os.O_RDONLY)
    try:
        os.fsync(fd)  # the data is on disk before the name points at it
    finally:
        os.close(fd)
    os.replace(written, destination)
    transaction.crash_point("after-publish")


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def artifact_key(record: ArtifactRecord) -> tuple[str, str, str | None, str | None]:
    """What makes an artifact unique in a bundle: format, precision, INT8 layout, and the
    device it was built on (a file built per device)."""
    return record.format, record.precision, record.layout, record.target


def variant_label(record: ArtifactRecord | schema.InProcessTarget) -> str:
    """'fp32', 'int8', 'int8-<layout>': the precision, and the INT8 layout when not the
    format's default."""
    return _variant(record.format, record.precision, record.layout)


def artifact_label(record: ArtifactRecord | schema.InProcessTarget) -> str:
    """'<format>/fp32', '<format>/int8-<layout>': how reports and tables name an artifact."""
    return label_of(record.format, record.precision, record.layout)


def label_of(fmt: str, precision: str, layout: str | None = None) -> str:
    """An artifact's label from its parts (bench rows and gates carry parts, not records)."""
    return f"{fmt}/{_variant(fmt, precision, layout)}"


def _variant(fmt: str, precision: str, layout: str | None) -> str:
    from toolkit import formats

    declared = formats.TABLE.get(fmt)
    return declared.variant(precision, layout) if declared is not None else precision


@dataclass
class GoldenSample:
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    @property
    def batch(self) -> int | None:
        first = next(iter(self.inputs.values()), None)
        return int(first.shape[0]) if first is not None and first.ndim else None


def save_golden(path: Path, samples: Sequence[GoldenSample]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for i, sample in enumerate(samples):
        for name, value in sample.inputs.items():
            arrays[f"{i}/in/{name}"] = value
        for name, value in sample.outputs.items():
            arrays[f"{i}/out/{name}"] = value
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def load_golden(path: Path) -> list[GoldenSample]:
    if not path.is_file():
        raise UsageError(f"{path}: golden samples missing; re-export the bundle")
    from toolkit.spec import max_tensor_bytes

    samples: dict[int, GoldenSample] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            unpacked = sum(info.file_size for info in data.zip.infolist())
            if unpacked > max_tensor_bytes():  # a zip bomb, or a header claiming terabytes
                raise ValueError(f"it unpacks to {unpacked / 2**30:.1f} GiB")
            for key in data.files:
                index, kind, name = key.split("/", 2)
                if kind not in ("in", "out") or not index.isdigit():
                    raise ValueError(f"unexpected entry '{key}'")
                sample = samples.setdefault(int(index), GoldenSample({}, {}))
                (sample.inputs if kind == "in" else sample.outputs)[name] = data[key]
    except (OSError, ValueError, EOFError, MemoryError, zipfile.BadZipFile) as err:
        raise UsageError(f"{path}: not a golden-samples file ({err}); re-export the "
                         "bundle") from None
    if not samples or any(not s.inputs or not s.outputs for s in samples.values()):
        raise UsageError(f"{path}: golden samples without inputs or outputs; re-export the "
                         "bundle")
    return [samples[i] for i in sorted(samples)]


def observed_shape(shapes: Sequence[tuple[int, ...]]) -> list[int | None] | None:
    """An output's shape as seen across samples: dims that vary (batch, sequence) are None."""
    if not shapes or len({len(shape) for shape in shapes}) != 1:
        return None
    return [dims[0] if len(set(dims)) == 1 else None for dims in zip(*shapes)]


class Bundle:
    """A bundle directory and its manifest (held in memory; `save()` writes it atomically)."""

    def __init__(self, root: str | os.PathLike[str], manifest: schema.Manifest) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.allow_modified = False  # set by a command given --allow-modified
        self._hashes: dict[tuple[str, int, int], str] = {}

    # -- opening ---------------------------------------------------------------------------
    @staticmethod
    def is_bundle(path: str | os.PathLike[str]) -> bool:
        return (Path(path) / MANIFEST).is_file()

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> Bundle:
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise UsageError(f"{root}: not a bundle (no {MANIFEST}); export one first")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise UsageError(f"{path}: {path.stat().st_size} bytes is not a manifest")
        try:
            data = json.loads(path.read_bytes())
        except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError,
            # and Python's cap on huge integer literals are all ValueErrors
            raise UsageError(f"{path}: manifest is not valid JSON "
                             f"({str(err).splitlines()[0][:120]})") from None
        except OSError as err:
            raise UsageError(f"{path}: can't be read ({err.strerror})") from None
        return cls(root, schema.validate(data, str(path)))

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        *,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[OutputSpec],
        source: Mapping[str, Any],
        call: Mapping[str, Any] | None = None,
    ) -> Bundle:
        """A new in-memory bundle; nothing is written until `save()`."""
        from toolkit.version import __version__

        manifest = {
            "schema": SCHEMA_VERSION,
            "toolkit_version": __version__,
            "created_at": now(),
            "inputs": [s.to_dict() for s in inputs],
            "outputs": [s.to_dict() for s in outputs],
            "source": dict(source),
            "call": dict(call or {}),
            "golden": None,
            "artifacts": [],
            "environment": environment.describe(),
        }
        return cls(root, schema.validate(manifest, f"{Path(root) / MANIFEST} (new)"))

    # -- specs -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.root.resolve().name

    @property
    def detection(self) -> dict[str, Any] | None:
        """The detection contract's section as the JSON holds it (None: not a detector):
        the mapping the task hooks read."""
        section = self.manifest.detection
        return section.to_json() if section is not None else None

    @property
    def targets(self) -> dict[str, schema.DeviceRecord]:
        """The devices that have worked on this bundle over SSH, by name."""
        return self.manifest.targets

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(i.to_json()) for i in self.manifest.inputs]

    @property
    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec.from_dict(o.to_json()) for o in self.manifest.outputs]

    # -- artifacts -------------------------------------------------------------------------
    @property
    def artifacts(self) -> list[ArtifactRecord]:
        """The artifacts this machine may run: those built on a device over SSH (`target`)
        are valid there only, and commands reach them with `--on`."""
        return [r for r in self.manifest.artifacts if r.target is None]

    @property
    def all_artifacts(self) -> list[ArtifactRecord]:
        return self.manifest.artifacts

    def target_artifacts(self, target: str) -> list[ArtifactRecord]:
        """What was built on the device `target`."""
        return [r for r in self.manifest.artifacts if r.target == target]

    def artifact(self, fmt: str, precision: str = "fp32",
                 layout: str | None = None) -> ArtifactRecord | None:
        """The (format, precision) record; of two INT8 layouts, `layout`'s, or the format's
        default one first."""
        matches = [r for r in self.artifacts
                   if r.format == fmt and r.precision == precision
                   and (layout is None or r.layout == layout)]
        if len(matches) > 1:
            from toolkit import formats

            default = formats.get(fmt).default_layout
            matches.sort(key=lambda r: r.layout != default)
        return matches[0] if matches else None

    def listing(self) -> str:
        """What the bundle holds, for messages: '<format>/<precision>, ...' or 'none'."""
        return ", ".join(artifact_label(r) for r in self.artifacts) or "none"

    def path_of(self, record: ArtifactRecord | GoldenRecord) -> Path:
        """The record's file: a plain name inside the bundle, never a link out of it."""
        return self._inside(record.path)

    def companion_paths(self, record: ArtifactRecord) -> list[Path]:
        """The files the artifact has beside its main one (its weights, say), same rules."""
        return [self._inside(entry.name) for entry in record.files]

    def files_of(self, record: ArtifactRecord) -> list[Path]:
        """Every file of the artifact: companions first, the main file last (the order they
        are renamed into place, so a main file never appears without its companions)."""
        return [*self.companion_paths(record), self.path_of(record)]

    def _inside(self, name: Any) -> Path:
        try:
            schema.plain_file_name(name if isinstance(name, str) else "")
        except ValueError as err:
            raise UsageError(f"{self.root / MANIFEST}: artifact path: {err}") from None
        path = self.root / name
        if path.is_symlink() and path.resolve().parent != self.root.resolve():
            raise UsageError(f"{path} is a symbolic link out of the bundle; refusing to use it")
        if path.is_dir():
            raise UsageError(f"{path} is a directory, not the artifact file the manifest names")
        return path

    def checked_path(self, record: ArtifactRecord | GoldenRecord) -> Path:
        """The record's file, once its sha256 (and each companion's) matches the manifest
        (unless the command was told --allow-modified): a bundle is only as good as the
        files it lists."""
        path = self.path_of(record)
        hashes = [(path, record.sha256)]
        if isinstance(record, ArtifactRecord):
            hashes += zip(self.companion_paths(record), (f.sha256 for f in record.files))
        for file, expected in hashes:
            if not file.is_file():  # not the file that was exported, like a changed one
                raise ArtifactModified(f"{file} is listed in the manifest but missing; "
                                       "re-export it")
            if expected and self._sha256(file) != expected and not self.allow_modified:
                raise ArtifactModified(
                    f"{file.name} changed since it was exported (its sha256 differs from the "
                    "manifest's); re-export it, or pass --allow-modified to use it anyway")
        return path

    def _sha256(self, path: Path) -> str:
        stat = path.stat()
        key = (path.name, stat.st_mtime_ns, stat.st_size)
        if key not in self._hashes:
            self._hashes[key] = sha256_file(path)
        return self._hashes[key]

    def record_artifact(self, record: Mapping[str, Any] | ArtifactRecord) -> ArtifactRecord:
        """Add or replace the record for (format, precision, layout); returns it typed."""
        typed = schema.artifact(record, f"{self.root / MANIFEST}: artifact")
        key = artifact_key(typed)
        self.manifest.artifacts = [
            r for r in self.all_artifacts if artifact_key(r) != key] + [typed]
        return typed

    def remove_artifact(self, record: ArtifactRecord) -> None:
        self.manifest.artifacts = [r for r in self.all_artifacts if r is not record]

    # -- golden ----------------------------------------------------------------------------
    @property
    def golden_path(self) -> Path:
        return self.root / GOLDEN

    def golden(self) -> list[GoldenSample]:
        record = self.manifest.golden
        if record is None:
            raise UsageError(f"{self.root}: the manifest lists no golden samples; re-export "
                             "the bundle")
        self.checked_path(record)
        return load_golden(self.golden_path)

    def save_golden(self, samples: Sequence[GoldenSample], *, real: Sequence[int] = (),
                    real_source: str | None = None) -> None:
        """Write golden.npz; `real` indexes the samples drawn from real data, which judge
        reduced precisions (`real_source` says where they came from)."""
        self.root.mkdir(parents=True, exist_ok=True)
        save_golden(self.golden_path, samples)
        for output in self.manifest.outputs:
            output.shape = observed_shape([s.outputs[output.name].shape for s in samples
                                           if output.name in s.outputs])
        self.manifest.golden = {
            "path": GOLDEN,
            "samples": len(samples),
            "batches": [s.batch for s in samples],
            # every shape judged, so a reader sees which corners of the declared range were
            "shapes": [{name: list(value.shape) for name, value in s.inputs.items()}
                       for s in samples],
            "sha256": sha256_file(self.golden_path),
            **({"real": list(real), "real_source": real_source} if real else {}),
        }

    def judging_samples(self, record: ArtifactRecord) -> tuple[list[int] | None, str]:
        """Which golden samples judge this artifact, and how to say so: a reduced precision
        is judged on the real-data samples when the bundle has them (calibrated for real
        data, it would fail on a noise example); everything else on every sample."""
        golden = self.manifest.golden
        real = golden.real if golden is not None else []
        if record.precision in ("fp32", "tf32") or not real:
            return None, "golden samples"
        return list(real), f"real data ({golden.real_source}): golden samples " + \
            ", ".join(map(str, real))

    # -- persistence -----------------------------------------------------------------------
    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest.updated_at = now()
        # a write is validated like a read: the toolkit never writes what it would refuse
        data = schema.to_json(self.manifest)
        schema.validate(data, f"{self.root / MANIFEST} (writing)")
        write_json_atomic(self.root / MANIFEST, data)


def writable(root: Path) -> bool:
    """Whether results can be recorded in this bundle (a read-only copy is still usable)."""
    manifest = root / MANIFEST
    # the mode bits too: root may write anywhere, but a bundle made read-only means it
    paths = [root] + ([manifest] if manifest.exists() else [])
    return all(os.access(p, os.W_OK) and p.stat().st_mode & 0o222 for p in paths)


def record_results(root: Path, apply: Callable[[Bundle], None], *, wait_s: float = 600) -> bool:
    """Re-read the manifest under the bundle's lock, apply `apply`, save: results recorded
    while an export ran keep its records, and two recorders never lose each other's. False,
    with nothing written, when the bundle is read-only."""
    if not writable(root):
        return False
    with transaction.locked(root, wait_s=wait_s, what="record the results"):
        fresh = Bundle.open(root)
        apply(fresh)
        try:
            fresh.save()
        except OSError:  # a read-only mount, a full disk: the results stay unrecorded
            return False
    return True
