"""Engine build and runner: without TensorRT they exit 3 and leave nothing; with TensorRT
and a GPU (marked `gpu`, skipped with the reason otherwise) they build and match ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.backends.trt.common import DYNAMIC, STATIC, needs_no_trt, needs_trt_gpu, tiny_onnx
from tests.backends.trt.test_compat import make_record
from toolkit.backends.trt import compat as trt_compat
from toolkit.backends.trt import options as trt_build
from toolkit.backends.trt.options import BuildOptions
from toolkit.errors import BackendUnavailable, ExportFailed, UsageError
from toolkit.spec import OutputSpec


# -- without TensorRT ----------------------------------------------------------------------
@needs_no_trt
def test_build_engine_without_tensorrt_exits_3_and_leaves_nothing(tmp_path):
    from toolkit.backends.trt.build import build_engine

    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    engine = tmp_path / "model.engine"
    with pytest.raises(BackendUnavailable) as info:
        build_engine(onnx_path, engine, [DYNAMIC], BuildOptions())
    assert info.value.exit_code == 3
    assert "pip install 'toolkit[trt]'" in str(info.value)
    assert "target GPU machine" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_build_engine_names_a_missing_onnx_file(tmp_path):
    from toolkit.backends.trt.build import build_engine

    with pytest.raises(UsageError, match="ONNX model not found"):
        build_engine(tmp_path / "nope.onnx", tmp_path / "m.engine", [DYNAMIC], BuildOptions())
    assert list(tmp_path.iterdir()) == []


@needs_no_trt
def test_runner_without_tensorrt_is_unavailable_with_the_rebuild_command(tmp_path):
    from toolkit.backends.trt.runner import TensorRTRunner

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
    from toolkit.backends.trt.runner import TensorRTRunner

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

    from toolkit.backends.trt.build import build_engine
    from toolkit.backends.trt.runner import TensorRTRunner

    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    options = trt_build.build_options([DYNAMIC], workspace="256M", extra_profiles=["x:1-1-2x4"],
                                     timing_cache=str(tmp_path / "timing.cache"))
    engine = tmp_path / "model.engine"
    record = build_engine(onnx_path, engine, [DYNAMIC], options)
    assert engine.stat().st_size == record["size_bytes"] > 0
    assert record["tensorrt"] == tensorrt.__version__
    assert len(record["profiles"]) == 2
    assert record["build"]["timing_cache"] == "created"
    assert (tmp_path / "timing.cache").stat().st_size > 0
    assert trt_compat.preflight(record, _this_machine()).ok

    runner = TensorRTRunner(engine, inputs=[DYNAMIC], outputs=[OutputSpec("y")], record=record)
    with runner:
        for batch in (1, 5, 16):
            feed = {"x": np.random.default_rng(batch).standard_normal((batch, 4), np.float32)}
            got = runner.infer(feed)["y"]
            np.testing.assert_allclose(got, reference(onnx_path, feed), rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@needs_trt_gpu
def test_cuda_graph_replay_matches_plain_execution(tmp_path):
    from toolkit.backends.trt.build import build_engine
    from toolkit.backends.trt.runner import TensorRTRunner

    onnx_path = tiny_onnx(tmp_path / "model.onnx", batch=2)
    engine = tmp_path / "model.engine"
    record = build_engine(onnx_path, engine, [STATIC], BuildOptions())
    feed = {"x": np.ones((2, 4), np.float32)}
    runner = TensorRTRunner(engine, inputs=[STATIC], outputs=[OutputSpec("y")], record=record,
                            cuda_graph=True)
    with runner:
        run = runner.prepare(feed)
        (bound,) = runner._prepared.values()
        # Wipe what the pre-capture run wrote: only the replay itself can write it back.
        runner._cuda.copy_in(bound.outputs["y"], np.zeros((2, 3), np.float32))
        for _ in range(3):
            run()
        runner.synchronize()
        np.testing.assert_allclose(runner._cuda.download(bound.outputs["y"]),
                                   reference(onnx_path, feed), rtol=1e-3, atol=1e-4)
        # and device memory stays bounded over many plain inferences
        runner.infer(feed)
        live = runner._cuda.live_allocations
        for _ in range(100):
            runner.infer(feed)
        assert runner._cuda.live_allocations == live


@pytest.mark.gpu
@needs_trt_gpu
def test_parser_errors_name_the_unsupported_node(tmp_path):
    from toolkit.backends.trt.build import build_engine

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

