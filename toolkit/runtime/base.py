"""The Runner: one interface over every backend (after Polygraphy's BaseRunner).

Public `activate / infer / deactivate` validate and keep state; subclasses implement the
`_*_impl` hooks. Resources (sessions, compiled graphs, CUDA buffers) are taken in `activate`,
never in `__init__`, so a Runner is cheap to build and safe to pass around.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from toolkit.errors import UsageError
from toolkit.spec import OutputSpec, TensorSpec, numpy_dtype

if TYPE_CHECKING:  # pragma: no cover
    from toolkit.manifest import ArtifactRecord

Feed = Mapping[str, np.ndarray]


class ArtifactHome(Protocol):
    """What a format's `open_artifact(home, record)` reads of where an artifact lives: a
    `Bundle`, or a `LoneFile`."""

    @property
    def root(self) -> Path: ...

    @property
    def inputs(self) -> list[TensorSpec]: ...

    @property
    def outputs(self) -> list[OutputSpec]: ...

    def path_of(self, record: ArtifactRecord) -> Path: ...


@dataclass(frozen=True)
class LoneFile:
    """A self-describing artifact file outside any bundle (its format's `describe` read its
    inputs and outputs): no manifest, so no hash to check it against."""

    path: Path
    inputs: list[TensorSpec]
    outputs: list[OutputSpec]

    @property
    def root(self) -> Path:
        return self.path.parent

    def path_of(self, record: ArtifactRecord) -> Path:
        return self.path


class Runner(abc.ABC):
    """Runs one artifact. `infer` takes and returns numpy arrays keyed by tensor name."""

    #: registry name of the format this runner executes (the format table's)
    format: str = ""

    def __init__(
        self,
        *,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[OutputSpec],
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
        name: str | None = None,
    ) -> None:
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.device = device
        self.precision = precision
        self.threads = threads
        self.name = name or f"{self.format}/{precision}"
        self.is_active = False

    # -- lifecycle -------------------------------------------------------------------------
    def activate(self) -> Runner:
        if not self.is_active:
            self._activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate_impl()
            self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # -- inference -------------------------------------------------------------------------
    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        """Run once on numpy inputs; returns numpy outputs named as in `self.outputs`."""
        if not self.is_active:
            raise RuntimeError(f"{self.name}: call activate() (or use 'with') before infer()")
        self._check_feed(feed)
        return self._infer_impl(self._cast_feed(feed))

    def prepare(self, feed: Feed) -> Callable[[], Any]:
        """A zero-argument call that runs one inference on inputs already placed for the
        backend (on the device, bound, preallocated), for timing without conversion cost.

        The default re-runs `infer`; backends that can do better override `_prepare_impl`.
        """
        if not self.is_active:
            raise RuntimeError(f"{self.name}: call activate() before prepare()")
        self._check_feed(feed)
        return self._prepare_impl(self._cast_feed(feed))

    def synchronize(self) -> None:
        """Block until queued device work is done (a no-op on CPU)."""
        return None

    # -- hooks -----------------------------------------------------------------------------
    @abc.abstractmethod
    def _activate_impl(self) -> None: ...

    @abc.abstractmethod
    def _infer_impl(self, feed: Feed) -> dict[str, np.ndarray]: ...

    def _deactivate_impl(self) -> None:
        return None

    def _prepare_impl(self, feed: Feed) -> Callable[[], Any]:
        return lambda: self._infer_impl(feed)

    # -- helpers ---------------------------------------------------------------------------
    def _check_feed(self, feed: Feed) -> None:
        expected = [s.name for s in self.inputs]
        missing = [n for n in expected if n not in feed]
        unknown = [n for n in feed if n not in expected]
        if missing or unknown:
            raise UsageError(
                f"{self.name}: inputs {sorted(feed)} don't match the model's {expected}"
            )
        for spec in self.inputs:
            shape = np.shape(feed[spec.name])
            if not spec.accepts(shape):
                raise UsageError(
                    f"{self.name}: input '{spec.name}' has shape {list(shape)}, "
                    f"expected {spec.describe()}"
                )

    def _cast_feed(self, feed: Feed) -> dict[str, np.ndarray]:
        return {
            s.name: np.ascontiguousarray(feed[s.name], dtype=numpy_dtype(s.dtype))
            for s in self.inputs
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.device}>"
