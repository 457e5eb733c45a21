"""What a device with TensorRT tells `--on` (conformance: the strict fake TensorRT and CUDA
runtime, nothing runs on TensorRT)."""

from __future__ import annotations

import pytest

pytest.importorskip("cuda.bindings", reason="cuda-python is the fake CUDA runtime's surface")

from tests.backends.trt.conformance.harness import FakeProcess
from toolkit import formats


def test_a_device_says_its_tensorrt_and_when_asked_its_gpu(monkeypatch):
    proc = FakeProcess("10.13", monkeypatch)
    facts = formats.get("trt").hook("device_facts")
    assert facts(False) == {"version": proc.trt.__version__}
    described = facts(True)
    assert described["gpu"] == proc.machine.gpu
    assert described["compute_capability"] == proc.machine.compute_capability


def test_a_device_without_a_driver_still_says_its_tensorrt(monkeypatch):
    proc = FakeProcess("10.13", monkeypatch, driver_version=0)
    assert formats.get("trt").hook("device_facts")(True) == {"version": proc.trt.__version__}
