"""ONNX Runtime: CPU here; CUDA and TensorRT execution providers when onnxruntime-gpu is in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.environment import require_module
from toolkit.errors import BackendUnavailable, UsageError
from toolkit.manifest import ArtifactRecord
from toolkit.runtime.base import ArtifactHome, Feed, Runner

ORT_QDQ_DISABLED_OPTIMIZERS: tuple[str, ...] = ("CommonSubexpressionElimination",)
"""Pass as `InferenceSession(..., disabled_optimizers=...)` for INT8 Q/DQ graphs on x86 CPUs
without VNNI: ORT's CSE merges the dedicated Q nodes again, which stops its int8->uint8
rewrite and leaves those Convs in fp32 (see docs/precision.md)."""

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OnnxRuntimeRunner(Runner):
    format = "onnx"
    #: ORT's CUDA provider runs on a stream of its own: events on ours would not bracket it
    cuda_events_bracket_work = False

    def __init__(self, path: str | Path, *, provider: str | None = None,
                 layout: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self.provider = provider or ("cuda" if self.device.startswith("cuda") else "cpu")
        self.layout = layout  # an INT8 file's layout: 'cpu' or 'trt'

    @property
    def session_note(self) -> str | None:
        """How this runner's session departs from a default InferenceSession, if it does."""
        if self._session_extras():
            return ("CSE disabled: a default ORT session runs this TensorRT-layout INT8 file "
                    "slower")
        return None

    def _activate_impl(self) -> None:
        ort = require_module("onnxruntime", f"running {self.path.name}")
        wanted = PROVIDERS[self.provider]
        available = ort.get_available_providers()
        if wanted[0] not in available:
            raise BackendUnavailable(
                f"onnxruntime here has no {wanted[0]} (it has {', '.join(available)}); "
                "install the 'gpu' extra (onnxruntime-gpu) on a CUDA machine"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 4  # errors reach the caller as exceptions; no log spam
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options,
                providers=[p for p in wanted if p in available],
                **self._session_extras(),
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise UsageError(f"onnxruntime can't load {self.path}: {str(err)[:300]}") from err
        names = [o.name for o in self.session.get_outputs()]
        missing = [o.name for o in self.outputs if o.name not in names]
        if missing:
            raise UsageError(f"{self.path} lacks outputs {missing}; it has {names}")

    def _session_extras(self) -> dict[str, Any]:
        if self.precision != "int8" or self.layout == "cpu" or self.provider != "cpu":
            return {}
        # Common-subexpression elimination merges the dedicated Q nodes of a TensorRT-style
        # Q/DQ graph, which stops ORT from fusing most convolutions into QLinearConv.
        return {"disabled_optimizers": list(ORT_QDQ_DISABLED_OPTIMIZERS)}

    def _deactivate_impl(self) -> None:
        self.session = None

    def _infer_impl(self, feed: Feed) -> dict[str, np.ndarray]:
        names = [o.name for o in self.outputs]
        values = self.session.run(names, dict(feed))
        return dict(zip(names, values))

    def _prepare_impl(self, feed: Feed) -> Callable[[], Any]:
        # IO binding: inputs are bound once, so the timed call is the session run alone.
        binding = self.session.io_binding()
        device = "cuda" if self.provider != "cpu" else "cpu"
        import onnxruntime as ort

        for name, value in feed.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
        for out in self.outputs:
            binding.bind_output(out.name, device)
        session = self.session

        def call() -> None:
            session.run_with_iobinding(binding)

        return call


def open_artifact(bundle: ArtifactHome, record: ArtifactRecord,
                  **options: Any) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(bundle.path_of(record), inputs=bundle.inputs,
                             outputs=bundle.outputs, precision=record.precision,
                             layout=record.layout, **options)
