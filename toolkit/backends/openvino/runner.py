"""OpenVINO: an IR (model.xml + model.bin) compiled for the CPU with its inference precision
set explicitly, never left to the device default (bf16 on CPUs with AMX or AVX512_BF16)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import formats
from toolkit.environment import cpu_flags, require_module
from toolkit.errors import UsageError, first_line
from toolkit.manifest import ArtifactRecord
from toolkit.runtime.base import ArtifactHome, Feed, Runner

#: OpenVINO performance hints: LATENCY (one stream, what `bench` times per request) or
#: THROUGHPUT (several streams for concurrent requests)
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")


class OpenVinoRunner(Runner):
    format = "openvino"

    def __init__(self, path: str | Path, *, inference_precision: str = "f32",
                 performance_hint: str = "LATENCY", recorded_flags: list[str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self.inference_precision = inference_precision
        if performance_hint not in PERFORMANCE_HINTS:
            raise UsageError(f"OpenVINO performance hint '{performance_hint}': use "
                             f"{' or '.join(PERFORMANCE_HINTS)}")
        self.performance_hint = performance_hint
        self.recorded_flags = recorded_flags
        self.warnings: list[str] = []

    @property
    def session_note(self) -> str | None:
        compute = ("int8 layers, the rest " + self.inference_precision
                   if self.precision == "int8" else self.inference_precision)
        return f"OpenVINO {self.performance_hint}, {compute}"

    def _activate_impl(self) -> None:
        if not self.device.startswith("cpu"):
            raise UsageError(f"{self.name}: toolkit runs OpenVINO IR on the CPU, not "
                             f"'{self.device}'")
        ov = require_module("openvino", f"running {self.path.name}", extra="openvino")
        self._warn_if_another_cpu()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.inference_precision,
                                  "PERFORMANCE_HINT": self.performance_hint}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        try:
            core = ov.Core()
            self._compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        except Exception as err:  # OpenVINO raises its own error types
            raise UsageError(f"OpenVINO can't load {self.path}: {_reason(err)}") from err
        used = str(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        if _short(used) != self.inference_precision:
            raise UsageError(f"{self.path.name}: OpenVINO compiled it in {used}, not the "
                             f"recorded {self.inference_precision}")
        names = {name for out in self._compiled.outputs for name in out.get_names()}
        missing = [o.name for o in self.outputs if o.name not in names]
        if missing:
            raise UsageError(f"{self.path} lacks outputs {missing}; it has {sorted(names)}")
        self._request = self._compiled.create_infer_request()

    def _warn_if_another_cpu(self) -> None:
        """bf16 was chosen for the exporting CPU's flags: say when this one differs."""
        if self.inference_precision != "bf16" or self.recorded_flags is None:
            return
        here = set(cpu_flags())
        if not here & {"amx_bf16", "avx512_bf16"}:
            raise UsageError(f"{self.name}: this CPU has no native bf16 (AMX-BF16 or "
                             "AVX512_BF16); the bf16 IR was made for one that has: use the "
                             "fp32 or int8 artifact here")
        if here != set(self.recorded_flags):
            self.warnings.append(
                f"exported on a CPU with {', '.join(sorted(self.recorded_flags))}; this one "
                f"has {', '.join(sorted(here))}")

    def _deactivate_impl(self) -> None:
        self._request = None
        self._compiled = None

    def _infer_impl(self, feed: Feed) -> dict[str, np.ndarray]:
        self._request.infer(dict(feed))
        return {o.name: np.array(self._request.get_tensor(o.name).data, copy=True)
                for o in self.outputs}

    def _prepare_impl(self, feed: Feed) -> Callable[[], Any]:
        request = self._compiled.create_infer_request()
        for name, value in feed.items():
            request.set_tensor(name, _tensor(value))
        return request.infer


def _reason(err: BaseException) -> str:
    """OpenVINO's message: its first line names only the source file that threw
    ("Exception from src/inference/src/cpp/core.cpp:84:"); the reason is the last line."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[-1][:300] if lines else first_line(err)


def _tensor(value: np.ndarray) -> Any:
    import openvino as ov

    return ov.Tensor(np.ascontiguousarray(value))


def _short(precision: str) -> str:
    """OpenVINO reports <Type: 'bfloat16'> / 'f32': our spelling (f32, bf16, f16)."""
    text = precision.lower()
    for long, short in (("bfloat16", "bf16"), ("float32", "f32"), ("float16", "f16")):
        if long in text:
            return short
    return text.strip("<>' ").split(":")[-1].strip(" '")


def open_artifact(bundle: ArtifactHome, record: ArtifactRecord, **options: Any) -> OpenVinoRunner:
    own = formats.get(record.format).fields_of(record)
    return OpenVinoRunner(bundle.path_of(record), inputs=bundle.inputs, outputs=bundle.outputs,
                          precision=record.precision,
                          inference_precision=own.inference_precision or "f32",
                          recorded_flags=own.cpu_flags, **options)
