"""`toolkit.export(...)`: SOURCE -> bundle of verified artifacts. The CLI is a thin shell on it.

`verify_bundle` (the parity gate over a whole bundle) lives in `toolkit.verify`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit import environment
from toolkit.bundle import (
    Bundle,
    GoldenSample,
    artifact_filename,
    atomic_path,
    now,
    sha256_file,
)
from toolkit.errors import BackendUnavailable, CheckFailed, ToolkitError, UsageError
from toolkit.exporters.registry import parse_targets
from toolkit.spec import TensorSpec, batch_range

GOLDEN_EXTRA_BATCHES = (1, 3)  # besides the example's own batch, when the batch is dynamic


@dataclass
class Step:
    """One target × precision of an export run."""

    target: str
    precision: str = "fp32"
    status: str = "pending"  # ok | failed | parity-failed | unavailable | skipped | exists
    seconds: float = 0.0
    path: str | None = None
    detail: str = ""
    parity: dict[str, Any] | None = None
    error: ToolkitError | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "precision": self.precision, "status": self.status,
                "seconds": round(self.seconds, 2), "path": self.path, "detail": self.detail,
                "parity": self.parity}


@dataclass
class ExportResult:
    bundle: Bundle
    steps: list[Step]

    @property
    def exit_code(self) -> int:
        codes = [s.error.exit_code for s in self.steps if s.error is not None]
        if any(s.status in ("parity-failed", "accuracy-failed") for s in self.steps):
            codes.append(CheckFailed.exit_code)
        # Bad input outranks a failed check, which outranks a backend missing here.
        for code in (2, 1, 3):
            if code in codes:
                return code
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle.root), "exit_code": self.exit_code,
                "steps": [s.to_dict() for s in self.steps]}


StepCallback = Callable[[Step], None]


@dataclass
class ExportOptions:
    """How to export, shared by every step of one run."""

    force: bool = False
    precisions: Sequence[str] = ("fp32",)
    device: str = "cpu"
    verify: bool = True
    opset: int | None = None
    torchscript_mode: str = "auto"
    trt_options: Any = None
    trt_via: str = "onnx"  # or torch-compile / torchscript (Torch-TensorRT)
    # calibration / evaluation settings for reduced precision (see precision_steps)
    precision_options: dict[str, Any] = field(default_factory=dict)
    on_step: StepCallback | None = None


def default_out(source: str) -> Path:
    name = Path(source).stem if ":" not in source else source.rpartition(":")[2]
    return Path("out") / (name or "model")


def export(
    source: str,
    to: Sequence[str] | str = ("onnx",),
    out: str | Path | None = None,
    *,
    model: str | None = None,
    weights: str | None = None,
    inputs: Sequence[str | TensorSpec] | None = None,
    static: bool = False,
    trust_checkpoint: bool = False,
    force: bool = False,
    precisions: Sequence[str] = ("fp32",),
    device: str = "cpu",
    verify: bool = True,
    opset: int | None = None,
    torchscript_mode: str = "auto",
    trt_options: Any = None,
    trt_via: str = "onnx",
    precision_options: dict[str, Any] | None = None,
    on_step: StepCallback | None = None,
) -> ExportResult:
    """Export SOURCE into a bundle; each artifact is checked against the golden samples."""
    from toolkit.exporters.torch_tensorrt import check_route
    from toolkit.sources import source_kind
    from toolkit.spec import parse_input

    targets = parse_targets([to] if isinstance(to, str) else to)
    trt_via = check_route(trt_via)
    if "trt" in targets and "onnx" not in targets and trt_via == "onnx":
        # The engine is built from the ONNX, which goes into the bundle (and is verified) first:
        # it is what the target device builds from when TensorRT isn't here.
        targets.insert(targets.index("trt"), "onnx")
    opts = ExportOptions(force, tuple(precisions), device, verify, opset, torchscript_mode,
                         trt_options, trt_via, dict(precision_options or {}), on_step)
    specs = [s if isinstance(s, TensorSpec) else parse_input(s) for s in inputs or []]
    kind = source_kind(source)
    out_dir = Path(out) if out else (Path(source) if kind == "bundle" else default_out(source))
    _check_writable(out_dir)
    created = not out_dir.exists()
    try:
        if kind == "bundle":
            bundle = Bundle.open(source)
            if out_dir.resolve() != bundle.root.resolve():
                raise UsageError("--out can't be used with a bundle source; it is exported "
                                 "in place")
            result = _export_from_onnx_bundle(bundle, targets, opts)
        elif kind == "onnx":
            result = _export_onnx_source(Path(source), out_dir, targets, specs, opts)
        else:
            result = _export_model(source, out_dir, targets, specs, model, weights, static,
                                   trust_checkpoint, opts)
    except BaseException:
        if created and out_dir.exists():
            shutil.rmtree(out_dir, ignore_errors=True)  # nothing partial left behind
        raise
    if created and not result.bundle.artifacts and out_dir.exists():
        shutil.rmtree(out_dir, ignore_errors=True)
    return result


def _check_writable(out_dir: Path) -> None:
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--out {out_dir}: {probe} is a file, not a directory")
    import os

    if not os.access(probe, os.W_OK):
        raise UsageError(f"--out {out_dir}: {probe} is not writable; choose another --out")
    if out_dir.exists() and not Bundle.is_bundle(out_dir) and any(out_dir.iterdir()):
        raise UsageError(f"--out {out_dir} exists and is not a bundle; choose an empty or new "
                         "directory")


# -- from a model (checkpoint or factory) ---------------------------------------------------
def _export_model(source: str, out_dir: Path, targets: list[str], specs: list[TensorSpec],
                  model_ref: str | None, weights: str | None, static: bool, trust: bool,
                  opts: ExportOptions) -> ExportResult:
    from toolkit.sources import load_model

    loaded = load_model(source, model_ref=model_ref, weights=weights, inputs=specs or None,
                        static=static, trust_checkpoint=trust)
    if trust:
        loaded.source["trusted"] = True
    _check_precisions(targets, opts.precisions)
    if any(p != "fp32" for p in opts.precisions):
        from toolkit.precision_steps import check_precision_data

        real = check_precision_data(loaded.inputs, opts.precisions, opts.precision_options)
        if loaded.example is None and real is not None:
            # Golden samples from real data: reduced precisions are calibrated for it, and
            # random noise would fail a healthy INT8 model.
            loaded.example = real
    bundle = _open_or_create(out_dir, loaded, opts.force)
    steps: list[Step] = []
    if bundle.manifest.get("golden") is None:
        bundle.save_golden(golden_samples(loaded))
    for target in targets:
        for precision in _precisions_for(target, opts.precisions):
            step = Step(target, precision)
            steps.append(step)
            _run_step(step, lambda s=step: _make_artifact(bundle, loaded, s, opts),
                      bundle, opts, loaded)
    bundle.save()
    return ExportResult(bundle, steps)


def golden_samples(loaded: Any) -> list[GoldenSample]:
    """The example, then batches 1 and 3 when the batch is dynamic.

    Extra batches are cut from (or tiled out of) the module's own example when it has one,
    since reduced precisions are calibrated for real data and random noise would fail them;
    they are seeded random inputs otherwise.
    """
    first = loaded.example_feed(batch=None)
    samples = [GoldenSample(first, loaded.run(first))]
    rng = batch_range(loaded.inputs)
    if rng is not None:
        seen = {samples[0].batch}
        for i, batch in enumerate(GOLDEN_EXTRA_BATCHES, start=1):
            if rng[0] <= batch <= rng[2] and batch not in seen:
                seen.add(batch)
                feed = loaded.example_feed(batch=batch, seed=i)
                samples.append(GoldenSample(feed, loaded.run(feed)))
    if any(axis > 0 for s in loaded.inputs for axis in s.dynamic_dims):
        # Other dynamic dimensions (sequence length, image size) at their min and their max:
        # an artifact that baked the example's size in fails here, not on the device.
        from toolkit.spec import random_inputs

        for i, at in enumerate(("min", "max"), start=len(samples)):
            batch = rng[0] if (rng and at == "min") else (min(rng[2], 2) if rng else None)
            feed = random_inputs(loaded.inputs, batch=batch, seed=i,
                                 int_high=loaded.int_high(), at=at)
            samples.append(GoldenSample(feed, loaded.run(feed)))
    return samples


def _open_or_create(out_dir: Path, loaded: Any, force: bool) -> Bundle:
    outputs = loaded.outputs
    if Bundle.is_bundle(out_dir):
        bundle = Bundle.open(out_dir)
        same_io = (bundle.manifest["inputs"] == [s.to_dict() for s in loaded.inputs]
                   and [o.name for o in bundle.outputs] == [o.name for o in outputs])
        same_source = bundle.manifest["source"].get("sha256") == loaded.source.get("sha256")
        if same_io and same_source:
            return bundle
        if not force:
            what = "inputs/outputs" if not same_io else "source"
            raise UsageError(
                f"{out_dir} holds a bundle from a different {what}; choose another --out, or "
                "pass --force to start it over"
            )
        _clear_bundle(bundle)
    return Bundle.create(out_dir, inputs=loaded.inputs, outputs=outputs,
                         source=loaded.source, call={"style": loaded.call_style})


def _clear_bundle(bundle: Bundle) -> None:
    for record in bundle.artifacts:
        if record.get("path"):
            bundle.path_of(record).unlink(missing_ok=True)
    bundle.golden_path.unlink(missing_ok=True)


def _make_artifact(bundle: Bundle, loaded: Any, step: Step,
                   opts: ExportOptions) -> dict[str, Any]:
    target = step.target
    if target == "compile":
        return _compile_record(opts.device)
    if target == "trt" and opts.trt_via != "onnx":
        return _trt_from_model(bundle, loaded, step, opts)
    if target == "trt":  # export() put the onnx step before it
        return _trt_from_bundle(bundle, step, opts)
    if step.precision != "fp32":
        return _reduced_precision(bundle, step, opts)
    dest = _destination(bundle, target, step.precision, opts.force)
    with atomic_path(dest, suffix=dest.suffix) as tmp:
        if target == "onnx":
            from toolkit.exporters.onnx import export_onnx

            extra = export_onnx(loaded, tmp, opset=opts.opset)
        elif target == "torchscript":
            from toolkit.exporters.torchscript import export_torchscript

            extra = export_torchscript(loaded, tmp, mode=opts.torchscript_mode)
        elif target == "pt2":
            from toolkit.exporters.aoti import export_pt2

            extra = export_pt2(loaded, tmp, device=opts.device)
        else:  # pragma: no cover - registry and this table move together
            raise UsageError(f"no exporter for {target}")
    return _record(bundle, target, step.precision, dest, extra)


def _destination(bundle: Bundle, target: str, precision: str, force: bool) -> Path:
    bundle.root.mkdir(parents=True, exist_ok=True)
    dest = bundle.root / artifact_filename(target, precision)
    if bundle.artifact(target, precision) is not None and dest.exists() and not force:
        raise _Exists(f"{dest.name} exists; pass --force to replace it")
    return dest


class _Exists(UsageError):
    """An artifact already in the bundle: skipped, not an error, unless --force replaces it."""


def _record(bundle: Bundle, target: str, precision: str, dest: Path,
            extra: dict[str, Any]) -> dict[str, Any]:
    record = {
        "format": target, "precision": precision, "path": dest.name,
        "sha256": sha256_file(dest), "size_bytes": dest.stat().st_size,
        "created_at": now(),
        "tools": {k: v for k, v in environment.describe()["libraries"].items()
                  if k in ("torch", "onnx", "onnxruntime", "onnxscript", "tensorrt")},
        **extra,
    }
    bundle.record_artifact(record)
    return record


def _compile_record(device: str) -> dict[str, Any]:
    """torch.compile isn't saved: record that it compiles and matches, for later comparison."""
    return {"format": "compile", "precision": "fp32", "path": None, "device": device,
            "note": "in-process torch.compile; not saved — verify/bench rebuild it from the "
                    "source", "created_at": now()}


def _run_step(step: Step, action: Callable[[], dict[str, Any]], bundle: Bundle,
              opts: ExportOptions, loaded: Any = None) -> None:
    started = time.perf_counter()
    try:
        record = action()
        step.path = record.get("path")
        notes = record.get("notes") or []
        step.detail = "; ".join(notes)
        if opts.verify:
            from toolkit.verify import verify_record

            report = verify_record(bundle, record, device=opts.device, model=loaded)
            step.parity = report.to_dict()
            if record.get("path") is not None:
                bundle.update_artifact(record["format"], record["precision"],
                                       parity=step.parity)
            step.status = "ok" if report.passed else "parity-failed"
            if not report.passed:
                step.detail = "; ".join(filter(None, [report.summary_line(), step.detail]))
        else:
            step.status = "ok"
        accuracy = record.get("accuracy")
        if accuracy and not accuracy["passed"]:
            step.status, step.detail = "accuracy-failed", accuracy["message"]
        elif accuracy:
            step.detail = "; ".join(filter(None, [step.detail, accuracy["message"]]))
        bundle.save()
    except _Exists as err:
        step.status, step.detail = "exists", str(err)
    except BackendUnavailable as err:
        step.status, step.detail, step.error = "unavailable", str(err), err
    except ToolkitError as err:
        step.status, step.detail, step.error = "failed", str(err), err
    finally:
        step.seconds = time.perf_counter() - started
        if opts.on_step:
            opts.on_step(step)


# -- precision and TensorRT: both start from the bundle's ONNX -------------------------------
def _check_precisions(targets: Sequence[str], precisions: Sequence[str]) -> None:
    if list(precisions) == ["fp32"]:
        return
    from toolkit.exporters.precision import check_precisions

    for target in targets:
        if target in ("onnx", "trt"):
            check_precisions(target, list(precisions))
        elif any(p != "fp32" for p in precisions) and len(targets) == 1:
            raise UsageError(f"--precision {','.join(precisions)}: {target} supports fp32 "
                             "only; reduced precision applies to onnx and trt")


def _precisions_for(target: str, precisions: Sequence[str]) -> list[str]:
    return list(precisions) if target in ("onnx", "trt") else ["fp32"]


def _reduced_precision(bundle: Bundle, step: Step, opts: ExportOptions) -> dict[str, Any]:
    from toolkit.precision_steps import make_reduced_onnx

    base = bundle.artifact("onnx", "fp32")
    if base is None:
        raise UsageError(f"--precision {step.precision} converts the fp32 ONNX; include fp32: "
                         f"--precision fp32,{step.precision}")
    dest = _destination(bundle, "onnx", step.precision, opts.force)
    extra = make_reduced_onnx(bundle, base, dest, step.precision, opts.precision_options)
    return _record(bundle, "onnx", step.precision, dest, extra)


def _build_trt(bundle: Bundle, step: Step, opts: ExportOptions) -> dict[str, Any]:
    from toolkit.exporters.tensorrt import build_engine
    from toolkit.exporters.trt_plan import BuildOptions

    onnx_record = bundle.artifact("onnx", step.precision)
    if onnx_record is None:
        raise UsageError(f"{bundle.root} has no {step.precision} ONNX to build from")
    dest = _destination(bundle, "trt", step.precision, opts.force)
    try:
        engine_record = build_engine(bundle.path_of(onnx_record), dest, bundle.inputs,
                                     opts.trt_options or BuildOptions())
    except BackendUnavailable as missing:
        raise BackendUnavailable(
            f"{missing} — the ONNX is in the bundle: copy {bundle.root} to the target and run "
            f"`toolkit export {bundle.root} --to trt"
            + (f" --precision {step.precision}`" if step.precision != "fp32" else "`")
        ) from missing
    engine_record.pop("path", None)
    return _record(bundle, "trt", step.precision, dest,
                   {**engine_record, "from_onnx": onnx_record["path"]})


def _trt_from_model(bundle: Bundle, loaded: Any, step: Step,
                    opts: ExportOptions) -> dict[str, Any]:
    """Torch-TensorRT route: the engine comes from the PyTorch model, not the ONNX."""
    from toolkit.exporters.torch_tensorrt import build_engine_from_model
    from toolkit.exporters.trt_plan import BuildOptions

    if step.precision != "fp32":
        raise UsageError(f"--via {opts.trt_via} builds fp32 engines; reduced precision comes "
                         "from the ONNX (--via onnx --precision ...)")
    dest = _destination(bundle, "trt", step.precision, opts.force)
    record = build_engine_from_model(loaded, dest, opts.trt_options or BuildOptions(),
                                     opts.trt_via)
    return _record(bundle, "trt", step.precision, dest, record)


def _export_from_onnx_bundle(bundle: Bundle, targets: list[str],
                             opts: ExportOptions) -> ExportResult:
    needs_model = [t for t in targets if t in ("torchscript", "pt2", "compile")
                   or (t == "trt" and opts.trt_via != "onnx")]
    if needs_model:
        raise UsageError(
            f"--to {','.join(needs_model)} needs the PyTorch model; export from the checkpoint "
            f"with --out {bundle.root}"
        )
    for target in targets:
        from toolkit.exporters.precision import check_precisions

        check_precisions(target, list(opts.precisions))
    steps: list[Step] = []
    for target in targets:
        for precision in _precisions_for(target, opts.precisions):
            step = Step(target, precision)
            steps.append(step)
            if target == "onnx" and precision == "fp32":
                if bundle.artifact("onnx", "fp32") is None:
                    step.status, step.detail = "failed", "the bundle has no fp32 ONNX"
                    step.error = UsageError(step.detail)
                else:
                    step.status, step.detail = "exists", "already in the bundle"
                if opts.on_step:
                    opts.on_step(step)
                continue
            if target == "onnx":
                action = lambda s=step: _reduced_precision(bundle, s, opts)
            else:
                action = lambda s=step: _trt_from_bundle(bundle, s, opts)
            _run_step(step, action, bundle, opts)
    bundle.save()
    return ExportResult(bundle, steps)


def _trt_from_bundle(bundle: Bundle, step: Step, opts: ExportOptions) -> dict[str, Any]:
    if step.precision != "fp32" and bundle.artifact("onnx", step.precision) is None:
        _reduced_precision(bundle, Step("onnx", step.precision), opts)
        bundle.save()
    return _build_trt(bundle, step, opts)


def _export_onnx_source(path: Path, out_dir: Path, targets: list[str],
                        specs: list[TensorSpec], opts: ExportOptions) -> ExportResult:
    """An .onnx file starts a bundle: copied in, golden outputs from ONNX Runtime."""
    from toolkit.runtime.onnxruntime import OnnxRuntimeRunner
    from toolkit.sources import load_onnx_source
    from toolkit.spec import random_inputs

    src = load_onnx_source(path, specs)
    if Bundle.is_bundle(out_dir) and not opts.force:
        bundle = Bundle.open(out_dir)
        if bundle.manifest["source"].get("sha256") != src.source["sha256"]:
            raise UsageError(f"{out_dir} holds a bundle from a different source; choose "
                             "another --out, or pass --force")
    else:
        bundle = Bundle.create(out_dir, inputs=src.inputs, outputs=src.outputs,
                               source=src.source, call={"style": "positional"})
        dest = bundle.root / artifact_filename("onnx")
        bundle.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest, suffix=".onnx") as tmp:
            shutil.copyfile(path, tmp)
        _record(bundle, "onnx", "fp32", dest, {"exporter": "copied from source"})
        runner = OnnxRuntimeRunner(dest, inputs=src.inputs, outputs=src.outputs)
        samples = []
        with runner:
            for i, batch in enumerate((None, *GOLDEN_EXTRA_BATCHES)):
                rng = batch_range(src.inputs)
                if batch is not None and (rng is None or not rng[0] <= batch <= rng[2]):
                    continue
                feed = random_inputs(src.inputs, batch=batch, seed=i)
                samples.append(GoldenSample(feed, runner.infer(feed)))
        bundle.save_golden(samples)
        bundle.manifest["golden"]["reference"] = "onnxruntime (source was an ONNX file)"
        bundle.save()
    return _export_from_onnx_bundle(bundle, targets, opts)
