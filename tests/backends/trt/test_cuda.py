"""CUDA buffers for the TensorRT runner: the parts that need no GPU (bf16 on the host, the
choice of backend and its refusal without a GPU) run everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import skip_reason
from toolkit.backends.trt.cuda import (
    narrow_to_bfloat16,
    numpy_buffer_dtype,
    open_device,
    widen_bfloat16,
)
from toolkit.errors import BackendUnavailable


def test_bfloat16_round_trip_matches_torch():
    torch = pytest.importorskip("torch")
    values = np.random.default_rng(0).normal(scale=100, size=4096).astype(np.float32)
    values[:4] = [0.0, -0.0, 1.0, 3.0e38]
    ours = widen_bfloat16(narrow_to_bfloat16(values))
    theirs = torch.from_numpy(values).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_bfloat16_keeps_nan_and_infinity():
    torch = pytest.importorskip("torch")
    bits = np.array([0x7F800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FC00000, 0xFF800001],
                    dtype=np.uint32)
    values = np.concatenate([bits.view(np.float32), [np.inf, -np.inf]]).astype(np.float32)
    narrowed = narrow_to_bfloat16(values)
    widened = widen_bfloat16(narrowed)
    assert np.isnan(widened[:5]).all()  # rounding a NaN's payload reached inf or 0 before
    assert list(widened[5:]) == [np.inf, -np.inf]
    theirs = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy()
    np.testing.assert_array_equal(np.signbit(widened), np.signbit(values))
    assert (narrowed[5:] == theirs[5:].view(np.uint16)).all()


def test_buffer_dtypes():
    assert numpy_buffer_dtype("bfloat16") == np.uint16
    assert numpy_buffer_dtype("float16") == np.float16
    assert numpy_buffer_dtype("int64") == np.int64


@pytest.mark.skipif(skip_reason(cuda=True) is None, reason="a CUDA GPU is here")
def test_without_a_gpu_opening_the_device_is_unavailable_not_a_crash():
    with pytest.raises(BackendUnavailable, match="CUDA"):
        open_device("cuda", "run a TensorRT engine")
