"""Does an INT8 file pay off where it will run? Timed at export, in default ONNX Runtime
sessions (what users load), against the fp32 file, on this CPU."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

BUDGET_S = 3.0  # both files together; a heavy detector gets a few runs, resnet18 dozens
MIN_RUNS = 5
BLOCK = 5  # rotated blocks, so drift on a shared machine hits both files alike


def default_session_speedup(fp32: Path, reduced: Path, feed: Mapping[str, np.ndarray],
                            budget_s: float = BUDGET_S) -> dict[str, float] | None:
    """p50 of each file in a plain `InferenceSession(path)`, and fp32 / reduced (> 1: the
    reduced file is faster). None when onnxruntime is missing or a file won't run."""
    try:
        import onnxruntime as ort

        sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                    for p in (fp32, reduced)]
        for session in sessions:
            session.run(None, dict(feed))
    except Exception:  # an ORT build without CPU kernels for an op: no verdict, no claim
        return None
    times: list[list[float]] = [[], []]
    deadline = time.perf_counter() + budget_s
    while min(len(t) for t in times) < MIN_RUNS or time.perf_counter() < deadline:
        for session, sink in zip(sessions, times):
            session.run(None, dict(feed))  # wake this session's thread pool; not timed
            for _ in range(BLOCK):
                start = time.perf_counter()
                session.run(None, dict(feed))
                sink.append(time.perf_counter() - start)
    fp32_ms, reduced_ms = (statistics.median(t) * 1e3 for t in times)
    return {"fp32_p50_ms": fp32_ms, "p50_ms": reduced_ms, "speedup": fp32_ms / reduced_ms,
            "runs": min(len(t) for t in times)}
