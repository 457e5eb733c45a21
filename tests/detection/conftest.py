"""Shared detection fixtures: the demo detector is trained once per session (about 8 s)."""

from __future__ import annotations

import time
from typing import Any

import pytest


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo raw-head detector, trained small: model, checkpoint dir, val data."""
    import torch

    from toolkit.demo.detection_data import make_detection_data
    from toolkit.demo.detector import train_detector

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("detector")
    start = time.perf_counter()
    model = train_detector(epochs=6, n_train=1200, n_val=64, seed=0, checkpoint_dir=out)
    seconds = time.perf_counter() - start
    val = make_detection_data(128, split="val", seed=1)
    return {"model": model, "dir": out, "seconds": seconds, "val": val,
            "x": torch.from_numpy(val["x"])}
