"""torch.export + AOTInductor: torch.compile ahead of time into a self-contained .pt2 package."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from toolkit.errors import ExportFailed, first_line
from toolkit.export.common import dynamic_shapes, example_args, quiet
from toolkit.export.job import ExportJob
from toolkit.source.wrapper import LoadedModel


def export_pt2(model: LoadedModel, dest: Path, *, device: str = "cpu") -> dict[str, Any]:
    import torch

    module = model.flat.to(device)
    try:
        with quiet():
            program = torch.export.export(
                module, example_args(model, device=device), dynamic_shapes=dynamic_shapes(model)
            )
    except Exception as err:
        raise ExportFailed(f"torch.export failed: {first_line(err)}") from err
    started = time.perf_counter()
    try:
        with quiet():
            torch._inductor.aoti_compile_and_package(program, package_path=str(dest))
    except Exception as err:
        raise ExportFailed(f"AOTInductor compile failed: {first_line(err)}") from err
    finally:
        model.module.to("cpu")
    return {"exporter": "torch.export + AOTInductor", "device": device,
            "compile_s": round(time.perf_counter() - started, 2)}


def export_artifact(job: ExportJob) -> dict[str, Any]:
    assert job.dest is not None
    return export_pt2(job.need_model(), job.dest, device=job.options.device)
