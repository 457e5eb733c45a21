"""TensorRT versions, network checks, engine records and the pre-load check (pure)."""

from __future__ import annotations

import json

import pytest

from tests.backends.trt.common import DYNAMIC, STATIC
from toolkit.backends.trt import bindings as trt_bindings
from toolkit.backends.trt import compat as trt_compat
from toolkit.backends.trt import profiles as trt_profiles
from toolkit.backends.trt.options import BuildOptions
from toolkit.errors import BackendUnavailable, UsageError


# -- versions ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "version"),
    [("10.3.0.30", (10, 3, 0, 30)), ("11.0.0b1", (11, 0, 0)), ("10.9.0.post12.dev1", (10, 9, 0))],
)
def test_version_parsing(text, version):
    assert trt_compat.parse_version(text) == version


def test_unparsable_version_is_refused():
    with pytest.raises(UsageError):
        trt_compat.parse_version("unknown")


def test_tensorrt_10_needs_the_strongly_typed_flag():
    plan = trt_compat.api_plan("10.3.0")
    assert plan.network_flags == ("STRONGLY_TYPED",)
    assert plan.weak_typing_available and not plan.same_compute_capability
    assert trt_compat.api_plan("10.9.0.34").same_compute_capability


def test_tensorrt_11_is_strongly_typed_without_flags():
    plan = trt_compat.api_plan("11.0.0.114")
    assert plan.network_flags == ()
    assert not plan.weak_typing_available
    assert plan.same_compute_capability


def test_tensorrt_older_than_10_is_unavailable():
    with pytest.raises(BackendUnavailable, match="TensorRT 10 or newer") as info:
        trt_compat.api_plan("8.6.1")
    assert info.value.exit_code == 3


def test_same_compute_capability_needs_10_9():
    options = BuildOptions(hardware_compatibility="same-compute-capability")
    with pytest.raises(UsageError, match="10.9"):
        trt_compat.check_options_supported(options, trt_compat.api_plan("10.3.0"))
    trt_compat.check_options_supported(options, trt_compat.api_plan("10.9.0"))


# -- network checks and messages -----------------------------------------------------------
def test_network_inputs_are_checked_against_the_bundle():
    assert trt_profiles.check_network_inputs({"x": [-1, 4]}, [DYNAMIC]) == []
    assert trt_profiles.check_network_inputs({"x": [2, 4]}, [STATIC]) == []
    assert "don't match" in trt_profiles.check_network_inputs({"image": [-1, 4]}, [DYNAMIC])[0]
    assert "fixed to 1" in trt_profiles.check_network_inputs({"x": [1, 4]}, [DYNAMIC])[0]
    assert "rank 3" in trt_profiles.check_network_inputs({"x": [-1, 4, 1]}, [DYNAMIC])[0]


def test_parser_errors_name_the_nodes():
    errors = [
        {"desc": "Unsupported\n op", "node": 3, "node_name": "attn/qk", "node_operator": "Foo"},
        {"desc": "bad attr", "node": 7, "node_name": "", "node_operator": ""},
        {"desc": "x", "node": -1}, {"desc": "y", "node": -1},
    ]
    text = trt_compat.format_parser_errors("m.onnx", errors)
    assert text.startswith("TensorRT could not parse m.onnx: node 'attn/qk' (Foo): Unsupported op")
    assert "node #7: bad attr" in text and "graph: x" in text and "(+1 more)" in text
    assert "\n" not in text
    assert "gave no reason" in trt_compat.format_parser_errors("m.onnx", [])


def test_last_errors_keeps_only_errors():
    messages = [("WARNING", "w"), ("ERROR", "first"), ("INFO", "i"), ("ERROR", "second\nline")]
    assert trt_compat.last_errors(messages) == "first; second line"
    assert trt_compat.last_errors([("WARNING", "w")]) == ""


def test_io_binding_checks():
    assert trt_bindings.io_problems(["x"], ["y", "aux"], ["x"], ["y"]) == []
    assert "engine inputs" in trt_bindings.io_problems(["x", "m"], ["y"], ["x"], ["y"])[0]
    assert "['z']" in trt_bindings.io_problems(["x"], ["y"], ["x"], ["z"])[0]
    assert trt_bindings.buffer_dtype("x", "HALF") == "float16"
    with pytest.raises(UsageError, match="FP8"):
        trt_bindings.buffer_dtype("x", "FP8")
    assert trt_bindings.unresolved_dims((-1, 4)) and not trt_bindings.unresolved_dims((2, 4))


# -- engine record and preflight -----------------------------------------------------------
A100 = {"name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0", "integrated": False}
A30 = {"name": "NVIDIA A30", "compute_capability": "8.0", "integrated": False}
L4 = {"name": "NVIDIA L4", "compute_capability": "8.9", "integrated": False}
T4 = {"name": "Tesla T4", "compute_capability": "7.5", "integrated": False}
ORIN = {"name": "Orin", "compute_capability": "8.7", "integrated": True}


def make_record(options: BuildOptions | None = None, gpu=A100, trt="10.3.0",
                arch="x86_64") -> dict:
    options = options or BuildOptions(workspace=4 * 2**30)
    return trt_compat.engine_record(
        trt_version=trt, gpu=gpu, platform=arch, options=options,
        profiles=trt_profiles.profiles_from_specs([DYNAMIC], options.extra_profiles),
        build_seconds=12.3456, size_bytes=1234, network_layers=3, engine_layers=1,
        timing_cache="created", built_at="2025-01-01T00:00:00+00:00",
    )


def here(gpu=A100, trt="10.3.0", arch="x86_64", dla=None) -> dict:
    return trt_compat.machine(trt, gpu, arch, dla)


def test_engine_record_fields_are_json_ready():
    record = make_record()
    assert json.loads(json.dumps(record)) == record
    assert record["tensorrt"] == "10.3.0"
    assert record["gpu"]["compute_capability"] == "8.0"
    assert record["compatibility"] == {"version_compatible": False, "hardware": "none"}
    assert record["strongly_typed"] is True
    assert record["profiles"] == [{"x": {"min": [1, 4], "opt": [4, 4], "max": [16, 4]}}]
    assert record["build"]["seconds"] == 12.346
    assert record["build"]["options"]["workspace"] == 4 * 2**30
    assert record["layers"] == {"network": 3, "engine": 1}
    assert record["size_bytes"] == 1234


def test_preflight_passes_on_the_same_machine():
    decision = trt_compat.preflight(make_record(), here())
    assert decision.ok and not decision.warnings
    decision.raise_if_blocked()


def test_preflight_blocks_another_tensorrt_version_with_the_rebuild_command():
    decision = trt_compat.preflight(make_record(), here(trt="10.4.0"), bundle="out/my model")
    assert not decision.ok
    assert "built with TensorRT 10.3.0, this machine has 10.4.0" in decision.reason
    assert decision.rebuild == "toolkit export 'out/my model' --to trt --workspace 4G"
    with pytest.raises(BackendUnavailable, match="rebuild it here: toolkit export") as info:
        decision.raise_if_blocked()
    assert info.value.exit_code == 3


def test_version_compatible_engines_run_on_newer_tensorrt_only():
    record = make_record(BuildOptions(version_compatible=True))
    assert trt_compat.preflight(record, here(trt="10.8.0")).ok
    assert trt_compat.preflight(record, here(trt="11.0.0")).ok
    older = trt_compat.preflight(record, here(trt="10.2.0"))
    assert not older.ok and "that version or newer" in older.reason
    assert "--version-compatible" in older.rebuild
    # TensorRT's version compatibility reaches the next major release, no further
    later = trt_compat.preflight(record, here(trt="12.0.0"))
    assert not later.ok and "up to TensorRT 11.x" in later.reason


def test_compute_capability_mismatch_blocks_without_hardware_compatibility():
    decision = trt_compat.preflight(make_record(), here(gpu=L4))
    assert not decision.ok
    assert "built for NVIDIA A100-SXM4-40GB (sm 8.0), this GPU is NVIDIA L4 (sm 8.9)" in (
        decision.reason
    )
    assert "--hardware-compat ampere+" in decision.reason


def test_ampere_plus_engines_run_on_newer_gpus_but_not_older():
    record = make_record(BuildOptions(hardware_compatibility="ampere+"))
    assert trt_compat.preflight(record, here(gpu=L4)).ok
    turing = trt_compat.preflight(record, here(gpu=T4))
    assert not turing.ok and "Tesla T4 (sm 7.5)" in turing.reason
    assert "--hardware-compat ampere+" in turing.rebuild


def test_same_compute_capability_level():
    record = make_record(BuildOptions(hardware_compatibility="same-compute-capability"))
    decision = trt_compat.preflight(record, here(gpu=A30))
    assert decision.ok and not decision.warnings
    assert not trt_compat.preflight(record, here(gpu=L4)).ok


def test_same_compute_capability_other_model_loads_with_a_warning():
    decision = trt_compat.preflight(make_record(), here(gpu=A30))
    assert decision.ok
    assert "tuned on NVIDIA A100-SXM4-40GB" in decision.warnings[0]


@pytest.mark.parametrize(
    ("machine", "reason"),
    [
        (here(gpu=None), "no CUDA GPU is visible here"),
        (here(trt=None), "TensorRT is not installed here (pip install 'toolkit[trt]'"),
        (here(arch="aarch64"), "built on x86_64, this machine is aarch64"),
    ],
)
def test_preflight_blocks_machines_that_cannot_load_it(machine, reason):
    decision = trt_compat.preflight(make_record(), machine, bundle="b")
    assert not decision.ok
    assert reason in decision.reason
    assert decision.rebuild.startswith("toolkit export b --to trt")


def test_preflight_tells_jetson_from_discrete_gpus():
    record = make_record(gpu=ORIN, arch="aarch64")
    assert trt_compat.preflight(record, here(gpu=ORIN, arch="aarch64")).ok
    sbsa = dict(ORIN, integrated=False)
    assert "integrated (Jetson)" in trt_compat.preflight(
        record, here(gpu=sbsa, arch="aarch64")).reason


def test_preflight_checks_the_dla_core():
    record = make_record(BuildOptions(dla_core=1), gpu=ORIN, arch="aarch64")
    assert trt_compat.preflight(record, here(gpu=ORIN, arch="aarch64", dla=2)).ok
    blocked = trt_compat.preflight(record, here(gpu=ORIN, arch="aarch64", dla=1))
    assert not blocked.ok and "DLA core 1" in blocked.reason
    assert "--dla-core 1" in blocked.rebuild
