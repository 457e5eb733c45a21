"""TensorRT optimization profiles (pure logic; runs everywhere)."""

from __future__ import annotations

import pytest

from tests.backends.trt.common import DYNAMIC, STATIC
from toolkit.backends.trt import compat as trt_compat
from toolkit.backends.trt import profiles as trt_profiles
from toolkit.errors import UsageError
from toolkit.spec import parse_input


# -- profiles ------------------------------------------------------------------------------
def test_static_inputs_give_one_fixed_profile_and_need_none():
    profiles = trt_profiles.profiles_from_specs([STATIC])
    assert profiles == [{"x": ((2, 4), (2, 4), (2, 4))}]
    assert not trt_profiles.needs_profiles(profiles)
    assert not trt_profiles.needs_profiles(profiles, {"x": [2, 4]})
    # A dynamic ONNX pinned to one size by the bundle still needs its (fixed) profile.
    assert trt_profiles.needs_profiles(profiles, {"x": [-1, 4]})


def test_dynamic_batch_profile_follows_the_spec():
    profiles = trt_profiles.profiles_from_specs([DYNAMIC])
    assert profiles == [{"x": ((1, 4), (4, 4), (16, 4))}]
    assert trt_profiles.needs_profiles(profiles)


def test_extra_profiles_are_added_once_and_the_narrowest_fitting_one_is_chosen():
    small = trt_profiles.parse_profile("x:1-2-4x4", [DYNAMIC])
    big = trt_profiles.parse_profile("x:8-12-16x4", [DYNAMIC])
    profiles = trt_profiles.profiles_from_specs([DYNAMIC], [small, big, small])
    assert len(profiles) == 3
    assert profiles[1] == {"x": ((1, 4), (2, 4), (4, 4))}
    assert trt_profiles.select_profile(profiles, {"x": (2, 4)}) == 1
    assert trt_profiles.select_profile(profiles, {"x": (12, 4)}) == 2
    assert trt_profiles.select_profile(profiles, {"x": (6, 4)}) == 0  # only the full range fits
    with pytest.raises(UsageError, match="no optimization profile"):
        trt_profiles.select_profile(profiles, {"x": (32, 4)})


def test_profile_for_one_input_gives_the_others_its_batch():
    """The batch is one dimension of every input: a profile's batch is theirs too (the rest
    of an input left out keeps the bundle's range)."""
    mask = parse_input("mask:1-4-16x8:int64")
    profile = trt_profiles.parse_profile("x:1-2-4x4", [DYNAMIC, mask])
    assert profile["mask"] == ((1, 8), (2, 8), (4, 8))
    assert list(profile) == ["x", "mask"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("y:1-2-4x4", "no input named 'y'"),
        ("x:1-2-4x5", "dimension 1 is static"),
        ("x:1-2-32x4", "outside the bundle's 1-16"),
        ("x:1-2-4", "rank 2"),
        (" , ", "names no input"),
        ("x:4-2-1x4", "min <= opt <= max"),
    ],
)
def test_bad_profiles_name_the_problem(text, message):
    with pytest.raises(UsageError, match=message):
        trt_profiles.parse_profile(text, [DYNAMIC])


def test_profiles_on_a_static_model_are_refused():
    with pytest.raises(UsageError, match="every input of this model is static"):
        trt_profiles.profiles_from_specs([STATIC], [{"x": ((2, 4), (2, 4), (2, 4))}])


def test_profile_text_round_trips():
    profile = trt_profiles.parse_profile("x:1-2-4x4", [DYNAMIC])
    assert trt_profiles.parse_profile(trt_compat.describe_profile(profile), [DYNAMIC]) == profile
    assert trt_profiles.profile_from_json(trt_profiles.profile_to_json(profile)) == profile


# -- a --profile naming some inputs: shared dimensions follow, conflicts are refused --------
def _bert():
    from toolkit.spec import parse_inputs

    return parse_inputs(["input_ids:1-8xseq=16-128:int64:0-30522",
                         "attention_mask:1-8xseq:int64:0-2"])


def test_an_input_left_out_of_a_profile_takes_the_shared_dimensions_of_the_named_one():
    profile = trt_profiles.parse_profile("input_ids:1x16-32-64", _bert())
    assert profile == {"input_ids": ((1, 16), (1, 32), (1, 64)),
                       "attention_mask": ((1, 16), (1, 32), (1, 64))}
    # the batch alone: the sequence keeps the bundle's range in both
    profile = trt_profiles.parse_profile("attention_mask:1-2-4x16-64-128", _bert())
    assert profile["input_ids"] == ((1, 16), (2, 64), (4, 128))


def test_inputs_given_one_shared_dimension_two_ranges_are_refused_before_building():
    with pytest.raises(UsageError, match=r"dimension 'batch'.*input_ids dimension 0 gives "
                                         r"it 1-1-1 while attention_mask dimension 0 gives "
                                         r"1-1-8") as info:
        trt_profiles.parse_profile("input_ids:1x16-32-64,attention_mask:1-1-8x16-16-128",
                                   _bert())
    assert info.value.exit_code == 2
    with pytest.raises(UsageError, match="dimension 'seq'"):
        trt_profiles.parse_profile("input_ids:1x16-32-64,attention_mask:1x16-16-128", _bert())
    # the same range twice is one range
    same = trt_profiles.parse_profile("input_ids:1x16-32-64,attention_mask:1x16-32-64", _bert())
    assert same["attention_mask"] == ((1, 16), (1, 32), (1, 64))


def test_unshared_dimensions_of_an_input_left_out_keep_the_bundle_range():
    """Two images of different sizes share only the batch."""
    inputs = [parse_input("a:1-8x3x32-64"), parse_input("b:1-8x3x16-48")]
    profile = trt_profiles.parse_profile("a:2-2-2x3x32-40-64", inputs)
    assert profile["b"] == ((2, 3, 16), (2, 3, 16), (2, 3, 48))


# -- a --profile names dimensions as --input does (issue 29, #20) ---------------------------
def test_a_dimension_named_in_a_profile_is_reused_by_name_in_its_other_inputs():
    """`seq=16-64` once, `seq` in the other input: the range --input would give it."""
    text = "input_ids:1-2xseq=16-32-64,attention_mask:1-2xseq"
    profile = trt_profiles.parse_profile(text, _bert())
    assert profile == {"input_ids": ((1, 16), (1, 32), (2, 64)),
                       "attention_mask": ((1, 16), (1, 32), (2, 64))}
    # the names mean what they mean in --input: the same shapes as the ranges written out
    assert profile == trt_profiles.parse_profile(
        "input_ids:1-2x16-32-64,attention_mask:1-2x16-32-64", _bert())
    # the option group checks a --profile's syntax before the bundle is read (the CLI's path),
    # and the build resolves it against the bundle's inputs
    from toolkit.backends.trt.options import build_options

    options = build_options(extra_profiles=[text])
    assert trt_profiles.resolve_profiles(_bert(), options)[1] == profile


def test_the_cli_takes_a_profile_with_a_shared_dimension_name():
    from tests.cli.test_groups import capture
    from toolkit import BuildOptions

    text = "ids:1-2xseq=8-16,mask:1-2xseq"  # the round-3 case
    result, built = capture(BuildOptions)("--profile", text)
    assert result.exit_code == 0, result.output
    assert built.extra_profiles == (text,)
    inputs = [parse_input("ids:1-4xseq=8-32:int64"), parse_input("mask:1-4xseq=8-32:int64")]
    assert trt_profiles.parse_profile(text, inputs)["mask"] == ((1, 8), (1, 8), (2, 16))


def test_a_name_defined_in_a_profile_fills_an_input_left_out_through_the_bundle():
    """Unnamed inputs still follow the shared dimensions the profile's inputs give."""
    inputs = [*_bert(), parse_input("token_type_ids:1-8xseq=16-128:int64:0-2")]
    profile = trt_profiles.parse_profile("input_ids:1xseq=16-64,attention_mask:1xseq", inputs)
    assert profile["token_type_ids"] == ((1, 16), (1, 16), (1, 64))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # used, never given a range
        ("input_ids:1xseq", "dimension 'seq' names no dimension given a size"),
        # given two ranges
        ("input_ids:1xseq=16-64,attention_mask:1xseq=16-32", "'seq' is given two sizes"),
        # a name the bundle gives another dimension: it would say two dimensions are one
        ("input_ids:seq=1-2x16-64", "'seq' is dimension 1 of input_ids in the bundle"),
        ("input_ids:1xbatch=16-64", "named 'batch', which is dimension 0's name"),
    ],
)
def test_profile_dimension_names_are_checked_like_inputs(text, message):
    with pytest.raises(UsageError, match=message) as info:
        trt_profiles.parse_profile(text, _bert())
    assert info.value.exit_code == 2
    assert str(info.value).startswith(f"--profile '{text}'")
    assert "--input:" not in str(info.value)  # a --profile mistake is named as one
