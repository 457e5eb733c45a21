"""`toolkit.runtime.load(...)`: a Runner for any artifact, bundle or in-memory model.

    with toolkit.runtime.load("out/resnet18", format=NAME) as runner:
        outputs = runner.infer({"x": batch})

Which class runs which format comes from the format table (`toolkit.formats`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit import formats
from toolkit.bundle import Bundle
from toolkit.errors import UsageError
from toolkit.manifest import ArtifactRecord, InProcessTarget, Target
from toolkit.runtime.base import LoneFile, Runner

__all__ = ["Runner", "load", "load_artifact", "model_runner", "runner_for"]


def load(
    path_or_bundle: str | Path | Bundle,
    format: str | None = None,
    device: str = "cpu",
    *,
    precision: str = "fp32",
    threads: int | None = None,
    trust_checkpoint: bool = False,
    **options: Any,
) -> Runner:
    """A Runner (not yet activated) for a bundle's artifact, or for a single artifact file.
    `trust_checkpoint` lets the in-process formats unpickle the bundle's source checkpoint."""
    fmt = formats.get(format) if format else None
    if isinstance(path_or_bundle, Bundle):
        bundle = path_or_bundle
    else:
        path = Path(path_or_bundle)
        if path.is_file():
            return _load_file(path, fmt, device, precision, threads, **options)
        bundle = Bundle.open(path)
    if fmt is None:
        ranked = sorted((f for f in formats.all_formats() if f.runs_from == "artifact"),
                        key=lambda f: f.load_priority)
        fmt = next((f for f in ranked if bundle.artifact(f.name, precision)), None)
        if fmt is None:
            raise UsageError(f"{bundle.root}: no {precision} artifact to run")
    if fmt.runs_from == "model":
        from toolkit.source.rebuild import source_model

        return model_runner(source_model(bundle, trust_checkpoint=trust_checkpoint),
                            fmt.name, device=device, threads=threads,
                            **options)
    record = bundle.artifact(fmt.name, precision)
    if record is None:
        raise UsageError(
            f"{bundle.root} has no {fmt.name} ({precision}) artifact (it has: "
            f"{bundle.listing()}); run: toolkit export {bundle.root} --to {fmt.name}"
        )
    return load_artifact(bundle, record, device=device, threads=threads, **options)


def load_artifact(
    bundle: Bundle, record: ArtifactRecord, *, device: str = "cpu",
    threads: int | None = None, **options: Any,
) -> Runner:
    """The Runner for one manifest record."""
    fmt = formats.get(record.format)
    bundle.checked_path(record)  # confined to the bundle, present, and the file exported
    return fmt.runner_fn()(bundle, record, device=device, threads=threads, **options)


def model_runner(model: Any, fmt: str, **options: Any) -> Runner:
    """The runner of a format that runs the PyTorch model in-process."""
    declared = formats.get(fmt)
    if declared.runs_from != "model":
        raise UsageError(f"{declared.name} runs from an artifact file, not a model")
    return declared.runner_fn()(model, **options)


def runner_for(bundle: Bundle, record: Target, *, device: str = "cpu",
               model: Any = None, threads: int | None = None,
               trust_checkpoint: bool = False) -> Runner:
    """The runner for a record, whether it names an artifact or an in-process format."""
    if isinstance(record, InProcessTarget):
        from toolkit.source.rebuild import source_model

        model = model if model is not None else source_model(
            bundle, trust_checkpoint=trust_checkpoint)
        return model_runner(model, record.format, device=device, threads=threads)
    return load_artifact(bundle, record, device=device, threads=threads)


def _load_file(path: Path, fmt: formats.Format | None, device: str, precision: str,
               threads: int | None, **options: Any) -> Runner:
    fmt = fmt or formats.by_suffix(path.suffix)
    if Bundle.is_bundle(path.parent):
        bundle = Bundle.open(path.parent)
        for record in bundle.artifacts:
            if record.path and bundle.path_of(record).resolve() == path.resolve():
                return load_artifact(bundle, record, device=device, threads=threads, **options)
    if fmt is not None and fmt.describe is not None:
        # a file outside any bundle: no manifest, so no hash to check it against
        lone = ArtifactRecord.model_construct(format=fmt.name, precision=precision,
                                              path=path.name)
        return fmt.runner_fn()(LoneFile(path, *fmt.hook("describe")(path)), lone,
                               device=device, threads=threads, **options)
    raise UsageError(
        f"{path}: a lone {fmt.name if fmt else path.suffix} file doesn't say its inputs; load "
        f"it from its bundle directory (or give {formats.lone_files()})"
    )
