"""TensorRT layer: the pure planning logic runs everywhere; real engines need TensorRT and a GPU.

Engine-building tests are marked `gpu` and skipped, with the reason, through
`tests.helpers.requires` when TensorRT or a CUDA GPU is missing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import requires
from toolkit.errors import BackendUnavailable, ExportFailed, UsageError
from toolkit.exporters import trt_plan
from toolkit.exporters.trt_plan import BuildOptions
from toolkit.spec import OutputSpec, TensorSpec, parse_input

needs_trt_gpu = requires(tensorrt=True, cuda=True)
needs_no_trt = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here"
)


def tiny_onnx(path: Path, batch: str | int = "batch") -> Path:
    """y = relu(x @ W + b), x: [batch, 4] -> y: [batch, 3], as a real ONNX file."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"], name="matmul"),
            helper.make_node("Add", ["xw", "b"], ["z"], name="add"),
            helper.make_node("Relu", ["z"], ["y"], name="relu"),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


DYNAMIC = parse_input("x:1-4-16x4")
STATIC = TensorSpec.static("x", (2, 4))


# -- profiles ------------------------------------------------------------------------------
def test_static_inputs_give_one_fixed_profile_and_need_none():
    profiles = trt_plan.profiles_from_specs([STATIC])
    assert profiles == [{"x": ((2, 4), (2, 4), (2, 4))}]
    assert not trt_plan.needs_profiles(profiles)
    assert not trt_plan.needs_profiles(profiles, {"x": [2, 4]})
    # A dynamic ONNX pinned to one size by the bundle still needs its (fixed) profile.
    assert trt_plan.needs_profiles(profiles, {"x": [-1, 4]})


def test_dynamic_batch_profile_follows_the_spec():
    profiles = trt_plan.profiles_from_specs([DYNAMIC])
    assert profiles == [{"x": ((1, 4), (4, 4), (16, 4))}]
    assert trt_plan.needs_profiles(profiles)


def test_extra_profiles_are_added_once_and_the_narrowest_fitting_one_is_chosen():
    small = trt_plan.parse_profile("x:1-2-4x4", [DYNAMIC])
    big = trt_plan.parse_profile("x:8-12-16x4", [DYNAMIC])
    profiles = trt_plan.profiles_from_specs([DYNAMIC], [small, big, small])
    assert len(profiles) == 3
    assert profiles[1] == {"x": ((1, 4), (2, 4), (4, 4))}
    assert trt_plan.select_profile(profiles, {"x": (2, 4)}) == 1
    assert trt_plan.select_profile(profiles, {"x": (12, 4)}) == 2
    assert trt_plan.select_profile(profiles, {"x": (6, 4)}) == 0  # only the full range fits
    with pytest.raises(UsageError, match="no optimization profile"):
        trt_plan.select_profile(profiles, {"x": (32, 4)})


def test_profile_for_one_input_keeps_the_others_bundle_range():
    mask = parse_input("mask:1-4-16x8:int64")
    profile = trt_plan.parse_profile("x:1-2-4x4", [DYNAMIC, mask])
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
        trt_plan.parse_profile(text, [DYNAMIC])


def test_profiles_on_a_static_model_are_refused():
    with pytest.raises(UsageError, match="every input of this model is static"):
        trt_plan.profiles_from_specs([STATIC], [{"x": ((2, 4), (2, 4), (2, 4))}])


def test_profile_text_round_trips():
    profile = trt_plan.parse_profile("x:1-2-4x4", [DYNAMIC])
    assert trt_plan.parse_profile(trt_plan.describe_profile(profile), [DYNAMIC]) == profile
    assert trt_plan.profile_from_json(trt_plan.profile_to_json(profile)) == profile


# -- options -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "size"),
    [("4G", 4 * 2**30), ("512M", 512 * 2**20), ("1.5GiB", 3 * 2**29), ("64MB", 64 * 2**20),
     ("1024B", 1024), ("256", 256 * 2**20), ("16k", 16 * 1024)],
)
def test_sizes_parse_in_binary_units(text, size):
    assert trt_plan.parse_size(text) == size
    assert trt_plan.parse_size(trt_plan.format_size(size)) == size


@pytest.mark.parametrize("text", ["lots", "0", "-4G", "4X", "2000000000"])
def test_bad_sizes_are_usage_errors(text):
    with pytest.raises(UsageError, match="--workspace"):
        trt_plan.parse_size(text)


def test_build_options_from_cli_strings():
    options = trt_plan.build_options(
        [DYNAMIC], workspace="2G", optimization_level=5, timing_cache="/tmp/t.cache",
        version_compatible=True, hardware_compatibility="Ampere_Plus",
        profiles=["x:1-1-1x4"],
    )
    assert options.workspace == 2 * 2**30
    assert options.optimization_level == 5
    assert options.hardware_compatibility == "ampere+"
    assert options.extra_profiles == ({"x": ((1, 4), (1, 4), (1, 4))},)
    assert options.strongly_typed is True
    assert BuildOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options


def test_cli_profiles_without_inputs_are_resolved_at_build_time():
    options = trt_plan.build_options(profiles=["x:1-2-4x4"])  # the CLI doesn't know inputs yet
    assert options.extra_profiles == ("x:1-2-4x4",)
    assert BuildOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    profiles = trt_plan.resolve_profiles([DYNAMIC], options)
    assert profiles[1] == {"x": ((1, 4), (2, 4), (4, 4))}
    assert "--profile x:1-2-4x4" in trt_plan.rebuild_command("b", options)
    with pytest.raises(UsageError, match="outside the bundle's"):
        trt_plan.resolve_profiles([DYNAMIC], trt_plan.build_options(profiles=["x:1-2-64x4"]))
    with pytest.raises(UsageError, match="--profile 'x:1-2-4xq'"):
        trt_plan.build_options(profiles=["x:1-2-4xq"])  # syntax is checked at once


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
    assert trt_plan.parse_hardware_compatibility("same-cc") == "same-compute-capability"
    assert trt_plan.parse_hardware_compatibility("NONE") == "none"
    with pytest.raises(UsageError, match="ampere\\+"):
        trt_plan.parse_hardware_compatibility("hopper")


# -- versions ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "version"),
    [("10.3.0.30", (10, 3, 0, 30)), ("11.0.0b1", (11, 0, 0)), ("10.9.0.post12.dev1", (10, 9, 0))],
)
def test_version_parsing(text, version):
    assert trt_plan.parse_version(text) == version


def test_unparsable_version_is_refused():
    with pytest.raises(UsageError):
        trt_plan.parse_version("unknown")


def test_tensorrt_10_needs_the_strongly_typed_flag():
    plan = trt_plan.api_plan("10.3.0")
    assert plan.network_flags == ("STRONGLY_TYPED",)
    assert plan.weak_typing_available and not plan.same_compute_capability
    assert trt_plan.api_plan("10.9.0.34").same_compute_capability


def test_tensorrt_11_is_strongly_typed_without_flags():
    plan = trt_plan.api_plan("11.0.0.114")
    assert plan.network_flags == ()
    assert not plan.weak_typing_available
    assert plan.same_compute_capability


def test_tensorrt_older_than_10_is_unavailable():
    with pytest.raises(BackendUnavailable, match="TensorRT 10 or newer") as info:
        trt_plan.api_plan("8.6.1")
    assert info.value.exit_code == 3


def test_same_compute_capability_needs_10_9():
    options = BuildOptions(hardware_compatibility="same-compute-capability")
    with pytest.raises(UsageError, match="10.9"):
        trt_plan.check_options_supported(options, trt_plan.api_plan("10.3.0"))
    trt_plan.check_options_supported(options, trt_plan.api_plan("10.9.0"))


# -- network checks and messages -----------------------------------------------------------
def test_network_inputs_are_checked_against_the_bundle():
    assert trt_plan.check_network_inputs({"x": [-1, 4]}, [DYNAMIC]) == []
    assert trt_plan.check_network_inputs({"x": [2, 4]}, [STATIC]) == []
    assert "don't match" in trt_plan.check_network_inputs({"image": [-1, 4]}, [DYNAMIC])[0]
    assert "fixed to 1" in trt_plan.check_network_inputs({"x": [1, 4]}, [DYNAMIC])[0]
    assert "rank 3" in trt_plan.check_network_inputs({"x": [-1, 4, 1]}, [DYNAMIC])[0]


def test_parser_errors_name_the_nodes():
    errors = [
        {"desc": "Unsupported\n op", "node": 3, "node_name": "attn/qk", "node_operator": "Foo"},
        {"desc": "bad attr", "node": 7, "node_name": "", "node_operator": ""},
        {"desc": "x", "node": -1}, {"desc": "y", "node": -1},
    ]
    text = trt_plan.format_parser_errors("m.onnx", errors)
    assert text.startswith("TensorRT could not parse m.onnx: node 'attn/qk' (Foo): Unsupported op")
    assert "node #7: bad attr" in text and "graph: x" in text and "(+1 more)" in text
    assert "\n" not in text
    assert "gave no reason" in trt_plan.format_parser_errors("m.onnx", [])


def test_last_errors_keeps_only_errors():
    messages = [("WARNING", "w"), ("ERROR", "first"), ("INFO", "i"), ("ERROR", "second\nline")]
    assert trt_plan.last_errors(messages) == "first; second line"
    assert trt_plan.last_errors([("WARNING", "w")]) == ""


def test_io_binding_checks():
    assert trt_plan.io_problems(["x"], ["y", "aux"], ["x"], ["y"]) == []
    assert "engine inputs" in trt_plan.io_problems(["x", "m"], ["y"], ["x"], ["y"])[0]
    assert "['z']" in trt_plan.io_problems(["x"], ["y"], ["x"], ["z"])[0]
    assert trt_plan.buffer_dtype("x", "HALF") == "float16"
    with pytest.raises(UsageError, match="FP8"):
        trt_plan.buffer_dtype("x", "FP8")
    assert trt_plan.unresolved_dims((-1, 4)) and not trt_plan.unresolved_dims((2, 4))


# -- engine record and preflight -----------------------------------------------------------
A100 = {"name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0", "integrated": False}
A30 = {"name": "NVIDIA A30", "compute_capability": "8.0", "integrated": False}
L4 = {"name": "NVIDIA L4", "compute_capability": "8.9", "integrated": False}
T4 = {"name": "Tesla T4", "compute_capability": "7.5", "integrated": False}
ORIN = {"name": "Orin", "compute_capability": "8.7", "integrated": True}


def make_record(options: BuildOptions | None = None, gpu=A100, trt="10.3.0",
                arch="x86_64") -> dict:
    options = options or BuildOptions(workspace=4 * 2**30)
    return trt_plan.engine_record(
        trt_version=trt, gpu=gpu, platform=arch, options=options,
        profiles=trt_plan.profiles_from_specs([DYNAMIC], options.extra_profiles),
        build_seconds=12.3456, size_bytes=1234, network_layers=3, engine_layers=1,
        timing_cache="created", built_at="2025-01-01T00:00:00+00:00",
    )


def here(gpu=A100, trt="10.3.0", arch="x86_64", dla=None) -> dict:
    return trt_plan.machine(trt, gpu, arch, dla)


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
    decision = trt_plan.preflight(make_record(), here())
    assert decision.ok and not decision.warnings
    decision.raise_if_blocked()


def test_preflight_blocks_another_tensorrt_version_with_the_rebuild_command():
    decision = trt_plan.preflight(make_record(), here(trt="10.4.0"), bundle="out/my model")
    assert not decision.ok
    assert "built with TensorRT 10.3.0, this machine has 10.4.0" in decision.reason
    assert decision.rebuild == "toolkit export 'out/my model' --to trt --workspace 4G"
    with pytest.raises(BackendUnavailable, match="rebuild it here: toolkit export") as info:
        decision.raise_if_blocked()
    assert info.value.exit_code == 3


def test_version_compatible_engines_run_on_newer_tensorrt_only():
    record = make_record(BuildOptions(version_compatible=True))
    assert trt_plan.preflight(record, here(trt="10.8.0")).ok
    assert trt_plan.preflight(record, here(trt="11.0.0")).ok
    older = trt_plan.preflight(record, here(trt="10.2.0"))
    assert not older.ok and "that version or newer" in older.reason
    assert "--version-compatible" in older.rebuild


def test_compute_capability_mismatch_blocks_without_hardware_compatibility():
    decision = trt_plan.preflight(make_record(), here(gpu=L4))
    assert not decision.ok
    assert "built for NVIDIA A100-SXM4-40GB (sm 8.0), this GPU is NVIDIA L4 (sm 8.9)" in (
        decision.reason
    )
    assert "--hardware-compat ampere+" in decision.reason


def test_ampere_plus_engines_run_on_newer_gpus_but_not_older():
    record = make_record(BuildOptions(hardware_compatibility="ampere+"))
    assert trt_plan.preflight(record, here(gpu=L4)).ok
    turing = trt_plan.preflight(record, here(gpu=T4))
    assert not turing.ok and "Tesla T4 (sm 7.5)" in turing.reason
    assert "--hardware-compat ampere+" in turing.rebuild


def test_same_compute_capability_level():
    record = make_record(BuildOptions(hardware_compatibility="same-compute-capability"))
    decision = trt_plan.preflight(record, here(gpu=A30))
    assert decision.ok and not decision.warnings
    assert not trt_plan.preflight(record, here(gpu=L4)).ok


def test_same_compute_capability_other_model_loads_with_a_warning():
    decision = trt_plan.preflight(make_record(), here(gpu=A30))
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
    decision = trt_plan.preflight(make_record(), machine, bundle="b")
    assert not decision.ok
    assert reason in decision.reason
    assert decision.rebuild.startswith("toolkit export b --to trt")


def test_preflight_tells_jetson_from_discrete_gpus():
    record = make_record(gpu=ORIN, arch="aarch64")
    assert trt_plan.preflight(record, here(gpu=ORIN, arch="aarch64")).ok
    sbsa = dict(ORIN, integrated=False)
    assert "integrated (Jetson)" in trt_plan.preflight(
        record, here(gpu=sbsa, arch="aarch64")).reason


def test_preflight_checks_the_dla_core():
    record = make_record(BuildOptions(dla_core=1), gpu=ORIN, arch="aarch64")
    assert trt_plan.preflight(record, here(gpu=ORIN, arch="aarch64", dla=2)).ok
    blocked = trt_plan.preflight(record, here(gpu=ORIN, arch="aarch64", dla=1))
    assert not blocked.ok and "DLA core 1" in blocked.reason
    assert "--dla-core 1" in blocked.rebuild


# -- without TensorRT ----------------------------------------------------------------------
@needs_no_trt
def test_build_engine_without_tensorrt_exits_3_and_leaves_nothing(tmp_path):
    from toolkit.exporters.tensorrt import build_engine

    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine = tmp_path / "model.engine"
    with pytest.raises(BackendUnavailable) as info:
        build_engine(onnx_path, engine, [DYNAMIC], BuildOptions())
    assert info.value.exit_code == 3
    assert "pip install 'toolkit[trt]'" in str(info.value)
    assert "target GPU machine" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_build_engine_names_a_missing_onnx_file(tmp_path):
    from toolkit.exporters.tensorrt import build_engine

    with pytest.raises(UsageError, match="ONNX model not found"):
        build_engine(tmp_path / "nope.onnx", tmp_path / "m.engine", [DYNAMIC], BuildOptions())
    assert list(tmp_path.iterdir()) == []


@needs_no_trt
def test_runner_without_tensorrt_is_unavailable_with_the_rebuild_command(tmp_path):
    from toolkit.runtime.tensorrt import TensorRTRunner

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    runner = TensorRTRunner(engine, inputs=[DYNAMIC], outputs=[OutputSpec("y")],
                            record=make_record())
    assert not runner.is_active  # construction takes no resources
    with pytest.raises(BackendUnavailable, match="rebuild it here: toolkit export") as info:
        runner.activate()
    assert info.value.exit_code == 3
    assert str(tmp_path) in str(info.value)
    named = TensorRTRunner(engine, inputs=[DYNAMIC], outputs=[OutputSpec("y")],
                           record=make_record(), bundle_root="out/resnet")
    with pytest.raises(BackendUnavailable, match="toolkit export out/resnet --to trt"):
        named.activate()
    bare = TensorRTRunner(engine, inputs=[DYNAMIC], outputs=[OutputSpec("y")])
    with pytest.raises(BackendUnavailable, match="pip install 'toolkit\\[trt\\]'"):
        bare.activate()


def test_runner_refuses_a_cpu_device(tmp_path):
    from toolkit.runtime.tensorrt import TensorRTRunner

    runner = TensorRTRunner(tmp_path / "m.engine", inputs=[DYNAMIC], outputs=[OutputSpec("y")],
                            device="cpu")
    assert runner.format == "trt"
    with pytest.raises(UsageError, match="CUDA device"):
        runner.activate()


# -- with TensorRT and a GPU ---------------------------------------------------------------
def reference(onnx_path: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(["y"], feed)[0]


@pytest.mark.gpu
@needs_trt_gpu
def test_engine_builds_records_and_matches_onnxruntime(tmp_path):
    import tensorrt

    from toolkit.exporters.tensorrt import build_engine
    from toolkit.runtime.tensorrt import TensorRTRunner

    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    options = trt_plan.build_options([DYNAMIC], workspace="256M", profiles=["x:1-1-2x4"],
                                     timing_cache=str(tmp_path / "timing.cache"))
    engine = tmp_path / "model.engine"
    record = build_engine(onnx_path, engine, [DYNAMIC], options)
    assert engine.stat().st_size == record["size_bytes"] > 0
    assert record["tensorrt"] == tensorrt.__version__
    assert len(record["profiles"]) == 2
    assert record["build"]["timing_cache"] == "created"
    assert (tmp_path / "timing.cache").stat().st_size > 0
    assert trt_plan.preflight(record, _this_machine()).ok

    runner = TensorRTRunner(engine, inputs=[DYNAMIC], outputs=[OutputSpec("y")], record=record)
    with runner:
        for batch in (1, 5, 16):
            feed = {"x": np.random.default_rng(batch).standard_normal((batch, 4), np.float32)}
            got = runner.infer(feed)["y"]
            np.testing.assert_allclose(got, reference(onnx_path, feed), rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@needs_trt_gpu
def test_cuda_graph_replay_matches_plain_execution(tmp_path):
    from toolkit.exporters.tensorrt import build_engine
    from toolkit.runtime.tensorrt import TensorRTRunner

    onnx_path = tiny_onnx(tmp_path / "model.onnx", batch=2)
    engine = tmp_path / "model.engine"
    record = build_engine(onnx_path, engine, [STATIC], BuildOptions())
    feed = {"x": np.ones((2, 4), np.float32)}
    runner = TensorRTRunner(engine, inputs=[STATIC], outputs=[OutputSpec("y")], record=record,
                            cuda_graph=True)
    with runner:
        run = runner.prepare(feed)
        for _ in range(3):
            run()
        runner.synchronize()
        np.testing.assert_allclose(runner.infer(feed)["y"], reference(onnx_path, feed),
                                   rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@needs_trt_gpu
def test_parser_errors_name_the_unsupported_node(tmp_path):
    from toolkit.exporters.tensorrt import build_engine

    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], name="mystery", domain="toolkit.test")],
        "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("toolkit.test", 1)])
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(ExportFailed, match="mystery"):
        build_engine(tmp_path / "bad.onnx", tmp_path / "bad.engine", [STATIC], BuildOptions())
    assert not (tmp_path / "bad.engine").exists()


def _this_machine() -> dict:
    """The facts the runner gathers before loading an engine."""
    import platform

    import tensorrt
    import torch

    from toolkit.exporters.tensorrt import gpu_facts

    return trt_plan.machine(tensorrt.__version__, gpu_facts(torch), platform.machine())
