"""The toolkit's cuda-python backend (`toolkit/backends/trt/cuda.py`, `CudaPython`) against the
real cuda-bindings on a GPU: the CUDA half of the TensorRT layer, checked where no TensorRT is.

    python3 benchmarks/cuda_python_check.py

Opens the device as the TensorRT runner does, `open_device("cuda", "check",
prefer="cuda-python")`, then checks, one line each with PASS or FAIL and what was measured:

  (a) upload/download round trips of float32, float16 and int64 arrays are exact;
  (b) bf16: upload as "bfloat16" then download equals torch's float32 -> bf16 -> float32 of the
      input, bit for bit; NaN stays NaN (payload NaNs too), +-inf stays +-inf;
  (c) a CUDA graph captured around `copy_device(dst, src)` records without running, and a
      replay after `copy_in(src, new)` copies the NEW contents (the replay ran, not a stale
      result);
  (d) a runner's pattern (allocate once, then 100x copy_in + copy_device + download) leaves
      `live_allocations` unchanged and device free memory within a few MiB;
  (e) `free(buffer)` takes one from `live_allocations`; `release()` leaves none, and gives the
      memory back.

Exit 0 when every check passes, 1 when one fails. Exit 0 with "skipped: no CUDA device
(<reason>)" when cuda-bindings can't be imported, or when `open_device` raises
BackendUnavailable on a machine with no GPU; on a machine with a GPU (torch or nvidia-smi sees
one) that is a failure, exit 1.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MIB = 2**20
FREE_DROP_LIMIT = 8 * MIB  # "a few MiB": cudaMemGetInfo moves in 2 MiB pages
CYCLES = 100


@dataclass
class Report:
    """PASS/FAIL lines, printed as they come."""

    lines: list[tuple[str, bool, str]] = field(default_factory=list)
    out: Callable[[str], None] = print

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.lines.append((name, bool(ok), detail))
        self.out(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
        return bool(ok)

    @contextmanager
    def guard(self, name: str) -> Iterator[None]:
        """A check that raises fails with the exception, and the next check still runs."""
        try:
            yield
        except Exception as err:
            self.check(name, False, f"raised {type(err).__name__}: {err}")

    @property
    def failed(self) -> list[str]:
        return [name for name, ok, _ in self.lines if not ok]


def bf16_reference(values: np.ndarray) -> tuple[np.ndarray, str]:
    """float32 -> bf16 -> float32 as torch rounds it (the toolkit's own rounding without torch)."""
    try:
        import torch
    except ImportError:
        from toolkit.backends.trt.cuda import narrow_to_bfloat16, widen_bfloat16

        return widen_bfloat16(narrow_to_bfloat16(values)), "the toolkit's host rounding"
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    return tensor.to(torch.bfloat16).to(torch.float32).numpy(), f"torch {torch.__version__}"


def _bits(*words: int) -> np.ndarray:
    return np.array(words, dtype=np.uint32).view(np.float32)


def bf16_input(rng: np.random.Generator) -> np.ndarray:
    """Random values over many magnitudes, rounding ties, and the special values."""
    scales = np.float32(10.0) ** rng.integers(-38, 38, size=4096).astype(np.float32)
    random = (rng.standard_normal(4096).astype(np.float32) * scales).astype(np.float32)
    special = np.concatenate([
        np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 65504.0,
                  3.4028235e38, -3.4028235e38, 1e-40, -1e-40, 1.00390625, 1.01171875],
                 dtype=np.float32),
        # NaNs whose payload sits in the low bits (naive rounding turns them into inf), a
        # quiet NaN with a payload, and the largest float32 below bf16's overflow
        _bits(0x7F800001, 0xFF800001, 0x7FC00001, 0x7F7F7FFF, 0x3F808000, 0x3F818000),
    ])
    return np.concatenate([random, special]).astype(np.float32)


# -- the checks ------------------------------------------------------------------------------
def check_round_trips(dev: Any, report: Report, rng: np.random.Generator) -> None:
    arrays = {
        "float32": rng.standard_normal((3, 1000, 7)).astype(np.float32),
        "float16": rng.standard_normal((3, 1000, 7)).astype(np.float16),
        "int64": rng.integers(-(2**62), 2**62, size=(3, 1000, 7), dtype=np.int64),
    }
    for dtype, host in arrays.items():
        name = f"(a) round trip {dtype}"
        with report.guard(name):
            buffer = dev.upload(host, dtype)
            back = dev.download(buffer)
            dev.free(buffer)
            shaped = back.shape == host.shape
            differ = int(np.count_nonzero(back != host)) if shaped else "?"
            report.check(name, back.dtype == host.dtype and shaped and differ == 0,
                         f"{host.nbytes} bytes, shape {host.shape}, came back {back.dtype} "
                         f"{back.shape}, {differ} elements differ")


def check_bfloat16(dev: Any, report: Report, rng: np.random.Generator) -> None:
    values = bf16_input(rng)
    with report.guard("(b) bf16 rounding"):
        expected, source = bf16_reference(values)
        buffer = dev.upload(values, "bfloat16")
        back = dev.download(buffer)
        dev.free(buffer)
        nan_in = np.isnan(values)
        numbers = ~nan_in
        differ = np.count_nonzero(back[numbers].view(np.uint32)
                                  != expected[numbers].view(np.uint32))
        report.check("(b) bf16 rounding", back.dtype == np.float32 and differ == 0,
                     f"{values.size} values ({values.size * 2} bytes on the device), {differ} "
                     f"differ bitwise from {source}; came back {back.dtype}")
        nan_kept = int(np.count_nonzero(np.isnan(back[nan_in])))
        report.check("(b) bf16 NaN stays NaN", nan_kept == int(nan_in.sum()),
                     f"{nan_kept} of {int(nan_in.sum())} NaNs (payload NaNs included)")
        infinite = np.isinf(values)
        inf_kept = int(np.count_nonzero(back[infinite] == values[infinite]))
        report.check("(b) bf16 +-inf stays +-inf", inf_kept == int(infinite.sum()),
                     f"{inf_kept} of {int(infinite.sum())} infinities kept their sign")


def check_graph(dev: Any, report: Report) -> None:
    name = "(c) graph capture and replay"
    with report.guard(name):
        n = 1 << 16
        first = np.arange(n, dtype=np.float32)
        second = first * np.float32(-3.0) + np.float32(7.0)
        sentinel = np.full(n, -1.0, dtype=np.float32)
        src = dev.upload(first, "float32")
        dst = dev.upload(sentinel, "float32")
        dev.synchronize()
        graph = dev.capture(lambda: dev.copy_device(dst, src))
        untouched = dev.download(dst)
        report.check("(c) capture records without running", np.array_equal(untouched, sentinel),
                     f"dst after capture: {int(np.count_nonzero(untouched != sentinel))} of {n} "
                     "elements changed (0 expected)")
        graph()
        replay1 = dev.download(dst)
        dev.copy_in(src, second)  # new contents INTO the captured source buffer
        graph()
        dev.synchronize()
        replay2 = dev.download(dst)
        stale = int(np.count_nonzero(replay2 == first))
        report.check(name, np.array_equal(replay1, first) and np.array_equal(replay2, second),
                     f"{first.nbytes} bytes; replay 1 = first contents: "
                     f"{np.array_equal(replay1, first)}; after copy_in, replay 2 = new contents: "
                     f"{np.array_equal(replay2, second)} ({stale} stale elements)")
        start = time.perf_counter()
        for _ in range(20):
            graph()
        dev.synchronize()
        per_replay = (time.perf_counter() - start) / 20 * 1e6
        graph.destroy()
        dev.free(src)
        dev.free(dst)
        report.check("(c) graph replays and destroy", True,
                     f"20 more replays, {per_replay:.1f} us each; destroyed")


def check_memory(dev: Any, report: Report, rng: np.random.Generator) -> None:
    name = "(d) 100 runner cycles"
    with report.guard(name):
        shape = (256, 1024)  # 1 MiB of float32
        live_start = dev.live_allocations
        inp = dev.empty(shape, "float32")
        out = dev.empty(shape, "float32")
        live_before = dev.live_allocations
        dev.synchronize()
        free_before, total = dev.memory_info()
        last = np.empty(shape, dtype=np.float32)
        wrong = 0
        start = time.perf_counter()
        for i in range(CYCLES):
            host = rng.standard_normal(shape).astype(np.float32) + np.float32(i)
            dev.copy_in(inp, host)
            dev.copy_device(out, inp)
            last = dev.download(out)
            wrong += int(not np.array_equal(last, host))
        seconds = time.perf_counter() - start
        free_after, _ = dev.memory_info()
        live_after = dev.live_allocations
        drop = free_before - free_after
        report.check("(d) live_allocations unchanged over the cycles", live_after == live_before
                     and live_before == live_start + 2,
                     f"{live_start} at start, {live_before} after allocating 2, {live_after} "
                     f"after {CYCLES} cycles")
        report.check("(d) free memory steady over the cycles", drop <= FREE_DROP_LIMIT,
                     f"free {free_before} -> {free_after} bytes of {total} (dropped {drop}, "
                     f"limit {FREE_DROP_LIMIT})")
        report.check(name, wrong == 0,
                     f"{CYCLES} x (copy_in + copy_device + download) of {last.nbytes} bytes, "
                     f"{wrong} wrong results, {seconds / CYCLES * 1e3:.2f} ms each")
        dev.free(inp)
        dev.free(out)


def check_free_and_release(dev: Any, report: Report, free_at_start: int) -> None:
    with report.guard("(e) free"):
        held = [dev.empty((1024,), "float32") for _ in range(3)]
        before = dev.live_allocations
        dev.free(held[0])
        after = dev.live_allocations
        report.check("(e) free", after == before - 1,
                     f"live_allocations {before} -> {after} after freeing one of 3 buffers")
    with report.guard("(e) release"):
        before = dev.live_allocations  # the 2 buffers still held
        dev.release()
        after = dev.live_allocations
        report.check("(e) release", after == 0,
                     f"live_allocations {before} -> {after} after release()")
        free_end, _ = dev.memory_info()
        report.check("(e) release gives the memory back",
                     free_end >= free_at_start - FREE_DROP_LIMIT,
                     f"free {free_at_start} bytes before the checks, {free_end} after release")


def run_checks(dev: Any, report: Report | None = None, seed: int = 0) -> Report:
    """Every check on an open device; releases it at the end."""
    report = report or Report()
    rng = np.random.default_rng(seed)
    free_at_start, total = dev.memory_info()
    report.out(f"memory: {free_at_start} bytes free of {total} before the checks; "
               f"live_allocations {dev.live_allocations}")
    check_round_trips(dev, report, rng)
    check_bfloat16(dev, report, rng)
    check_graph(dev, report)
    check_memory(dev, report, rng)
    check_free_and_release(dev, report, free_at_start)
    return report


# -- opening the device ----------------------------------------------------------------------
def bindings_version() -> str | None:
    """cuda-bindings' version when its runtime module imports, else None (the toolkit's own
    lookups, so the check and the backend agree on what is installed)."""
    from toolkit.backends.trt import cuda

    if cuda._import_cudart() is None:
        return None
    return cuda.bindings_version() or "unknown version"


def gpu_present() -> str | None:
    """What says a GPU is here (torch, nvidia-smi), or None."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return f"torch sees {torch.cuda.get_device_name(0)}"
    except Exception:
        pass
    if shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                     timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        if listing.returncode == 0 and "GPU" in listing.stdout:
            return f"nvidia-smi lists {listing.stdout.splitlines()[0].strip()}"
    return None


def main() -> int:
    version = bindings_version()
    if version is None:
        print("skipped: no CUDA device (cuda-bindings is not importable: no cuda.bindings."
              "runtime nor cuda.cudart)")
        return 0
    from toolkit.backends.trt.cuda import open_device
    from toolkit.errors import BackendUnavailable

    try:
        dev = open_device("cuda", "check", prefer="cuda-python")
    except BackendUnavailable as err:
        seen = gpu_present()
        if seen:
            print(f"FAIL  open_device: {seen}, but no backend opened it: {err}")
            return 1
        print(f"skipped: no CUDA device ({err})")
        return 0
    if dev.backend != "cuda-python":
        dev.release()
        print(f"FAIL  open_device(prefer='cuda-python') opened the {dev.backend!r} backend: "
              "cuda-python could not open the GPU that torch opened")
        return 1
    facts = dev.facts()
    print(f"device: {facts.get('name')}, compute capability {facts.get('compute_capability')}, "
          f"{facts.get('memory_gib')} GiB; backend {dev.backend} over cuda-bindings {version}")
    report = run_checks(dev)
    failed = report.failed
    print(f"cuda-python check: {len(report.lines) - len(failed)} passed, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    # run as a script (sys.path[0] is benchmarks/): this checkout's toolkit, installed or not
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
