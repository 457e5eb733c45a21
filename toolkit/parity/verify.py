"""Run artifacts on samples and compare them with a reference: the parity gate's orchestration.

The comparison itself lives in `parity` (no backend); this module picks the runner, the
samples (golden, plus real data) and the reference (golden outputs, the live PyTorch model, or
another artifact), and records the verdict in the manifest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import environment, tasks
from toolkit import formats as format_table
from toolkit.bundle import ArtifactModified, Bundle, artifact_label, record_results
from toolkit.errors import BackendUnavailable, CheckFailed, ToolkitError, UsageError, first_line
from toolkit.manifest import ArtifactRecord, InProcessTarget, Target
from toolkit.parity.options import ToleranceOptions
from toolkit.parity.report import ParityReport
from toolkit.parity.tolerances import Tolerances, tolerances_from_options
from toolkit.runtime import model_runner, runner_for
from toolkit.runtime.base import Runner
from toolkit.source.options import SourceOptions
from toolkit.source.rebuild import describe_source

Feed = dict[str, np.ndarray]


@dataclass
class Reference:
    """Where expected outputs come from.

    Golden samples use the stored reference outputs unless `live_for_golden`; real-data samples
    need a live runner (the PyTorch model from --against or the bundle's source, or another
    artifact with --reference).
    """

    name: str = "golden"
    runner: Runner | None = None
    live_for_golden: bool = False

    def expected(self, feed: Feed, golden: Feed | None) -> Feed:
        if golden is not None and not (self.live_for_golden and self.runner is not None):
            return golden
        if self.runner is None:
            raise UsageError("real-data samples need a live reference: pass --against "
                             "SOURCE or --reference FORMAT")
        return self.runner.infer(feed)


def preset_for(record: Target) -> str:
    """The tolerance preset the format table gives this format at this precision."""
    return format_table.get(record.format).preset(record.precision)


def sample_pairs(bundle: Bundle, data: Sequence[Feed] = (), golden: bool = True,
                 indices: Sequence[int] | None = None
                 ) -> Iterator[tuple[int, Feed, Feed | None]]:
    """(index, inputs, golden outputs or None) for the golden samples (those in `indices`
    when given), then the --data ones (indexed after the golden samples)."""
    samples = bundle.golden() if golden else []
    for index, sample in enumerate(samples):
        if indices is None or index in indices:
            yield index, sample.inputs, sample.outputs
    for offset, feed in enumerate(data):
        yield len(samples) + offset, {s.name: feed[s.name] for s in bundle.inputs}, None


def check_target(
    bundle: Bundle,
    record: Target,
    *,
    device: str = "cpu",
    model: Any = None,
    tolerances: Tolerances | None = None,
    reference: Reference | None = None,
    data: Sequence[Feed] = (),
) -> ParityReport:
    """Open one target's runner and verify it (a file changed since export fails)."""
    try:
        runner = runner_for(bundle, record, device=device, model=model)
    except ArtifactModified as err:  # not the file that was verified at export: it fails
        report = new_report(bundle, record, tolerances or tolerances_from_options(
            preset_for(record)), (reference or Reference()).name)
        report.errors.append(str(err))
        return report
    return verify_record(bundle, record, runner, tolerances=tolerances, reference=reference,
                         data=data)


def verify_record(
    bundle: Bundle,
    record: Target,
    runner: Runner,
    *,
    tolerances: Tolerances | None = None,
    reference: Reference | None = None,
    data: Sequence[Feed] = (),
) -> ParityReport:
    """Run one artifact's runner (not yet activated) on every sample and compare it with the
    reference."""
    reference = reference or Reference()
    tols = tolerances or tolerances_from_options(preset_for(record))
    report = new_report(bundle, record, tols, reference.name)
    try:
        runner.activate()
    except UsageError as err:  # the artifact can't even be loaded: it fails, others go on
        report.errors.append(f"could not be loaded: {err}")
        return report
    report.warnings.extend(getattr(runner, "warnings", []))  # e.g. another CPU or GPU
    indices, report.judged_on = bundle.judging_samples(record)
    with runner:
        for index, feed, golden in sample_pairs(bundle, data, indices=indices):
            expected = reference.expected(feed, golden)
            try:
                actual = runner.infer(feed)
            except ToolkitError:
                raise
            except Exception as err:  # the backend refused this sample: a failed check
                shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items())
                report.errors.append(f"sample {index} ({shapes}) did not run: "
                                     f"{first_line(err, 200)}")
                continue
            report.add_sample(expected, actual, sample_index=index)
            report.judged_at(feed)
    return report


def new_report(bundle: Bundle, record: Target, tolerances: Tolerances,
               reference: str) -> ParityReport:
    """An empty report of the kind the bundle's task needs (the task table's `report`)."""
    section = bundle.detection
    return tasks.of(section).hook("report")(
        section, artifact=artifact_label(record), precision=record.precision,
        tolerances=tolerances, reference=reference, preset=preset_for(record))


def record_parity(bundle: Bundle, record: Target, report: ParityReport) -> None:
    """Store the verdict (without per-sample detail) in the manifest record, if the bundle
    still lists the very file that was checked."""
    if isinstance(record, InProcessTarget):
        return  # in-process targets have no artifact entry to update
    current = bundle.artifact(record.format, record.precision, record.layout)
    if current is not None and current.sha256 == record.sha256:
        current.parity = report.to_dict(details=False)


def strip_wrapper_prefix(name: str | None, inner: str = "") -> str | None:
    """Module paths seen through FlatModule start with 'model.' (and, for a detector, the
    post-processing wrapper's path, `inner`); users know their layers without them."""
    if name is None:
        return None
    for prefix in ("model", inner):
        if prefix:
            name = "" if name == prefix else name.removeprefix(prefix + ".")
    return name


def localize_failure(bundle: Bundle, record: ArtifactRecord, feed: Feed, *, model: Any = None,
             reference_record: ArtifactRecord | None = None, tolerances: Any = None) -> Any:
    """First diverging node of a failing artifact whose format can say (a `localize` hook),
    against the PyTorch model (preferred) or another file of the same graph (e.g. fp32 for an
    fp16 artifact)."""
    declared = format_table.get(record.format)
    if declared.localize is None:
        localizable = [f.name for f in format_table.all_formats() if f.localize]
        raise UsageError(f"--localize works on {', '.join(localizable)} graphs, not "
                         f"{record.format}")
    if model is not None:
        reference: Any = model.flat
    elif (reference_record is not None
          and format_table.get(reference_record.format).localize):
        reference = str(bundle.path_of(reference_record))
    else:
        from toolkit.source.rebuild import against_command

        raise UsageError(f"--localize needs a reference: {against_command(bundle)}, or "
                         f"--reference {record.format} (another {declared.title} of the same "
                         "graph)")
    tolerance = tolerances.default if tolerances is not None else record.precision
    divergence = declared.hook("localize")(str(bundle.path_of(record)), feed, reference,
                                           tolerance=tolerance)
    if divergence is not None:
        detection = bundle.detection or {}
        inner, outer = detection.get("module_prefix", ""), detection.get("user_prefix", "")

        def user_path(name: str | None) -> str | None:
            name = strip_wrapper_prefix(name, inner)
            return f"{outer}.{name}".strip(".") if outer and name is not None else name

        divergence.module_path = user_path(divergence.module_path)
        divergence.parameters = [user_path(p) or p for p in divergence.parameters]
    return divergence


# -- verify -----------------------------------------------------------------------------------
@dataclass
class VerifyOutcome:
    bundle: Bundle
    reports: list[Any]
    divergences: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.reports) and all(r.passed for r in self.reports)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle.root), "passed": self.passed,
            "reports": [r.to_dict() for r in self.reports],
            "divergences": {k: (v.to_dict() if v is not None else None)
                            for k, v in self.divergences.items()},
            "notes": self.notes, "environment": environment.describe(),
        }


@dataclass
class Check:
    """One target of a verify plan: what runs, and how close it must come."""

    target: Target
    tolerances: Tolerances
    explicit: bool  # asked for by name: a backend missing here is an error, not a note


@dataclass
class VerifyPlan:
    """Everything decided before anything runs: the targets, the reference and the samples.
    Bad options fail here, in a second; the PyTorch model is rebuilt here, once."""

    bundle: Bundle
    checks: list[Check]
    reference: Reference
    reference_record: ArtifactRecord | None = None
    live_model: Any = None  # the PyTorch model, from --against or the bundle's source
    feeds: list[Feed] = field(default_factory=list)  # --data batches
    device: str = "cpu"
    localize: bool = False
    notes: list[str] = field(default_factory=list)


def plan_verify(
    bundle: Bundle,
    *,
    formats: Sequence[str] = (),
    precisions: Sequence[str] = (),
    against: str | None = None,
    reference: str | None = None,
    data: str | None = None,
    data_batches: int = 8,
    tolerance: ToleranceOptions | None = None,
    localize: bool = False,
    source: SourceOptions | None = None,
) -> VerifyPlan:
    """What `verify_bundle` will run and against what; see there."""
    from toolkit.source.rebuild import reference_model
    from toolkit.spec import canonical_precision

    source = source or SourceOptions()
    device = source.device
    bundle.allow_modified = source.allow_modified

    wanted = [format_table.canonical(f) for f in formats]
    wanted_precisions = [canonical_precision(p) for p in precisions]
    targets = _targets(bundle, wanted, wanted_precisions)
    tolerance = tolerance or ToleranceOptions()
    known = {o.name for o in bundle.outputs}
    for name in tolerance.output_names():
        if name not in known:
            raise UsageError(f"--tol {name}:...: '{name}' is not an output of "
                             f"{bundle.root} ({', '.join(sorted(known))})")
    try:
        bundle.golden()
    except ArtifactModified as err:  # the reference itself was changed: nothing can pass
        raise CheckFailed(str(err)) from None
    plan = VerifyPlan(bundle, [Check(t, tolerance.for_precision(preset_for(t)),
                                     t.format in wanted) for t in targets],
                      Reference(), device=device, localize=localize)
    in_process = any(isinstance(t, InProcessTarget) for t in targets)
    if against or in_process:
        if not against:  # asked for by name: the manifest's source is imported, and said so
            plan.notes.append(f"rebuilding the PyTorch model from the manifest's source: "
                              f"{describe_source(bundle)}")
        try:
            plan.live_model = reference_model(bundle, against=against, source=source)
        except UsageError as err:
            if against:
                raise
            plan.notes.append(f"no live PyTorch reference: {err}")
    elif data:
        raise UsageError("--data needs a live PyTorch reference: pass --against SOURCE "
                         f"(the manifest names {describe_source(bundle)}), or --reference "
                         "FORMAT to compare with another artifact")
    if data:
        from toolkit.source.data import load_feeds

        plan.feeds = load_feeds(data, bundle.inputs, max_batches=data_batches)
    if reference:
        fmt = format_table.canonical(reference)
        plan.reference_record = bundle.artifact(fmt, "fp32")
        if plan.reference_record is None:
            raise UsageError(f"--reference {reference}: {bundle.root} has no fp32 {fmt}")
        plan.reference = Reference(f"{fmt}/fp32", runner_for(bundle, plan.reference_record,
                                                              device=device),
                                   live_for_golden=True)
        plan.checks = [c for c in plan.checks if c.target is not plan.reference_record]
    elif plan.live_model is not None and (against or plan.feeds):
        plan.reference = Reference(format_table.REFERENCE,
                                   model_runner(plan.live_model, format_table.REFERENCE,
                                                device=device),
                                   live_for_golden=bool(against))
    return plan


def _targets(bundle: Bundle, wanted: list[str], wanted_precisions: list[str]) -> list[Target]:
    """The bundle's artifacts (and in-process formats named) that the options select."""
    in_process = [f for f in wanted if format_table.get(f).runs_from == "model"]
    targets: list[Target] = [
        r for r in bundle.artifacts if r.path
        and (not wanted or r.format in wanted)
        and (not wanted_precisions or r.precision in wanted_precisions)]
    targets += [InProcessTarget(f) for f in in_process]
    only = f" in {'/'.join(wanted_precisions)}" if wanted_precisions else ""
    missing = [f for f in wanted if f not in in_process
               and not any(r.format == f for r in targets)]
    if missing:
        raise UsageError(f"{bundle.root} has no {', '.join(missing)} artifact{only}; have: "
                         f"{bundle.listing()}")
    if not targets:
        raise UsageError(f"{bundle.root} has no artifacts to verify{only} (it has: "
                         f"{bundle.listing()})")
    return targets


def run_verify(plan: VerifyPlan) -> tuple[VerifyOutcome, list[tuple[Target, ParityReport]]]:
    """Run every check of the plan and compare it with the reference; a failing graph that can
    be localized is localized. Returns the outcome and what to record."""
    bundle, ref = plan.bundle, plan.reference
    outcome = VerifyOutcome(bundle, [], notes=list(plan.notes))
    checked: list[tuple[Target, ParityReport]] = []
    if ref.runner is not None:
        ref.runner.activate()
    try:
        for check in plan.checks:
            rec = check.target
            try:
                report = check_target(bundle, rec, device=plan.device, model=plan.live_model,
                                      tolerances=check.tolerances, reference=ref,
                                      data=plan.feeds)
            except BackendUnavailable as err:
                if check.explicit:
                    raise  # asked for by name: exit 3 with the reason
                outcome.notes.append(f"{artifact_label(rec)} not checked here: {err}")
                continue
            outcome.reports.append(report)
            outcome.notes += [f"{report.artifact}: {w}" for w in report.warnings]
            checked.append((rec, report))
            if (plan.localize and not report.passed and isinstance(rec, ArtifactRecord)
                    and format_table.get(rec.format).localize):
                outcome.divergences[report.artifact] = _localize(plan, rec, report, check)
    finally:
        if ref.runner is not None:
            ref.runner.deactivate()
    if not outcome.reports:
        raise BackendUnavailable(f"{bundle.root}: no artifact can run on this machine; "
                                 + "; ".join(outcome.notes))
    return outcome, checked


def _localize(plan: VerifyPlan, rec: ArtifactRecord, report: ParityReport,
              check: Check) -> Any:
    bundle = plan.bundle
    sample = report.failures[0].sample if report.failures else 0
    fp32_graph = bundle.artifact(rec.format, "fp32")
    return localize_failure(
        bundle, rec, _sample_feed(bundle, plan.feeds, sample), model=plan.live_model,
        reference_record=plan.reference_record or (fp32_graph if rec is not fp32_graph
                                                   else None),
        tolerances=check.tolerances)


def verify_bundle(
    bundle_dir: str | Path,
    *,
    formats: Sequence[str] = (),
    against: str | None = None,
    reference: str | None = None,
    data: str | None = None,
    data_batches: int = 8,
    tolerance: ToleranceOptions | None = None,
    localize: bool = False,
    record: bool = True,
    precisions: Sequence[str] = (),
    source: SourceOptions | None = None,
) -> VerifyOutcome:
    """The parity gate over a bundle's artifacts; mirrors `toolkit verify`: plan (targets,
    reference, samples; the PyTorch model rebuilt once), then run and compare, then record.
    Holds the bundle's shared lock: an export running meanwhile is waited for, not read
    half-way."""
    from toolkit.transaction import reading

    with reading(Path(bundle_dir)):
        bundle = Bundle.open(bundle_dir)
        plan = plan_verify(bundle, formats=formats, precisions=precisions, against=against,
                           reference=reference, data=data, data_batches=data_batches,
                           tolerance=tolerance, localize=localize, source=source)
        outcome, checked = run_verify(plan)
        if record and not record_results(bundle.root, lambda fresh: [
                record_parity(fresh, rec, report) for rec, report in checked]):
            outcome.notes.append(f"{bundle.root} is read-only: the results were not recorded in "
                                 "its manifest")
        return outcome


def _sample_feed(bundle: Bundle, feeds: Sequence[dict], index: int) -> dict:
    golden = bundle.golden()
    if index < len(golden):
        return golden[index].inputs
    return feeds[index - len(golden)]
