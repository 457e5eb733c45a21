"""The export plan: what a run makes, decided before anything is written (pure, no torch)."""

from __future__ import annotations

import pytest

from toolkit import OnnxOptions, OpenVINOOptions
from toolkit.errors import UsageError
from toolkit.export.job import BackendOptions, ExportOptions, PrecisionOptions
from toolkit.export.plan import ExportPlan


def planned(asked, precisions, **options):
    plan = ExportPlan(asked, ExportOptions(precisions=precisions, **options))
    plan.check_precisions()
    return [(s.format.name, s.precision, s.layout) for s in plan.steps()]


def test_a_format_built_from_another_gets_what_it_needs_of_it_first():
    assert planned(["openvino"], ("fp32", "int8")) == [
        ("onnx", "fp32", None), ("onnx", "int8", "cpu"),
        ("openvino", "fp32", None), ("openvino", "int8", None)]


def test_each_int8_layout_is_made_for_the_place_asked_to_run_it():
    steps = planned(["trt", "onnx"], ("fp32", "int8"))
    assert ("onnx", "int8", "cpu") in steps and ("onnx", "int8", "trt") in steps
    assert steps.index(("onnx", "int8", "trt")) < steps.index(("trt", "int8", None))
    only_trt = planned(["trt"], ("int8",),
                       backends=BackendOptions((OnnxOptions(int8_layout="trt"),)))
    assert ("onnx", "int8", "cpu") not in only_trt


def test_precision_names_are_settled_and_checked_before_any_step():
    assert planned(["onnx"], ("FP16", "half")) == [("onnx", "fp16", None)]
    with pytest.raises(UsageError, match="not supported for torchscript"):
        planned(["torchscript"], ("fp32", "fp16"))
    # in a list, an fp32-only format exports fp32 beside the formats that carry fp16
    assert ("torchscript", "fp32", None) in planned(["onnx", "torchscript"], ("fp32", "fp16"))


def test_openvino_int8_by_nncf_needs_no_int8_onnx():
    """NNCF quantises the fp32 IR (--openvino-quantizer nncf): the Q/DQ ONNX the IR is
    otherwise converted from is not made."""
    by_nncf = dict(precision_options=PrecisionOptions(calib_data="calib.npz"),
                   backends=BackendOptions((OpenVINOOptions(quantizer="nncf"),)))
    assert planned(["openvino"], ("fp32", "int8"), **by_nncf) == [
        ("onnx", "fp32", None), ("openvino", "fp32", None), ("openvino", "int8", None)]
    assert ("onnx", "int8", "cpu") in planned(
        ["openvino"], ("fp32", "int8"), precision_options=PrecisionOptions(calib_data="c.npz"))
