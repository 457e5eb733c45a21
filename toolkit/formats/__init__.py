"""The format table: every format declared once, each in its own module beside this one.

A `Format` says what a format is (names, file suffix, precisions, whether it needs the PyTorch
model) and where its code lives (exporter, runner) as `module:function` references, resolved
only when called, so reading the table imports neither torch nor any runtime. Every stage
(export, runtime, parity, bench, cli) asks this table; none names a format to decide.

Adding a format: write its backend (`toolkit/backends/<name>/`: exporter, runner, record
fields) and declare it in a module here. Declaration modules are found by listing this package
(nothing to register); `order` places the format among the others.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from toolkit.errors import UsageError


@dataclass(frozen=True)
class TritonSpec:
    """How Triton Inference Server serves a format (its model configuration's terms)."""

    platform: str  # config.pbtxt `platform` ('' when a `backend` is named instead)
    filename: str  # the file Triton looks for in the version directory
    #: tensors are named INPUT__0, OUTPUT__0 ... (PyTorch backends) instead of by name
    indexed_names: bool = False
    #: runs on a GPU whatever the bundle says (engines)
    gpu: bool = False
    #: the largest batch a request may carry (None: the bundle's batch range)
    max_batch: int | None = None
    note: str = ""
    #: config.pbtxt `backend` (OpenVINO is served by a backend, not a platform)
    backend: str = ""
    #: record -> config.pbtxt `parameters` (string values) the format needs to run as verified
    parameters: Callable[[Any], dict[str, str]] | None = None
    #: record -> what serving it on Triton can't guarantee (printed by deploy)
    caveats: Callable[[Any], list[str]] | None = None


@dataclass(frozen=True)
class Format:
    """One format's declaration. Hooks are 'module:function' strings, resolved lazily."""

    name: str
    description: str
    #: where it is listed, tried and exported among the formats (lower first)
    order: int = 100
    #: its name in prose ('AOTInductor'); the CLI's overview lists these
    title: str = ""
    aliases: tuple[str, ...] = ()
    #: file suffixes, the first is the one written ('' = not saved to a file)
    suffixes: tuple[str, ...] = ()
    #: suffixes of the files written beside the main one, same stem (OpenVINO: '.bin')
    companion_suffixes: tuple[str, ...] = ()
    #: the companions are written only when needed (ONNX: external data past 2 GB)
    companions_optional: bool = False
    #: the main file names its companions inside (ONNX external data): they keep their names
    #: wherever the main file goes; otherwise they follow its stem (OpenVINO's .xml/.bin)
    companions_named_inside: bool = False
    precisions: tuple[str, ...] = ("fp32",)
    #: export (and run) need the PyTorch model, not only the bundle
    needs_model: bool = True
    #: 'artifact': runs from a file in the bundle; 'model': runs the PyTorch model in-process
    runs_from: str = "artifact"
    #: exporter(job) -> record fields; None: runs only (the reference), never exported
    exporter: str | None = None
    #: runner(bundle, record, **options) for artifacts; runner(model, **options) for 'model'
    runner: str | None = None
    #: the pip extra a machine needs to run this format
    extra: str = "export"
    #: the module whose presence (found, not imported) makes it runnable on a machine
    runtime_module: str = "torch"
    #: the distributions whose versions each of its artifacts records (with those of the
    #: formats it is built from, and torch's)
    libraries: tuple[str, ...] = ()
    #: 'module:Model': the pydantic model of the record fields only this format writes,
    #: validated with the manifest; read back typed by `fields_of(record)`
    record_fields: str | None = None
    #: path -> its (inputs, outputs) specs: a lone file of this format says its own IO, so it
    #: runs and benches without a bundle
    describe: str | None = None
    #: path -> what `toolkit inspect FILE` shows of a lone file (JSON-ready dict)
    inspect: str | None = None
    #: (path, feed, reference, tolerance) -> the first node that diverges (--localize)
    localize: str | None = None
    #: (path, input shapes, inference precision) -> source.layers.LayerReport: each compute
    #: layer's precision and MACs (`inspect --layers`)
    layers: str | None = None
    #: preference when a bundle is run without naming a format (lower first)
    load_priority: int = 100
    #: formats this one is built from, and therefore exported before it
    builds_from: tuple[str, ...] = ()
    #: precision -> tolerance preset name (default: the precision itself)
    presets: dict[str, str] = field(default_factory=dict)
    #: options -> True when this run builds from the model instead of `builds_from`
    model_route: Callable[[Any], bool] | None = None
    #: INT8 graph layouts this format's files come in, the default first (ONNX: 'cpu' for
    #: ONNX Runtime on CPU, 'trt' for TensorRT's explicit quantization)
    int8_layouts: tuple[str, ...] = ()
    #: the INT8 layout this format needs from the one it is built from
    int8_layout_needed: str | None = None
    #: options -> False when this run's INT8 is made from the fp32 of the format it is built
    #: from (OpenVINO quantised by NNCF), so that format's INT8 file isn't needed
    int8_from_layout: Callable[[Any], bool] | None = None
    #: how Triton Inference Server serves it (None: it can't)
    triton: TritonSpec | None = None
    #: 'module:Class': this format's own option group (a `toolkit.groups` group in a pure
    #: module); `export` grows its flags under the group's panel, and an exporter reads it as
    #: `job.format_options`
    options: str | None = None
    #: 'module:function' (describe_gpu: bool) -> dict: what a device with this format's
    #: runtime says of itself to `--on` (its runtime's version; the GPU, when asked because
    #: nvidia-smi couldn't say), run on the device, no torch
    device_facts: str | None = None
    #: 'module:function' (record dict) -> record dict: an older record of this format brought
    #: to the current schema (reading an old bundle; the dict is untrusted JSON)
    migrate: str | None = None
    #: 'module:function' (path, --input specs) -> (inputs, outputs): a file of this format
    #: given as `export`'s SOURCE starts a bundle as its first artifact, its inputs and
    #: outputs read from the file (the specs give what it leaves symbolic)
    source_file: str | None = None

    @property
    def saved(self) -> bool:
        return bool(self.suffixes and self.suffixes[0])

    @property
    def exportable(self) -> bool:
        return self.exporter is not None

    @property
    def suffix(self) -> str:
        return self.suffixes[0] if self.suffixes else ""

    def filename(self, precision: str = "fp32", layout: str | None = None) -> str:
        """model.onnx, model.fp16.onnx, model.int8-trt.onnx, model.engine ..."""
        suffix = self.suffix.lstrip(".")
        if precision == "fp32":
            return f"model.{suffix}"
        return f"model.{self.variant(precision, layout)}.{suffix}"

    def companions(self, filename: str) -> list[str]:
        """The files an artifact named `filename` has beside it: model.bf16.xml ->
        [model.bf16.bin]."""
        stem = filename[: -len(self.suffix)] if self.suffix and filename.endswith(
            self.suffix) else filename
        return [stem + suffix for suffix in self.companion_suffixes]

    def variant(self, precision: str, layout: str | None = None) -> str:
        """'int8', or 'int8-trt' for an INT8 layout other than the format's default."""
        extra = f"-{layout}" if layout and layout != self.default_layout else ""
        return f"{precision}{extra}"

    @property
    def default_layout(self) -> str | None:
        return self.int8_layouts[0] if self.int8_layouts else None

    def layout_of(self, precision: str, layout: str | None) -> str | None:
        """The record's layout: only INT8 files of a format with layouts have one."""
        if precision != "int8" or not self.int8_layouts:
            return None
        return layout or self.default_layout

    def preset(self, precision: str) -> str:
        return self.presets.get(precision, precision)

    def uses_model(self, options: Any = None) -> bool:
        """Whether exporting with these options needs the PyTorch model."""
        if self.model_route is not None and options is not None:
            return self.model_route(options)
        return self.needs_model

    def dependencies(self, options: Any = None) -> tuple[str, ...]:
        return () if self.model_route and self.uses_model(options) else self.builds_from

    def export_fn(self) -> Callable[..., dict[str, Any]]:
        if self.exporter is None:
            raise UsageError(f"'{self.name}' runs the model as it is; it is not an export "
                             "format (verify and bench accept it)")
        return resolve(self.exporter)

    def hook(self, name: str) -> Callable[..., Any]:
        """One of the format's hooks (describe, inspect, localize), resolved now."""
        reference = getattr(self, name)
        if reference is None:
            raise UsageError(f"{self.name} has no {name} hook")
        return resolve(reference)

    @property
    def installed(self) -> bool:
        """Its runtime is installed here (looked up, nothing imported)."""
        from toolkit.modules import module_available

        return module_available(self.runtime_module)

    def recorded_libraries(self) -> tuple[str, ...]:
        """What an artifact of this format records the versions of: torch, its own libraries
        and those of the formats it is built from."""
        named = [lib for dep in self.builds_from for lib in get(dep).recorded_libraries()]
        return tuple(dict.fromkeys(("torch", *named, *self.libraries)))

    def fields_of(self, record: Any) -> Any:
        """This format's own fields of `record`, typed by its `record_fields` model (None
        when it declares none)."""
        if self.record_fields is None:
            return None
        return resolve(self.record_fields).model_validate(record.model_extra or {})

    def option_group(self) -> type | None:
        """The class of this format's option group (None when it has none)."""
        return None if self.options is None else resolve(self.options)  # type: ignore[return-value]

    def runner_fn(self) -> Callable[..., Any]:
        if self.runner is None:  # pragma: no cover - every declared format has one
            raise UsageError(f"format '{self.name}' has no runner")
        return resolve(self.runner)


def resolve(reference: str) -> Callable[..., Any]:
    """'toolkit.backends.onnx.export:export' -> the function (its module imported now)."""
    module, _, attr = reference.partition(":")
    return getattr(importlib.import_module(module), attr)


def _load_table() -> dict[str, Format]:
    declared: list[Format] = [
        importlib.import_module(f"{__name__}.{module.name}").FORMAT
        for module in pkgutil.iter_modules(__path__) if not module.name.startswith("_")]
    declared.sort(key=lambda f: (f.order, f.name))
    return {f.name: f for f in declared}


TABLE: dict[str, Format] = _load_table()
#: the format every artifact is compared with and timed against
REFERENCE = "eager"
#: what `export` makes when no --to is given
DEFAULT_TARGET = "onnx"
ALIASES: dict[str, str] = {alias: f.name for f in TABLE.values() for alias in (f.name,
                                                                                *f.aliases)}


def all_formats() -> list[Format]:
    return list(TABLE.values())


def option_groups() -> list[tuple[Format, type]]:
    """Each format that has an option group, with the group's class, in table order."""
    return [(f, group) for f in TABLE.values() if (group := f.option_group()) is not None]


def exportable() -> list[Format]:
    return [f for f in TABLE.values() if f.exportable]


def get(name: str) -> Format:
    """The format named `name` or one of its aliases; UsageError with did-you-mean."""
    return TABLE[canonical(name)]


def canonical(name: str) -> str:
    key = name.strip().lower()
    if key in ALIASES:
        return ALIASES[key]
    close = difflib.get_close_matches(key, list(ALIASES), n=1, cutoff=0.5)
    hint = f"; did you mean '{ALIASES[close[0]]}'?" if close else ""
    raise UsageError(f"unknown format '{name}'{hint}; known: {help_text()}")


def help_text(formats: Iterable[Format] | None = None) -> str:
    """'onnx, torchscript|ts|jit, ...': for --to/--format help and error messages."""
    return ", ".join("|".join((f.name, *f.aliases[:2])) for f in formats or TABLE.values())


def files_with(hook: str) -> str:
    """'an .onnx or .pte file': the files of the formats that have `hook`, for messages."""
    suffixes = [f.suffix for f in TABLE.values() if getattr(f, hook) and f.suffix]
    article = "an" if suffixes and suffixes[0][1:2] in "aeiou" else "a"
    return f"{article} {' or '.join(suffixes)} file" if suffixes else "a model file"


def lone_files() -> str:
    """The files that say their own inputs (a `describe` hook), so they run and bench outside
    a bundle."""
    return files_with("describe")


def source_file_format(suffix: str) -> Format | None:
    """The format whose files can start a bundle (`source_file`), by suffix; None if none."""
    fmt = by_suffix(suffix)
    return fmt if fmt is not None and fmt.source_file else None


def by_suffix(suffix: str) -> Format | None:
    for fmt in TABLE.values():
        if suffix and suffix in fmt.suffixes:
            return fmt
    return None


def parse_targets(values: Iterable[str]) -> list[str]:
    """'onnx,ts' and repeated options -> canonical export formats, order kept, no duplicates."""
    names: list[str] = []
    for value in values:
        for part in value.split(","):
            if not part.strip():
                continue
            fmt = get(part)
            if not fmt.exportable:
                raise UsageError(f"--to {part}: '{fmt.name}' runs the model as it is; it is "
                                 "not an export format (verify and bench accept it)")
            if fmt.name not in names:
                names.append(fmt.name)
    if not names:
        raise UsageError("--to needs at least one format, e.g. --to onnx,torchscript,pt2")
    return names


def check_precisions(name: str, precisions: str | Iterable[str]) -> list[str]:
    """Canonical, de-duplicated precisions this format carries, or a UsageError."""
    from toolkit.spec import canonical_precision

    if isinstance(precisions, str):
        precisions = [p for p in precisions.split(",") if p.strip()]
    fmt = get(name)
    out: list[str] = []
    for precision in precisions:
        canon = canonical_precision(precision)
        if canon not in fmt.precisions:
            reduced = [f.name for f in TABLE.values() if len(f.precisions) > 1]
            hint = ("" if len(fmt.precisions) > 1 else
                    f" ({fmt.name} exports fp32; reduced precision applies to "
                    f"{', '.join(reduced)})")
            raise UsageError(f"--precision {precision}: not supported for {fmt.name}; "
                             f"supported: {', '.join(fmt.precisions)}{hint}")
        if canon not in out:
            out.append(canon)
    return out or ["fp32"]
