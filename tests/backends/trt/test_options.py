"""TensorRT build options from CLI strings (pure logic; runs everywhere)."""

from __future__ import annotations

import json

import pytest

from tests.backends.trt.common import DYNAMIC
from toolkit.backends.trt import compat as trt_compat
from toolkit.backends.trt import options as trt_build
from toolkit.backends.trt import profiles as trt_profiles
from toolkit.backends.trt.options import BuildOptions
from toolkit.errors import UsageError


# -- options -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "size"),
    [("4G", 4 * 2**30), ("512M", 512 * 2**20), ("1.5GiB", 3 * 2**29), ("64MB", 64 * 2**20),
     ("1024B", 1024), ("256", 256 * 2**20), ("16k", 16 * 1024)],
)
def test_sizes_parse_in_binary_units(text, size):
    assert trt_build.parse_size(text) == size
    assert trt_build.parse_size(trt_build.format_size(size)) == size


@pytest.mark.parametrize("text", ["lots", "0", "-4G", "4X", "2000000000"])
def test_bad_sizes_are_usage_errors(text):
    with pytest.raises(UsageError, match="--workspace"):
        trt_build.parse_size(text)


def test_build_options_from_cli_strings():
    options = trt_build.build_options(
        [DYNAMIC], workspace="2G", optimization_level=5, timing_cache="/tmp/t.cache",
        version_compatible=True, hardware_compatibility="Ampere_Plus",
        extra_profiles=["x:1-1-1x4"],
    )
    assert options.workspace == 2 * 2**30
    assert options.optimization_level == 5
    assert options.hardware_compatibility == "ampere+"
    assert options.extra_profiles == ({"x": ((1, 4), (1, 4), (1, 4))},)
    assert options.strongly_typed is True
    assert BuildOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options


def test_cli_profiles_without_inputs_are_resolved_at_build_time():
    # the CLI doesn't know the inputs yet
    options = trt_build.build_options(extra_profiles=["x:1-2-4x4"])
    assert options.extra_profiles == ("x:1-2-4x4",)
    assert BuildOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    profiles = trt_profiles.resolve_profiles([DYNAMIC], options)
    assert profiles[1] == {"x": ((1, 4), (2, 4), (4, 4))}
    assert "--profile x:1-2-4x4" in trt_compat.rebuild_command("b", options)
    with pytest.raises(UsageError, match="outside the bundle's"):
        trt_profiles.resolve_profiles(
            [DYNAMIC], trt_build.build_options(extra_profiles=["x:1-2-64x4"]))
    with pytest.raises(UsageError, match="--profile 'x:1-2-4xq'"):
        trt_build.build_options(extra_profiles=["x:1-2-4xq"])  # syntax is checked at once


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimization_level": 6}, "--opt-level must be 0-5"),
        ({"workspace": 0}, "--workspace must be positive"),
        ({"hardware_compatibility": "turing"}, "--hardware-compat 'turing'"),
        ({"dla_core": -1}, "--dla-core must be 0 or more"),
        ({"dla_core": 0, "hardware_compatibility": "ampere+"}, "can't be combined"),
    ],
)
def test_invalid_build_options_are_refused(kwargs, message):
    with pytest.raises(UsageError, match=message):
        BuildOptions(**kwargs)


def test_strong_typing_cannot_be_switched_off():
    with pytest.raises(TypeError):
        BuildOptions(strongly_typed=False)  # type: ignore[call-arg]


def test_hardware_compatibility_aliases():
    assert trt_build.parse_hardware_compatibility("same-cc") == "same-compute-capability"
    assert trt_build.parse_hardware_compatibility("NONE") == "none"
    with pytest.raises(UsageError, match="ampere\\+"):
        trt_build.parse_hardware_compatibility("hopper")


def test_the_install_hint_keeps_jetpack_on_its_own_tensorrt():
    """pip's tensorrt wheels are for x86/SBSA GPUs: a Jetson keeps JetPack's TensorRT."""
    from toolkit.backends.trt.options import INSTALL_HINT

    assert "JetPack" in INSTALL_HINT and "10.3" in INSTALL_HINT
    assert "never pip" in INSTALL_HINT
