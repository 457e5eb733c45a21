"""torch.export of a loaded model, with the toolkit's dynamic shapes, and its failures told in
--input terms: the program every torch.export-based format builds from."""

from __future__ import annotations

import re
from typing import Any

from toolkit.errors import ExportFailed, first_line
from toolkit.export.common import dynamic_shapes, example_args, lightning_export_mode, quiet
from toolkit.source.wrapper import LoadedModel
from toolkit.spec import shared_dims


def export_program(model: LoadedModel, device: str = "cpu", *, batch: int | None = None
                   ) -> Any:
    """The model's `torch.export.ExportedProgram` over its flat inputs and outputs, traced on
    its example (at `batch` when given); ExportFailed naming the decisive cause."""
    import torch

    limit = declared_limit(model)
    if limit:
        raise ExportFailed(f"torch.export can't take this model: {limit}{TRACE_MAY_GO}")
    module = model.flat.to(device)
    example = (example_args(model, device=device) if batch is None else
               model.to_tensors(model.example_feed(batch=batch), device=device))
    try:
        with quiet(), lightning_export_mode(model.module):
            return torch.export.export(module, example, dynamic_shapes=dynamic_shapes(model))
    except Exception as err:
        cause = _decisive(err, model)
        raise ExportFailed(f"torch.export failed: {first_line(err)}"
                           f"{cause or _known_limit(err, len(model.inputs))}") from err


#: what the one line of a torch.export limit adds
TRACE_MAY_GO = "; a format exported without torch.export (a trace) may go through"


def declared_limit(model: LoadedModel) -> str | None:
    """Why torch.export can't take this model, when a module inside it says so itself (its
    `toolkit_torch_export_limit`, e.g. the torchvision detector adapters, whatever wraps
    them): the routes through torch.export then stop at once, naming it, instead of after a
    trace bound to fail."""
    for module in model.module.modules():
        limit = getattr(type(module), "toolkit_torch_export_limit", None)
        if isinstance(limit, str) and limit:
            return limit
    return None


_MULTIPLE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*) = (\d+)\*_[A-Za-z0-9_]+\s*$")
_GUARD = re.compile(r"Not all values of ([A-Za-z_][A-Za-z0-9_]*) = .*? in the specified range "
                    r".*? satisfy the generated guard (.*?)\.?$")
_SPECIALIZED = re.compile(r"^\s*-?\s*(.*must be specialized.*?|.*specialized to.*?)\.?$")


def _decisive(err: BaseException, model: LoadedModel) -> str:
    """torch.export's decisive lines, which its first line leaves out: the guard a dimension
    failed and the fix torch suggests, in --input terms ("x dimension 2 (112-224) must be a
    multiple of 14"). Empty when the error has none."""
    from toolkit.export.common import _ident

    text = str(err)
    where: dict[str, Any] = {}  # torch's Dim name -> (words, the range in steps of S)
    names, _ = shared_dims(model.inputs)
    for (name, axis), dim in names.items():
        spec = next(s for s in model.inputs if s.name == name)
        lo, hi = spec.min[axis], spec.max[axis]

        def stepped(step: int, lo: int = lo, hi: int = hi) -> str:
            low, high = -(-lo // step) * step, hi // step * step
            return f"{low}-{high}/{step}" if low < high else f"{low or step}"

        where.setdefault(_ident(dim), (f"{name} dimension {axis} ({lo}-{hi})", stepped))
    parts = []
    fixes = text.split("Suggested fixes:", 1)
    multiples = [m.groups() for m in map(_MULTIPLE.match, fixes[1].splitlines()
                                         if len(fixes) > 1 else []) if m]
    for dim, step in multiples:
        spot = where.get(dim)
        parts.append(f"{spot[0] if spot else dim} must be a multiple of {step}: give it in "
                     f"steps of {step}, e.g. {spot[1](int(step)) if spot else f'A-B/{step}'}"
                     f", or a fixed size (torch suggests {dim} = {step}*_{dim})")
    if not multiples:
        guards = [m.groups() for m in map(_GUARD.search, text.splitlines()) if m]
        for dim, guard in guards[:2]:
            words = where[dim][0] if dim in where else dim
            parts.append(f"{words} fails torch's guard {guard[:120]}")
        special = [m.group(1).strip() for m in map(_SPECIALIZED.match, text.splitlines()) if m]
        parts += [line[:200] for line in special[:1]]
        if len(fixes) > 1:
            fix = "; ".join(ln.strip() for ln in fixes[1].splitlines()[:4] if ln.strip()
                            and not ln.startswith("The error above"))
            if fix:
                parts.append(f"torch suggests: {fix[:200]}")
    return f" — {'; '.join(parts)}" if parts else ""


def _known_limit(err: BaseException, inputs: int = 1) -> str:
    """The upstream limitation behind a failure users hit often, to put in the one line."""
    text = f"{type(err).__name__} {err}"
    if "DataDependent" in text or "data-dependent" in text.lower():
        hint = " — torch.export can't branch on values computed inside the model"
        if "batched_nms" in text or "boxes.numel()" in text or "torchvision/ops" in text:
            from toolkit.detection.postprocess import TORCHVISION_EXPORT_LIMIT

            hint = f" — {TORCHVISION_EXPORT_LIMIT}"
        return f"{hint}{TRACE_MAY_GO}"
    if "Constraints violated" in text:
        if inputs > 1:
            return (" — the model needs dimensions to be equal (or fixed) that --input left "
                    "apart: name the ones that are one, e.g. --input ids:1-4xseq=8-32 "
                    "--input mask:1-4xseq")
        return (" — the model fixes a dimension that --input declares dynamic (a shape it "
                "caches or checks); export that dimension static, or see which line with "
                "TORCH_LOGS=+dynamic")
    return ""
