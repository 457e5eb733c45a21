"""torch.export + AOTInductor: torch.compile ahead of time into a self-contained .pt2 package."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

from toolkit.errors import ExportFailed, first_line
from toolkit.export.common import quiet
from toolkit.export.job import ExportJob
from toolkit.export.torch_export import export_program
from toolkit.source.wrapper import LoadedModel
from toolkit.spec import shared_dims


def export_pt2(model: LoadedModel, dest: Path, *, device: str = "cpu") -> dict[str, Any]:
    import torch

    program = export_program(model, device)
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


def export_artifact(job: ExportJob) -> dict[str, Any]:
    assert job.dest is not None
    return export_pt2(job.need_model(), job.dest, device=job.options.device)
