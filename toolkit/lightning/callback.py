"""`ExportCallback`: export, verify and time the model at the end of training, under DDP too.

Rank zero exports; every rank reads what needs a collective (the log dir, the best checkpoint)
before that branch and meets the others at one barrier afterwards, so nothing deadlocks. The
exported module is a copy of the LightningModule on CPU (or `device`) in eval mode, detached
from the trainer; the training run's own module is never touched.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from toolkit import formats
from toolkit.bench.options import BenchOptions
from toolkit.detection.options import DetectionOptions
from toolkit.errors import CheckFailed, ToolkitError, UsageError
from toolkit.export.job import PrecisionOptions

FAILURE_POLICIES = ("raise", "warn")


def _callback_bases() -> tuple[type, ...]:
    """Lightning ships as `lightning.pytorch` and as `pytorch_lightning`, each with its own
    Callback class; a Trainer of either must accept this callback, so it derives from both."""
    import importlib

    bases = []
    for module in ("lightning.pytorch", "pytorch_lightning"):
        try:
            bases.append(importlib.import_module(module).Callback)
        except ImportError:
            continue
    if not bases:
        from toolkit.environment import require_module

        require_module("lightning", "ExportCallback")
    return tuple(bases)


class ExportCallback(*_callback_bases()):  # type: ignore[misc]
    """Export the trained model to a verified bundle at the end of `fit` (and, with
    `on_best=True`, each time a ModelCheckpoint saves a new best).

    Options are those of `toolkit export`: `to`, `precision`, `device`, `verify`,
    `inputs` (`--input` strings; default: the module's example_input_array), and the option
    groups the CLI builds from its flags, as the same objects: `precision_options`
    (PrecisionOptions: calibration and evaluation data), `detection` (DetectionOptions),
    `backends` (each format's own group: `toolkit.OnnxOptions(opset=17)`,
    `toolkit.BuildOptions(workspace="4G")`, ...). `bench=True` (or a BenchOptions) times
    every artifact; parity and latency go to the trainer's logger.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        to: Sequence[str] | str = (formats.DEFAULT_TARGET,),
        precision: Sequence[str] | str = ("fp32",),
        *,
        bench: bool | BenchOptions = False,
        on_best: bool = False,
        on_failure: str = "raise",
        device: str = "cpu",
        verify: bool = True,
        inputs: Sequence[str] | None = None,
        precision_options: PrecisionOptions | None = None,
        detection: DetectionOptions | None = None,
        backends: Sequence[Any] = (),
        force: bool = False,
    ) -> None:
        from toolkit.export.job import ExportOptions
        from toolkit.source.options import SourceOptions
        from toolkit.spec import canonical_precision, parse_inputs

        # Everything is checked here, before training starts: a typo costs a second, not a run.
        self.targets = formats.parse_targets([to] if isinstance(to, str) else to)
        precisions = [precision] if isinstance(precision, str) else list(precision)
        precisions = [canonical_precision(p) for part in precisions for p in part.split(",")
                      if p.strip()]
        if not precisions:
            raise UsageError("ExportCallback(precision=()): give at least one, e.g. 'fp32'")
        precision_options = precision_options or PrecisionOptions()
        for name in ("calib_data", "eval_data"):
            value = getattr(precision_options, name)
            if value and ":" not in value and not Path(value).exists():
                raise UsageError(f"ExportCallback: PrecisionOptions({name}={value!r}): no "
                                 "such file or directory (or give pkg.module:DataModule)")
        if on_failure not in FAILURE_POLICIES:
            raise UsageError(f"ExportCallback(on_failure={on_failure!r}): use "
                             f"{' or '.join(FAILURE_POLICIES)}")
        self.out = Path(out)
        self.force = force
        self._exported = False  # once this callback has written `out`, it may replace it
        _check_out(self.out, force)
        try:
            source = SourceOptions(device=device)
        except UsageError:
            raise UsageError(f"ExportCallback(device={device!r}): use cpu or cuda (cuda:N)"
                             ) from None
        self.options = ExportOptions.build(
            precisions=precisions, verify=verify, force=True, source=source,
            precision_options=precision_options, backends=backends)
        for target in self.targets:
            fmt = formats.get(target)
            if len(fmt.precisions) > 1:
                formats.check_precisions(target, precisions)
        if "int8" in precisions and not precision_options.calib_data:
            raise UsageError("ExportCallback(precision=int8) needs calibration samples: "
                             "precision_options=PrecisionOptions(calib_data='FILE.npz|DIR|"
                             "pkg.module:DataModule')")
        if any(p not in ("fp32",) for p in precisions) and not any(
                len(formats.get(t).precisions) > 1 for t in self.targets):
            formats.check_precisions(self.targets[0], precisions)
        self.inputs = parse_inputs(list(inputs or []))
        self.detection = detection or DetectionOptions()
        #: how the artifacts are timed after export: short runs unless the caller says
        self.bench = (bench if isinstance(bench, BenchOptions)
                      else BenchOptions(budget_s=1.0, warmup_s=0.3, min_iters=20) if bench
                      else None)
        self.on_best = on_best
        self.on_failure = on_failure
        self.result: Any = None  # the last ExportResult (rank zero)
        self._best_seen: str | None = None

    # -- hooks -----------------------------------------------------------------------------
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        # With on_best the bundle follows the best weights to the end (Lightning runs
        # ModelCheckpoint after this callback, so the last new best is only seen here).
        self._run(trainer, pl_module, at_end=True)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.on_best and not trainer.sanity_checking:
            self._run(trainer, pl_module, at_end=False)

    # -- the export ------------------------------------------------------------------------
    def _run(self, trainer: Any, pl_module: Any, *, at_end: bool) -> None:
        # Collectives first, on every rank: `log_dir` broadcasts, so reading it only under
        # `is_global_zero` (as the export's record needs it) would deadlock.
        log_dir = trainer.log_dir
        best = _best_checkpoint(trainer) if self.on_best else None
        if self.on_best and best and best == self._best_seen:
            return  # this best is exported already
        if self.on_best and not best and not at_end:
            return  # no checkpoint yet: wait for one, or for the end of fit (final weights)
        use_best = best
        self._best_seen = best or self._best_seen
        outcome: dict[str, Any] = {"ok": True, "message": ""}
        if trainer.is_global_zero:
            outcome = self._export_on_rank_zero(trainer, pl_module, use_best, log_dir)
        trainer.strategy.barrier("toolkit_export")
        outcome = trainer.strategy.broadcast(outcome, src=0)
        if not outcome["ok"]:
            if self.on_failure == "raise":
                raise CheckFailed(f"ExportCallback: {outcome['message']}")
            warnings.warn(f"ExportCallback: {outcome['message']}", stacklevel=2)

    def _export_on_rank_zero(self, trainer: Any, pl_module: Any, best: str | None,
                             log_dir: str | None) -> dict[str, Any]:
        from toolkit.bundle import record_results
        from toolkit.export.pipeline import export_loaded

        try:
            if not (self.force or self._exported):
                # a bundle that appeared in `out` since the callback was made is someone
                # else's: checked again now, at export time, as at construction
                _check_out(self.out, force=False)
            loaded = self._clean_copy(trainer, pl_module, best)
            result = export_loaded(loaded, self.targets, self.out, options=self.options)
            self._exported = True
            self.result = result
            bundle = result.bundle
            training = _training_record(trainer, best, log_dir)
            bundle.manifest.training = training
            record_results(bundle.root,
                           lambda fresh: setattr(fresh.manifest, "training", training))
            metrics = _parity_metrics(result)
            if self.bench is not None:
                metrics.update(self._bench(bundle.root, int(trainer.world_size)))
            _log(trainer, metrics)
            failed = [f"{s.target}/{s.variant}: {s.status}" + (f" ({s.detail})" if s.detail
                                                                 else "")
                      for s in result.steps if s.status.value not in ("ok", "exists")
                      and s.status.value != "unavailable"]
            if failed:
                return {"ok": False, "message": "; ".join(failed)[:2000]}
            return {"ok": True, "message": ""}
        except ToolkitError as err:
            return {"ok": False, "message": str(err)}
        except Exception as err:  # any failure must still reach the barrier and the broadcast
            return {"ok": False, "message": f"export failed on rank zero: "
                                            f"{type(err).__name__}: {err}"[:2000]}

    def _clean_copy(self, trainer: Any, pl_module: Any, best: str | None) -> Any:
        """A copy of the module on CPU, eval mode, no trainer, final (or best) weights."""
        import torch

        from toolkit.bundle import sha256_file
        from toolkit.source.detector_contract import as_detector
        from toolkit.source.load import build_loaded_model

        # The trainer (and what hangs off it) is not copied: the copy must not reach it.
        try:
            module = copy.deepcopy(pl_module, memo={id(trainer): None})
        except Exception as err:  # locks, open files, CUDA handles held by the module
            raise UsageError(f"could not copy {type(pl_module).__name__} for export "
                             f"({type(err).__name__}: {err}); keep such state out of the "
                             "module's attributes (or create it in setup)") from err
        module = module.to("cpu").eval()
        if best:
            state = torch.load(best, map_location="cpu", weights_only=True)
            module.load_state_dict(state["state_dict"])
        for param in module.parameters():
            param.requires_grad_(False)
        source = {"kind": "training-run", "class": f"{type(pl_module).__module__}:"
                  f"{type(pl_module).__qualname__}", "path": best,
                  "sha256": sha256_file(best) if best else None}
        loaded = build_loaded_model(module, inputs=self.inputs or None, static=False,
                                    source=source)
        return as_detector(loaded, self.detection)

    def _bench(self, root: Path, world_size: int) -> dict[str, float]:
        from toolkit.bench.driver import bench_bundle

        # The other ranks wait at the barrier meanwhile, on this machine's cores too: time with
        # this rank's share of them, and say so, rather than against spinning neighbours.
        assert self.bench is not None
        timing = self.bench if self.bench.threads else replace(
            self.bench, threads=max(1, (os.cpu_count() or 1) // max(world_size, 1)))
        rows = bench_bundle(root, include_eager=False, timing=timing,
                            save=True, on_note=lambda line: warnings.warn(
                                f"ExportCallback bench: {line}", stacklevel=2))
        return {f"export/{m.labels['format']}_{m.labels['precision']}/p50_ms_b{m.batch}":
                m.p50 * 1e3 for m in rows}


def _check_out(out: Path, force: bool) -> None:
    from toolkit.bundle import Bundle
    from toolkit.transaction import recover

    if out.is_dir() and not out.is_symlink():
        recover(out)  # what a killed export left is put back first

    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not _can_create_in(probe):
        raise UsageError(f"ExportCallback(out={str(out)!r}): {probe} is not a writable "
                         "directory")
    if out.exists() and any(out.iterdir()):
        if not Bundle.is_bundle(out):
            raise UsageError(f"ExportCallback(out={str(out)!r}) exists and is not a bundle; "
                             "choose an empty or new directory")
        if not force:
            raise UsageError(f"ExportCallback(out={str(out)!r}) holds a bundle already; pass "
                             "force=True to replace it, or another out")


def _can_create_in(directory: Path) -> bool:
    """Try it: os.access says yes to root everywhere, /proc included."""
    import tempfile

    try:
        Path(tempfile.mkdtemp(prefix=".toolkit-probe-", dir=directory)).rmdir()
    except OSError:
        return False
    return True


def _best_checkpoint(trainer: Any) -> str | None:
    checkpoint = getattr(trainer, "checkpoint_callback", None)  # either package's class
    best = getattr(checkpoint, "best_model_path", None)
    return str(best) if best else None


def _training_record(trainer: Any, best: str | None, log_dir: str | None) -> dict[str, Any]:
    return {"weights": "best checkpoint" if best else "end of training",
            "checkpoint": best or _best_checkpoint(trainer),
            "epochs_completed": int(trainer.current_epoch),
            "global_step": int(trainer.global_step), "world_size": int(trainer.world_size),
            "strategy": type(trainer.strategy).__name__, "log_dir": log_dir}


def _parity_metrics(result: Any) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for step in result.steps:
        if step.parity is None:
            continue
        key = f"export/{step.target}_{step.variant}"
        metrics[f"{key}/parity_passed"] = float(step.parity.passed)
        report = step.parity.to_json()  # per-output and detection figures, as recorded
        outputs = report.get("outputs") or {}
        worst = [o.get("max_abs") for o in outputs.values() if o.get("max_abs") is not None]
        if worst:
            metrics[f"{key}/max_abs_err"] = float(max(worst))
        detection = report.get("detection")
        if detection and detection.get("worst_iou") is not None:
            metrics[f"{key}/worst_iou"] = float(detection["worst_iou"])
    return metrics


def _log(trainer: Any, metrics: dict[str, float]) -> None:
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=int(trainer.global_step))
        logger.save()

