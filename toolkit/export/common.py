"""What every torch-based exporter needs: example arguments and dynamic-shape declarations."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from toolkit.spec import batch_range, shared_dims

if TYPE_CHECKING:  # torch is imported only where a model is exported: a device has none
    from toolkit.source.wrapper import LoadedModel


def export_batch(model: LoadedModel) -> int | None:
    """Batch for tracing: at least 2 when dynamic, so exporters don't specialise it to 1."""
    rng = batch_range(model.inputs)
    if rng is None:
        return None
    lo, opt, hi = rng
    return min(hi, max(opt, 2, lo))


def example_args(model: LoadedModel, device: str = "cpu") -> tuple:
    return model.to_tensors(model.example_feed(batch=export_batch(model)), device=device)


def dynamic_shapes(model: LoadedModel) -> tuple[Any, ...] | None:
    """torch.export dynamic_shapes for FlatModule(*args): one Dim per symbolic dimension, the
    batch and every dimension several inputs share being one object (`spec.shared_dims`)."""
    from torch.export import Dim

    if not any(s.dynamic_dims for s in model.inputs):
        return None
    rng = batch_range(model.inputs)
    names, _ = shared_dims(model.inputs)
    made: dict[str, Any] = {}
    per_input = []
    for spec in model.inputs:
        dims: dict[int, Any] = {}
        for axis in spec.dynamic_dims:
            name = names[(spec.name, axis)]
            if name not in made:
                lo, hi = ((rng[0], rng[2]) if name == "batch" and rng
                          else (spec.min[axis], spec.max[axis]))
                step = spec.step(axis)
                # in steps of S: S * a Dim over lo/S..hi/S, the form torch.export suggests
                made[name] = (step * Dim(f"_{_ident(name)}", min=lo // step, max=hi // step)
                              if step > 1 else Dim(_ident(name), min=lo, max=hi))
            dims[axis] = made[name]
        per_input.append(dims or None)
    return (tuple(per_input),)  # FlatModule takes *args: one entry holding them all


def _ident(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in name)
    return cleaned if cleaned[:1].isalpha() else f"d_{cleaned}"


@contextlib.contextmanager
def _silenced_fds() -> Iterator[None]:
    """Exporters print graphs from C++ straight to file descriptors 1 and 2, past Python's
    sys.stdout; point those at /dev/null for the duration (TOOLKIT_DEBUG=1 keeps them)."""
    if os.environ.get("TOOLKIT_DEBUG"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Silence the exporters' progress prints and warnings; the CLI reports its own steps."""
    buffer = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                              "torch._inductor", "onnxscript",
                                              "torch.utils.cpp_extension")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    import torch

    # nn.MultiheadAttention / TransformerEncoder take a fused "fast path" under no-grad that
    # neither the tracing exporters nor torch.export can convert; the exact path can.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer), _silenced_fds():
            warnings.simplefilter("ignore")
            yield buffer
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def probe_args(model: LoadedModel, example: tuple) -> tuple | None:
    """Inputs whose dynamic dimensions differ from the tracing example (None if all static):
    a trace that baked a shape in fails on them."""
    import torch

    from toolkit.source.wrapper import TORCH_DTYPES

    if not any(s.dynamic_dims for s in model.inputs):
        return None
    generator = torch.Generator().manual_seed(7)
    highs = model.int_high()
    probes = []
    for spec, tensor in zip(model.inputs, example):
        shape = list(tensor.shape)
        for axis in spec.dynamic_dims:
            lo, hi = spec.min[axis], spec.max[axis]
            shape[axis] = shape[axis] + 1 if shape[axis] < hi else lo
        dtype = TORCH_DTYPES[spec.dtype]
        if dtype.is_floating_point:
            probes.append(torch.randn(shape, generator=generator).to(dtype))
        elif dtype == torch.bool:
            probes.append(torch.rand(shape, generator=generator) < 0.5)
        else:
            high = max(1, highs.get(spec.name, 2))
            probes.append(torch.randint(0, high, shape, generator=generator).to(dtype))
    return tuple(probes)


@contextlib.contextmanager
def lightning_export_mode(module: Any) -> Iterator[None]:
    """Tell LightningModules they are being exported, so that properties such as `trainer`
    don't raise while a tracer, the scripter or an exporter walks their attributes (as
    Lightning's own to_torchscript and to_onnx do). Every exporter runs inside it."""
    flagged = [m for m in module.modules() if hasattr(m, "_jit_is_scripting")]
    for m in flagged:
        m._jit_is_scripting = True
    try:
        yield
    finally:
        for m in flagged:
            m._jit_is_scripting = False
