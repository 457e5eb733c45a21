"""TorchScript's option group: trace or script."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from toolkit.errors import UsageError
from toolkit.groups import flag

MODES = ("auto", "trace", "script")


@dataclass(frozen=True)
class TorchScriptOptions:
    """`--ts-mode`."""

    title: ClassVar[str] = "TorchScript"

    mode: str = flag("auto", "--ts-mode", "TorchScript: auto, trace or script.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", str(self.mode).strip().lower())
        if self.mode not in MODES:
            raise UsageError(f"--ts-mode {self.mode!r}: use one of {', '.join(MODES)}")
