"""`toolkit bench` as a library: time every artifact of a bundle (or a lone model file).

    from toolkit.bench.driver import bench_bundle
    results = bench_bundle("out/resnet18", timing=BenchOptions(batches=(1, 8), budget_s=5))

Per artifact: the Runner is loaded and activated, and its first inference timed as the cold
start (load, compilation, autotuning); then, per batch, seeded inputs are made and placed for the
backend outside the timed region (`Runner.prepare`), the first call at that batch is timed as
that batch's cold start, and `bench.measure.measure` times the steady state. Threads are always
set explicitly (default: every core) and recorded with the device on each result.

The latest result of each artifact is written into the bundle's manifest (its record's
`bench` field; in-process formats, which have no record, under the manifest's top-level `bench`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import formats as format_table
from toolkit.bench.measurement import Measurement
from toolkit.bench.options import BenchOptions
from toolkit.bench.render import REFERENCE_TITLE, SPEEDUP
from toolkit.bench.timer import measure, time_once
from toolkit.bundle import Bundle, artifact_label, now, record_results
from toolkit.errors import BackendUnavailable, ToolkitError, UsageError, first_line
from toolkit.manifest import ArtifactRecord, InProcessTarget
from toolkit.source.options import SourceOptions
from toolkit.spec import (
    TensorSpec,
    batch_range,
    check_feed_size,
    numpy_dtype,
    random_inputs,
)

log = logging.getLogger("toolkit.bench")

#: the default batch sweep stops here (powers of two); --batch goes beyond it
SWEEP_CAP = 8

ResultCallback = Callable[[Measurement], None]
NoteCallback = Callable[[str], None]


# -- what to run -----------------------------------------------------------------------------
@dataclass
class Entry:
    """One runnable configuration: a format and precision, its manifest record if any."""

    format: str
    precision: str = "fp32"
    record: ArtifactRecord | None = None
    explicit: bool = False  # asked for by name: failing to run it is an error, not a note

    @property
    def name(self) -> str:
        return artifact_label(self.record or InProcessTarget(self.format, self.precision))


@dataclass
class BenchPlan:
    """Everything decided before any timing: so bad options fail in a second, not minutes in."""

    target: Path
    specs: list[TensorSpec]
    entries: list[Entry]
    batches: list[int]
    device: str
    threads: int
    bundle: Bundle | None = None
    notes: list[str] = field(default_factory=list)
    #: the user's --trust-checkpoint on this command: may the reference unpickle the source
    #: checkpoint
    trust_checkpoint: bool = False
    timing: BenchOptions = field(default_factory=BenchOptions)  # how long each is timed


def from_model(name: str) -> bool:
    """Formats rebuilt from the bundle's source (run in-process), not read from a file."""
    return format_table.get(name).runs_from == "model"


def batch_sweep(specs: Sequence[TensorSpec], batches: Sequence[int] | None = None) -> list[int]:
    """The batches to time: `batches` checked against the input spec, or the default sweep.

    Dynamic batch: powers of two from the minimum up to min(max, 8), plus the opt batch.
    Static batch: the fixed batch. A requested batch outside the range is a UsageError.
    """
    rng = batch_range(specs)
    if rng is None:
        fixed = next((s.opt[0] for s in specs if s.rank > 0), 1)
        if batches and any(b != fixed for b in batches):
            raise UsageError(
                f"--batch {','.join(map(str, batches))}: this model's batch is fixed at {fixed}; "
                "re-export with a dynamic batch (e.g. --input x:1-8x...) to time others"
            )
        return [fixed]
    lo, opt, hi = rng
    if batches:
        bad = [b for b in batches if not lo <= b <= hi]
        if bad:
            raise UsageError(
                f"--batch {','.join(map(str, bad))} is outside the model's batch range "
                f"{lo}-{hi}; pick values in {lo}-{hi} or re-export with a wider --input range"
            )
        return sorted(set(batches))
    sweep = {lo, opt}
    power = 1
    while power <= min(hi, SWEEP_CAP):
        if power >= lo:
            sweep.add(power)
        power *= 2
    return sorted(sweep)


def _entries(bundle: Bundle, formats: Sequence[str] | None, precisions: Sequence[str] | None,
             include_eager: bool) -> list[Entry]:
    wanted = [format_table.canonical(f) for f in formats] if formats else None
    entries: list[Entry] = []
    reference = format_table.REFERENCE
    eager_explicit = bool(wanted and reference in wanted)
    # the reference is rebuilt from the manifest's source, which imports code: only when asked
    if include_eager or eager_explicit:
        entries.append(Entry(reference, explicit=True))
    for record in bundle.artifacts:
        fmt, precision = record.format, record.precision
        if wanted is not None and fmt not in wanted:
            continue
        if precisions and precision not in precisions:
            continue
        entries.append(Entry(fmt, precision, record, explicit=wanted is not None))
    # other in-process formats (a compiled model) run only when named
    entries += [Entry(f, explicit=True) for f in wanted or []
                if from_model(f) and f != reference]
    missing = [f for f in wanted or [] if not from_model(f)
               and not any(e.format == f for e in entries)]
    if missing:
        extra = f" in {'/'.join(precisions)}" if precisions else ""
        raise UsageError(
            f"{bundle.root} has no {', '.join(missing)} artifact{extra} (it has: "
            f"{bundle.listing()}); export it first: toolkit export {bundle.root} --to {missing[0]}"
        )
    return entries


def _eager_note(bundle: Bundle) -> str | None:
    """Why the PyTorch model can't be rebuilt here, or None when it (probably) can."""
    from toolkit.source.rebuild import source_unavailable

    reason = source_unavailable(bundle)
    skipped = f"{REFERENCE_TITLE} skipped, so there is no '{SPEEDUP}' column"
    return f"{skipped}: {reason}" if reason else None


def plan_bench(
    target: str | os.PathLike[str],
    *,
    formats: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    timing: BenchOptions | None = None,
    include_eager: bool = False,
    source: SourceOptions | None = None,
) -> BenchPlan:
    """Resolve what `bench_bundle` will run, checking every option before anything is timed.
    Of the source group it reads the device, trust_checkpoint (for the rebuilt reference) and
    allow_modified."""
    path = Path(target)
    source = source or SourceOptions()
    if source.model or source.model_args:
        raise UsageError("bench rebuilds the reference from the bundle's own source: "
                         "SourceOptions(model=..., model_args=...) are not read here")
    device = source.device
    timing = timing or BenchOptions()
    resolved_threads = timing.threads or os.cpu_count() or 1
    if path.is_file():
        plan = _plan_file(path, formats, precisions, device, resolved_threads)
    elif path.is_dir():
        bundle = Bundle.open(path)
        entries = _entries(bundle, formats, precisions, include_eager)
        plan = BenchPlan(path, bundle.inputs, entries, [], device, resolved_threads, bundle)
        reason = _eager_note(bundle)
        if reason and any(from_model(e.format) for e in entries):
            raise UsageError(reason.replace(" skipped", " can't be timed"))
        if any(from_model(e.format) for e in entries):
            from toolkit.source.rebuild import describe_source

            plan.notes.append(f"rebuilding the PyTorch model from the manifest's source: "
                              f"{describe_source(bundle)}")
    else:
        raise UsageError(
            f"{path}: no such bundle directory or {format_table.lone_files()}; export one first "
            "(toolkit export SOURCE --out DIR)"
        )
    if not plan.entries:
        raise UsageError(f"{path}: nothing to benchmark (no artifact matches the options)")
    if plan.bundle is not None:
        # every file is the one that was exported (and verified) before anything is timed
        plan.bundle.allow_modified = source.allow_modified
        for entry in plan.entries:
            if entry.record is not None and entry.record.path:
                plan.bundle.checked_path(entry.record)
    plan.trust_checkpoint = source.trust_checkpoint
    plan.timing = timing
    plan.batches = batch_sweep(plan.specs, timing.batches)
    # before any allocation: a huge batch is exit 2, not an out-of-memory kill
    check_feed_size(plan.specs, plan.batches if batch_range(plan.specs) else [None],
                    f"batch {','.join(map(str, plan.batches))}")
    plan.notes += machine_notes(resolved_threads, device)
    return plan


def _plan_file(path: Path, formats: Sequence[str] | None, precisions: Sequence[str] | None,
               device: str, threads: int) -> BenchPlan:
    """A single artifact file: its bundle's record when it sits in one, else a lone file that
    says its own inputs."""
    if Bundle.is_bundle(path.parent):
        bundle = Bundle.open(path.parent)
        for record in bundle.artifacts:
            if bundle.path_of(record).resolve() == path.resolve():
                entry = Entry(record.format, record.precision, record, True)
                return BenchPlan(path, bundle.inputs, [entry], [], device, threads, bundle)
    fmt = format_table.by_suffix(path.suffix)
    if fmt is None or fmt.describe is None:
        raise UsageError(
            f"{path}: a lone {path.suffix or 'extensionless'} file doesn't say its inputs; "
            f"bench its bundle directory (or {format_table.lone_files()})"
        )
    inputs, _ = fmt.hook("describe")(path)
    precision = (precisions or ["fp32"])[0]
    entry = Entry(fmt.name, precision, None, True)
    plan = BenchPlan(path, list(inputs), [entry], [], device, threads)
    if formats and any(format_table.canonical(f) != fmt.name for f in formats):
        raise UsageError(f"{path}: a {path.suffix} file runs as format {fmt.name} only")
    plan.notes.append(f"{REFERENCE_TITLE} skipped: a lone {path.suffix} file has no PyTorch "
                      "model")
    return plan


def machine_notes(threads: int, device: str) -> list[str]:
    """Conditions that make numbers on this machine less trustworthy, each one line."""
    notes = []
    cores = os.cpu_count() or 1
    if threads > cores:
        notes.append(f"{threads} threads on {cores} cores: oversubscribed, latency will jitter")
    with contextlib.suppress(OSError, AttributeError):
        load1 = os.getloadavg()[0]
        if device == "cpu" and load1 >= 0.5 * cores:
            notes.append(
                f"load average {load1:.1f} on {cores} cores before timing: other processes "
                "compete for the CPU; expect noise and re-run on an idle machine to compare"
            )
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    with contextlib.suppress(OSError):
        mode = governor.read_text().strip()
        if mode not in ("performance", ""):
            notes.append(f"CPU frequency governor is '{mode}', not 'performance': clocks vary")
    return notes


# -- running ---------------------------------------------------------------------------------
#: torch and the formats' libraries, as the module names their warnings come from
_LIBRARY_MODULES = "(" + "|".join(sorted({"torch", *(
    lib.replace("-", "_") for fmt in format_table.all_formats() for lib in fmt.libraries)})) + ")"


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Hide the libraries' deprecation chatter (a legacy torch loader is 'deprecated') while
    loading; our own noise warnings are reported separately."""
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=_LIBRARY_MODULES)
        yield


def _int_high(plan: BenchPlan) -> dict[str, int]:
    """Integer inputs are drawn below the golden samples' maximum (embedding vocabularies)."""
    ints = [s.name for s in plan.specs if np.issubdtype(numpy_dtype(s.dtype), np.integer)]
    if not ints or plan.bundle is None or not plan.bundle.golden_path.is_file():
        return {}
    highs: dict[str, int] = {}
    for sample in plan.bundle.golden():
        for name in ints:
            if name in sample.inputs and sample.inputs[name].size:
                highs[name] = max(highs.get(name, 1), int(sample.inputs[name].max()) + 1)
    return highs


def _runner(plan: BenchPlan, entry: Entry) -> Any:
    from toolkit import runtime

    if plan.bundle is None:
        return runtime.load(plan.target, entry.format, device=plan.device,
                            precision=entry.precision,
                            threads=plan.threads)
    if entry.record is None:  # in-process: rebuilt from the bundle's source
        from toolkit.source.rebuild import source_model

        model = source_model(plan.bundle, trust_checkpoint=plan.trust_checkpoint)
        return runtime.model_runner(model, entry.format, device=plan.device,
                                    threads=plan.threads)
    return runtime.load_artifact(plan.bundle, entry.record, device=plan.device,
                                 threads=plan.threads)


def _device_timer(runner: Any, device: str) -> Any:
    if not device.startswith("cuda"):
        return None
    from toolkit.runtime.cuda_timer import timer_for

    return timer_for(runner)


def _bench_entry(plan: BenchPlan, entry: Entry, feeds: dict[int, dict[str, np.ndarray]],
                 knobs: dict[str, Any], on_result: ResultCallback | None) -> list[Measurement]:
    try:
        return _measure_entry(plan, entry, feeds, knobs, on_result)
    except ToolkitError:
        raise
    except Exception as err:  # the backend refused the manifest's inputs (a bundle whose
        # manifest disagrees with its file): bad input, one line
        raise UsageError(f"{entry.name} did not run on the inputs the manifest describes: "
                         f"{first_line(err, 200)}") from err


def _measure_entry(plan: BenchPlan, entry: Entry, feeds: dict[int, dict[str, np.ndarray]],
                   knobs: dict[str, Any], on_result: ResultCallback | None
                   ) -> list[Measurement]:
    labels = {"format": entry.format, "precision": entry.precision, "device": plan.device,
              "threads": plan.threads}
    if entry.record is not None and entry.record.layout:
        labels["layout"] = entry.record.layout
    results: list[Measurement] = []
    with quiet_libraries():
        runner = _runner(plan, entry)
    if getattr(runner, "session_note", None):  # the runner departs from a default session
        labels["session_note"] = runner.session_note
    try:
        for i, batch in enumerate(plan.batches):
            with quiet_libraries():
                if i == 0:  # cold start: load + activate + first inference (compilation included)
                    holder: dict[str, Any] = {}

                    def load_and_run(batch: int = batch, holder: dict[str, Any] = holder) -> None:
                        runner.activate()
                        holder["call"] = runner.prepare(feeds[batch])
                        holder["call"]()

                    cold = time_once(load_and_run, sync=runner.synchronize)
                    call = holder["call"]
                else:  # first call at a new shape: re-specialisation, allocator growth
                    call = runner.prepare(feeds[batch])
                    cold = time_once(call, sync=runner.synchronize)
            timer = _device_timer(runner, plan.device)
            result = measure(
                call, batch=batch, sync=runner.synchronize, device_timer=timer,
                cold_start_s=cold, labels={**labels, "cold_start_includes":
                                           "load + first call" if i == 0 else "first call"},
                **knobs,
            )
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        runner.deactivate()
    return results


def bench_bundle(
    target: str | os.PathLike[str],
    *,
    formats: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    source: SourceOptions | None = None,
    timing: BenchOptions | None = None,
    include_eager: bool = False,
    seed: int = 0,
    save: bool = True,
    on_result: ResultCallback | None = None,
    on_note: NoteCallback | None = None,
) -> list[Measurement]:
    """Time every artifact of a bundle (or one artifact file) at every batch of the sweep.

    `formats` None: every artifact plus the reference (when the bundle's source can be rebuilt
    here; a note says why not otherwise). Naming formats runs exactly those (the reference
    still joins unless `include_eager=False`); another in-process format runs only when
    named. A backend that isn't available here (a GPU runtime on a CPU machine) is skipped with
    a note, unless it was named, which raises BackendUnavailable. Notes go to `on_note`
    (default: logging). With `save`, each artifact's latest result is written into the
    bundle's manifest.
    """
    from toolkit.transaction import reading

    with reading(Path(target)):  # an export running meanwhile is waited for
        plan = plan_bench(target, formats=formats, precisions=precisions, source=source,
                          timing=timing, include_eager=include_eager)
        return run_plan(plan, seed=seed, save=save, on_result=on_result, on_note=on_note)


def run_plan(
    plan: BenchPlan,
    *,
    seed: int = 0,
    save: bool = True,
    on_result: ResultCallback | None = None,
    on_note: NoteCallback | None = None,
) -> list[Measurement]:
    """Run a `plan_bench` plan (timed as its `timing` says); see `bench_bundle`."""
    say = on_note or log.warning
    for line in plan.notes:
        say(line)

    def note(line: str) -> None:  # notes found while running join the plan's, for reports
        plan.notes.append(line)
        say(line)

    knobs = {**plan.timing.timing(), "max_iters": plan.timing.max_iters}
    int_high = _int_high(plan)
    feeds = {b: random_inputs(plan.specs, batch=b, seed=seed, int_high=int_high)
             for b in plan.batches}
    results: list[Measurement] = []
    done: dict[str, list[Measurement]] = {}
    unavailable: list[str] = []
    with _thread_count_restored():
        for entry in plan.entries:
            try:
                measured = _bench_entry(plan, entry, feeds, knobs, on_result)
            except BackendUnavailable as err:
                if entry.explicit:
                    raise
                note(f"{entry.name} skipped: {err}")
                unavailable.append(f"{entry.name}: {err}")
                continue
            except UsageError as err:
                if not from_model(entry.format) or entry.explicit:
                    raise
                note(f"{entry.name} skipped: {err}")  # e.g. the factory won't import here
                continue
            results += measured
            done[entry.name] = measured
    if not results and unavailable:  # nothing can run on this machine: a backend is missing
        raise BackendUnavailable(f"{plan.target}: nothing can run here — "
                                 + "; ".join(unavailable))
    if save and plan.bundle is not None and done and not save_to_manifest(
            plan.bundle.root, plan.entries, done, plan.device, plan.threads):
        note(f"{plan.bundle.root} is read-only: the results were not recorded in its manifest")
    return results


@contextlib.contextmanager
def _thread_count_restored() -> Iterator[None]:
    """Runners set torch's process-wide thread count; give the caller's back afterwards."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        torch = sys.modules.get("torch")
        if torch is not None and before is not None:
            torch.set_num_threads(before)


def bench_record(measurements: Sequence[Measurement], device: str, threads: int
                 ) -> dict[str, Any]:
    """The manifest's `bench` field for one artifact: rows without raw times."""
    return {"date": now(), "device": device, "threads": threads,
            "rows": [m.to_row() for m in measurements]}


def save_to_manifest(root: Path, entries: Sequence[Entry], done: dict[str, list[Measurement]],
                     device: str, threads: int) -> bool:
    """Write each artifact's latest result into the manifest (re-read under the bundle's lock,
    so an export or verify that ran meanwhile keeps its records). False for a read-only
    bundle."""

    def apply(bundle: Bundle) -> None:
        for entry in entries:
            measured = done.get(entry.name)
            if not measured:
                continue
            record = bench_record(measured, device, threads)
            current = bundle.artifact(entry.format, entry.precision,
                                      entry.record.layout if entry.record else None)
            if from_model(entry.format):
                bundle.manifest.bench = {**(bundle.manifest.bench or {}),
                                         entry.format: record}
            elif current is not None and (entry.record is None
                                          or current.sha256 == entry.record.sha256):
                # only for the very file that was timed, which `select` checks
                current.bench = {**record, "sha256": current.sha256}

    return record_results(root, apply)


def environment(plan: BenchPlan) -> dict[str, Any]:
    """The machine description for a results document, with the bench's own settings."""
    from toolkit.environment import describe

    env = describe()
    env["bench_device"] = plan.device
    env["bench_threads"] = plan.threads
    with contextlib.suppress(OSError, AttributeError):
        env["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return env
