"""The timing option group: batch sweep, threads and how long each configuration is timed.
`toolkit bench`, `bench_bundle(...)` and `ExportCallback(bench=...)` take the same object."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from toolkit.errors import UsageError
from toolkit.groups import comma_list, flag

#: default knobs of `measure`; the timing group below exposes some as flags
DEFAULTS: dict[str, Any] = {
    "warmup_s": 2.0,
    "min_warmup_iters": 5,
    "budget_s": 10.0,
    "min_iters": 200,
    "max_iters": 20_000,
    "window": 50,
    "rel_tol": 0.03,
}


THREADS_PER_CORE = 4  # past this, threads only contend (oversubscription is what is measured)


def max_threads() -> int:
    """The most --threads a machine takes: a small multiple of its cores."""
    import os

    return THREADS_PER_CORE * (os.cpu_count() or 1)


def parse_batches(values: Any) -> tuple[int, ...] | None:
    """`--batch 1,8 --batch 16` -> (1, 8, 16); None when none is given (the default sweep)."""
    out = []
    given = [values] if isinstance(values, str) else list(values or [])
    for item in given:  # '' and '1,,2' are typos, not the default sweep
        if isinstance(item, str) and any(not p.strip() for p in item.split(",")):
            raise UsageError(f"--batch {item!r}: an empty batch size; e.g. --batch 1,8")
    for part in comma_list(values):
        text = str(part)
        # ASCII digits only: '²'.isdigit() is True, and int('²') fails
        if not (text.isascii() and text.isdigit()) or len(text) > 12 or int(text) < 1:
            raise UsageError(f"--batch {part!r}: expected positive integers, e.g. --batch 1,8")
        out.append(int(text))
    return tuple(out) or None


@dataclass(frozen=True)
class BenchOptions:
    """Timing: what `--batch`, `--threads`, `--budget`, `--warmup` and `--min-iters` say."""

    title: ClassVar[str] = "Timing"

    batches: tuple[int, ...] | None = flag(
        None, "--batch -b", "Batch sizes, e.g. 1,2,4,8. Default: powers of two up to 8 within "
        "the bundle's batch range, plus its opt batch.", cli_type=list[str] | None)
    threads: int | None = flag(None, "--threads",
                               "CPU threads for every backend (default: all cores).")
    budget_s: float = flag(DEFAULTS["budget_s"], "--budget", "Seconds of timed iterations per "
                           "configuration (stops early once stable).")
    warmup_s: float = flag(DEFAULTS["warmup_s"], "--warmup",
                           "Most seconds of warm-up per configuration.")
    min_iters: int = flag(DEFAULTS["min_iters"], "--min-iters",
                          "Timed iterations at least (unless the budget runs out first).")
    max_iters: int = DEFAULTS["max_iters"]

    def __post_init__(self) -> None:
        if self.batches is not None:  # 1,8 texts from the command line, or ints
            object.__setattr__(self, "batches", parse_batches(self.batches))
        for option, value in (("--budget", self.budget_s), ("--warmup", self.warmup_s)):
            if not math.isfinite(value) or value < 0:
                raise UsageError(f"{option} must be a finite number of seconds >= 0, got "
                                 f"{value}")
        if self.min_iters < 1:
            raise UsageError(f"--min-iters must be >= 1, got {self.min_iters}")
        if self.max_iters < self.min_iters:
            raise UsageError(f"max_iters {self.max_iters} is below --min-iters {self.min_iters}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {self.threads}")
        if self.threads is not None and self.threads > max_threads():
            raise UsageError(f"--threads {self.threads}: at most {max_threads()} here "
                             f"({THREADS_PER_CORE} per core); more only starves the machine")

    def timing(self) -> dict[str, Any]:
        """The knobs a results file records as its settings."""
        return {"budget_s": self.budget_s, "warmup_s": self.warmup_s,
                "min_iters": self.min_iters}
