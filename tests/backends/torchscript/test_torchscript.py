"""TorchScript: a frozen module plain `torch.jit.load` reads, served by Triton's libtorch
platform with indexed tensor names."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import assert_reproduces_golden, triton_config
from toolkit.bundle import Bundle


def test_the_artifact_is_a_script_module_that_reproduces_the_golden_outputs(two_io_bundle):
    bundle = Bundle.open(two_io_bundle)
    record = bundle.artifact("torchscript", "fp32")
    assert isinstance(torch.jit.load(str(bundle.path_of(record))), torch.jit.ScriptModule)
    assert_reproduces_golden(two_io_bundle, "torchscript", rtol=1e-5, atol=1e-5)


def test_triton_serves_it_on_libtorch_with_indexed_names(two_io_bundle, tmp_path):
    config = triton_config(two_io_bundle, "torchscript", tmp_path / "repo")
    assert 'platform: "pytorch_libtorch"' in config and "INPUT__0" in config


def test_a_runner_given_threads_gives_torch_its_count_back(two_io_bundle):
    """torch's thread count belongs to the process: a runner timed at 1 thread must not leave
    the caller (a training run, the next test) at 1."""
    from toolkit import runtime

    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with runtime.load(two_io_bundle, "torchscript", threads=wanted) as runner:
        runner.infer(Bundle.open(two_io_bundle).golden()[0].inputs)
        assert torch.get_num_threads() == wanted
    assert torch.get_num_threads() == before


def test_a_runner_that_fails_to_load_gives_torch_its_count_back(tmp_path):
    from toolkit.backends.torchscript.runner import TorchScriptRunner
    from toolkit.spec import parse_input

    before = torch.get_num_threads()
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"not a TorchScript archive")
    runner = TorchScriptRunner(broken, inputs=[parse_input("x:1x3")], outputs=[],
                               threads=1 if before != 1 else 2)
    with pytest.raises(Exception):  # noqa: B017 - torch's own error type for a bad archive
        runner.activate()
    assert torch.get_num_threads() == before
