"""Rebuild the PyTorch model a bundle came from, when its source is on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.bundle import Bundle
from toolkit.errors import UsageError
from toolkit.source.options import SourceOptions

MODEL_SOURCES = ("lightning-checkpoint", "factory")


def describe_source(bundle: Bundle) -> str:
    """What rebuilding the PyTorch model would import or read, in the user's words."""
    source = bundle.manifest.source
    kind = source.kind or "unknown"
    if kind == "factory":
        return f"factory {source.path} (its module is imported and the factory called)"
    if kind == "lightning-checkpoint":
        return f"checkpoint {source.path} (class {source.class_ or '?'} is imported)"
    return f"{kind} {source.path or ''}".strip()


def _in_process() -> str:
    """The formats that run the source model in-process, from the table, as 'a/b'."""
    from toolkit import formats

    return "/".join(f.name for f in formats.all_formats() if f.runs_from == "model")


def source_unavailable(bundle: Bundle) -> str | None:
    """Why the bundle's PyTorch model can't be rebuilt on this machine (None when it can)."""
    source = bundle.manifest.source
    kind = source.kind
    if kind not in MODEL_SOURCES:
        return (f"{bundle.root}: its source ({kind or 'unknown'}) can't be run as PyTorch; "
                f"{_in_process()} need the checkpoint or factory")
    if kind == "lightning-checkpoint" and not Path(source.path or "").is_file():
        return (f"{bundle.root}: source checkpoint {source.path} is not on this "
                f"machine; {_in_process()} need it (use --against CKPT)")
    if not _torch_importable():
        return (f"{bundle.root}: {_in_process()} need PyTorch, which can't be imported here "
                "(pip install 'toolkit[export]')")
    return None


def _torch_importable() -> bool:
    import importlib.util
    import sys

    if "torch" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a broken or blocked install
        return False


def source_model(bundle: Bundle, *, trust_checkpoint: bool = False) -> Any:
    """The PyTorch model a bundle came from (needs its checkpoint or factory here).

    Trust comes only from the caller's own command line (`--trust-checkpoint`), never from
    the manifest: a bundle is input nobody here wrote, and may point at any checkpoint."""
    reason = source_unavailable(bundle)
    if reason:
        raise UsageError(reason)
    from toolkit.environment import require_module

    require_module("torch", "rebuilding the PyTorch model")
    from toolkit.source.load import load_model
    from toolkit.source.model_args import parse_model_args

    source = bundle.manifest.source
    loaded = load_model(
        source.path or "",
        model_ref=source.class_ if source.kind == "lightning-checkpoint" else None,
        weights=source.weights,
        inputs=bundle.inputs,
        trust_checkpoint=trust_checkpoint,
        model_args=parse_model_args(f"{k}={v}" for k, v in
                                    (source.model_args or {}).items()),
    )
    return as_bundle_model(bundle, loaded)


def as_bundle_model(bundle: Bundle, loaded: Any) -> Any:
    """A freshly loaded model wrapped as the bundle's artifacts are (a detector's contract)."""
    detection = bundle.detection
    if not detection:
        return loaded
    from toolkit.detection.options import options_from_record
    from toolkit.source.detector_contract import as_detector

    return as_detector(loaded, options_from_record(detection))


def reference_model(bundle: Bundle, *, against: str | None = None,
                    source: SourceOptions | None = None) -> Any:
    """The PyTorch model parity is judged against, wrapped as the bundle's artifacts are: from
    `against` (a checkpoint or factory the user names, with the source group's class and
    arguments), else from the manifest's source."""
    source = source or SourceOptions()
    if not against:
        return source_model(bundle, trust_checkpoint=source.trust_checkpoint)
    from toolkit.source.load import load_model

    return as_bundle_model(bundle, load_model(
        against, model_ref=source.model, inputs=bundle.inputs,
        trust_checkpoint=source.trust_checkpoint, model_args=source.factory_args()))


def against_command(bundle: Bundle) -> str:
    """What to type to give verify a live reference, from the manifest's source. Named, not
    done: a bundle is input nobody here wrote, and its source is code to import."""
    source = bundle.manifest.source
    kind, path = source.kind, source.path
    if kind == "lightning-checkpoint" and path:
        where = "" if Path(path).is_file() else " (copy the checkpoint here first)"
        return (f"pass --against {path} --model {source.class_ or 'pkg.module:Class'}"
                f"{where}")
    if kind == "factory" and path:
        return f"pass --against {path} (the factory the bundle was exported from)"
    return "pass --against SOURCE (the checkpoint or factory the bundle came from)"
