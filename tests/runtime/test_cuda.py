"""The CUDA path of every runner that can use it. Marked `gpu`; skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import requires
from toolkit import runtime
from toolkit.bundle import Bundle
from toolkit.export.pipeline import SourceOptions, export

pytestmark = [pytest.mark.gpu, requires(cuda=True)]


@pytest.fixture(scope="module")
def cuda_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "tuple"
    result = export("tests.models:TupleOut", ["onnx", "torchscript", "pt2"], out,
                    source_options=SourceOptions(device="cuda"))
    assert result.exit_code == 0, result.to_dict()
    return out


@pytest.mark.parametrize("fmt", ["eager", "compile", "torchscript", "pt2"])
def test_runner_on_cuda_matches_golden(cuda_bundle, fmt):
    bundle = Bundle.open(cuda_bundle)
    with runtime.load(bundle, format=fmt, device="cuda") as runner:
        for sample in bundle.golden():
            got = runner.infer(sample.inputs)
            for name, want in sample.outputs.items():
                np.testing.assert_allclose(got[name], want, atol=1e-3, rtol=1e-3)


def test_pt2_compiled_for_cuda_refuses_cpu(cuda_bundle):
    from toolkit.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable), runtime.load(cuda_bundle, format="pt2"):
        pass


@requires(ort_cuda=True)
def test_onnxruntime_cuda_provider(cuda_bundle):
    bundle = Bundle.open(cuda_bundle)
    with runtime.load(bundle, format="onnx", device="cuda") as runner:
        sample = bundle.golden()[0]
        got = runner.infer(sample.inputs)
        np.testing.assert_allclose(got["output_0"], sample.outputs["output_0"], atol=1e-3)
