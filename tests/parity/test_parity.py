"""Parity comparison: unit rules on arrays, then planted defects in real exported models."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from toolkit import parity
from toolkit.errors import CheckFailed, UsageError
from toolkit.parity.compare import compare_sample
from toolkit.parity.render import failure_details, histogram_text, print_reports, to_markdown
from toolkit.parity.report import check
from toolkit.parity.tolerances import Tolerance, tolerance_for

EXACT = Tolerance(atol=0.0, rtol=0.0)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- element rule and metrics -----------------------------------------------------------------


def test_identical_outputs_pass_with_zero_error():
    ref = {"y": _rng().standard_normal((2, 10)).astype(np.float32)}
    [result] = compare_sample(ref, {"y": ref["y"].copy()}, EXACT)
    assert result.passed
    assert result.metrics.max_abs == 0.0 and result.metrics.cosine == pytest.approx(1.0)
    assert sum(result.metrics.histogram) == 20


def test_element_rule_atol_plus_rtol_times_reference():
    ref = np.array([1.0, 10.0, 100.0])
    tol = Tolerance(atol=0.01, rtol=0.001)
    bound = 0.01 + 0.001 * np.abs(ref)
    inside = parity.compare_output("y", ref, ref + bound * 0.99, tol)
    outside = parity.compare_output("y", ref, ref + bound * np.array([0.99, 1.01, 0.99]), tol)
    assert inside.passed
    assert not outside.passed and outside.metrics.violations == 1
    assert outside.metrics.worst.index == (1,)


def test_satol_scales_with_the_outputs_peak():
    ref = np.array([0.0, 0.5, 1000.0])
    act = ref + np.array([0.9, 0.0, 0.0])  # the near-zero element is off by 0.9
    assert parity.compare_output("y", ref, act, Tolerance(atol=0, rtol=0, satol=1e-3)).passed
    assert not parity.compare_output("y", ref / 1000, act / 1000,
                                      Tolerance(atol=0, rtol=0, satol=1e-4)).passed


def test_required_atol_is_the_smallest_passing_atol():
    ref = _rng(1).standard_normal(1000)
    act = ref + _rng(2).normal(0, 1e-3, 1000)
    tol = Tolerance(atol=0.0, rtol=1e-3)
    need = parity.compare_output("y", ref, act, tol).metrics.required_atol
    assert need > 0
    assert parity.compare_output("y", ref, act, tol.replace(atol=need * 1.0001)).passed
    assert not parity.compare_output("y", ref, act, tol.replace(atol=need * 0.99)).passed


def test_relative_error_uses_a_floor_for_near_zero_references():
    ref = np.array([1e-12, 1.0])
    result = parity.compare_output("y", ref, ref + 1e-6, EXACT)
    # without the floor this would be 1e6; with it, 1e-6 / (1e-3 * peak) = 1e-3
    assert result.metrics.max_rel == pytest.approx(1e-3, rel=1e-3)


def test_histogram_and_worst_element():
    ref = np.zeros((2, 3))
    act = ref.copy()
    act[1, 2] = 0.5
    act[0, 0] = 2e-6
    result = parity.compare_output("y", ref, act, EXACT)
    hist = dict(zip(parity.HISTOGRAM_LABELS, result.metrics.histogram, strict=True))
    assert hist["<1e-7"] == 4 and hist["1e-6"] == 1 and hist["1e-1"] == 1
    assert result.metrics.worst.index == (1, 2) and result.metrics.worst.actual == 0.5
    assert "1e-1" in histogram_text(result.metrics.histogram)


def test_cosine_and_max_fraction_gates():
    ref = _rng().standard_normal(1000)
    flipped = ref.copy()
    flipped[:10] *= -1  # 1 % of the elements
    loose = Tolerance(atol=10.0, rtol=0.0, min_cosine=0.999)
    assert not parity.compare_output("y", ref, flipped, loose).passed  # cosine catches it
    frac = Tolerance(atol=1e-6, rtol=0.0, max_fraction=0.02)
    assert parity.compare_output("y", ref, flipped, frac).passed
    assert not parity.compare_output("y", ref, flipped, frac.replace(max_fraction=0.005)).passed


# -- non-finite values, names, shapes, dtypes -------------------------------------------------


def test_nan_or_inf_in_actual_where_reference_is_finite_fails():
    ref = np.ones((2, 4), np.float32)
    act = ref.copy()
    act[0, 1] = np.nan
    act[1, 3] = np.inf
    [result] = compare_sample({"y": ref}, {"y": act}, Tolerance(atol=1e3, rtol=1.0))
    assert not result.passed
    assert result.metrics.nan_actual == 1 and result.metrics.inf_actual == 1
    assert result.metrics.nonfinite_mismatch == 2
    assert "non-finite" in result.reasons[0]


def test_matching_nonfinite_values_pass():
    ref = np.array([np.nan, np.inf, -np.inf, 1.0])
    assert parity.compare_output("y", ref, ref.copy(), EXACT).passed
    assert not parity.compare_output("y", ref, ref[[0, 2, 1, 3]], EXACT).passed


def test_missing_extra_shape_and_dtype_failures_are_all_collected():
    ref = {"logits": np.zeros((1, 4), np.float32), "boxes": np.zeros((1, 2), np.float32),
           "ids": np.zeros(3, np.int64)}
    act = {"logit": np.zeros((1, 4), np.float32), "boxes": np.zeros((2, 2), np.float32),
           "ids": np.zeros(3, np.float32)}
    results = {r.output: r for r in compare_sample(ref, act, EXACT)}
    assert results["logits"].status == "missing"
    assert "did you mean 'logit'" in results["logits"].reasons[0]
    assert results["logit"].status == "extra"
    assert results["boxes"].status == "shape"
    assert results["ids"].status == "dtype"
    assert not any(r.passed for r in results.values())


def test_float_width_difference_is_a_note_not_a_failure():
    ref = np.linspace(-1, 1, 8, dtype=np.float32)
    result = parity.compare_output("y", ref, ref.astype(np.float16), tolerance_for("fp16").default)
    assert result.passed and "float16" in result.notes[0]


def test_swapped_outputs_fail_and_are_named():
    a, b = _rng(1).standard_normal((2, 5)), _rng(2).standard_normal((2, 5))
    results = compare_sample({"a": a, "b": b}, {"a": b, "b": a}, tolerance_for("fp32"))
    assert [r.status for r in results] == ["fail", "fail"]
    assert any("swapped" in note for note in results[0].notes)


# -- tolerances -------------------------------------------------------------------------------


def test_presets_exist_for_every_precision_and_widen_with_it():
    order = ["fp32", "fp16", "bf16", "int8"]
    satols = [parity.PRESETS[p].satol for p in order]
    assert satols == sorted(satols) and len(set(satols)) == 4
    assert tolerance_for("half").precision == "fp16"


def test_unknown_precision_suggests_the_close_one():
    with pytest.raises(UsageError, match="did you mean 'fp16'"):
        tolerance_for("fp61")


def test_tolerance_for_overrides_and_per_output():
    tols = tolerance_for("fp16", atol=1e-2, per_output={"boxes": {"rtol": 0.5, "top1": 0.9}})
    assert tols.default.atol == 1e-2 and tols.default.rtol == parity.PRESETS["fp16"].rtol
    boxes = tols.for_output("boxes")
    assert boxes.atol == 1e-2 and boxes.rtol == 0.5 and boxes.task_min == {"top1": 0.9}
    assert tols.for_output("other") is tols.default
    with pytest.raises(UsageError, match="did you mean 'rtol'"):
        tolerance_for("fp32", per_output={"y": {"rtoll": 1}})


def test_parse_tol_option():
    assert parity.parse_tolerance_option("logits:atol=1e-3,rtol=0.01") == (
        "logits", {"atol": 1e-3, "rtol": 0.01})
    assert parity.parse_tolerance_option("cos=0.99") == (None, {"cos": 0.99})
    for bad, message in [("y:atol", "KEY=VALUE"), ("y:atl=1", "did you mean 'atol'"),
                         ("y:atol=x", "not a number"), ("y:", "no KEY=VALUE"),
                         (":atol=1", "empty output name"), ("atol=-1", ">= 0")]:
        with pytest.raises(UsageError, match=message):
            parity.parse_tolerance_option(bad)
    tols = parity.tolerances_from_options("fp32", ["rtol=0.1", "y:atol=2,top1=0.5"])
    assert tols.default.rtol == 0.1
    assert tols.for_output("y").atol == 2 and tols.for_output("y").rtol == 0.1
    assert tols.for_output("y").task_min == {"top1": 0.5}


# -- task metrics -----------------------------------------------------------------------------


def test_topk_applies_to_class_scores_and_reports_agreement():
    ref = _rng().standard_normal((4, 10)).astype(np.float32)
    act = ref.copy()
    act[0] = act[0][::-1]  # one row's ranking reversed
    [result] = compare_sample({"logits": ref}, {"logits": act}, Tolerance(atol=100, rtol=0))
    assert result.passed  # values are within this loose bound: the task metric only informs
    assert result.task["top1"] == (pytest.approx(0.75), 4)
    feature_map = _rng().standard_normal((1, 3, 4, 4))
    [fm] = compare_sample({"f": feature_map}, {"f": feature_map}, EXACT)
    assert fm.task == {}


def test_task_threshold_fails_on_the_aggregate_over_samples():
    ref = _rng().standard_normal((2, 10))
    act = ref.copy()
    act[0] = -act[0]
    tols = parity.Tolerances(Tolerance(atol=100, rtol=0, task_min={"top1": 0.9}))
    report = check([({"y": ref}, {"y": ref}), ({"y": ref}, {"y": act})], tolerance=tols)
    assert not report.failures  # every sample is within the element bound
    assert report.task_failures() == {"y": ["top1 0.7500 < 0.9"]}
    assert not report.passed and report.worst()["y"].status == "fail"


def test_task_metric_registry():
    def is_vector(info, arr):
        return len(info.shape) == 1

    def total(exp, act):
        return {"sum_ratio": float(act.sum() / exp.sum())}, 1

    parity.register_task_metric("sum_ratio", is_vector, total, keys=["sum_ratio"])
    try:
        with pytest.raises(ValueError, match="already registered"):
            parity.register_task_metric("sum_ratio", is_vector, total, keys=["sum_ratio"])
        with pytest.raises(ValueError, match="already taken"):
            parity.register_task_metric("other", is_vector, total, keys=["top1"])
        [r] = compare_sample({"v": np.ones(3)}, {"v": np.ones(3) * 2}, Tolerance(atol=10))
        assert r.task["sum_ratio"] == (2.0, 1)
        assert "sum_ratio" in parity.task_metric_keys()
    finally:
        parity._TASK_METRICS.pop("sum_ratio")
    with pytest.raises(UsageError, match="did you mean 'topk'"):
        parity.get_task_metric("topK")


# -- report -----------------------------------------------------------------------------------


def test_report_collects_every_failure_and_serialises():
    ref = {"a": np.ones((2, 3), np.float32), "b": np.zeros(4, np.float32)}
    bad_a = {"a": ref["a"] + 1, "b": ref["b"]}
    bad_b = {"a": ref["a"], "b": np.full(4, np.nan, np.float32)}
    report = check([(ref, ref), (ref, bad_a), (ref, bad_b), (ref, bad_a)],
                   precision="fp32", artifact="model.onnx")
    assert not report.passed
    assert [(f.output, f.sample) for f in report.failures] == [("a", 1), ("b", 2), ("a", 3)]
    worst = report.worst()
    assert worst["a"].failed_samples == [1, 3] and worst["b"].nan_actual == 4
    line = report.summary_line()
    assert line.startswith("FAIL model.onnx [fp32]") and "a (fail, samples 1,3)" in line
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["passed"] is False and data["samples"] == 4 and len(data["failures"]) == 3
    assert data["tolerance"]["precision"] == "fp32" and "results" not in data
    detailed = json.loads(json.dumps(report.to_dict(details=True), allow_nan=False))
    assert len(detailed["results"]) == 8 and detailed["results"][5]["metrics"]["nan_actual"] == 4
    with pytest.raises(CheckFailed, match="model.onnx"):
        report.raise_if_failed()


def test_empty_report_does_not_pass():
    assert not check([], precision="fp32").passed


def test_rendering_names_failures(capsys):
    from rich.console import Console

    ref = {"logits": _rng().standard_normal((2, 10)).astype(np.float32)}
    act = {"logits": ref["logits"] * 1.05}
    reports = [check([(ref, ref)], artifact="good.onnx"),
               check([(ref, act), (ref, ref)], artifact="bad.onnx")]
    details = failure_details(reports)
    assert details[0].startswith("bad.onnx · logits: FAIL on samples 0 of 2")
    assert any("would pass with atol >=" in line for line in details)
    assert any("worst element: sample 0 index" in line for line in details)
    md = to_markdown(reports)
    assert "| good.onnx | fp32 | `logits` |" in md and "**FAIL**" in md and "### Failures" in md
    console = Console(width=200, record=True)
    print_reports(reports, console=console)
    text = console.export_text()
    assert "bad.onnx" in text and "FAIL" in text and "PASS good.onnx" in text


# -- real models ------------------------------------------------------------------------------


def _small_cnn():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4096, 512), nn.ReLU(), nn.Linear(512, 10),
    )


def _export(model, example, path, output_names):
    import torch

    torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=["x"],
                      output_names=output_names, verbose=False)
    import onnx

    return onnx.load(str(path))


def _run(model_proto, feed):
    import onnxruntime as ort

    sess = ort.InferenceSession(model_proto.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feed), strict=True))


def _edited(model_proto, name, edit):
    import onnx
    from onnx import numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model_proto)
    for init in copy.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(edit(numpy_helper.to_array(init).copy()), name))
            return copy
    raise AssertionError(f"no initializer {name}")


@pytest.fixture(scope="module")
def two_output_cnn(tmp_path_factory):
    """The small CNN returning (logits, probs); its eager outputs on two input batches."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")

    class TwoOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _small_cnn()

        def forward(self, x):
            logits = self.net(x)
            return logits, torch.softmax(logits, dim=1)

    torch.manual_seed(0)
    model = TwoOutputs().eval()
    feeds = [{"x": _rng(s).standard_normal((2, 3, 32, 32)).astype(np.float32)} for s in (1, 2)]
    with torch.no_grad():
        refs = [dict(zip(("logits", "probs"), (t.numpy() for t in model(torch.from_numpy(f["x"]))),
                         strict=True)) for f in feeds]
    proto = _export(model, torch.from_numpy(feeds[0]["x"]),
                    tmp_path_factory.mktemp("cnn") / "cnn.onnx", ["logits", "probs"])
    return proto, feeds, refs


def _verify(proto, feeds, refs, precision="fp32", artifact="model.onnx"):
    return check(((ref, _run(proto, feed)) for feed, ref in zip(feeds, refs, strict=True)),
                 precision=precision, artifact=artifact)


def test_healthy_small_cnn_passes_fp32(two_output_cnn):
    report = _verify(*two_output_cnn)
    assert report.passed, report.summary_line()
    assert report.worst()["logits"].task["top1"] == 1.0


def test_scaled_conv_weights_fail_fp32(two_output_cnn):
    proto, feeds, refs = two_output_cnn
    broken = _edited(proto, "net.3.weight", lambda w: w * 1.03)
    report = _verify(broken, feeds, refs)
    assert not report.passed
    assert {f.output for f in report.failures} >= {"logits"}
    assert report.worst()["logits"].violations > 0


def test_nan_in_a_bias_fails(two_output_cnn):
    proto, feeds, refs = two_output_cnn

    def poison(b):
        b[0] = np.nan
        return b

    report = _verify(_edited(proto, "net.7.bias", poison), feeds, refs)
    assert not report.passed
    assert report.worst()["logits"].nan_actual > 0
    assert any("non-finite" in reason for f in report.failures for reason in f.reasons)


def test_swapped_graph_outputs_fail(two_output_cnn):
    import onnx

    proto, feeds, refs = two_output_cnn
    swapped = onnx.ModelProto()
    swapped.CopyFrom(proto)
    rename = {"logits": "probs", "probs": "logits"}
    for node in swapped.graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    report = _verify(swapped, feeds, refs)
    assert {(f.output, f.status) for f in report.failures} == {("logits", "fail"),
                                                              ("probs", "fail")}


def test_renamed_output_fails_as_missing(two_output_cnn):
    import onnx

    proto, feeds, refs = two_output_cnn
    renamed = onnx.ModelProto()
    renamed.CopyFrom(proto)
    renamed.graph.output[1].name = "prob"
    for node in renamed.graph.node:
        node.output[:] = ["prob" if o == "probs" else o for o in node.output]
    report = _verify(renamed, feeds, refs)
    statuses = {(f.output, f.status) for f in report.failures}
    assert statuses == {("probs", "missing"), ("prob", "extra")}


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    feeds = [{"x": _rng(s).standard_normal((1, 3, 128, 128)).astype(np.float32)} for s in (1, 2)]
    with torch.no_grad():
        refs = [{"logits": model(torch.from_numpy(f["x"])).numpy()} for f in feeds]
    proto = _export(model, torch.from_numpy(feeds[0]["x"]),
                    tmp_path_factory.mktemp("r18") / "r18.onnx", ["logits"])
    return proto, feeds, refs


def test_healthy_resnet18_passes_fp32(resnet18):
    report = _verify(*resnet18)
    assert report.passed, report.summary_line()


def test_fp16_resnet18_passes_fp16_but_not_fp32(resnet18):
    float16 = pytest.importorskip("onnxconverter_common.float16")
    proto, feeds, refs = resnet18
    with warnings.catch_warnings():  # it warns for every weight it rounds to fp16's range
        warnings.simplefilter("ignore", UserWarning)
        half = float16.convert_float_to_float16(proto, keep_io_types=True)
    report = _verify(half, feeds, refs, precision="fp16", artifact="model.fp16.onnx")
    assert report.passed, report.summary_line()
    assert not _verify(half, feeds, refs, precision="fp32").passed
