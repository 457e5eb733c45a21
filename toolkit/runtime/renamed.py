"""A runner whose backend names its tensors differently from the bundle (a file built by
a compiler that names them after its own graph): names are translated on the way in and out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from toolkit.runtime.base import Feed, Runner
from toolkit.spec import OutputSpec, TensorSpec


def renamed_specs(specs: list[Any], names: Mapping[str, str]) -> list[Any]:
    """The same specs under the backend's names."""
    return [replace(s, name=names.get(s.name, s.name)) for s in specs]


class RenamedRunner(Runner):
    def __init__(self, inner: Runner, names: Mapping[str, str], *,
                 inputs: list[TensorSpec], outputs: list[OutputSpec]) -> None:
        super().__init__(inputs=inputs, outputs=outputs, device=inner.device,
                         precision=inner.precision, threads=inner.threads, name=inner.name)
        self.format = inner.format
        self.inner = inner
        self.to_backend = dict(names)
        self.to_bundle = {backend: bundle for bundle, backend in names.items()}

    # What a device timer reads of a runner (toolkit.runtime.cuda_timer.timer_for): the
    # inner runner's answers, so a renamed file is timed as its runner is.
    @property
    def stream(self) -> Any:
        return getattr(self.inner, "stream", None)

    @property
    def cuda_events_bracket_work(self) -> bool:
        return bool(getattr(self.inner, "cuda_events_bracket_work", True))

    def _activate_impl(self) -> None:
        self.inner.activate()

    def _deactivate_impl(self) -> None:
        self.inner.deactivate()

    def _backend_feed(self, feed: Feed) -> dict[str, np.ndarray]:
        return {self.to_backend.get(k, k): v for k, v in feed.items()}

    def _infer_impl(self, feed: Feed) -> dict[str, np.ndarray]:
        out = self.inner.infer(self._backend_feed(feed))
        return {self.to_bundle[k]: v for k, v in out.items() if k in self.to_bundle}

    def _prepare_impl(self, feed: Feed) -> Callable[[], Any]:
        return self.inner.prepare(self._backend_feed(feed))

    def synchronize(self) -> None:
        self.inner.synchronize()
