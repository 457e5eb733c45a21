"""TensorRT optimization profiles (pure logic; runs everywhere)."""

from __future__ import annotations

import pytest

from tests.trt.common import DYNAMIC, STATIC
from toolkit.errors import UsageError
from toolkit.spec import parse_input
from toolkit.tensorrt import compat as trt_compat
from toolkit.tensorrt import profiles as trt_profiles


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


def test_profile_for_one_input_keeps_the_others_bundle_range():
    mask = parse_input("mask:1-4-16x8:int64")
    profile = trt_profiles.parse_profile("x:1-2-4x4", [DYNAMIC, mask])
    assert profile["mask"] == (mask.min, mask.opt, mask.max)
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
