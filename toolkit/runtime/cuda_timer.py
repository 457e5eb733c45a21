"""GPU time of one iteration from a pair of CUDA events: a `toolkit.bench.DeviceTimer`.

The host-side latency `measure` reports includes launch overhead and the synchronisation;
the events bracket only the work queued on the runner's stream, so the two together tell
"the GPU is busy" apart from "the host is the bottleneck".
"""

from __future__ import annotations

from typing import Any


class CudaEventTimer:
    """Records a start and a stop event on `stream` (None: torch's current stream).

    One event pair is reused: `measure` reads `elapsed_s` after its sync and before the next
    `start`, so the previous iteration's events are complete by then.
    """

    def __init__(self, stream: Any = None) -> None:
        import torch

        self._stream = stream
        self._start = torch.cuda.Event(enable_timing=True)
        self._stop = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self._start.record(self._stream)

    def stop(self) -> None:
        self._stop.record(self._stream)

    def elapsed_s(self) -> float:
        return self._start.elapsed_time(self._stop) / 1e3  # elapsed_time is in ms


def timer_for(runner: Any) -> CudaEventTimer | None:
    """A timer on the stream the runner enqueues its work on, or None when events there
    wouldn't bracket its work (a runtime's CUDA provider that runs on a stream of its own)."""
    if not str(getattr(runner, "device", "")).startswith("cuda"):
        return None
    if not getattr(runner, "cuda_events_bracket_work", True):
        return None
    # TensorRTRunner keeps its own torch stream; torch-based runners use the current stream
    stream = getattr(runner, "stream", None)
    return CudaEventTimer(stream)
