"""fp16/bf16 and INT8 Q/DQ on real, tiny exported models, run with ONNX Runtime on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from toolkit.backends.onnx.precision.fp16 import convert_float16
from toolkit.backends.onnx.precision.graph import op_counts
from toolkit.backends.onnx.precision.int8 import quantize_int8
from toolkit.backends.onnx.runner import ORT_QDQ_DISABLED_OPTIMIZERS
from toolkit.errors import UsageError
from toolkit.formats import check_precisions
from toolkit.parity.accuracy import accuracy_gate, classification_accuracy


# -- tiny models -------------------------------------------------------------------------------
class TinyCNN(torch.nn.Module):
    """Conv -> ReLU -> Conv -> ReLU -> global mean -> Linear: Conv and Gemm/MatMul to quantise."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.mean(dim=(2, 3)))


class PlantedOverflow(torch.nn.Module):
    """A log-sum over 256 values of ~500: every element fits fp16, the sum (~1.3e5) doesn't."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        # The Unsqueeze stores the sum: ORT CPU keeps that tensor in fp16 when the graph says so.
        total = (h * h * 50.0 + 500.0).sum(dim=-1).unsqueeze(-1)
        return h[:, :4] - torch.log(total)


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Separable task: class 1 is bright in the top half, class 0 in the bottom half."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    x = rng.normal(0.0, 0.5, (n, 1, 8, 8)).astype(np.float32)
    x[labels == 1, :, :4, :] += 1.5
    x[labels == 0, :, 4:, :] += 1.5
    return x, labels.astype(np.int64)


def _export(model: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.onnx.export(
        model.eval(), (example,), None, dynamo=True, input_names=["x"], output_names=["y"],
        dynamic_shapes={"x": {0: batch}}, verbose=False, report=False,
    )
    program.save(str(path))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("precision")


@pytest.fixture(scope="module")
def cnn(workdir: Path) -> Path:
    torch.manual_seed(0)
    model = TinyCNN()
    x, y = _images(256, seed=0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return _export(model, xt[:4], workdir / "cnn.onnx")


@pytest.fixture(scope="module")
def planted(workdir: Path) -> Path:
    torch.manual_seed(0)
    return _export(PlantedOverflow(), torch.randn(4, 16), workdir / "planted.onnx")


def _session(path: Path, **kwargs: object) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"], **kwargs)


def _predict(path: Path, **kwargs: object):
    sess = _session(path, **kwargs)
    return lambda feed: dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))


def _labelled(n: int, seed: int, batch: int = 16) -> list[dict[str, np.ndarray]]:
    x, y = _images(n, seed)
    return [{"x": x[i:i + batch], "labels": y[i:i + batch]} for i in range(0, n, batch)]


def _io_types(path: Path) -> set[int]:
    model = onnx.load(str(path))
    return {vi.type.tensor_type.elem_type for vi in (*model.graph.input, *model.graph.output)}


# -- fp16 / bf16 -------------------------------------------------------------------------------
def test_fp16_keeps_fp32_io_and_matches(cnn: Path, workdir: Path) -> None:
    dst = workdir / "cnn.fp16.onnx"
    summary = convert_float16(cnn, dst)
    assert _io_types(dst) == {onnx.TensorProto.FLOAT}
    assert summary["weights_converted_fraction"] >= 0.9
    weights = onnx.load(str(dst)).graph.initializer
    assert any(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    x, _ = _images(32, seed=1)
    ref = _session(cnn).run(None, {"x": x})[0]
    out = _session(dst).run(None, {"x": x})[0]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=2e-2, atol=2e-2 * float(np.abs(ref).max()))


def _fp16_arithmetic(path: Path, x: np.ndarray) -> np.ndarray:
    """Run with onnx's reference evaluator, which computes in the graph's declared types.

    ORT's CPU provider has almost no fp16 kernels: it runs an fp16 graph in fp32 between Casts,
    so it can't show an overflow that TensorRT's real fp16 arithmetic would hit.
    """
    from onnx.reference import ReferenceEvaluator

    with np.errstate(over="ignore", invalid="ignore"):
        return ReferenceEvaluator(str(path)).run(None, {"x": x})[0]


def test_sensitive_sum_stays_fp32(planted: Path, workdir: Path) -> None:
    x = np.random.default_rng(3).standard_normal((8, 16)).astype(np.float32)
    ref = _session(planted).run(None, {"x": x})[0]
    assert np.isfinite(ref).all()

    safe = workdir / "planted.fp16.onnx"
    summary = convert_float16(planted, safe)
    assert summary["ops_kept_fp32"].get("ReduceSum") == 1
    assert summary["ops_kept_fp32"].get("Log") == 1
    tol = {"rtol": 1e-2, "atol": 1e-2 * float(np.abs(ref).max())}
    np.testing.assert_allclose(_session(safe).run(None, {"x": x})[0], ref, **tol)
    np.testing.assert_allclose(_fp16_arithmetic(safe, x), ref, **tol)

    # The same graph with nothing kept in fp32 overflows: the check above can fail.
    naive = workdir / "planted.naive.fp16.onnx"
    convert_float16(planted, naive, keep_fp32_ops=())
    assert not np.isfinite(_fp16_arithmetic(naive, x)).all()


def test_keep_named_node_in_fp32(cnn: Path, workdir: Path) -> None:
    first_conv = next(n.name for n in onnx.load(str(cnn)).graph.node if n.op_type == "Conv")
    summary = convert_float16(cnn, workdir / "cnn.keep.onnx", keep_fp32_nodes=[first_conv])
    assert summary["ops_kept_fp32"].get("Conv") == 1
    assert summary["weights_converted_fraction"] < 1.0


def test_bf16_is_typed_onnx_that_only_trt_targets(cnn: Path, workdir: Path) -> None:
    dst = workdir / "cnn.bf16.onnx"
    summary = convert_float16(cnn, dst, dtype="bf16")
    model = onnx.load(str(dst))
    onnx.checker.check_model(model, full_check=True)
    assert summary["dtype"] == "bfloat16"
    assert any(w.data_type == onnx.TensorProto.BFLOAT16 for w in model.graph.initializer)
    assert _io_types(dst) == {onnx.TensorProto.FLOAT}
    with pytest.raises(UsageError, match="supported: fp32, fp16, int8"):
        check_precisions("onnx", "fp16,bf16")
    assert check_precisions("tensorrt", "fp16,bf16,int8,fp16") == ["fp16", "bf16", "int8"]


def test_unknown_precision_and_target() -> None:
    with pytest.raises(UsageError, match="unknown precision 'fp8'"):
        check_precisions("onnx", ["fp8"])
    with pytest.raises(UsageError, match="applies to onnx, trt"):
        check_precisions("torchscript", ["fp16"])


# -- INT8 --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def int8_cnn(cnn: Path, workdir: Path) -> tuple[Path, dict]:
    calib = [{"x": f["x"]} for f in _labelled(128, seed=5)]
    dst = workdir / "cnn.int8.onnx"
    return dst, quantize_int8(cnn, dst, calib, method="minmax")


def test_int8_wraps_conv_and_matmul_in_qdq(int8_cnn: tuple[Path, dict]) -> None:
    dst, summary = int8_cnn
    model = onnx.load(str(dst))
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    heavy = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    assert {n.op_type for n in heavy} >= {"Conv"} and len(heavy) == 3
    for node in heavy:
        assert [producers.get(i) for i in node.input[:2]] == ["DequantizeLinear"] * 2, node.name
    assert summary["unquantized_nodes"] == []
    assert _io_types(dst) == {onnx.TensorProto.FLOAT}
    # TensorRT explicit quantisation: int8 with zero point 0 everywhere.
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            zp = inits[node.input[2]]
            assert zp.dtype == np.int8 and not zp.any(), node.name
    assert summary["warnings"] == []


class SoftmaxExpectation(torch.nn.Module):
    """A DFL-style head: 16-bin logits, a Softmax over the bins, a fixed 1x1 Conv with weights
    0..15 (the expectation), beside a plain Conv."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = torch.nn.Conv2d(4, 16, 1)
        self.expect = torch.nn.Conv2d(16, 1, 1, bias=False)
        self.expect.weight.data = torch.arange(16.0).view(1, 16, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bins = self.logits(x).view(x.shape[0], 16, -1).transpose(1, 2).softmax(-1)
        return self.expect(bins.transpose(1, 2).unsqueeze(-1))


def test_the_fallback_finds_an_expectation_over_softmax_bins(workdir: Path) -> None:
    """8-bit bin probabilities lose the sub-bin precision an expectation exists for (YOLOv8's
    DFL: a trained YOLOv8n lost 1.37 mAP points with it quantised, benchmarks/yolo_trained.py).
    No rule names the pattern: the measured search keeps the Conv that reads the Softmax in
    float, not the one that makes the logits."""
    from toolkit.backends.onnx.precision.fallback import find_fallback

    torch.manual_seed(0)
    src = _export(SoftmaxExpectation(), torch.randn(4, 4, 2, 3), workdir / "dfl.onnx")
    dst = workdir / "dfl.int8.onnx"
    calib = [{"x": np.random.default_rng(i).standard_normal((4, 4, 2, 3)).astype(np.float32)}
             for i in range(4)]
    quantize_int8(src, dst, calib, op_types=["Conv"])
    fp32, full = onnx.load(str(src)), onnx.load(str(dst))
    logits, expect = [n.name for n in fp32.graph.node if n.op_type == "Conv"]
    reference = ort.InferenceSession(str(src)).run(None, calib[0])[0]

    def worst_error(model) -> float:
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        return float(np.abs(session.run(None, calib[0])[0] - reference).max())

    limit = worst_error(full) / 3
    result, kept = find_fallback(full, fp32, calib,
                                 lambda m: (worst_error(m) < limit, -worst_error(m)),
                                 max_share=1.0, max_layers=2)
    assert result.passed and result.kept == [expect], result.to_dict()
    assert result.ranking[0].node == expect and logits in {c.node for c in result.ranking}
    # out of time before the first round: nothing kept, and the result says why
    stopped, _ = find_fallback(full, fp32, calib, lambda m: (True, 0.0), max_share=1.0,
                               time_limit=0.0)
    assert not stopped.passed and stopped.kept == [] and stopped.timed_out


def test_int8_stays_accurate(cnn: Path, int8_cnn: tuple[Path, dict]) -> None:
    dst, _ = int8_cnn
    evaluation = _labelled(256, seed=7)
    fp32 = classification_accuracy(_predict(cnn), evaluation)
    int8 = classification_accuracy(
        _predict(dst, disabled_optimizers=list(ORT_QDQ_DISABLED_OPTIMIZERS)), evaluation
    )
    assert fp32["n"] == int8["n"] == 256
    assert fp32["accuracy"] >= 0.9  # the tiny model learned the task
    passed, message = accuracy_gate(fp32["accuracy"], int8["accuracy"], max_drop_points=2.0)
    assert passed, message


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_int8_other_calibrators_and_cpu_profile(cnn: Path, workdir: Path, method: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths, as `make demo` passes them (ORT runs from a temp folder: they were
    resolved there, and the demo's INT8 step failed)."""
    calib = [{"x": f["x"]} for f in _labelled(32, seed=9)]
    dst = workdir / f"cnn.int8.{method}.onnx"
    monkeypatch.chdir(workdir)
    summary = quantize_int8(Path(cnn.name), Path(dst.name), calib, method=method,
                            profile="cpu")
    assert summary["activation_type"] == "uint8" and not summary["trt_compatible"]
    assert "only 32 calibration samples" in summary["warnings"][0]
    x, _ = _images(16, seed=2)
    ref = _session(cnn).run(None, {"x": x})[0]
    out = _session(dst).run(None, {"x": x})[0]
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize(
    ("feed", "match"),
    [
        ({"image": np.zeros((4, 1, 8, 8), np.float32)}, "input 'x' is missing"),
        ({"x": np.zeros((4, 1, 9, 8), np.float32)}, r"input 'x' has shape \[4, 1, 9, 8\]"),
        ({"x": np.zeros((4, 1, 8, 8), np.int64)}, "input 'x' has dtype int64"),
    ],
)
def test_bad_calibration_data_is_a_usage_error(
    cnn: Path, workdir: Path, feed: dict, match: str
) -> None:
    dst = workdir / "bad.int8.onnx"
    with pytest.raises(UsageError, match=match) as info:
        quantize_int8(cnn, dst, [feed])
    assert info.value.exit_code == 2
    assert "--calib-data" in str(info.value)
    assert not dst.exists()


def test_int8_rejects_bad_options(cnn: Path, workdir: Path) -> None:
    feeds = [{"x": np.zeros((4, 1, 8, 8), np.float32)}]
    with pytest.raises(UsageError, match="--calib-method kl"):
        quantize_int8(cnn, workdir / "x.onnx", feeds, method="kl")
    with pytest.raises(UsageError, match="no calibration batches"):
        quantize_int8(cnn, workdir / "x.onnx", [])


def test_requantising_is_refused(int8_cnn: tuple[Path, dict], workdir: Path) -> None:
    dst, _ = int8_cnn
    with pytest.raises(UsageError, match="already quantised"):
        convert_float16(dst, workdir / "y.onnx")
    assert op_counts(dst)["QuantizeLinear"] >= 3


def test_accuracy_gate_fails_on_a_large_drop() -> None:
    passed, message = accuracy_gate(0.95, 0.90, max_drop_points=1.0)
    assert not passed and "drop +5.00 points exceeds" in message


def test_fp16_of_an_output_that_feeds_another_node_loads_and_passes(tmp_path):
    from toolkit.export.pipeline import export

    result = export("tests.models:chained_outputs", ["onnx"], tmp_path / "b",
                    inputs=["x:1-4x5"], precisions=["fp32", "fp16"])
    assert result.exit_code == 0, result.to_dict()
    assert all(s.status == "ok" for s in result.steps)


def test_int8_keeps_an_output_that_a_relu_also_reads(tmp_path):
    """The embedding is a model output and the ReLU's input: folding the ReLU into its Q/DQ
    range would zero every negative value of the output (a new-user trial found it)."""
    import numpy as np
    from typer.testing import CliRunner

    from toolkit.bundle import Bundle
    from toolkit.cli.app import app

    np.savez(tmp_path / "calib.npz",
             x=np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32))
    result = CliRunner().invoke(app, [
        "export", "tests.models:output_then_relu", "--input", "x:1-4x8", "--to", "onnx",
        "--precision", "fp32,int8", "--calib-data", str(tmp_path / "calib.npz"),
        "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert Bundle.open(tmp_path / "b").artifact("onnx", "int8").parity.passed


def test_layer_report_reads_each_layers_precision_and_macs(cnn, int8_cnn, workdir) -> None:
    """`inspect --layers` on ONNX: per compute layer its precision from the graph and its
    MACs from shape inference at the given shapes (TinyCNN on 8x8: 8*64*9, 8*64*72, 8*2)."""
    from toolkit.backends.onnx.layers import onnx_layers

    fp16 = workdir / "cnn.layers.fp16.onnx"
    convert_float16(cnn, fp16)
    shapes = {"x": [4, 1, 8, 8]}
    for path, precision in ((cnn, "fp32"), (fp16, "fp16"), (int8_cnn[0], "int8")):
        report = onnx_layers(path, shapes)
        assert [layer.precision for layer in report.layers] == [precision] * 3, report
        assert [layer.macs for layer in report.layers] == [8 * 64 * 9, 8 * 64 * 72, 8 * 2]
        assert report.mac_shares() == {precision: 1.0}
