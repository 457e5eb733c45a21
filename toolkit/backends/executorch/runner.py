"""Runs a .pte through ExecuTorch's Python runtime on this CPU.

The runtime's Python bindings link libtorch (its tensors are torch tensors), so running a .pte
from Python needs torch; a device without torch runs it with ExecuTorch's C++ runner instead.
A .pte is input nobody here vouches for beyond its recorded sha256: the runtime verifies its
internal consistency before anything executes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from toolkit.environment import require_module
from toolkit.errors import BackendUnavailable, UsageError
from toolkit.runtime.base import ArtifactHome
from toolkit.runtime.torch_common import TorchRunner
from toolkit.spec import OutputSpec, TensorSpec

from .imports import EXTRA, executorch_module

_DTYPES = {"Float": "float32", "Half": "float16", "Long": "int64", "Int": "int32",
           "Bool": "bool", "Byte": "uint8", "Char": "int8", "Double": "float64"}


@contextlib.contextmanager
def _native_log_quiet() -> Iterator[None]:
    """The runtime's C++ log lines (cpuinfo probing /sys on every first load) go to the
    process's stderr below Python; they are dropped while a program loads (its errors still
    come back as exceptions)."""
    import os
    import sys

    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _method(path: Path) -> Any:
    """The program's `forward`, loaded and verified (UsageError for a damaged file)."""
    runtime = executorch_module("executorch.runtime", f"running {path.name}")
    try:
        with _native_log_quiet():
            program = runtime.Runtime.get().load_program(
                path, verification=runtime.Verification.InternalConsistency)
            return program.load_method("forward")
    except (RuntimeError, ValueError, OSError) as err:
        raise UsageError(f"{path} won't load as an ExecuTorch program: "
                         f"{str(err).splitlines()[0][:200] if str(err) else type(err).__name__}"
                         ) from None


class ExecuTorchRunner(TorchRunner):
    format = "executorch"

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)

    def _activate_impl(self) -> None:
        # said before TorchRunner asks for torch in general: here it is the runtime's need
        require_module("torch", f"running {self.name} (ExecuTorch's Python runtime links "
                       "libtorch)", extra=EXTRA)
        super()._activate_impl()

    def _load(self) -> Callable[..., Any]:
        if self.device != "cpu":
            raise BackendUnavailable(f"{self.path.name}: ExecuTorch's XNNPACK delegate runs on "
                                     f"the CPU, not {self.device}; use --device cpu")
        if self.threads:  # XNNPACK's own pool, not torch's
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(self.threads)
        method = _method(self.path)
        return lambda *tensors: method.execute(list(tensors))


def open_artifact(bundle: ArtifactHome, record: Any, **options: Any) -> ExecuTorchRunner:
    return ExecuTorchRunner(bundle.path_of(record), inputs=bundle.inputs,
                            outputs=bundle.outputs, precision=record.precision, **options)


def _specs(meta: Any) -> tuple[list[TensorSpec], list[OutputSpec]]:
    inputs, outputs = [], []
    for i in range(meta.num_inputs()):
        info = meta.input_tensor_meta(i)
        shape = tuple(int(d) for d in info.sizes())
        inputs.append(TensorSpec(f"input_{i}", _dtype(info), shape, shape, shape))
    for i in range(meta.num_outputs()):
        outputs.append(OutputSpec(f"output_{i}", _dtype(meta.output_tensor_meta(i))))
    return inputs, outputs


def _dtype(info: Any) -> str:
    name = str(info.dtype()).rsplit(".", 1)[-1]
    return _DTYPES.get(name, "float32")


def describe_file(path: Path) -> tuple[list[TensorSpec], list[OutputSpec]]:
    """A lone .pte's inputs and outputs: the sizes its memory plan holds (a dynamic dimension
    at its largest), named input_0.. and output_0.. (a program keeps no tensor names)."""
    return _specs(_method(path).metadata)


def inspect_file(path: Path) -> dict[str, Any]:
    """What `toolkit inspect model.pte` shows: IO as planned, and the size."""
    inputs, outputs = describe_file(path)
    return {"file": str(path), "size_bytes": path.stat().st_size,
            "inputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.opt)} for s in inputs],
            "outputs": [{"name": o.name, "dtype": o.dtype} for o in outputs],
            "note": "a .pte keeps no tensor names; its bundle's manifest.json names them"}
