"""torch.export + AOTInductor: torch.compile ahead of time into a self-contained .pt2 package."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

from toolkit.errors import ExportFailed, first_line
from toolkit.export.common import dynamic_shapes, example_args, lightning_export_mode, quiet
from toolkit.export.job import ExportJob
from toolkit.source.wrapper import LoadedModel
from toolkit.spec import shared_dims


def export_pt2(model: LoadedModel, dest: Path, *, device: str = "cpu") -> dict[str, Any]:
    import torch

    module = model.flat.to(device)
    try:
        with quiet(), lightning_export_mode(model.module):
            program = torch.export.export(
                module, example_args(model, device=device), dynamic_shapes=dynamic_shapes(model)
            )
    except Exception as err:
        raise ExportFailed(f"torch.export failed: {first_line(err)}"
                           f"{_known_limit(err, len(model.inputs))}") from err
    started = time.perf_counter()
    with open(dest, "wb") as raw:
        package = _DiskErrorKept(raw)
        try:
            with quiet():
                torch._inductor.aoti_compile_and_package(program, package_path=package)
        except Exception as err:
            raise ExportFailed(f"AOTInductor compile failed: {first_line(err)}") from err
        finally:
            model.module.to("cpu")
    if package.error is not None:
        raise package.error  # a full disk: exit 2, rolled back like any other write
    _, notes = shared_dims(model.inputs)
    return {"exporter": "torch.export + AOTInductor", "device": device,
            "compile_s": round(time.perf_counter() - started, 2), "notes": notes}


class _DiskErrorKept(io.RawIOBase):
    """The package file as torch's zip writer sees it: a write that fails (a full disk) is
    kept, not raised. Raised inside the writer, the C++ error leaves it unfinished, and its
    destructor aborts the process (exit 134) when the exception is collected; the error is
    raised once the writer has finished."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self.raw = raw
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = len(memoryview(data).cast("B"))
        if self.error is None:
            try:
                self.raw.write(data)
            except OSError as err:
                self.error = err
        return size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def flush(self) -> None:
        if self.error is None:
            try:
                self.raw.flush()
            except OSError as err:
                self.error = err


def _known_limit(err: BaseException, inputs: int = 1) -> str:
    """The upstream limitation behind a failure users hit often, to put in the one line."""
    text = f"{type(err).__name__} {err}"
    if "DataDependent" in text or "data-dependent" in text.lower():
        hint = " — torch.export can't branch on values computed inside the model"
        if "batched_nms" in text or "boxes.numel()" in text or "torchvision/ops" in text:
            hint = (" — torchvision's batched_nms branches on the number of boxes, which "
                    "torch.export can't guard (pytorch/vision#9306, pytorch/pytorch#118884)")
        return f"{hint}; the onnx and torchscript formats go through"
    if "Constraints violated" in text:
        if inputs > 1:
            return (" — the model needs dimensions to be equal (or fixed) that --input left "
                    "apart: name the ones that are one, e.g. --input ids:1-4xseq=8-32 "
                    "--input mask:1-4xseq")
        return (" — the model fixes a dimension that --input declares dynamic (a shape it "
                "caches or checks); export that dimension static, or see which line with "
                "TORCH_LOGS=+dynamic")
    return ""


def export_artifact(job: ExportJob) -> dict[str, Any]:
    assert job.dest is not None
    return export_pt2(job.need_model(), job.dest, device=job.options.device)
