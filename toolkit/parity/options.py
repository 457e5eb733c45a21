"""The tolerance option group: `--atol`, `--rtol`, `--min-cosine` and per-output `--tol`,
over a precision's preset. `toolkit verify` and `verify_bundle(...)` take the same object."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from toolkit.errors import UsageError
from toolkit.groups import flag

if TYPE_CHECKING:  # pragma: no cover
    from toolkit.parity.tolerances import Tolerances


@dataclass(frozen=True)
class ToleranceOptions:
    """Tolerances: what the user changed of the precision's preset."""

    title: ClassVar[str] = "Tolerances"

    atol: float | None = flag(None, "--atol", "Absolute tolerance.")
    rtol: float | None = flag(None, "--rtol", "Relative tolerance.")
    min_cosine: float | None = flag(None, "--min-cosine", "Minimum cosine similarity.")
    per_output: tuple[str, ...] = flag(
        (), "--tol", "Per output: NAME:atol=..,rtol=.. Repeatable.", cli_type=list[str] | None,
        cli_default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_output", tuple(self.per_output or ()))
        for name in ("atol", "rtol", "min_cosine"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise UsageError(f"--{name.replace('_', '-')} {value}: give a finite number "
                                 ">= 0")
        if self.min_cosine is not None and self.min_cosine > 1:  # nothing could pass
            raise UsageError(f"--min-cosine {self.min_cosine}: a cosine is at most 1")
        if self.per_output:
            from toolkit.parity.tolerances import parse_tolerance_option

            for text in self.per_output:  # syntax now, output names once the bundle is open
                parse_tolerance_option(text)

    def output_names(self) -> list[str]:
        """The outputs the --tol options name (checked against the bundle's)."""
        return [text.split(":", 1)[0].strip() for text in self.per_output if ":" in text]

    def for_precision(self, precision: str) -> Tolerances:
        """The preset of `precision` with these changes applied."""
        from toolkit.parity.tolerances import tolerance_for, tolerances_from_options

        overrides = {k: v for k, v in (("atol", self.atol), ("rtol", self.rtol),
                                       ("min_cosine", self.min_cosine)) if v is not None}
        return tolerances_from_options(precision, self.per_output,
                                       base=tolerance_for(precision, **overrides))
