"""toolkit/spec.py on its own: --input parsing, shared dimensions, batch ranges and random
inputs."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.errors import UsageError
from toolkit.spec import (
    TensorSpec,
    batch_range,
    canonical_precision,
    parse_input,
    parse_inputs,
    random_inputs,
    shared_dims,
)


def test_an_input_parses_into_min_opt_max_dtype_and_values():
    spec = parse_input("ids:1-4xseq=8-32:int64:0-30522")
    assert spec.min == (1, 8) and spec.opt == (1, 8) and spec.max == (4, 32)
    assert spec.dtype == "int64" and spec.values == (0, 30522)
    assert spec.dim_name(1) == "seq" and spec.has_dynamic_batch


def test_min_opt_max_and_steps():
    spec = parse_input("x:1-2-8x3x112-224/14x112-224/14")
    assert spec.min == (1, 3, 112, 112) and spec.opt == (2, 3, 112, 112)
    assert spec.max == (8, 3, 224, 224) and spec.step(2) == 14


def test_a_named_dimension_is_one_dimension_across_inputs():
    ids, mask = parse_inputs(["ids:1-4xseq=8-32:int64", "mask:1-4xseq:int64:mask"])
    assert mask.max == (4, 32) and mask.mask == "right"
    names, notes = shared_dims([ids, mask])
    assert names[("ids", 1)] == names[("mask", 1)] == "seq" and not notes
    assert names[("ids", 0)] == "batch"


@pytest.mark.parametrize("text", ["x", "x:", "x:0x3", "x:8-1x3", "x:2x3:float99",
                                  "x:1-4x-3"])
def test_bad_inputs_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_inputs([text])


def test_batch_range_is_what_every_input_allows():
    a = TensorSpec("a", "float32", (1, 2), (2, 2), (8, 2))
    b = TensorSpec("b", "float32", (2, 5), (2, 5), (4, 5))
    assert batch_range([a, b]) == (2, 2, 4)
    assert batch_range([TensorSpec("c", "float32", (1, 2), (1, 2), (1, 2))]) is None


def test_random_inputs_are_seeded_and_keep_integer_values_in_range():
    ids = parse_input("ids:1-4x16:int64:0-11")
    x = parse_input("x:1-4x3")
    first = random_inputs([ids, x], batch=3, seed=5)
    again = random_inputs([ids, x], batch=3, seed=5)
    assert first["ids"].shape == (3, 16) and first["x"].shape == (3, 3)
    assert first["ids"].min() >= 0 and first["ids"].max() < 11
    np.testing.assert_array_equal(first["x"], again["x"])


def test_precision_names_are_canonical():
    assert canonical_precision("FP16") == "fp16" and canonical_precision("int8") == "int8"
    with pytest.raises(UsageError):
        canonical_precision("fp7")
