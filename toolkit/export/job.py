"""The contracts of one export run: its options, each step's status, and the job an exporter
receives. No torch here: the CLI and the Lightning callback build these before any export."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from toolkit.errors import ToolkitError, UsageError
from toolkit.groups import flag
from toolkit.source.options import SourceOptions

if TYPE_CHECKING:  # pragma: no cover
    from toolkit.bundle import Bundle
    from toolkit.formats import Format
    from toolkit.manifest import ParityRecord, Target


class StepStatus(str, Enum):
    """What happened to one format × precision of a run (a str, so JSON shows the word)."""

    PENDING = "pending"
    OK = "ok"
    FAILED = "failed"  # the command was wrong for this format (a usage error)
    NOT_EXPORTED = "not-exported"  # the exporter couldn't make it (an upstream limit)
    PARITY_FAILED = "parity-failed"
    ACCURACY_FAILED = "accuracy-failed"
    UNAVAILABLE = "unavailable"
    EXISTS = "exists"

    def __str__(self) -> str:
        return self.value

    @property
    def check_failed(self) -> bool:
        return self in (StepStatus.PARITY_FAILED, StepStatus.ACCURACY_FAILED)

    @property
    def code(self) -> int:
        """This step's own exit code: 1 a made artifact failed a check, 2 it couldn't be made
        (the command, or an upstream limit), 3 its backend is missing here, else 0."""
        if self.check_failed:
            return 1
        if self in (StepStatus.FAILED, StepStatus.NOT_EXPORTED):
            return 2
        return 3 if self is StepStatus.UNAVAILABLE else 0


CALIB_METHODS = ("minmax", "entropy", "percentile")


#: the layer cap that goes with a MAC-share budget, and the share that goes with a count
FALLBACK_LAYER_CAP = 16


def fallback_budget(text: str | int | float) -> tuple[float, int]:
    """`--max-fallback` as (share of MACs, layer count): '5%' -> (0.05, 16), '8' -> (1.0, 8),
    '0' -> (0.0, 0), off."""
    raw = str(text).strip()
    try:
        if raw.endswith("%"):
            share = float(raw[:-1]) / 100.0
            if not (math.isfinite(share) and 0 <= share <= 1):
                raise ValueError
            return share, FALLBACK_LAYER_CAP if share > 0 else 0
        count = int(raw)
        if count < 0:
            raise ValueError
        return (1.0 if count else 0.0), count
    except ValueError:
        raise UsageError(f"--max-fallback {raw!r}: a share of the MACs such as 5% (0-100%), or "
                         "a count of layers such as 8; 0 turns it off") from None


@dataclass(frozen=True)
class PrecisionOptions:
    """Calibration and the accuracy gate of reduced precision: the `--calib-*`, `--eval-data`,
    `--max-accuracy-drop` and `--max-fallback*` group (one place for flags and defaults)."""

    title: ClassVar[str] = "Reduced precision"

    calib_data: str | None = flag(
        None, "--calib-data",
        "INT8 calibration data: .npz, a directory of .npz, or pkg.module:DataModule.")
    calib_batches: int = flag(32, "--calib-batches", "Calibration batches to use.")
    calib_method: str = flag("minmax", "--calib-method",
                             "INT8 calibration: minmax, entropy or percentile.")
    eval_data: str | None = flag(
        None, "--eval-data",
        "Labelled data (.npz with 'labels', or DataModule) for the accuracy gate.")
    max_accuracy_drop: float = flag(1.0, "--max-accuracy-drop",
                                    "Accuracy points a reduced precision may lose.")
    max_fallback: str = flag(
        "5%", "--max-fallback",
        "Accuracy-controlled INT8 and fp16: when the file misses its gate (--max-accuracy-drop, "
        "else parity), keep up to this share of the MACs (5%) or this many layers (8) in float, "
        "the most sensitive first; 0: off.")
    max_fallback_seconds: float = flag(
        600.0, "--max-fallback-seconds",
        "Accuracy-controlled INT8 and fp16: stop searching after this many seconds (said in "
        "the refusal).")
    def __post_init__(self) -> None:
        if self.calib_method not in CALIB_METHODS:
            raise UsageError(f"--calib-method {self.calib_method!r}: use one of "
                             f"{', '.join(CALIB_METHODS)}")
        if self.calib_batches < 1:
            raise UsageError(f"--calib-batches must be >= 1, got {self.calib_batches}")
        fallback_budget(self.max_fallback)  # refused here, before anything is exported
        if not math.isfinite(self.max_fallback_seconds) or self.max_fallback_seconds <= 0:
            raise UsageError(f"--max-fallback-seconds must be a finite number > 0, got "
                             f"{self.max_fallback_seconds}")
        if not math.isfinite(self.max_accuracy_drop) or self.max_accuracy_drop < 0:
            raise UsageError(f"--max-accuracy-drop must be a finite number >= 0, got "
                             f"{self.max_accuracy_drop}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> PrecisionOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise UsageError(f"unknown precision options: {', '.join(unknown)}")
        return cls(**{k: v for k, v in (values or {}).items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BackendOptions:
    """Each format's own option group (`Format.options`: an opset, a builder's workspace ...),
    by format; a format not given gets its group's defaults.

    Only groups that differ from their defaults are kept, in table order, so two equal
    choices compare equal however they were spelled."""

    groups: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        from toolkit import formats

        if not self.groups:  # nothing to check: no backend module is imported
            return
        declared = formats.option_groups()
        kept = []
        for fmt, group in declared:
            given = [g for g in self.groups if type(g) is group]
            if len(given) > 1:
                raise UsageError(f"{group.__name__} ({fmt.name}) is given {len(given)} times")
            if given and given[0] != group():
                kept.append(given[0])
        stray = [g for g in self.groups if type(g) not in {group for _, group in declared}]
        if stray:
            known = ", ".join(group.__name__ for _, group in declared)
            raise UsageError(f"{type(stray[0]).__name__} is no format's option group; the "
                             f"groups are {known}")
        object.__setattr__(self, "groups", tuple(kept))

    @classmethod
    def of_groups(cls, groups: BackendOptions | Sequence[Any] | None) -> BackendOptions:
        if isinstance(groups, BackendOptions):
            return groups
        return cls(tuple(groups or ()))

    def of(self, name: str) -> Any:
        """The option group of format `name` (its defaults when not given); None when the
        format has none."""
        from toolkit import formats

        group = formats.get(name).option_group()
        if group is None:
            return None
        return next((g for g in self.groups if type(g) is group), None) or group()


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """How to export, shared by every step of one run: the run's own choices and its groups.
    Built by keyword only; `build` also takes the spellings Python callers use (a list of
    precisions, a mapping for the precision group, a list of formats' groups)."""

    force: bool = False
    precisions: tuple[str, ...] = ("fp32",)
    verify: bool = True
    source: SourceOptions = field(default_factory=SourceOptions)
    precision_options: PrecisionOptions = field(default_factory=PrecisionOptions)
    backends: BackendOptions = field(default_factory=BackendOptions)  # each format's own group

    @classmethod
    def build(cls, *, force: bool = False, precisions: Sequence[str] | str = ("fp32",),
              verify: bool = True, source: SourceOptions | None = None,
              precision_options: PrecisionOptions | Mapping[str, Any] | None = None,
              backends: BackendOptions | Sequence[Any] | None = None) -> ExportOptions:
        if not isinstance(precision_options, PrecisionOptions):
            precision_options = PrecisionOptions.from_mapping(precision_options)
        return cls(force=force,
                   precisions=(precisions,) if isinstance(precisions, str) else tuple(precisions),
                   verify=verify, source=source or SourceOptions(),
                   precision_options=precision_options,
                   backends=BackendOptions.of_groups(backends))

    @property
    def device(self) -> str:
        """Where the model runs while it is exported (the source group's)."""
        return self.source.device

    def backend(self, name: str) -> Any:
        """Format `name`'s option group (`BackendOptions.of`)."""
        return self.backends.of(name)


@dataclass
class Step:
    """One format × precision of an export run."""

    target: str
    precision: str = "fp32"
    status: StepStatus = StepStatus.PENDING
    seconds: float = 0.0
    path: str | None = None
    detail: str = ""
    parity: ParityRecord | None = None  # what the artifact's record holds
    error: ToolkitError | None = field(default=None, repr=False)
    started: float = field(default_factory=time.perf_counter, repr=False)
    layout: str | None = None  # INT8 graph layout, for formats that have several

    @property
    def variant(self) -> str:
        """'int8', or 'int8-<layout>' for a layout other than the format's default."""
        from toolkit import formats

        return formats.get(self.target).variant(self.precision, self.layout)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "precision": self.precision, "layout": self.layout,
                "status": self.status.value, "code": self.status.code,
                "seconds": round(self.seconds, 2),
                "path": self.path, "detail": self.detail,
                "parity": self.parity.to_json() if self.parity is not None else None}


StepCallback = Callable[[Step], None]


@dataclass
class ExportJob:
    """What an exporter gets: write `dest` (a temp path, renamed into place on success) and
    return the record's fields. `ensure(format, precision)` makes a dependency first."""

    format: Format
    precision: str
    bundle: Bundle
    options: ExportOptions
    dest: Path | None = None
    model: Any = None  # toolkit.source.wrapper.LoadedModel, when the source is a model
    ensure: Callable[..., Target] | None = None  # (format, precision, layout=None)
    layout: str | None = None  # the INT8 graph layout to write, for formats that have several

    @property
    def format_options(self) -> Any:
        """This format's own option group (None when it has none)."""
        return self.options.backend(self.format.name)

    def need_model(self) -> Any:
        if self.model is None:
            raise UsageError(
                f"{self.format.name} ({self.precision}) needs the PyTorch model; export from "
                f"the checkpoint or factory with --out {self.bundle.root}")
        return self.model


def steps_exit_code(steps: Sequence[Step]) -> int:
    """The worst of the steps: an artifact that was made and failed a check (1) outranks a
    format that couldn't be made (2: bad input for it, or an upstream limit), which outranks a
    backend missing here (3). A CI step reading 1 as "the model drifted" is never told 2
    ("fix your command") because another format couldn't be exported."""
    codes = {s.status.code for s in steps}
    codes |= {s.error.exit_code for s in steps if s.error is not None and s.status.code}
    for code in (1, 2, 3):
        if code in codes:
            return code
    return 0
