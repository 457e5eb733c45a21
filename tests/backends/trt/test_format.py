"""The TensorRT format on a machine without TensorRT: the ONNX it builds from is written and
the engine step exits 3 naming the extra; the Torch-TensorRT routes (`--via`) and the renaming
runner that runs their engines under the bundle's tensor names. The builder and runner
themselves are tried against strict fakes of TensorRT's API (conformance, never counted as
run on TensorRT): tests/backends/trt/."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper
from typer.testing import CliRunner

from toolkit.backends.onnx.runner import OnnxRuntimeRunner
from toolkit.cli.app import app
from toolkit.runtime.renamed import RenamedRunner, renamed_specs
from toolkit.spec import OutputSpec, TensorSpec

runner = CliRunner()


def test_via_torch_compile_without_torch_tensorrt_exits_3(tmp_path):
    out = tmp_path / "b"
    result = runner.invoke(app, ["export", "tests.models:plain_mlp", "--input", "x:1-4x5",
                                 "--to", "trt", "--via", "torch-compile", "--out", str(out)])
    assert result.exit_code == 3, result.output
    assert "torch-tensorrt" in result.output and "Traceback" not in result.output
    assert not out.exists() or not list(out.glob("*engine*"))


def test_unknown_route_is_bad_input(tmp_path):
    result = runner.invoke(app, ["export", "tests.models:plain_mlp", "--input", "x:2x5",
                                 "--to", "trt", "--via", "tensorflow", "--out",
                                 str(tmp_path / "b")])
    assert result.exit_code == 2, result.output
    assert "--via" in result.output


def test_renamed_runner_translates_names_with_a_real_session(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["args_0"], ["output_0"])], "g",
        [helper.make_tensor_value_info("args_0", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("output_0", TensorProto.FLOAT, ["n", 3])])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                     .SerializeToString())
    names = {"image": "args_0", "scores": "output_0"}
    inputs = [TensorSpec("image", "float32", (1, 3), (2, 3), (4, 3))]
    outputs = [OutputSpec("scores")]
    inner = OnnxRuntimeRunner(path, inputs=renamed_specs(inputs, names),
                              outputs=renamed_specs(outputs, names))
    x = np.array([[-1.0, 0.5, 2.0]], dtype=np.float32)
    with RenamedRunner(inner, names, inputs=inputs, outputs=outputs) as renamed:
        got = renamed.infer({"image": x})
        assert list(got) == ["scores"]
        np.testing.assert_array_equal(got["scores"], np.maximum(x, 0))
        renamed.prepare({"image": x})()
    assert not inner.is_active


# -- what each Torch-TensorRT release can honour (pure; the route itself needs a GPU) -------
def test_torch_tensorrt_settings_follow_the_release():
    import pytest

    from toolkit.backends.trt.options import BuildOptions
    from toolkit.backends.trt.torch_tensorrt import export_settings
    from toolkit.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="Torch-TensorRT 2.4.0 has no convert_exported"):
        export_settings("2.4.0", BuildOptions())
    ampere = BuildOptions(hardware_compatibility="ampere+")
    with pytest.raises(BackendUnavailable, match="needs 2.9 or newer.*2.8.0") as info:
        export_settings("2.8.0", ampere)
    assert info.value.exit_code == 3
    assert export_settings("2.9.0", ampere)["hardware_compatible"] is True
    assert "hardware_compatible" not in export_settings("2.9.0", BuildOptions())
    assert export_settings("2.12.1", BuildOptions())["use_explicit_typing"] is True
    assert "use_explicit_typing" not in export_settings("2.13.0+cu130", BuildOptions())
    assert export_settings("2.13.0", BuildOptions(workspace=2**30))["workspace_size"] == 2**30


def test_torch_tensorrt_routes_refuse_what_they_cannot_build():
    import pytest

    from toolkit.backends.trt.options import BuildOptions, build_options
    from toolkit.backends.trt.torch_tensorrt import check_route_options
    from toolkit.errors import UsageError

    for options, word in [
        (BuildOptions(hardware_compatibility="same-compute-capability"), "same-compute"),
        (BuildOptions(dla_core=0), "--dla-core"),
        (build_options(None, extra_profiles=["x:1-2-4x5"]), "--profile"),
    ]:
        with pytest.raises(UsageError, match=word) as info:
            check_route_options(options, "torch-compile")
        assert info.value.exit_code == 2 and "--via onnx" in str(info.value)
    with pytest.raises(UsageError, match="TorchScript frontend"):
        check_route_options(BuildOptions(version_compatible=True), "torchscript")
    check_route_options(BuildOptions(hardware_compatibility="ampere+"), "torch-compile")


def test_a_refused_route_option_exits_2_before_anything_is_built(tmp_path):
    out = tmp_path / "b"
    result = runner.invoke(app, ["export", "tests.models:plain_mlp", "--input", "x:1-4x5",
                                 "--to", "trt", "--via", "torch-compile", "--dla-core", "0",
                                 "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "--dla-core" in result.output and "Traceback" not in result.output


def test_tensorrt_missing_writes_onnx_then_exits_3(tmp_path):
    out = tmp_path / "trt"
    result = runner.invoke(app, ["export", "tests.models:plain_mlp", "--input", "x:1-4x5",
                                  "--to", "trt", "--out", str(out)])
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert (out / "model.onnx").is_file()
    assert not list(out.glob("*.engine")) and not list(out.glob(".*engine*"))


def test_renamed_runner_forwards_every_attribute_the_device_timer_reads():
    """A `--via` engine is timed as its inner runner says: the CUDA-event timer reads these
    attributes of the runner (read from cuda_timer's source, so a new one is covered)."""
    import ast
    import inspect
    from types import SimpleNamespace

    from toolkit.runtime import cuda_timer

    read = {node.args[1].value for node in ast.walk(ast.parse(inspect.getsource(cuda_timer)))
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "getattr"
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)}
    assert {"device", "stream", "cuda_events_bracket_work"} <= read
    inputs = [TensorSpec("image", "float32", (1, 3), (2, 3), (4, 3))]
    outputs = [OutputSpec("scores")]
    for stream, bracket in ((object(), False), (None, True)):
        inner = SimpleNamespace(device="cuda:1", precision="fp32", threads=None, name="trt",
                                format="trt", stream=stream, cuda_events_bracket_work=bracket)
        renamed = RenamedRunner(inner, {"image": "args_0"}, inputs=inputs, outputs=outputs)
        for name in read:
            assert getattr(renamed, name) == getattr(inner, name), name
        if not bracket:  # no CUDA events (nor CUDA torch) for a stream they wouldn't bracket
            assert cuda_timer.timer_for(renamed) is None
