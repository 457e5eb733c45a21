"""`toolkit.export(...)`: SOURCE -> bundle of verified artifacts. The CLI is a thin shell on it.

The run is a loop over (format, precision) steps. What each format needs and how it is made
comes from the format table (`toolkit.formats`): this module names no format.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit import formats, interrupts, tasks, transaction
from toolkit.bundle import Bundle, atomic_path, now, publish
from toolkit.detection.options import DetectionOptions
from toolkit.errors import (
    BackendUnavailable,
    ExportFailed,
    ToolkitError,
    UsageError,
    disk_error,
)
from toolkit.export.golden import golden_samples, save_golden_samples
from toolkit.export.job import (
    BackendOptions,
    ExportJob,
    ExportOptions,
    PrecisionOptions,
    Step,
    StepCallback,
    StepStatus,
    steps_exit_code,
)
from toolkit.export.plan import ExportPlan
from toolkit.export.records import drop_artifact, record_artifact
from toolkit.export.sources import bundle_from_file, load_source, open_or_create
from toolkit.formats import Format
from toolkit.manifest import ArtifactRecord, InProcessTarget, ParityRecord, Target
from toolkit.source.options import SourceOptions
from toolkit.spec import TensorSpec

__all__ = ["export", "ExportOptions", "ExportResult", "Step", "StepStatus", "golden_samples",
           "BackendOptions", "DetectionOptions", "PrecisionOptions", "SourceOptions"]


@dataclass
class ExportResult:
    bundle: Bundle
    steps: list[Step]
    notes: list[str] = field(default_factory=list)  # what the run decided on the user's behalf

    @property
    def exit_code(self) -> int:
        return steps_exit_code(self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle.root), "exit_code": self.exit_code,
                "steps": [s.to_dict() for s in self.steps], "notes": self.notes}


def default_out(source: str) -> Path:
    name = Path(source).stem if ":" not in source else source.rpartition(":")[2]
    return Path("out") / (name or "model")


def export(
    source: str,
    to: Sequence[str] | str = (formats.DEFAULT_TARGET,),
    out: str | Path | None = None,
    *,
    weights: str | None = None,
    inputs: Sequence[str | TensorSpec] | None = None,
    static: bool = False,
    force: bool = False,
    precisions: Sequence[str] | str = ("fp32",),
    verify: bool = True,
    source_options: SourceOptions | None = None,
    precision_options: PrecisionOptions | Mapping[str, Any] | None = None,
    backends: BackendOptions | Sequence[Any] | None = None,
    detection: DetectionOptions | None = None,
    on_step: StepCallback | None = None,
) -> ExportResult:
    """Export SOURCE into a bundle; each artifact is checked against the golden samples.

    The option groups are the objects the CLI builds from its flags:
    `source_options=SourceOptions(model="pkg.mod:Class", model_args={"num_classes": 5},
    trust_checkpoint=..., allow_modified=..., device="cuda")`,
    `precision_options=PrecisionOptions(calib_data=...)` (or a mapping of its fields), each
    format's own group in `backends=[...]` (`toolkit.BuildOptions(workspace="4G")`,
    `toolkit.OnnxOptions(opset=17)`), and
    `detection=DetectionOptions(nms="iou=0.45,score=0.25")`, which makes a detector export the
    detection contract (see toolkit/source/detector_contract.py).
    """
    from toolkit.source.load import FILE_SOURCE, source_kind
    from toolkit.spec import parse_inputs

    opts = ExportOptions.build(force=force, precisions=precisions, verify=verify,
                               source=source_options, precision_options=precision_options,
                               backends=backends)
    asked = formats.parse_targets([to] if isinstance(to, str) else to)
    texts = [s for s in inputs or [] if not isinstance(s, TensorSpec)]
    parsed = iter(parse_inputs(texts))  # a dimension named in one --input, used in another
    specs = [s if isinstance(s, TensorSpec) else next(parsed) for s in inputs or []]
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"--input names {', '.join(repeated)} more than once; give each "
                         "input one --input")
    detection = detection or DetectionOptions()
    kind = source_kind(source)
    if kind == FILE_SOURCE and detection != DetectionOptions():
        raise UsageError("--task, --nms and --max-detections wrap a PyTorch model's outputs "
                         f"into the detection contract; a model file ({Path(source).name}) is "
                         "exported as it is. Export the detector from its checkpoint or "
                         "factory with them, or leave them out")
    out_dir = Path(out) if out else (Path(source) if kind == "bundle" else default_out(source))
    _check_writable(out_dir)
    if kind == "bundle" and Path(out or source).resolve() != Path(source).resolve():
        raise UsageError("--out can't be used with a bundle source; it is exported in place")
    created = not out_dir.exists()
    run = _Executor(ExportPlan(asked, opts), on_step)
    # usage errors before the lock: a bad precision is told so, not "busy"
    run.check_precisions(single_target_strict=kind in ("bundle", FILE_SOURCE))
    # locked, and undone on failure or Ctrl-C: nothing partial is left behind
    with _disk_errors_named(out_dir), transaction.writing(out_dir):
        if kind == "bundle":
            bundle = Bundle.open(source)
            bundle.allow_modified = opts.source.allow_modified
            run.from_bundle(bundle)
        elif kind == FILE_SOURCE:
            run.from_bundle(bundle_from_file(Path(source), out_dir, specs, opts))
        else:
            run.from_model(source, out_dir, specs, weights, static, detection)
    result = ExportResult(run.bundle, run.steps, run.notes)
    if created and not result.bundle.artifacts and out_dir.exists():
        shutil.rmtree(out_dir, ignore_errors=True)
    return result


@contextlib.contextmanager
def _disk_errors_named(out_dir: Path) -> Iterator[None]:
    """A full disk or a read-only mount while writing the bundle: exit 2 naming it (the
    journal has rolled the bundle back by then)."""
    try:
        yield
    except OSError as err:
        disk = disk_error(err, out_dir)
        if disk is None:
            raise
        raise disk from None


def _check_writable(out_dir: Path) -> None:
    from toolkit.bundle import writable

    if out_dir.is_dir() and not out_dir.is_symlink():
        transaction.recover(out_dir)  # what a killed export left is put back first
    if out_dir.is_symlink() and not out_dir.exists():
        raise UsageError(f"--out {out_dir} is a link to nothing; choose another --out")
    if Bundle.is_bundle(out_dir) and not writable(out_dir):
        raise UsageError(f"--out {out_dir} is a read-only bundle; export into a copy")
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--out {out_dir}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK):
        raise UsageError(f"--out {out_dir}: {probe} is not writable; choose another --out")
    if _taken(out_dir):
        # An export that has just made this directory may be writing its first files, its
        # manifest not yet there: its lock says so. Wait for it, then look again.
        try:
            with transaction.locked(out_dir, wait_s=transaction.WRITER_WAIT_S, what="export"):
                taken = _taken(out_dir)
        except FileNotFoundError:  # it failed, and took the directory it made with it
            return
        if taken:
            raise UsageError(f"--out {out_dir} exists and is not a bundle; choose an empty or "
                             "new directory")


def _taken(out_dir: Path) -> bool:
    """A directory that holds something and is not a bundle."""
    return out_dir.is_dir() and not Bundle.is_bundle(out_dir) and any(out_dir.iterdir())


class _Exists(UsageError):
    """An artifact already in the bundle: skipped, not an error, unless --force replaces it."""


class _Executor:
    """Carries out an ExportPlan: opens or creates the bundle from the source, makes each
    planned step's artifact (and what it builds from), verifies it and records it."""

    def __init__(self, plan: ExportPlan, on_step: StepCallback | None) -> None:
        self.plan = plan
        self.on_step = on_step
        self.steps: list[Step] = []
        self.notes: list[str] = []
        self.model: Any = None
        self.bundle: Bundle = None  # type: ignore[assignment]

    @property
    def opts(self) -> ExportOptions:
        return self.plan.opts

    @property
    def targets(self) -> list[Format]:
        return self.plan.targets

    def check_precisions(self, single_target_strict: bool = False) -> None:
        self.plan.check_precisions(single_target_strict)

    # -- sources -------------------------------------------------------------------------
    def from_model(self, source: str, out_dir: Path, specs: list[TensorSpec],
                   weights: str | None, static: bool, detection: Any) -> None:
        loaded, notes = load_source(source, specs, self.opts.source, weights, static,
                                    detection)
        self.notes += notes
        self.from_loaded(loaded, out_dir)

    def from_loaded(self, loaded: Any, out_dir: Path) -> None:
        """A model already in memory (loaded from a source, or handed over by a training run)."""
        if loaded.detection and loaded.detection.get("note"):
            self.notes.append(loaded.detection["note"])
        self.check_precisions()
        real = None
        data = self.opts.precision_options
        task = tasks.of(loaded.detection)
        if any(p != "fp32" for p in self.opts.precisions) or (
                task.golden_needs_real_data and (data.eval_data or data.calib_data)):
            from toolkit.export.precision.data import check_precision_data

            real = check_precision_data(loaded.inputs, self.opts.precisions, data, task,
                                        loaded.detection)
            if loaded.example is None and real is not None:
                # Golden samples from real data: reduced precisions are calibrated for it,
                # and random noise would fail a healthy INT8 model.
                loaded.example = real
        if task.golden_example:
            chosen_from = data if (data.eval_data or data.calib_data) else None
            loaded.example = task.hook("golden_example")(loaded, real, chosen_from)
        self.model = loaded
        self.bundle = open_or_create(out_dir, loaded, self.opts.force)
        save_golden_samples(self.bundle, loaded, self.opts)
        self._run_all()

    def from_bundle(self, bundle: Bundle) -> None:
        """Formats derivable from the bundle alone (reduced-precision files, engines)."""
        self.bundle = bundle
        need_model = [f.name for f in self.targets if f.uses_model(self.opts)
                      and not (f.precisions != ("fp32",) and bundle.artifact(f.name, "fp32"))]
        if need_model:
            raise UsageError(
                f"--to {','.join(need_model)} needs the PyTorch model; export from the "
                f"checkpoint with --out {bundle.root}")
        self._run_all()

    # -- steps ---------------------------------------------------------------------------
    def _check_backend_options(self) -> None:
        """A format's options that conflict with files the bundle keeps (another opset) are
        refused before anything is made."""
        redone = {f.name for f in self.targets} if (self.opts.force and self.model) else set()
        for group in self.opts.backends.groups:  # only those given: defaults check nothing
            if hasattr(group, "check_bundle"):
                group.check_bundle(self.bundle, redone)

    def _run_all(self) -> None:
        self._check_backend_options()
        for planned in self.plan.steps():
            fmt, precision = planned.format, planned.precision
            step = Step(fmt.name, precision, layout=planned.layout)
            self.steps.append(step)
            if self.model is None and fmt.uses_model(self.opts) and precision == "fp32":
                self._existing_only(step)
                continue
            self._run_step(step, fmt)
        self.bundle.save()

    def _existing_only(self, step: Step) -> None:
        """A bundle source can't re-export what comes from the model: it is there (and the
        file that was exported) or not."""
        record = self.bundle.artifact(step.target, step.precision, step.layout)
        try:
            if record is None:
                raise UsageError(f"the bundle has no {step.precision} {step.target}")
            self.bundle.checked_path(record)
            step.status, step.detail = StepStatus.EXISTS, "already in the bundle"
        except UsageError as err:
            step.status, step.detail, step.error = StepStatus.FAILED, str(err), err
        self._done(step)

    def ensure(self, name: str, precision: str, layout: str | None = None) -> Target:
        """The bundle's (format, precision, layout) artifact, made now when it is missing."""
        fmt = formats.get(name)
        layout = fmt.layout_of(precision, layout)
        record = self.bundle.artifact(name, precision, layout)
        if record is None:
            record = self._make(fmt, precision, layout)
            self.bundle.save()
        return record

    def _make(self, fmt: Format, precision: str, layout: str | None = None) -> Target:
        job = ExportJob(fmt, precision, self.bundle, self.opts, model=self.model,
                        ensure=self.ensure, layout=layout)
        if not fmt.saved:
            note = fmt.export_fn()(job).get("note")  # an in-process format checks the model runs
            return InProcessTarget(fmt.name, precision, created_at=now(),
                                   notes=(note,) if note else ())
        # what exists is found before the exporter is imported: on a device without torch, a
        # bundle's reduced-precision file is there to build another format from, not to be redone
        dest = self._destination(fmt, precision, layout)
        exporter = fmt.export_fn()
        with atomic_path(dest, suffix=dest.suffix) as tmp:
            job.dest = tmp
            try:
                extra = exporter(job)
                # companions (written beside the temp file, same stem) go into place before
                # the main file, so the main file never appears without them
                for name, written in zip(fmt.companions(dest.name), fmt.companions(tmp.name)):
                    if (tmp.parent / written).is_file():
                        publish(tmp.parent / written, dest.with_name(name))
                    elif fmt.companions_optional:  # none this time: a stale one must go
                        transaction.remove_file(dest.with_name(name))
                    else:
                        raise ExportFailed(f"the {fmt.name} exporter did not write {name}")
            finally:
                for leftover in fmt.companions(tmp.name):
                    tmp.with_name(leftover).unlink(missing_ok=True)
        return record_artifact(self.bundle, fmt, precision, dest, extra, layout)

    def _destination(self, fmt: Format, precision: str, layout: str | None = None) -> Path:
        self.bundle.root.mkdir(parents=True, exist_ok=True)
        dest = self.bundle.root / fmt.filename(precision, layout)
        if (self.bundle.artifact(fmt.name, precision, layout) is not None and dest.exists()
                and not self.opts.force):
            raise _Exists(f"{dest.name} exists; pass --force to replace it")
        return dest

    def _run_step(self, step: Step, fmt: Format) -> None:
        made: Target | None = None
        try:
            record = made = self._make(fmt, step.precision, step.layout)
            step.path = record.path
            step.detail = "; ".join(record.notes)
            step.status = StepStatus.OK
            if self.opts.verify:
                self._verify(step, record)
            accuracy = record.accuracy
            if accuracy and not accuracy.passed:
                step.status, step.detail = StepStatus.ACCURACY_FAILED, accuracy.message
            elif accuracy and accuracy.message not in step.detail:  # a note may say it
                step.detail = "; ".join(filter(None, [step.detail, accuracy.message]))
            self.bundle.save()
        except _Exists as err:
            step.status, step.detail = StepStatus.EXISTS, str(err)
            self._done(step)
            return
        except BackendUnavailable as err:
            step.status, step.detail, step.error = StepStatus.UNAVAILABLE, str(err), err
        except ExportFailed as err:  # the exporter's limit, not the command's mistake
            step.status, step.detail, step.error = StepStatus.NOT_EXPORTED, str(err), err
        except ToolkitError as err:
            step.status, step.detail, step.error = StepStatus.FAILED, str(err), err
        interrupts.raise_if_pending()  # an exporter may have turned Ctrl-C into a failure
        if made is not None and step.status in (StepStatus.FAILED, StepStatus.NOT_EXPORTED,
                                                StepStatus.UNAVAILABLE):
            drop_artifact(self.bundle, made)  # written but unusable (it won't load): unlisted
        self._done(step)

    def _verify(self, step: Step, record: Target) -> None:
        from toolkit.parity.verify import check_target

        report = check_target(self.bundle, record, device=self.opts.device, model=self.model)
        step.parity = ParityRecord.model_validate(report.to_dict())
        if isinstance(record, ArtifactRecord):
            record.parity = step.parity
        if not report.passed:
            step.status = StepStatus.PARITY_FAILED
            step.detail = "; ".join(filter(None, [report.summary_line(), step.detail]))

    def _done(self, step: Step) -> None:
        import time

        step.seconds = time.perf_counter() - step.started
        if self.on_step:
            self.on_step(step)


def export_loaded(
    loaded: Any,
    to: Sequence[str] | str,
    out: str | Path,
    *,
    options: ExportOptions | None = None,
    on_step: StepCallback | None = None,
) -> ExportResult:
    """Export a model already in memory (a `toolkit.source.wrapper.LoadedModel`), as the
    Lightning callback does at the end of training; otherwise like `export`."""
    opts = options or ExportOptions()
    out_dir = Path(out)
    _check_writable(out_dir)
    run = _Executor(ExportPlan(formats.parse_targets([to] if isinstance(to, str) else to), opts),
                    on_step)
    with _disk_errors_named(out_dir), transaction.writing(out_dir):
        run.from_loaded(loaded, out_dir)
    return ExportResult(run.bundle, run.steps, run.notes)

