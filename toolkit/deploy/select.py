"""`toolkit select`: the artifact to ship for a device, batch size and accuracy budget.

Only artifacts that passed parity (and their accuracy gate, where one ran) are candidates;
they are ranked on bench results recorded in the bundle for that device and for the very file
(sha256). Missing or stale results are measured first. The verdict, with every loser's
reason, goes into the manifest's `selected`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit import formats as format_table
from toolkit.bundle import Bundle, artifact_label, now, record_results
from toolkit.errors import CheckFailed, UsageError
from toolkit.manifest import ArtifactRecord, BenchRow, SelectedRecord
from toolkit.spec import check_device

OBJECTIVES = ("latency", "throughput")


@dataclass
class Candidate:
    record: ArtifactRecord
    row: BenchRow | None = None  # the bench row the choice is made on
    excluded: str | None = None  # why it can't be chosen
    lost: str | None = None  # why it ranked below the winner

    @property
    def label(self) -> str:
        return artifact_label(self.record)


@dataclass
class Selection:
    bundle: Bundle
    objective: str
    batch: int | None
    device: str
    latency_budget_ms: float | None
    candidates: list[Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    recorded: bool = False
    target: str | None = None  # a device reached over SSH: ranked on its own findings

    @property
    def winner(self) -> Candidate | None:
        ranked = [c for c in self.candidates if c.excluded is None]
        return ranked[0] if ranked else None

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle.root), "objective": self.objective,
                "batch": self.batch, "device": self.device,
                "latency_budget_ms": self.latency_budget_ms, "target": self.target,
                "selected": selected_record(self) if self.winner and self.winner.row else None,
                "candidates": [{"artifact": c.label,
                                "row": c.row.to_json() if c.row is not None else None,
                                "excluded": c.excluded,
                                "lost": c.lost} for c in self.candidates],
                "notes": self.notes, "recorded": self.recorded}


def select(bundle_dir: str | Path, **options: Any) -> Selection:
    """`rank` under the bundle's shared lock: an export running meanwhile is waited for."""
    from toolkit.transaction import reading

    with reading(Path(bundle_dir)):
        return rank(bundle_dir, **options)


def rank(
    bundle_dir: str | Path,
    *,
    objective: str = "latency",
    batch: int | None = None,
    latency_budget_ms: float | None = None,
    max_accuracy_drop: float | None = None,
    device: str = "cpu",
    bench: Callable[..., Any] | None = None,
    record: bool = True,
    target: str | None = None,
) -> Selection:
    """Rank the bundle's verified artifacts; `bench(root, record, batches, device)`
    measures the ones without fresh results (default: `toolkit.bench.driver.bench_bundle`).
    With `target`, rank for that device on what it found (`verify --on`, `bench --on`)."""
    if target is not None:
        return _rank_for_target(bundle_dir, target, objective, batch, latency_budget_ms,
                                max_accuracy_drop, record)
    check_device(device)
    if objective not in OBJECTIVES:
        raise UsageError(f"--objective {objective}: use one of {', '.join(OBJECTIVES)}")
    if latency_budget_ms is not None and latency_budget_ms <= 0:
        raise UsageError(f"--latency-budget must be > 0 ms, got {latency_budget_ms}")
    if max_accuracy_drop is not None and max_accuracy_drop < 0:
        raise UsageError(f"--max-accuracy-drop must be >= 0, got {max_accuracy_drop}")
    bundle = Bundle.open(bundle_dir)
    batch = _batch(bundle, batch, latency_budget_ms)
    selection = Selection(bundle, objective, batch, device, latency_budget_ms)
    saved = [r for r in bundle.artifacts if r.path]
    verified = [r for r in saved if r.parity and r.parity.passed]
    if not verified:
        raise UsageError(f"{bundle.root}: no artifact has passed parity yet; run toolkit verify "
                         f"{bundle.root} first")
    for record in saved:
        selection.candidates.append(Candidate(record, excluded=_gate(record, max_accuracy_drop,
                                                                     device)))
    stale = [c for c in selection.candidates if c.excluded is None
             and not _fresh_rows(c.record, device, batch)]
    if stale:
        _measure(selection, stale, bench)
    _rank(selection)
    if record and selection.winner is not None:
        chosen = selected_record(selection)
        selection.recorded = record_results(
            bundle.root, lambda fresh: setattr(fresh.manifest, "selected", chosen))
        if not selection.recorded:
            selection.notes.append(f"{bundle.root} is read-only: the choice was not recorded")
    if selection.winner is None:
        reasons = "; ".join(f"{c.label}: {c.excluded}" for c in selection.candidates)
        raise NothingQualifies(selection, f"no artifact meets the constraints — {reasons}")
    return selection


def on_target(record: ArtifactRecord, target: str) -> ArtifactRecord:
    """The record as the device `target` sees it: its parity, accuracy and bench are that
    device's findings (an artifact built there carries them itself)."""
    if record.target == target:
        return record
    found = record.on_device.get(target)
    return record.model_copy(update={
        "parity": found.parity if found else None,
        "accuracy": (found.accuracy if found and found.accuracy else record.accuracy),
        "bench": found.bench if found else None})


def stale_basis(bundle: Bundle, record: ArtifactRecord) -> str | None:
    """Why an artifact built on a device no longer matches the bundle (a file it was built
    from has changed here since), or None."""
    basis = record.built_from
    for name, sha in basis.items():
        current = next((r for r in bundle.artifacts if r.path == name), None)
        if current is None or current.sha256 != sha:
            return (f"built on {record.target} from a {name} that has changed since; rebuild "
                    f"it: toolkit export {bundle.root} --to {record.format} --on "
                    f"{record.target} --force")
    return None


def _rank_for_target(bundle_dir: str | Path, target: str, objective: str, batch: int | None,
                     latency_budget_ms: float | None, max_accuracy_drop: float | None,
                     record: bool) -> Selection:
    if objective not in OBJECTIVES:
        raise UsageError(f"--objective {objective}: use one of {', '.join(OBJECTIVES)}")
    bundle = Bundle.open(bundle_dir)
    if target not in bundle.targets:
        known = ", ".join(bundle.targets) or "none yet"
        raise UsageError(f"--target {target}: no device of that name has worked on "
                         f"{bundle.root} (devices: {known}); run toolkit verify "
                         f"{bundle.root} --on {target} first")
    batch = _batch(bundle, batch, latency_budget_ms)
    views = [on_target(r, target) for r in [*bundle.target_artifacts(target), *bundle.artifacts]
             if r.path]
    benched = {r.bench.device for r in views if r.bench and r.bench.sha256 == r.sha256}
    device = sorted(benched, key=lambda d: not d.startswith("cuda"))[0] if benched else "cpu"
    selection = Selection(bundle, objective, batch, device, latency_budget_ms, target=target)
    backends = bundle.targets[target].backends
    for view in views:
        excluded = _gate(view, max_accuracy_drop, device)
        if format_table.get(view.format).extra not in backends:
            excluded = f"can't run on {target} (it has no {format_table.get(view.format).extra})"
        elif excluded == "never verified (run toolkit verify)":
            excluded = f"never verified on {target} (run toolkit verify --on {target})"
        excluded = excluded or stale_basis(bundle, view)
        selection.candidates.append(Candidate(view, excluded=excluded))
    for candidate in selection.candidates:
        if candidate.excluded is None and not _fresh_rows(candidate.record, device, batch):
            candidate.excluded = (f"no bench result on {target} for this file (run toolkit "
                                  f"bench {bundle.root} --on {target})")
    _rank(selection)
    if record and selection.winner is not None:
        chosen = selected_record(selection)

        def keep(fresh: Bundle) -> None:
            if target in fresh.targets:
                fresh.targets[target].selected = SelectedRecord.model_validate(chosen)

        selection.recorded = record_results(bundle.root, keep)
    if selection.winner is None:
        reasons = "; ".join(f"{c.label}: {c.excluded}" for c in selection.candidates)
        raise NothingQualifies(selection, f"no artifact meets the constraints on {target} — "
                               f"{reasons}")
    return selection


class NothingQualifies(CheckFailed):
    """Exit 1: every candidate was excluded; the selection says why, artifact by artifact."""

    def __init__(self, selection: Selection, message: str) -> None:
        super().__init__(message)
        self.selection = selection


def _batch(bundle: Bundle, batch: int | None, budget: float | None) -> int | None:
    from toolkit.spec import batch_range

    rng = batch_range(bundle.inputs)
    if batch is None:
        if budget is not None:
            return None  # a budget ranks every measured batch
        return rng[0] if rng else None
    if rng is None:
        # a fixed batch: asking for it is a valid answer (the same as leaving --batch out)
        first = bundle.inputs[0] if bundle.inputs else None
        fixed = first.min[0] if first is not None and first.rank else None
        if batch == fixed:
            return None
        raise UsageError(f"--batch {batch}: the bundle's batch is fixed at {fixed}; give "
                         f"--batch {fixed} or leave it out")
    if batch < 1 or not rng[0] <= batch <= rng[2]:
        raise UsageError(f"--batch {batch} is outside the bundle's batch range "
                         f"({rng[0]}-{rng[2]})")
    return batch


def _gate(record: ArtifactRecord, max_drop: float | None, device: str = "cpu") -> str | None:
    """Why a record can never be chosen, or None."""
    declared = format_table.get(record.format)
    if not declared.saved:
        return "runs in-process; nothing to deploy"
    if not record.parity:
        return "never verified (run toolkit verify)"
    if not record.parity.passed:
        return "failed parity"
    layout = record.layout
    if layout and layout != declared.default_layout and not device.startswith("cuda"):
        return (f"INT8 {layout} layout: written for the format built from it, not for "
                f"{declared.name} on {device}")
    accuracy = record.accuracy
    if accuracy and not accuracy.passed:
        return f"failed its accuracy gate ({accuracy.message})"
    if max_drop is not None and accuracy:
        drop = (accuracy.fp32.score - accuracy.reduced.score) * 100
        if drop > max_drop:
            return f"accuracy drop {drop:.2f} points > --max-accuracy-drop {max_drop:g}"
    return None


def _rows(record: ArtifactRecord, device: str) -> list[BenchRow]:
    """Bench rows of this very file (same sha256) on this device."""
    bench = record.bench
    if bench is None or bench.device != device or bench.sha256 != record.sha256:
        return []
    return list(bench.rows)


def _fresh_rows(record: ArtifactRecord, device: str, batch: int | None) -> bool:
    rows = _rows(record, device)
    return bool(rows) if batch is None else any(r.batch == batch for r in rows)


def _measure(selection: Selection, stale: Sequence[Candidate],
             bench: Callable[..., Any] | None) -> None:
    """Bench the candidates whose results are missing or stale, then re-read them."""
    from toolkit.errors import BackendUnavailable

    if bench is None:
        from toolkit.bench.driver import bench_bundle
        from toolkit.bench.options import BenchOptions
        from toolkit.source.options import SourceOptions

        def bench(root: Path, record: ArtifactRecord, batches: list[int] | None,
                  device: str) -> Any:
            return bench_bundle(root, formats=[record.format],
                                precisions=[record.precision],
                                source=SourceOptions(device=device),
                                timing=BenchOptions(batches=tuple(batches) if batches else None),
                                on_note=selection.notes.append)

    batches = [selection.batch] if selection.batch is not None else None
    measured: dict[int, Any] = {}
    for candidate in stale:
        selection.notes.append(f"{candidate.label}: no bench result for this file on "
                               f"{selection.device}; timing it now")
        try:
            measured[id(candidate)] = bench(selection.bundle.root, candidate.record, batches,
                                            selection.device)
        except (BackendUnavailable, UsageError) as err:
            candidate.excluded = f"can't run here: {err}"
    fresh = Bundle.open(selection.bundle.root)
    for candidate in selection.candidates:
        current = fresh.artifact(candidate.record.format, candidate.record.precision,
                                 candidate.record.layout)
        if current is not None:
            candidate.record = current
        results = measured.get(id(candidate))
        if results and not _rows(candidate.record, selection.device):
            # a read-only bundle kept nothing: rank on what was just measured (in memory)
            candidate.record.bench = {"device": selection.device, "date": now(),
                                      "sha256": candidate.record.sha256,
                                      "rows": [m.to_row() for m in results]}


def _rank(selection: Selection) -> None:
    budget, batch = selection.latency_budget_ms, selection.batch
    for candidate in selection.candidates:
        if candidate.excluded:
            continue
        rows = [r for r in _rows(candidate.record, selection.device)
                if (batch is None or r.batch == batch) and r.p50_ms]
        if budget is not None:
            within = [r for r in rows if (r.p99_ms or float("inf")) <= budget]
            if not within:
                fastest = min((r.p99_ms or float("inf")) for r in rows) if rows else None
                candidate.excluded = (f"p99 {fastest:.2f} ms > --latency-budget {budget:g} ms"
                                      if fastest is not None else "no bench result")
                continue
            candidate.row = max(within, key=items_per_s)
        elif rows:
            candidate.row = rows[0]
        else:
            candidate.excluded = "no bench result for this batch and device"
    by_throughput = budget is not None or selection.objective == "throughput"

    def key(c: Candidate) -> tuple[float, float]:
        if c.excluded or c.row is None:
            return (float("inf"), 0.0)
        size = float(c.record.size_bytes or 0)
        score = -items_per_s(c.row) if by_throughput else c.row.p50_ms
        return (score, size)

    selection.candidates.sort(key=key)
    winner = selection.winner
    if winner is None or winner.row is None:
        return
    for candidate in selection.candidates:
        if candidate is winner or candidate.excluded or candidate.row is None:
            continue
        if by_throughput:
            ratio = items_per_s(winner.row) / max(items_per_s(candidate.row), 1e-9)
            candidate.lost = f"{ratio:.2f}x less throughput than {winner.label}"
        else:
            ratio = candidate.row.p50_ms / max(winner.row.p50_ms, 1e-9)
            candidate.lost = f"p50 {ratio:.2f}x {winner.label}'s"


def items_per_s(row: BenchRow) -> float:
    """Throughput from the median: the mean-based figure a bench row also carries lets a few
    outliers (a shared machine) decide the ranking."""
    p50 = row.p50_ms or 0.0
    return 1000.0 * row.batch / p50 if p50 > 0 else 0.0


def selected_record(selection: Selection) -> dict[str, Any]:
    """The manifest's `selected`: which file, for what, with the figures it won on."""
    from toolkit.environment import describe

    winner = selection.winner
    assert winner is not None and winner.row is not None
    record, row = winner.record, winner.row
    env = describe()
    if selection.target is not None:  # the device's identity, as it described itself
        device = selection.bundle.targets.get(selection.target)
        env = {"cpu": device.cpu if device else None, "cores": None,
               "gpu": device.gpu if device else None}
    return {
        "artifact": winner.label, "format": record.format,
        "precision": record.precision, "layout": record.layout,
        "path": record.path, "sha256": record.sha256,
        "objective": selection.objective if selection.latency_budget_ms is None
        else "throughput within latency budget",
        "latency_budget_ms": selection.latency_budget_ms, "batch": row.batch,
        "p50_ms": row.p50_ms, "p99_ms": row.p99_ms,
        "throughput": items_per_s(row), "device": selection.device, "date": now(),
        "machine": (f"{selection.target}: " if selection.target else "")
        + f"{env.get('cpu')}" + (f" ({env.get('cores')} cores)" if env.get("cores") else "")
        + (f", {env['gpu']}" if env.get("gpu") else ""),
    }
