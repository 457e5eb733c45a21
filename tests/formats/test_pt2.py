"""pt2: torch.export + AOTInductor, a package torch loads without the Python model; Triton
serves it on the torch_aoti platform (beta, batch 1)."""

from __future__ import annotations

from tests.helpers import assert_reproduces_golden, triton_config
from toolkit.bundle import Bundle


def test_the_package_reproduces_the_golden_outputs_without_the_model_class(two_io_bundle):
    bundle = Bundle.open(two_io_bundle)
    assert bundle.artifact("pt2", "fp32").path.endswith(".pt2")
    assert_reproduces_golden(two_io_bundle, "pt2", rtol=1e-4, atol=1e-5)


def test_triton_serves_it_on_torch_aoti_at_batch_one(two_io_bundle, tmp_path):
    config = triton_config(two_io_bundle, "pt2", tmp_path / "repo")
    assert 'platform: "torch_aoti"' in config
    # batch 1 spelled as Triton's fixed shape: no batching dimension, the 1 in the dims
    assert "max_batch_size: 0" in config and "dims: [ 1, 3 ]" in config
