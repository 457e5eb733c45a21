"""TorchScript export (legacy upstream): trace, or script when tracing would be wrong; frozen."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Any

from toolkit.errors import ExportFailed, first_line
from toolkit.export.common import example_args, lightning_export_mode, probe_args, quiet
from toolkit.export.job import ExportJob
from toolkit.source.wrapper import LoadedModel


def _trace(model: LoadedModel) -> tuple[Any, list[str]]:
    """The trace, and the reasons it may be wrong: the tracer's own warnings, or outputs that
    differ from eager on inputs of another shape (a shape baked into the graph)."""
    import torch

    example = example_args(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        traced = torch.jit.trace(model.flat, example, check_trace=False, strict=False)
    problems = [str(w.message).splitlines()[0] for w in caught
                if issubclass(w.category, torch.jit.TracerWarning)]
    probe = probe_args(model, example)
    if probe is not None and not _same_outputs(model.flat, traced, probe):
        shapes = ", ".join(str(list(t.shape)) for t in probe)
        problems.insert(0, f"the trace gives other results than eager at shapes {shapes}")
    return traced, problems


def _same_outputs(eager: Any, traced: Any, args: tuple) -> bool:
    import torch

    with torch.inference_mode():
        try:
            want, got = eager(*args), traced(*args)
        except Exception:  # a trace that can't even run at another shape
            return False
    return len(want) == len(got) and all(
        w.shape == g.shape and torch.allclose(w.float(), g.float(), rtol=1e-3, atol=1e-4)
        for w, g in zip(want, got))


def export_torchscript(model: LoadedModel, dest: Path, *, mode: str = "auto") -> dict[str, Any]:
    """mode: 'trace', 'script', or 'auto' (trace; script when the tracer warns the trace
    depends on values, e.g. data-dependent control flow)."""

    with lightning_export_mode(model.module):
        return _export(model, dest, mode)


def _export(model: LoadedModel, dest: Path, mode: str) -> dict[str, Any]:
    import torch

    notes: list[str] = []
    module = None
    method = mode
    if mode in ("trace", "auto"):
        try:
            with quiet():
                module, tracer_warnings = _trace(model)
        except Exception as err:
            if mode == "trace":
                raise ExportFailed(f"torch.jit.trace failed: {first_line(err)}") from err
            tracer_warnings = [f"trace failed: {first_line(err)}"]
        method = "trace"
        if tracer_warnings and mode == "auto":
            try:
                with quiet():
                    module = torch.jit.script(model.module)
                method = "script"
                notes.append("scripted because tracing would be wrong: " + tracer_warnings[0])
            except Exception as err:
                notes.append(f"tracer warned ({tracer_warnings[0]}) and scripting failed "
                             f"({first_line(err)}{_where(err)}); kept the trace — parity "
                             "checks it on every golden sample")
        if module is None:
            raise ExportFailed("torch.jit.trace failed: " + "; ".join(tracer_warnings))
    elif mode == "script":
        try:
            with quiet():
                module = torch.jit.script(model.module)
        except Exception as err:
            raise ExportFailed(f"torch.jit.script failed: {first_line(err)}") from err
    try:
        frozen = torch.jit.freeze(module.eval())
    except Exception as err:  # freezing is an optimisation: keep the unfrozen module
        frozen = module
        notes.append(f"not frozen ({first_line(err)})")
    # to memory first: on a full disk torch.jit.save aborts the whole process (a C++
    # exception escapes its zip writer); a Python write raises ENOSPC, which is exit 2
    buffer = io.BytesIO()
    torch.jit.save(frozen, buffer)
    with open(dest, "wb") as handle:
        handle.write(buffer.getbuffer())
    return {"exporter": f"torch.jit.{method}", "legacy": True, "notes": notes,
            "call_style": "flat" if method == "trace" else model.call_style}


def _where(err: BaseException) -> str:
    """' at file.py:34': where in the user's code TorchScript refused, when it says."""
    found = re.findall(r'File "([^"]+)", line (\d+)', str(err))
    return f" at {Path(found[0][0]).name}:{found[0][1]}" if found else ""


def export_artifact(job: ExportJob) -> dict[str, Any]:
    assert job.dest is not None
    return export_torchscript(job.need_model(), job.dest, mode=job.format_options.mode)
