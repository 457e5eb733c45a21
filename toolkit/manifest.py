"""The manifest's schema: every read and every write of manifest.json is validated here.

A bundle is input nobody here wrote (copied from a workstation, downloaded from CI), so its
manifest is parsed like any untrusted file: types are checked strictly, artifact paths must be
plain file names inside the bundle, and a manifest from a newer toolkit is refused rather than
half-understood. pydantic does the checking; this module only declares the shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from toolkit.errors import UsageError
from toolkit.spec import CONTROL_CHARS, MAX_DIM

# 2: paths confined to plain names, sha256 required for every saved artifact, factory
#    identity. 1 (the first layout) reads the same and is migrated on load.
# 3: an artifact may have companion files (`files`: weights beside a graph), each
#    hashed. 2 and 1 read the same (no companions) and are migrated on load.
# 4: devices reached over SSH (`--on`): `targets` (each device's identity and selection), an
#    artifact built on one device (`target`), results of an artifact on devices (`on_device`).
#    3 and older read the same (no devices) and are migrated on load.
SCHEMA_VERSION = 4
OLDEST_READABLE = 1
GOLDEN_NAME = "golden.npz"


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def plain_file_name(value: str) -> str:
    """A name that can only mean a file directly inside the bundle directory."""
    if (not value or value in (".", "..") or "/" in value or "\\" in value
            or CONTROL_CHARS.search(value) or len(value.encode("utf-8", "replace")) > 255
            or value.startswith("~")):
        raise ValueError(f"'{value}' is not a plain file name inside the bundle (no "
                         "directories, '..' or absolute paths)")
    return value


def _sha256(value: str) -> str:
    if not _SHA256.match(value):
        raise ValueError("not a sha256 hex digest")
    return value


def _tensor_name(value: str) -> str:
    if not value or len(value) > 256 or CONTROL_CHARS.search(value):
        raise ValueError("a tensor name is 1-256 printable characters")
    return value


def _one_of(value: str, known: Iterable[str], what: str) -> str:
    names = sorted(set(known))
    if value not in names:
        raise ValueError(f"unknown {what} '{value}' (this toolkit knows {', '.join(names)})")
    return value


PlainName = Annotated[str, AfterValidator(plain_file_name)]
Sha256 = Annotated[str, AfterValidator(_sha256)]
TensorName = Annotated[str, AfterValidator(_tensor_name)]
Dim = Annotated[int, Field(ge=0, le=MAX_DIM)]
DimName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,31}$")]  # as --input spells it
# a device's name: a targets-file name or an SSH Host alias; it becomes part of file names
TargetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Count = Annotated[int, Field(ge=0)]


class _Record(BaseModel):
    # strict: "1" is not 1 and 1 is not true; extra: fields a newer minor toolkit adds survive
    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        """What the manifest file holds for this record (fields given, by their JSON names)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    # A read-only mapping view for readers outside the package that see records as the JSON
    # they are (tests, scripts: record["parity"]["passed"]). toolkit's own code reads
    # attributes; tests/test_records.py holds it to that.
    def __getitem__(self, key: str) -> Any:
        for name, field in type(self).model_fields.items():
            if key in (name, field.alias):
                return getattr(self, name)
        extra = self.__pydantic_extra__ or {}
        if key in extra:
            return extra[key]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            value = self[key]
        except KeyError:
            return default
        return default if value is None and key not in self.model_fields_set else value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None


class TensorRecord(_Record):
    name: TensorName
    dtype: str
    shape: list[Dim | None] | None = None
    min: list[Dim] | None = None
    opt: list[Dim] | None = None
    max: list[Dim] | None = None

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        from toolkit.spec import DTYPE_ALIASES

        return _one_of(value, DTYPE_ALIASES.values(), "dtype")


class InputRecord(TensorRecord):
    min: list[Dim]
    opt: list[Dim]
    max: list[Dim]
    dims: list[DimName | None] | None = None  # named dimensions (shared between inputs)
    values: Annotated[list[int], Field(min_length=2, max_length=2)] | None = None  # [low, high)

    @model_validator(mode="after")
    def _consistent(self) -> InputRecord:
        from toolkit.spec import TensorSpec

        try:
            TensorSpec(self.name, self.dtype, tuple(self.min), tuple(self.opt), tuple(self.max),
                       dims=tuple(self.dims or ()),
                       values=(self.values[0], self.values[1]) if self.values else None)
        except UsageError as err:
            raise ValueError(str(err)) from None
        return self


class SourceRecord(_Record):
    kind: str
    path: str | None = None
    sha256: Sha256 | None = None
    class_: str | None = Field(default=None, alias="class")
    weights: str | None = None
    model_args: dict[str, str] | None = None
    state_sha256: Sha256 | None = None  # a factory's identity: the hash of its state_dict


class GoldenRecord(_Record):
    path: PlainName = GOLDEN_NAME
    samples: Count
    batches: list[int | None] = []
    sha256: Sha256
    reference: str | None = None
    real: list[Count] = []  # samples drawn from --eval-data / --calib-data
    real_source: str | None = None
    shapes: list[dict[str, list[Dim]]] = []  # each sample's input shapes, as judged

    @field_validator("path")
    @classmethod
    def _fixed_name(cls, value: str) -> str:
        if value != GOLDEN_NAME:
            raise ValueError(f"golden samples live in {GOLDEN_NAME}")
        return value


class ParityRecord(_Record):
    passed: bool
    summary: str | None = None
    date: str | None = None


class BenchRow(_Record):
    format: str
    precision: str = "fp32"
    batch: Annotated[int, Field(ge=1)]
    p50_ms: Annotated[float, Field(ge=0)] | None = None
    p99_ms: Annotated[float, Field(ge=0)] | None = None
    throughput: Annotated[float, Field(ge=0)] | None = None
    note: str | None = None


class BenchRecord(_Record):
    date: str | None = None
    device: str | None = None
    threads: int | None = None
    rows: list[BenchRow] = []
    sha256: Sha256 | None = None  # of the file that was timed


class SelectedRecord(_Record):
    artifact: str
    format: str
    precision: str
    layout: str | None = None
    path: PlainName
    sha256: Sha256 | None = None
    objective: str
    batch: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    throughput: float | None = None
    device: str
    date: str | None = None
    machine: str | None = None


class Score(_Record):
    score: float


class AccuracyRecord(_Record):
    passed: bool
    message: str = ""
    metric: str | None = None
    fp32: Score
    reduced: Score


class FileRecord(_Record):
    """A file an artifact consists of besides its main `path` (its weights, say)."""

    name: PlainName
    sha256: Sha256
    size_bytes: Count


class DeviceResults(_Record):
    """What one device found for an artifact made elsewhere (`verify --on`, `bench --on`)."""

    parity: ParityRecord | None = None
    bench: BenchRecord | None = None
    accuracy: AccuracyRecord | None = None


class ArtifactRecord(_Record):
    """One artifact of a bundle. A format's own fields are its backend's `record_fields`
    model, validated here and read back typed by `Format.fields_of`; the fields below are
    those of every artifact, and of the older formats not moved yet."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True,
                              validate_assignment=True)

    format: str
    precision: str = "fp32"
    path: PlainName | None = None
    sha256: Sha256 | None = None
    size_bytes: Count | None = None  # all of the artifact's files together
    files: list[FileRecord] = []  # companions of `path`, each checked before use
    from_onnx: PlainName | None = None  # the file it was built from (`builds_from`)
    layout: str | None = None  # INT8 graph layout: one of the format's `int8_layouts`
    notes: list[str] = []
    parity: ParityRecord | None = None
    bench: BenchRecord | None = None
    accuracy: AccuracyRecord | None = None
    exporter: str | None = None
    opset: int | None = None
    nodes: Count | None = None
    device: str | None = None
    created_at: str | None = None
    # built on this device (`export --to FORMAT --on NAME`): valid there only; its own parity and
    # bench are that device's
    target: TargetName | None = None
    built_from: dict[PlainName, Sha256] = {}  # the files the device built it from, as sent
    on_device: dict[TargetName, DeviceResults] = {}

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        from toolkit import formats

        return _one_of(value, [f.name for f in formats.all_formats()], "format")

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        from toolkit.spec import PRECISION_ALIASES

        return _one_of(value, PRECISION_ALIASES.values(), "precision")

    @model_validator(mode="after")
    def _hashed_when_saved(self) -> ArtifactRecord:
        from toolkit import formats

        declared = formats.get(self.format)
        if declared.runs_from == "model":  # never written by an export: rebuilding it runs code
            raise ValueError(f"{self.format} runs in-process from the source model; a bundle "
                             "never lists it as an artifact")
        if declared.saved and (self.path is None or self.sha256 is None):
            raise ValueError(f"a {self.format} artifact needs its file name (path) and sha256")
        if self.path is not None:
            wanted = declared.companions(self.path)
            listed = [f.name for f in self.files]
            if listed != wanted and not (declared.companions_optional and not listed):
                raise ValueError(f"a {self.format} artifact named {self.path} consists of "
                                 f"{[self.path, *wanted]}; the record lists "
                                 f"{[self.path, *(f.name for f in self.files)]}")
        if self.layout is not None and (self.precision != "int8"
                                        or self.layout not in declared.int8_layouts):
            raise ValueError(f"layout '{self.layout}' is not an INT8 layout of {self.format}")
        try:  # the fields only this format writes, checked by its backend's own model
            declared.fields_of(self)
        except ValidationError as err:
            raise ValueError(f"{self.format} field {_where(err).removeprefix('field ')}"
                             ) from None
        return self


@dataclass(frozen=True)
class InProcessTarget:
    """A format run in-process from the source model (`runs_from='model'`): never a file, never
    listed in a bundle; verify and bench run it beside the artifacts, by the same names."""

    format: str
    precision: str = "fp32"
    created_at: str | None = None
    layout: None = None
    path: None = None
    sha256: None = None
    parity: None = None
    bench: None = None
    accuracy: None = None
    notes: tuple[str, ...] = ()


#: what verify and bench run: a bundle's artifact, or a format run from the model
Target = ArtifactRecord | InProcessTarget


class DetectionRecord(_Record):
    max_detections: Annotated[int, Field(ge=1, le=100_000)]
    convention: str | None = None
    score_threshold: float | None = None
    nms_iou: float | None = None


class DeviceRecord(_Record):
    """A device reached over SSH, as it described itself (untrusted, for display and
    matching): never the destination, a user name or a key."""

    hostname: str | None = None
    toolkit_version: str | None = None
    python: str | None = None
    machine: str | None = None
    cpu: str | None = None
    cpu_flags: list[str] = []
    gpu: str | None = None
    compute_capability: str | None = None
    driver: str | None = None
    #: format -> its runtime's version there, as the format's `device_facts` hook said
    runtimes: dict[Annotated[str, Field(max_length=32)], Annotated[str, Field(max_length=64)]] = {}
    l4t: str | None = None
    backends: list[str] = []
    probed_at: str | None = None
    selected: SelectedRecord | None = None


class EnvironmentRecord(_Record):
    cpu: str | None = None
    python: str | None = None
    libraries: dict[str, str | None] = {}


class Manifest(_Record):
    """A bundle's manifest.json, typed: `Bundle.manifest` is one, and each assignment is
    validated (a dict given for a section becomes its record)."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True,
                              validate_assignment=True)

    schema_: Annotated[int, Field(ge=1)] = Field(alias="schema")
    toolkit_version: str
    inputs: Annotated[list[InputRecord], Field(min_length=1)]
    outputs: Annotated[list[TensorRecord], Field(min_length=1)]
    source: SourceRecord
    call: dict[str, Any] = {}
    golden: GoldenRecord | None = None
    artifacts: list[ArtifactRecord] = []
    task: str | None = None
    detection: DetectionRecord | None = None
    bench: dict[str, BenchRecord] | None = None
    environment: EnvironmentRecord | None = None
    selected: SelectedRecord | None = None
    targets: dict[TargetName, DeviceRecord] = {}
    training: dict[str, Any] | None = None
    created_at: str | None = None
    updated_at: str | None = None

    @model_validator(mode="after")
    def _unique(self) -> Manifest:
        for what, names in (("input", [t.name for t in self.inputs]),
                            ("output", [t.name for t in self.outputs])):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} names repeat: {names}")
        keys = [(a.format, a.precision, a.layout, a.target) for a in self.artifacts]
        if len(set(keys)) != len(keys):
            raise ValueError("two artifacts share a format, precision, layout and target")
        paths = [a.path for a in self.artifacts if a.path is not None]
        paths += [f.name for a in self.artifacts for f in a.files]
        if len(set(paths)) != len(paths) or GOLDEN_NAME in paths or "manifest.json" in paths:
            raise ValueError("two records name the same file")
        return self


def _where(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    return f"field '{loc}': {message}"


def _version_gate(data: Any, origin: str) -> None:
    from toolkit.version import __version__

    if not isinstance(data, dict):
        raise UsageError(f"{origin}: a manifest is a JSON object, not {type(data).__name__}")
    version = data.get("schema")
    if not isinstance(version, int) or isinstance(version, bool):
        raise UsageError(f"{origin}: field 'schema': the schema version is missing or not an "
                         "integer")
    if version > SCHEMA_VERSION:
        writer = data.get("toolkit_version")
        newer = (f"toolkit {writer} or later" if isinstance(writer, str)
                 and _version_tuple(writer) > _version_tuple(__version__)
                 else "a toolkit newer than this one")
        raise UsageError(
            f"{origin}: manifest schema {version} is newer than this toolkit ({__version__}) "
            f"reads (schema {SCHEMA_VERSION} at most); upgrade to {newer}")
    if version < OLDEST_READABLE:
        raise UsageError(f"{origin}: manifest schema {version} is older than any toolkit "
                         "release reads; re-export the bundle")


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = re.findall(r"\d{1,9}", text[:64])[:3]
    return tuple(int(p) for p in parts) if parts else (0,)


MAX_DEPTH = 32  # a manifest nests a few levels; anything deeper is not one


def check_json(value: Any, origin: str, depth: int = 0) -> None:
    """Limits pydantic doesn't check: nesting depth, and strings that are text (no lone
    surrogates, which can't be printed or used as a file name)."""
    if depth > MAX_DEPTH:
        raise UsageError(f"{origin}: nested more than {MAX_DEPTH} levels deep; not a manifest")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"{origin}: a string that is not valid text "
                             f"({value.encode('utf-8', 'backslashreplace')[:40]!r})") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_json(key, origin, depth + 1)
            check_json(item, origin, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_json(item, origin, depth + 1)


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 -> 2: what 2 adds is checked, not moved, except what a format's own
    `Format.migrate` brings forward of its older records."""
    from toolkit import formats

    migrated = {**data, "schema": SCHEMA_VERSION}
    if isinstance(data.get("artifacts"), list):
        migrated["artifacts"] = [
            fmt.hook("migrate")(record) if isinstance(record, dict)
            and (fmt := formats.TABLE.get(str(record.get("format")))) and fmt.migrate
            else record for record in data["artifacts"]]
    return migrated


def validate(data: Any, origin: str) -> Manifest:
    """The manifest, checked and typed (sections and artifacts as records, with their
    defaults); UsageError (one line, naming the file and the field) for anything else."""
    data = to_json(data) if isinstance(data, (dict, Manifest)) else data
    check_json(data, origin)
    _version_gate(data, origin)
    try:
        return Manifest.model_validate(_migrate(data))
    except ValidationError as err:
        raise UsageError(f"{origin}: {_where(err)}") from None


def artifact(data: Mapping[str, Any] | ArtifactRecord, origin: str = "artifact") -> \
        ArtifactRecord:
    """An artifact record from an exporter's fields (or a record already typed)."""
    if isinstance(data, ArtifactRecord):
        return data
    try:
        return ArtifactRecord.model_validate(dict(data))
    except ValidationError as err:
        raise UsageError(f"{origin}: {_where(err)}") from None


def to_json(manifest: Mapping[str, Any] | Manifest) -> dict[str, Any]:
    """The manifest as its JSON file holds it (typed records dumped). In a dict, anything
    but a list of artifacts is left as it is, for validation to refuse (a file's
    `"artifacts": true` or `0` is not an empty list)."""
    if isinstance(manifest, Manifest):
        return manifest.to_json()
    records = manifest.get("artifacts", [])
    if not isinstance(records, (list, tuple)):
        return dict(manifest)
    return {**manifest, "artifacts": [a.to_json() if isinstance(a, _Record) else a
                                      for a in records]}
