"""AOTInductor packages (.pt2): compiled ahead of time, loaded without the model's code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit.errors import BackendUnavailable, UsageError
from toolkit.manifest import ArtifactRecord
from toolkit.runtime.base import ArtifactHome
from toolkit.runtime.torch_common import TorchRunner


class AOTIRunner(TorchRunner):
    format = "pt2"

    def __init__(self, path: str | Path, *, compiled_for: str = "cpu", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self.compiled_for = compiled_for

    def _load(self) -> Callable[..., Any]:
        import torch

        if self.compiled_for.split(":")[0] != self.device.split(":")[0]:
            raise BackendUnavailable(
                f"{self.path} was compiled for {self.compiled_for}, not {self.device}; "
                f"re-export with --to pt2 --device {self.device}"
            )
        from toolkit.runtime.torch_common import load_custom_ops

        load_custom_ops()
        check_package(self.path)
        try:
            package = torch._inductor.aoti_load_package(str(self.path))
        except Exception as err:  # a damaged or foreign package: dlopen, zip or format errors
            raise UsageError(f"{self.path} won't load as an AOTInductor package: "
                             f"{str(err).splitlines()[0][:200]}") from None
        return lambda *tensors: package(*tensors)


def check_package(path: Path) -> None:
    """A .pt2 is a zip the loader unpacks: no entry may point outside it (zip slip). Its
    shared library is native code by design; what vouches for it is the sha256 the manifest
    recorded at export (checked before this), so a bundle's origin is what you trust."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise UsageError(f"{path} is not an AOTInductor package ({err})") from None
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if name.startswith("/") or ".." in parts or ":" in parts[0]:
            raise UsageError(f"{path}: entry '{name[:80]}' points outside the package; "
                             "refusing to unpack it")


def open_artifact(bundle: ArtifactHome, record: ArtifactRecord, **options: Any) -> AOTIRunner:
    return AOTIRunner(bundle.path_of(record), compiled_for=record.device or "cpu",
                      inputs=bundle.inputs, outputs=bundle.outputs,
                      precision=record.precision, **options)
