"""TensorRT API conformance, on CPU, for every supported TensorRT line (10.3, 10.13, 11.4).

CONFORMANCE, NOT A RUN. TensorRT can't run on these machines. These tests drive toolkit's real
build and runner code against a strict fake `tensorrt` generated from each version's API
snapshot (names and pybind11 signatures read from NVIDIA's bindings wheel, see
`conformance/snapshot.py`) and a fake CUDA runtime over the real `cuda-bindings` package. They
catch removed or misspelled names, wrong arguments, ordering rules, leaks and ignored return
codes. They do not show that TensorRT builds or runs anything: only `@pytest.mark.gpu` tests
on a machine with TensorRT do (tests/backends/trt/test_build.py), and the README's table says which
paths have run where.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cuda.bindings", reason="cuda-bindings (a dev dependency) not installed")

from tests.backends.trt.common import DYNAMIC, STATIC, tiny_onnx
from tests.backends.trt.conformance.fake_trt import SNAPSHOTS, Machine, engine_header
from tests.backends.trt.conformance.harness import (
    FakeProcess,
    custom_op_onnx,
    fp16_onnx,
    reference,
    roi_align_onnx,
    shape_input_onnx,
    two_output_onnx,
)
from tests.backends.trt.conformance.strict import load_snapshot
from toolkit.backends.trt import compat as trt_compat
from toolkit.backends.trt.options import BuildOptions, build_options
from toolkit.errors import BackendUnavailable, ExportFailed, UsageError
from toolkit.spec import OutputSpec, TensorSpec, parse_input

ROOT = Path(__file__).resolve().parents[3]
X = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)


BACKENDS = [(line, backend) for line in SNAPSHOTS for backend in ("cuda-python", "torch")]


@pytest.fixture(params=BACKENDS, ids=[f"trt{line}-{backend}" for line, backend in BACKENDS])
def proc(request, monkeypatch):
    """One fake process per TensorRT line and CUDA buffer backend."""
    line, backend = request.param
    return FakeProcess(line, monkeypatch, backend=backend)


@pytest.fixture(params=SNAPSHOTS, ids=[f"trt{line}" for line in SNAPSHOTS])
def cp_proc(request, monkeypatch):
    """The cuda-python backend alone (what a device without torch uses)."""
    return FakeProcess(request.param, monkeypatch)


def build(path: Path, inputs, options: BuildOptions | None = None, **kwargs):
    from toolkit.backends.trt.build import build_engine

    engine = path.with_suffix(".engine")
    record = build_engine(path, engine, list(inputs), options or BuildOptions(), **kwargs)
    return engine, record


def runner(engine: Path, inputs, outputs=("y",), record=None, **kwargs):
    from toolkit.backends.trt.runner import TensorRTRunner

    return TensorRTRunner(engine, inputs=list(inputs), outputs=[OutputSpec(o) for o in outputs],
                          record=record, **kwargs)


# -- the static check: every name toolkit uses exists in every snapshot ---------------------
TRT_CODE = ["toolkit/backends/trt/build.py", "toolkit/backends/trt/logger.py",
            "toolkit/backends/trt/runner.py", "toolkit/backends/trt/torch_tensorrt.py"]


def _trt_chains(path: Path) -> set[tuple[str, ...]]:
    """Attribute chains rooted at the name `trt` (`trt.ILogger.Severity.INFO`)."""
    chains = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            parts, current = [], node
            while isinstance(current, ast.Attribute):
                parts.append(current.attr)
                current = current.value
            if isinstance(current, ast.Name) and current.id == "trt":
                chains.add(tuple(reversed(parts)))
    return chains


def _resolves(snapshot: dict, chain: tuple[str, ...]) -> bool:
    classes, head = snapshot["classes"], chain[0]
    if head in ("__version__",):
        return True
    if head in snapshot["functions"] or head in snapshot["values"]:
        return len(chain) == 1
    qual = head
    for name in chain[1:]:
        api = classes.get(qual)
        if api is None:
            return False
        if f"{qual}.{name}" in classes:
            qual = f"{qual}.{name}"
            continue
        return any(name in api[key] for key in ("methods", "properties", "members", "values"))
    return qual in classes


@pytest.mark.parametrize("line", SNAPSHOTS)
def test_every_trt_name_in_the_code_exists_in_the_snapshot(line):
    snapshot = load_snapshot(line)
    chains = set().union(*(_trt_chains(ROOT / p) for p in TRT_CODE))
    assert len(chains) > 15  # the walk finds the code's uses
    missing = sorted(".".join(c) for c in chains if not _resolves(snapshot, c))
    assert missing == [], f"TensorRT {line} lacks {missing}"


@pytest.mark.parametrize("line", SNAPSHOTS)
def test_string_tables_name_members_of_every_snapshot(line):
    from toolkit.backends.trt.bindings import TRT_DTYPES
    from toolkit.backends.trt.options import HARDWARE_ENUM, SAME_CC_SINCE

    classes = load_snapshot(line)["classes"]
    version = trt_compat.parse_version(load_snapshot(line)["tensorrt"])
    assert set(TRT_DTYPES) <= set(classes["DataType"]["members"])
    levels = set(HARDWARE_ENUM.values())
    if version[:2] < SAME_CC_SINCE:
        levels.discard("SAME_COMPUTE_CAPABILITY")  # refused before the build on 10.3
        assert "SAME_COMPUTE_CAPABILITY" not in classes["HardwareCompatibilityLevel"]["members"]
    assert levels <= set(classes["HardwareCompatibilityLevel"]["members"])
    plan = trt_compat.api_plan(load_snapshot(line)["tensorrt"])
    assert set(plan.network_flags) <= set(classes["NetworkDefinitionCreationFlag"]["members"])
    assert {"ERROR", "INTERNAL_ERROR", "WARNING", "INFO"} <= set(
        classes["ILogger.Severity"]["members"])


def test_the_fake_refuses_names_and_arguments_outside_the_snapshot(monkeypatch):
    proc = FakeProcess("10.3", monkeypatch)
    trt = proc.trt
    with pytest.raises(AttributeError, match="TensorRT 10.3.0"):
        trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY  # noqa: B018 - from 10.9
    with pytest.raises(AttributeError, match="TensorRT 10.3.0"):
        trt.IParserError  # noqa: B018 - the class is ParserError
    logger = trt.Logger()
    builder = trt.Builder(logger)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        builder.create_network("0")
    config = builder.create_builder_config()
    with pytest.raises(TypeError):
        config.builder_optimization_level = "3"
    with pytest.raises(AttributeError, match="has no attribute"):
        config.fp16_mode = True  # removed long ago
    parser = trt.OnnxParser(builder.create_network(0), logger)
    with pytest.raises(TypeError):
        parser.parse_from_file(Path("model.onnx"))  # str, not a Path


# -- build + run: static, dynamic, multi-profile -----------------------------------------
def test_static_engine_round_trip(proc, tmp_path):
    onnx_path = tiny_onnx(tmp_path / "model.onnx", batch=2)
    engine, record = build(onnx_path, [STATIC])
    header = engine_header(engine)
    assert header["strongly_typed"] and header["profiles"] == []
    assert record["tensorrt"] == proc.trt.__version__ and record["strongly_typed"]
    x = X[:2]
    with runner(engine, [STATIC], record=record) as r:
        out = r.infer({"x": x})
    np.testing.assert_allclose(out["y"], reference(onnx_path, {"x": x})["y"], rtol=1e-6)


def test_dynamic_engine_runs_every_batch_of_its_range(proc, tmp_path):
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine, record = build(onnx_path, [DYNAMIC])
    assert engine_header(engine)["profiles"] == [{"x": [[1, 4], [4, 4], [16, 4]]}]
    with runner(engine, [DYNAMIC], record=record) as r:
        for batch in (1, 3, 16, 2):
            x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
            np.testing.assert_allclose(r.infer({"x": x})["y"],
                                       reference(onnx_path, {"x": x})["y"], rtol=1e-6)


def test_multi_profile_engine_sets_the_profile_before_the_shapes(proc, tmp_path):
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    options = build_options([DYNAMIC], extra_profiles=["x:1-2-2x4"])
    engine, record = build(onnx_path, [DYNAMIC], options)
    assert len(engine_header(engine)["profiles"]) == 2
    with runner(engine, [DYNAMIC], record=record) as r:
        for batch in (2, 8, 1, 16):
            x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
            np.testing.assert_allclose(r.infer({"x": x})["y"],
                                       reference(onnx_path, {"x": x})["y"], rtol=1e-6)
    calls = proc.calls
    switches = [i for i, c in enumerate(calls)
                if c == "IExecutionContext.set_optimization_profile_async"]
    assert len(switches) >= 2  # profile 1 for batch <= 2, profile 0 for 8 and 16
    for index in switches:  # every switch is followed by the shapes, before any enqueue
        after = calls[index + 1:]
        assert "IExecutionContext.set_input_shape" in after
        assert after.index("IExecutionContext.set_input_shape") < after.index(
            "IExecutionContext.execute_async_v3")


def test_profile_switch_failure_is_one_clear_error(proc, tmp_path):
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    options = build_options([DYNAMIC], extra_profiles=["x:1-2-2x4"])
    engine, record = build(onnx_path, [DYNAMIC], options)
    with runner(engine, [DYNAMIC], record=record) as r:
        r._profiles = r._profiles + [r._profiles[1]]  # an index the engine doesn't have
        with pytest.raises(BackendUnavailable, match="optimization profile 2"):
            r._switch_profile(2)


def test_every_address_is_set_before_enqueue_even_unlisted_outputs(proc, tmp_path):
    onnx_path = two_output_onnx(tmp_path / "model.onnx")
    engine, record = build(onnx_path, [DYNAMIC])
    with runner(engine, [DYNAMIC], outputs=("y",), record=record) as r:
        out = r.infer({"x": X})
    assert list(out) == ["y"]
    np.testing.assert_allclose(out["y"], reference(onnx_path, {"x": X})["y"], rtol=1e-6)
    calls = proc.calls
    enqueue = calls.index("IExecutionContext.execute_async_v3")
    assert calls[:enqueue].count("IExecutionContext.set_tensor_address") == 3


def test_a_shape_tensor_input_is_refused_at_build_with_the_reason(proc, tmp_path):
    """TensorRT needs a shape tensor's values per profile (set_shape_input); the bundle
    records shapes only, so the build says so instead of failing inside TensorRT."""
    onnx_path = shape_input_onnx(tmp_path / "model.onnx")
    inputs = [TensorSpec.static("x", (2, 6)), TensorSpec.static("shape", (2,), "int64")]
    with pytest.raises(UsageError, match="'shape' is a shape tensor"):
        build(onnx_path, inputs)
    assert not (tmp_path / "model.engine").exists()


def test_host_tensors_are_bound_from_host_memory(proc, tmp_path):
    """An engine with a shape-tensor input (built here with set_shape_input, as a user's
    own engine would be): TensorRT reads it from host memory, where the runner puts it."""
    trt = proc.trt
    onnx_path = shape_input_onnx(tmp_path / "model.onnx")
    logger = trt.Logger()
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags if proc.line.startswith("10.") else 0)
    assert trt.OnnxParser(network, logger).parse_from_file(str(onnx_path))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape_input("shape", [3, 4], [3, 4], [3, 4])
    assert config.add_optimization_profile(profile) == 0
    engine = tmp_path / "model.engine"
    engine.write_bytes(bytes(builder.build_serialized_network(network, config)))
    inputs = [TensorSpec.static("x", (2, 6)), TensorSpec.static("shape", (2,), "int64")]
    feed = {"x": np.arange(12, dtype=np.float32).reshape(2, 6),
            "shape": np.array([3, 4], np.int64)}
    with runner(engine, inputs) as r:
        out = r.infer(feed)
    np.testing.assert_array_equal(out["y"], feed["x"].reshape(3, 4))


# -- the three defects that would have met the first GPU ---------------------------------
def test_an_engine_with_plugins_loads_in_a_new_process(proc, tmp_path):
    """RoiAlign becomes the ROIAlign_TRT plugin: deserializing needs the plugin library
    registered in that process first (verify/bench run in a new one)."""
    onnx_path = roi_align_onnx(tmp_path / "model.onnx")
    inputs = [TensorSpec.static("x", (1, 2, 8, 8)), TensorSpec.static("rois", (3, 4)),
              TensorSpec.static("index", (3,), "int64")]
    engine, record = build(onnx_path, inputs)
    assert engine_header(engine)["plugins"] == ["ROIAlign_TRT"]
    proc.restart()
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((1, 2, 8, 8)).astype(np.float32),
            "rois": np.array([[0, 0, 4, 4], [1, 1, 6, 6], [2, 0, 7, 5]], np.float32),
            "index": np.zeros(3, np.int64)}
    with runner(engine, inputs, record=record) as r:
        out = r.infer(feed)
    np.testing.assert_allclose(out["y"], reference(onnx_path, feed)["y"], rtol=1e-5)
    calls = proc.calls
    assert calls.index("init_libnvinfer_plugins") < calls.index("Runtime.deserialize_cuda_engine")


def test_device_allocations_stay_bounded_over_many_inferences(proc, tmp_path):
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine, record = build(onnx_path, [DYNAMIC])
    with runner(engine, [DYNAMIC], record=record) as r:
        r.infer({"x": X})
        after_one = proc.cuda.live_allocations
        mallocs = proc.cuda.calls.count("cudaMalloc")
        for i in range(50):
            r.infer({"x": X + i})
        assert proc.cuda.live_allocations == after_one
        assert proc.cuda.calls.count("cudaMalloc") == mallocs  # nothing allocated per call
        for batch in (16, 1, 8, 16, 2):  # shapes within what was allocated reuse it
            r.infer({"x": np.ones((batch, 4), np.float32)})
        assert proc.cuda.live_allocations == after_one  # a grown buffer replaces the old
    assert proc.cuda.live_allocations == 0
    assert proc.cuda.live_graphs == 0
    assert proc.cuda.streams == {}


def test_graph_replay_computes_its_own_output(proc, tmp_path):
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine, record = build(onnx_path, [DYNAMIC])
    with runner(engine, [DYNAMIC], record=record, cuda_graph=True) as r:
        call = r.prepare({"x": X})
        bound = list(r._prepared.values())[-1]
        output = bound.outputs["y"]
        # Wipe the output that the pre-capture run left, then replay: only the graph's own
        # work can put the right values back.
        r._cuda.copy_in(output, np.zeros((3, 3), np.float32))
        call()
        r.synchronize()
        np.testing.assert_allclose(r._cuda.download(output),
                                   reference(onnx_path, {"x": X})["y"], rtol=1e-6)
        # a new input through the same graph
        r._cuda.copy_in(bound.inputs["x"], 2 * X)
        call()
        np.testing.assert_allclose(r._cuda.download(output),
                                   reference(onnx_path, {"x": 2 * X})["y"], rtol=1e-6)
        between = proc.cuda_calls_between("cudaStreamBeginCapture", "cudaStreamEndCapture")
        assert between == []  # nothing but the enqueue inside the capture
    assert proc.cuda.live_graphs == 0


@pytest.mark.parametrize("backend", ["cuda-python", "torch"])
def test_a_refused_enqueue_during_capture_fails_instead_of_replaying_nothing(
        monkeypatch, tmp_path, backend):
    proc = FakeProcess("11.4", monkeypatch, Machine(refuse_capture=True), backend=backend)
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine, record = build(onnx_path, [DYNAMIC])
    with runner(engine, [DYNAMIC], record=record, cuda_graph=True) as r:
        with pytest.raises(BackendUnavailable, match="can't be captured.*CUDA graph capture"):
            r.prepare({"x": X})
        assert not proc.cuda.is_capturing(r._cuda.stream_handle)
    assert proc.cuda.live_graphs == 0


# -- errors that say what happened -------------------------------------------------------
def test_one_logger_per_process_and_its_errors_reach_the_user(proc, tmp_path):
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine, record = build(onnx_path, [DYNAMIC])
    with runner(engine, [DYNAMIC], record=record) as r:
        r.infer({"x": X})
    broken = tmp_path / "broken.engine"
    broken.write_bytes(b"not a plan")
    with pytest.raises(BackendUnavailable, match="magicTagRead"):
        runner(broken, [DYNAMIC]).activate()
    wider = parse_input("x:1-4-64x4")  # a spec wider than the engine's profile (max 16)
    with runner(engine, [wider], record=record) as r, pytest.raises(
            UsageError, match="rejects shape") as info:
        r.infer({"x": np.ones((40, 4), np.float32)})
    assert "magicTagRead" not in str(info.value)  # an earlier runner's error isn't quoted
    # one logger for the process: every Builder, Runtime and parser got the same one
    state = proc.trt._state
    loggers = {id(args[-1]) for name, args, _ in state.calls
               if name in ("Builder.__init__", "Runtime.__init__", "OnnxParser.__init__")}
    assert len(loggers) == 1


def test_parser_errors_name_the_node(proc, tmp_path):
    onnx_path = custom_op_onnx(tmp_path / "model.onnx")
    with pytest.raises(ExportFailed, match=r"node 'head/fancy_norm' \(FancyNorm\): No importer"):
        build(onnx_path, [TensorSpec.static("x", (1, 4))])
    assert not (tmp_path / "model.engine").exists()


def test_set_tensor_address_refusal_is_an_error_with_the_reason(proc, tmp_path):
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine, record = build(onnx_path, [DYNAMIC])
    with runner(engine, [DYNAMIC], record=record) as r, pytest.raises(
            BackendUnavailable, match="invalid tensor name: nope"):
        r._set_address("nope", 1234)


# -- build options: timing cache, compatibility, DLA -------------------------------------
def test_timing_cache_created_loaded_and_a_corrupt_one_replaced(proc, tmp_path):
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    cache = tmp_path / "cache" / "timing.cache"
    options = BuildOptions(timing_cache=str(cache))
    assert build(onnx_path, [DYNAMIC], options)[1]["build"]["timing_cache"] == "created"
    assert json.loads(cache.read_bytes())["entries"] == 1
    assert build(onnx_path, [DYNAMIC], options)[1]["build"]["timing_cache"] == "loaded"
    assert json.loads(cache.read_bytes())["entries"] == 2
    cache.write_bytes(b"\x00garbage")
    _, record = build(onnx_path, [DYNAMIC], options)
    assert record["build"]["timing_cache"] == "corrupt, replaced"
    assert json.loads(cache.read_bytes())["entries"] == 1


def test_timing_cache_from_another_gpu_is_replaced(proc, tmp_path):
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(json.dumps({"timing_cache": "NVIDIA Other", "entries": 7}).encode())
    _, record = build(onnx_path, [DYNAMIC], BuildOptions(timing_cache=str(cache)))
    assert record["build"]["timing_cache"] == "mismatched, replaced"
    assert json.loads(cache.read_bytes()) == {"timing_cache": "NVIDIA Fake GPU", "entries": 1}


def test_version_compatible_engine_allows_host_code_only_for_itself(proc, tmp_path):
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine, record = build(onnx_path, [DYNAMIC], BuildOptions(version_compatible=True))
    assert engine_header(engine)["version_compatible"]
    assert record["compatibility"]["version_compatible"]
    proc.restart()
    with runner(engine, [DYNAMIC], record=record) as r:
        np.testing.assert_allclose(r.infer({"x": X})["y"],
                                   reference(onnx_path, {"x": X})["y"], rtol=1e-6)
    assert "Runtime.engine_host_code_allowed=" in proc.calls
    plain, plain_record = build(tiny_onnx(tmp_path / "plain.onnx"), [DYNAMIC])
    proc.restart()
    with runner(plain, [DYNAMIC], record=plain_record) as r:
        r.infer({"x": X})
    assert "Runtime.engine_host_code_allowed=" not in proc.calls  # only for its own kind


def test_torch_tensorrt_read_back_of_a_version_compatible_engine(proc, tmp_path):
    """`--via torch-compile --version-compatible` reads the engine back for its names: the
    runtime must allow the plan's host code, as for any version-compatible engine."""
    from types import SimpleNamespace

    from toolkit.backends.trt.torch_tensorrt import _tensor_names

    engine, _ = build(tiny_onnx(tmp_path / "model.onnx"), [DYNAMIC],
                      BuildOptions(version_compatible=True))
    proc.restart()
    model = SimpleNamespace(inputs=[SimpleNamespace(name="image")],
                            outputs=[SimpleNamespace(name="logits")])
    names = _tensor_names(proc.trt, engine.read_bytes(), model, version_compatible=True)
    assert names == {"image": "x", "logits": "y"}
    calls = proc.calls
    assert calls.index("init_libnvinfer_plugins") < calls.index(
        "Runtime.deserialize_cuda_engine")


def test_a_failed_activation_releases_what_it_took(proc, tmp_path):
    broken = tmp_path / "broken.engine"
    broken.write_bytes(b"not a plan")
    r = runner(broken, [DYNAMIC])
    with pytest.raises(BackendUnavailable):
        r.activate()
    assert not r.is_active
    assert proc.cuda.streams == {} and proc.cuda.live_allocations == 0


def test_hardware_compatibility_levels_per_version(proc, tmp_path):
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine, record = build(onnx_path, [DYNAMIC], BuildOptions(hardware_compatibility="ampere+"))
    assert engine_header(engine)["hardware"] == "AMPERE_PLUS"
    same = BuildOptions(hardware_compatibility="same-compute-capability")
    if proc.line == "10.3":
        with pytest.raises(UsageError, match="needs TensorRT 10.9"):
            build(onnx_path, [DYNAMIC], same)
    else:
        engine, record = build(onnx_path, [DYNAMIC], same)
        assert engine_header(engine)["hardware"] == "SAME_COMPUTE_CAPABILITY"
        assert record["compatibility"]["hardware"] == "same-compute-capability"


def test_dla_builds_fp16_and_refuses_an_fp32_engine_that_would_not_use_it(monkeypatch, tmp_path):
    proc = FakeProcess("10.3", monkeypatch, Machine(dla_cores=2, compute_capability="8.7"))
    spec = parse_input("x:3x4")  # DLA: static shapes only
    half = fp16_onnx(tmp_path / "half.onnx")
    engine, record = build(half, [spec], BuildOptions(dla_core=1), precision="fp16")
    header = engine_header(engine)
    assert header["dla_core"] == 1 and header["dla_layers"] > 0 and record["dla_core"] == 1
    # where the layers run, from TensorRT's own query (can_run_on_DLA per layer)
    assert record["layers"]["placement"] == {"dla": 3, "gpu": 0}
    proc.restart()
    with runner(engine, [spec], record=record) as r:
        np.testing.assert_allclose(r.infer({"x": X})["y"], np.maximum(X, 0), rtol=1e-3)
    calls = proc.calls
    # the runtime's DLA core is where a DLA engine runs: set before deserializing it
    assert calls.index("Runtime.DLA_core=") < calls.index("Runtime.deserialize_cuda_engine")
    full = tiny_onnx(tmp_path / "full.onnx")
    with pytest.raises(UsageError, match="DLA runs fp16 and int8"):
        build(full, [DYNAMIC], BuildOptions(dla_core=0), precision="fp32")
    with pytest.raises(UsageError, match="has 2 DLA core"):
        build(half, [spec], BuildOptions(dla_core=2), precision="fp16")


def test_dla_with_a_dynamic_shape_is_refused_before_building(monkeypatch, tmp_path):
    """DLA needs min = opt = max: a dynamic batch would put every layer on the GPU (fallback
    is on) while the record said DLA. Refused, in the bundle's range or a --profile."""
    proc = FakeProcess("10.13", monkeypatch, Machine(dla_cores=2))
    half = fp16_onnx(tmp_path / "half.onnx")
    with pytest.raises(UsageError, match=r"DLA runs static shapes only.*'x' dimension 0 "
                                         r"ranges 1-4") as info:
        build(half, [parse_input("x:1-4x4")], BuildOptions(dla_core=0), precision="fp16")
    assert info.value.exit_code == 2
    assert "Builder.build_serialized_network" not in proc.calls
    assert not (tmp_path / "half.engine").exists()


def test_the_fake_runs_no_dynamic_shape_on_dla(monkeypatch, tmp_path):
    """The fake's DLA is the real one's: a dynamic profile puts no layer on DLA."""
    proc = FakeProcess("10.13", monkeypatch, Machine(dla_cores=1))
    trt = proc.trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, logger).parse_from_file(str(fp16_onnx(tmp_path / "h.onnx")))
    config = builder.create_builder_config()
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = 0
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 4), (2, 4), (4, 4))
    config.add_optimization_profile(profile)
    assert not any(config.can_run_on_DLA(network.get_layer(i)) for i in range(3))
    blob = builder.build_serialized_network(network, config)
    path = tmp_path / "h.engine"
    path.write_bytes(bytes(blob))
    assert engine_header(path)["dla_layers"] == 0


def test_an_engine_for_another_gpu_is_refused_before_deserializing(proc, tmp_path):
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine, record = build(onnx_path, [DYNAMIC])
    proc.machine.compute_capability = "9.0"
    proc.machine.gpu = "NVIDIA H200"
    proc.restart()
    with pytest.raises(BackendUnavailable, match=r"built for NVIDIA Fake GPU \(sm 8.7\)"):
        runner(engine, [DYNAMIC], record=record).activate()
    assert "Runtime.deserialize_cuda_engine" not in proc.calls


# -- the CUDA layer itself (cuda-python backend) -----------------------------------------
def test_cuda_python_capture_keeps_the_enqueue_error(cp_proc):
    proc = cp_proc
    from toolkit.backends.trt.cuda import open_device

    device = open_device("cuda", "test")
    assert device.backend == "cuda-python"

    def failing() -> None:
        raise ValueError("the real reason")

    with pytest.raises(ValueError, match="the real reason"):
        device.capture(failing)
    assert not proc.cuda.is_capturing(device.stream_handle)
    device.release()


def test_cuda_python_round_trip_and_bf16(cp_proc):
    proc = cp_proc
    from toolkit.backends.trt.cuda import open_device

    device = open_device("cuda", "test")
    for dtype in ("float32", "float16", "int64"):
        values = (np.arange(12).reshape(3, 4) - 5).astype(dtype)
        np.testing.assert_array_equal(device.download(device.upload(values, dtype)), values)
    values = np.array([1.0, -2.5, np.nan, -np.nan, np.inf, -np.inf, 3.0e38], np.float32)
    back = device.download(device.upload(values, "bfloat16"))
    assert np.isnan(back[2]) and np.isnan(back[3])
    assert back[4] == np.inf and back[5] == -np.inf and back[1] == -2.5
    buffer = device.empty((4,), "float32")
    before = device.live_allocations
    device.free(buffer)
    assert device.live_allocations == before - 1
    device.release()
    assert proc.cuda.live_allocations == 0


def test_a_driver_older_than_the_bindings_is_named(monkeypatch):
    from cuda import bindings

    from toolkit.backends.trt.cuda import open_device

    major = int(bindings.__version__.split(".")[0])
    FakeProcess("10.3", monkeypatch, driver_version=(major - 1) * 1000 + 40)
    with pytest.raises(BackendUnavailable) as info:
        open_device("cuda", "run a TensorRT engine")
    text = str(info.value)
    assert f"needs a CUDA {major} driver" in text
    assert f"'cuda-python>={major - 1},<{major}'" in text
    assert "torch:" in text  # each backend says why it didn't open


def test_open_device_tries_the_next_backend(cp_proc, monkeypatch):
    from toolkit.backends.trt import cuda as cuda_module

    def broken(device: str):
        raise BackendUnavailable("PyTorch could not open cuda: CUDA error: busy")

    monkeypatch.setitem(cuda_module.BACKENDS, "torch", broken)
    device = cuda_module.open_device("cuda", "test")
    assert device.backend == "cuda-python"
    device.release()


# -- cuda:N on a host with several GPUs ----------------------------------------------------
@pytest.mark.parametrize("backend", ["cuda-python", "torch"])
def test_cuda_n_reaches_the_build_preflight_and_the_runner(backend, monkeypatch, tmp_path):
    """GPU 0 and GPU 1 differ: an engine built for cuda:1 is built on it (TensorRT builds on
    the current device), recorded as it, checked against it and run on it."""
    machine = Machine(other_gpus=(("NVIDIA H200", "9.0"),))
    proc = FakeProcess("10.13", monkeypatch, machine, backend=backend)
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine, record = build(onnx_path, [DYNAMIC], device="cuda:1")
    assert engine_header(engine)["gpu"] == "NVIDIA H200"
    assert record["gpu"]["name"] == "NVIDIA H200"
    assert record["gpu"]["compute_capability"] == "9.0"
    proc.restart()
    with runner(engine, [DYNAMIC], record=record, device="cuda:1") as r:
        np.testing.assert_allclose(r.infer({"x": X})["y"],
                                   reference(onnx_path, {"x": X})["y"], rtol=1e-6)
    proc.restart()
    with pytest.raises(BackendUnavailable, match="this GPU is NVIDIA Fake GPU"):
        runner(engine, [DYNAMIC], record=record, device="cuda:0").activate()
    assert "Runtime.deserialize_cuda_engine" not in proc.calls  # refused by preflight


def test_export_device_cuda_n_is_the_build_device():
    from toolkit.backends.trt.export import cuda_device

    assert cuda_device("cuda:1") == "cuda:1"
    assert cuda_device("cuda") == "cuda"
    assert cuda_device("cpu") == "cuda"  # the export's own device; the engine needs a GPU


# -- misuses the fakes must catch ----------------------------------------------------------
def test_a_refused_enqueue_outside_a_capture_is_an_error(proc, tmp_path):
    """execute_async_v3 returning False (outside any capture) fails the call with TensorRT's
    reason instead of returning whatever the output buffers held."""
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine, record = build(onnx_path, [DYNAMIC])
    with runner(engine, [DYNAMIC], record=record) as r:
        r.infer({"x": X})
        proc.machine.refuse_enqueue = True
        with pytest.raises(BackendUnavailable, match="failed to run the engine: .*refused"):
            r.infer({"x": X})
        with pytest.raises(BackendUnavailable, match="failed to run the engine"):
            r.prepare({"x": X})()


def test_workspace_reaches_the_memory_pool(proc, tmp_path):
    """--workspace sets MemoryPoolType.WORKSPACE (config.max_workspace_size is gone in 10)."""
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine, record = build(onnx_path, [DYNAMIC], build_options(None, workspace="256M"))
    assert engine_header(engine)["pools"] == {"WORKSPACE": 256 * 2**20}
    assert record["build"]["options"]["workspace"] == 256 * 2**20


def test_growing_a_buffer_frees_the_one_it_replaces(proc, tmp_path):
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine, record = build(onnx_path, [DYNAMIC])
    with runner(engine, [DYNAMIC], record=record) as r:
        r.infer({"x": X[:1]})
        held = proc.cuda.live_allocations  # x and y
        for batch in (2, 8, 16, 4, 16):
            r.infer({"x": np.ones((batch, 4), np.float32)})
            assert proc.cuda.live_allocations == held, batch
        prepared = r.prepare({"x": np.ones((16, 4), np.float32)})
        prepared()
        assert proc.cuda.live_allocations == held + 2  # the prepared feed's own pair


def test_the_fake_cuda_runtime_takes_the_real_bindings_arguments():
    """Each modelled function has the real binding's parameters, none of them optional where
    the binding's aren't (the real `cudaGraphInstantiate(graph, flags)` needs both)."""
    import inspect
    import re

    from cuda.bindings import runtime as real

    from tests.backends.trt.conformance.fake_cuda import FakeCudaRuntime

    checked = 0
    for name, method in vars(FakeCudaRuntime).items():
        if not name.startswith("cuda") or not callable(method):
            continue
        doc = (getattr(real, name).__doc__ or "").splitlines()[0]
        match = re.match(rf"{name}\((.*)\)", doc)
        assert match, (name, doc)
        real_params = [p for p in match.group(1).split(",") if p.strip()]
        fake_params = list(inspect.signature(method).parameters.values())[1:]
        assert len(fake_params) == len(real_params), (name, doc)
        assert all(p.default is inspect.Parameter.empty for p in fake_params), name
        checked += 1
    assert checked >= 15
    fake = FakeCudaRuntime()
    with pytest.raises(TypeError):
        fake.cudaGraphInstantiate(real.cudaGraph_t(1))  # type: ignore[call-arg]


def test_the_torch_cuda_stand_in_holds_the_code_to_torchs_api(monkeypatch):
    """What TorchCuda calls on torch.cuda, bound against torch's own signatures: a wrong
    keyword, a device torch rejects, a stream of another kind or an unmodelled name fails."""
    import torch

    from tests.backends.trt.conformance.fake_cuda import FakeCudaRuntime
    from tests.backends.trt.conformance.harness import StrictTorchCuda
    from toolkit.backends.trt.cuda import TorchCuda

    api = StrictTorchCuda(FakeCudaRuntime(devices=2))
    public = [n for n in dir(api) if not n.startswith("_") and n not in ("rt", "current",
                                                                           "calls")]
    assert all(hasattr(torch.cuda, n) for n in public), public
    device = TorchCuda(torch, "cuda:1", api=api, tensor_device="cpu")
    assert api.current == 1 and device.stream.device == torch.device("cuda", 1)
    assert device.facts()["name"] == "NVIDIA Fake GPU"
    assert device.memory_info()[1] > 0
    with pytest.raises(TypeError):
        api.set_device(device=1, index=1)
    with pytest.raises(TypeError):
        api.Stream(devic=0)
    with pytest.raises(ValueError, match="Expected a cuda device"):
        api.set_device("cpu")
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        api.get_device_properties(2)
    with pytest.raises(TypeError, match="torch.cuda.Stream"):
        api.stream(device.stream_handle)  # an int handle is not a torch stream
    with pytest.raises(TypeError):
        api.graph(api.CUDAGraph(), stream=device.stream, error_mode="thread_local")
    with pytest.raises(RuntimeError, match="capture error mode"):
        api.graph(api.CUDAGraph(), stream=device.stream, capture_error_mode="local")
    with pytest.raises(NotImplementedError, match="ipc_collect"):
        api.ipc_collect()
    with pytest.raises(AttributeError):
        api.no_such_function()
    graph = device.capture(lambda: None)
    graph()
    # every buffer call goes through the stand-in too: upload, device copy, download
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    source = device.upload(values, "float32")
    copy = device.empty((2, 3), "float32")
    device.copy_device(copy, source)
    np.testing.assert_array_equal(device.download(copy), values)
    assert device.live_allocations == 2
    device.free(source)
    assert device.live_allocations == 1
    device.release()


# -- plugins: serialized into version-compatible engines, registered by every runner -------
def test_a_version_compatible_engine_serializes_the_plugin_libraries_it_uses(proc, tmp_path):
    """RoiAlign -> ROIAlign_TRT in a version-compatible engine: the parser's plugin
    libraries go into config.plugins_to_serialize (NVIDIA's rule) and into the record."""
    onnx_path = roi_align_onnx(tmp_path / "model.onnx")
    inputs = [TensorSpec.static("x", (1, 2, 8, 8)), TensorSpec.static("rois", (3, 4)),
              TensorSpec.static("index", (3,), "int64")]
    engine, record = build(onnx_path, inputs, BuildOptions(version_compatible=True))
    major = proc.trt.__version__.split(".")[0]
    libraries = [f"/usr/lib/x86_64-linux-gnu/libnvinfer_vc_plugin.so.{major}"]
    assert engine_header(engine)["serialized_plugins"] == libraries
    assert record["plugins"] == {"register": ["tensorrt"], "serialized": libraries}
    plain, plain_record = build(tiny_onnx(tmp_path / "plain.onnx"), [DYNAMIC],
                                BuildOptions(version_compatible=True))
    assert plain_record["plugins"]["serialized"] == []  # no plugin layer, nothing to carry
    assert proc.calls.count("IBuilderConfig.plugins_to_serialize=") == 1


@pytest.mark.parametrize("backend", ["cuda-python", "torch"])
def test_a_torch_tensorrt_engine_registers_its_plugins_in_a_new_process(backend, monkeypatch,
                                                                        tmp_path):
    """An engine the TorchScript route built holds Torch-TensorRT's plugins: verify and bench
    run in a new process, where they load only once torch_tensorrt is imported there."""
    from tests.backends.trt.conformance.fake_trt import with_plugins

    proc = FakeProcess("10.13", monkeypatch, Machine(torch_tensorrt=True), backend=backend)
    engine, record = build(tiny_onnx(tmp_path / "model.onnx"), [DYNAMIC])
    with_plugins(engine, ["torch_tensorrt::Interpolate", "torch_tensorrt::NormalizePlugin"])
    record = {**record, "via": "torchscript",
              "plugins": {"register": ["tensorrt", "torch_tensorrt"], "serialized": []}}
    proc.restart()
    with runner(engine, [DYNAMIC], record=record) as r:
        assert r.infer({"x": X})["y"].shape == (3, 3)
    del record["plugins"]  # a record from before the field: --via says Torch-TensorRT
    proc.restart()
    with runner(engine, [DYNAMIC], record=record) as r:
        r.infer({"x": X})
    proc.machine.torch_tensorrt = False
    proc.restart()
    with pytest.raises(BackendUnavailable, match="could not find plugin: torch_tensorrt::"
                                                 ".*pip install torch-tensorrt"):
        runner(engine, [DYNAMIC], record=record).activate()


def test_export_with_workspace_from_the_command_line(cp_proc, tmp_path):
    """`toolkit export ... --to trt --workspace 256M` end to end over the fakes: the option
    reaches MemoryPoolType.WORKSPACE (TensorRT 10 removed config.max_workspace_size) and the
    manifest, and the engine verifies."""
    from typer.testing import CliRunner

    from toolkit.cli.app import app

    out = tmp_path / "b"
    result = CliRunner().invoke(app, ["export", "tests.models:plain_mlp", "--input", "x:1-4x5",
                                      "--to", "trt", "--workspace", "256M", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    (engine,) = [a for a in manifest["artifacts"] if a["format"] == "trt"]
    assert engine["build"]["options"]["workspace"] == 256 * 2**20
    assert engine_header(out / engine["path"])["pools"] == {"WORKSPACE": 256 * 2**20}
    assert engine["parity"]["passed"], engine["parity"]


def test_the_via_route_keeps_tensorrt_errors_in_toolkits_logger(monkeypatch, tmp_path):
    """Torch-TensorRT builds with a logger of its own; TensorRT keeps the first logger of the
    process. The route claims it first, so the read-back's reason reaches the user."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    import torch

    from toolkit.backends.trt import torch_tensorrt as route
    from toolkit.source.load import load_model

    proc = FakeProcess("10.13", monkeypatch, Machine(torch_tensorrt=True))
    import torch_tensorrt  # the fake: registers its plugins on import

    trt = proc.trt

    def convert(program, arg_inputs, **settings):
        trt.Builder(trt.Logger(trt.Logger.WARNING))  # Torch-TensorRT's own logger
        return b"not a plan"

    monkeypatch.setattr(torch_tensorrt, "Input", SimpleNamespace, raising=False)
    monkeypatch.setattr(torch_tensorrt, "dynamo", SimpleNamespace(
        convert_exported_program_to_serialized_trt_engine=convert), raising=False)
    monkeypatch.setattr(route, "require_cuda", lambda *a: torch)
    monkeypatch.setattr(torch.cuda, "device", lambda device: nullcontext())  # CPU stands in
    model = load_model("tests.models:plain_mlp", inputs=[parse_input("x:1-4x5")])
    with pytest.raises(ExportFailed, match="does not load back: .*magicTagRead"):
        route.build_engine_from_model(model, tmp_path / "m.engine", BuildOptions(),
                                      "torch-compile", device="cpu")
    assert not (tmp_path / "m.engine").exists()
