"""`toolkit.runtime.load(...)`: a Runner for any artifact, bundle or in-memory model.

    with toolkit.runtime.load("out/resnet18", format="onnx") as runner:
        outputs = runner.infer({"x": batch})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.bundle import Bundle
from toolkit.errors import UsageError
from toolkit.runtime.base import Runner

__all__ = ["Runner", "load", "load_artifact", "RUNNABLE", "SUFFIX_FORMATS"]

# Formats a bundle can be run as; eager/compile rebuild the model from the bundle's source.
RUNNABLE = ("eager", "compile", "onnx", "torchscript", "pt2", "trt")
SUFFIX_FORMATS = {".onnx": "onnx", ".ts": "torchscript", ".pt2": "pt2", ".engine": "trt",
                  ".plan": "trt"}
DEFAULT_ORDER = ("onnx", "pt2", "torchscript", "trt")


def load(
    path_or_bundle: str | Path | Bundle,
    format: str | None = None,
    device: str = "cpu",
    *,
    precision: str = "fp32",
    threads: int | None = None,
    **options: Any,
) -> Runner:
    """A Runner (not yet activated) for a bundle's artifact, or for a single artifact file."""
    from toolkit.exporters.registry import canonical

    fmt = canonical(format) if format else None
    if isinstance(path_or_bundle, Bundle):
        bundle = path_or_bundle
    else:
        path = Path(path_or_bundle)
        if path.is_file():
            return _load_file(path, fmt, device, precision, threads, **options)
        bundle = Bundle.open(path)
    if fmt is None:
        fmt = next((f for f in DEFAULT_ORDER if bundle.artifact(f, precision)), None)
        if fmt is None:
            raise UsageError(f"{bundle.root}: no {precision} artifact to run")
    if fmt in ("eager", "compile"):
        return model_runner(source_model(bundle), fmt, device=device, threads=threads,
                            **options)
    record = bundle.artifact(fmt, precision)
    if record is None:
        have = ", ".join(f"{r['format']}/{r.get('precision', 'fp32')}" for r in bundle.artifacts)
        raise UsageError(
            f"{bundle.root} has no {fmt} ({precision}) artifact (it has: {have or 'none'}); "
            f"run: toolkit export {bundle.root} --to {fmt}"
        )
    return load_artifact(bundle, record, device=device, threads=threads, **options)


def load_artifact(
    bundle: Bundle, record: dict[str, Any], *, device: str = "cpu",
    threads: int | None = None, **options: Any,
) -> Runner:
    """The Runner for one manifest record."""
    fmt, precision = record["format"], record.get("precision", "fp32")
    path = bundle.path_of(record)
    if not path.is_file():
        raise UsageError(f"{path} is listed in the manifest but missing; re-export it")
    common = dict(inputs=bundle.inputs, outputs=bundle.outputs, device=device,
                  precision=precision, threads=threads)
    if fmt == "onnx":
        from toolkit.runtime.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, **common, **options)
    if fmt == "torchscript":
        from toolkit.runtime.torchscript import TorchScriptRunner

        return TorchScriptRunner(path, call_style=record.get("call_style", "flat"), **common)
    if fmt == "pt2":
        from toolkit.runtime.aoti import AOTIRunner

        return AOTIRunner(path, compiled_for=record.get("device", "cpu"), **common)
    if fmt == "trt":
        from toolkit.runtime.tensorrt import TensorRTRunner

        common["device"] = device if device.startswith("cuda") else "cuda"
        names = record.get("tensor_names") or {}
        if all(k == v for k, v in names.items()):
            return TensorRTRunner(path, record=record, bundle_root=str(bundle.root), **common,
                                  **options)
        from toolkit.runtime.renamed import RenamedRunner, renamed_specs

        inner = TensorRTRunner(path, record=record, bundle_root=str(bundle.root),
                               **{**common, "inputs": renamed_specs(bundle.inputs, names),
                                  "outputs": renamed_specs(bundle.outputs, names)}, **options)
        return RenamedRunner(inner, names, inputs=bundle.inputs, outputs=bundle.outputs)
    raise UsageError(f"format '{fmt}' has no runner")


def _load_file(path: Path, fmt: str | None, device: str, precision: str,
               threads: int | None, **options: Any) -> Runner:
    fmt = fmt or SUFFIX_FORMATS.get(path.suffix)
    if Bundle.is_bundle(path.parent):
        bundle = Bundle.open(path.parent)
        for record in bundle.artifacts:
            if bundle.path_of(record).resolve() == path.resolve():
                return load_artifact(bundle, record, device=device, threads=threads, **options)
    if fmt == "onnx":
        from toolkit.runtime.onnxruntime import OnnxRuntimeRunner
        from toolkit.sources import load_onnx_source

        src = load_onnx_source(path)
        return OnnxRuntimeRunner(path, inputs=src.inputs, outputs=src.outputs, device=device,
                                 precision=precision, threads=threads, **options)
    raise UsageError(
        f"{path}: a lone {fmt or path.suffix} file doesn't say its inputs; load it from its "
        "bundle directory (or give an .onnx file)"
    )


def model_runner(model: Any, fmt: str, **kwargs: Any) -> Runner:
    """Eager or torch.compile runner over an in-memory LoadedModel."""
    if fmt == "compile":
        from toolkit.runtime.compiled import CompiledRunner

        return CompiledRunner(model, **kwargs)
    from toolkit.runtime.eager import EagerRunner

    return EagerRunner(model, **kwargs)


def source_unavailable(bundle: Bundle) -> str | None:
    """Why the bundle's eager model can't be rebuilt on this machine (None when it can)."""
    source = bundle.manifest.get("source", {})
    kind = source.get("kind")
    if kind not in ("lightning-checkpoint", "factory"):
        return (f"{bundle.root}: its source ({kind or 'unknown'}) can't be run as PyTorch; "
                "eager/compile need the checkpoint or factory")
    if kind == "lightning-checkpoint" and not Path(source.get("path", "")).is_file():
        return (f"{bundle.root}: source checkpoint {source.get('path')} is not on this "
                "machine; eager/compile need it (use --against CKPT)")
    return None


def source_model(bundle: Bundle) -> Any:
    """Rebuild the eager model a bundle came from (needs its checkpoint or factory here)."""
    from toolkit.sources import load_model

    reason = source_unavailable(bundle)
    if reason:
        raise UsageError(reason)
    source = bundle.manifest["source"]
    kind = source["kind"]
    location = source["path"]
    model = load_model(
        location,
        model_ref=source.get("class") if kind == "lightning-checkpoint" else None,
        weights=source.get("weights"),
        inputs=bundle.inputs,
        trust_checkpoint=bool(source.get("trusted", False)),
    )
    return model
