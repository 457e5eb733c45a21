"""OpenVINO INT8 by NNCF, the field's own quantiser for OpenVINO (`--openvino-quantizer nncf`,
extra `nncf`): the fp32 IR quantised with `nncf.quantize` (a detector's network ops only, as
the ONNX route does), then, when it misses the accuracy gate on --eval-data,
`nncf.quantize_with_accuracy_control` with the gate's drop as NNCF's max_drop, held to
--max-fallback; passing outside it, the Q/DQ route takes over.

Not the default: on a trained YOLOv8n (benchmarks/int8_fallback.py) its IR was no faster than
the one converted from the accuracy-controlled Q/DQ ONNX, within this machine's noise, and a
point less accurate; on the outlier model its accuracy control kept every layer in float."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit import tasks
from toolkit.export.job import ExportJob, fallback_budget

NNCF_SAMPLES = 300  # NNCF's own default subset size
NETWORK_TYPES = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData",
                 "GroupConvolutionBackpropData"}


def nncf_available(job: ExportJob) -> Any:
    """The nncf module when this INT8 is NNCF's (--openvino-quantizer nncf); not installed:
    exit 3 naming the extra."""
    from toolkit.environment import require_module
    from toolkit.formats.openvino import nncf_quantises

    if job.precision != "int8" or not nncf_quantises(job.options):
        return None
    return require_module("nncf", "--openvino-quantizer nncf", extra="nncf")


def quantize_with_nncf(job: ExportJob, nncf: Any, ov: Any,
                       accuracy: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Write job.dest; returns the record's extra fields (`accuracy()` gates the file at
    job.dest on --eval-data and gives the accuracy record)."""
    from toolkit.environment import library_version

    assert job.ensure is not None and job.dest is not None
    logging.getLogger("nncf").setLevel(logging.WARNING)  # its INFO lines flood the summary
    bundle, options = job.bundle, job.options.precision_options
    fp32_record = job.ensure("onnx", "fp32")
    model = ov.convert_model(str(bundle.checked_path(fp32_record)))
    section = bundle.detection
    ignored = None
    if tasks.of(section).quantize_network_only:
        kinds = {op.get_type_name() for op in model.get_ordered_ops()}
        ignored = nncf.IgnoredScope(types=sorted(kinds - NETWORK_TYPES), validate=False)
    calibration = nncf.Dataset(_samples(job))
    quantized = nncf.quantize(model, calibration, subset_size=NNCF_SAMPLES,
                              ignored_scope=ignored)
    ov.save_model(quantized, str(job.dest), compress_to_fp16=False)
    version = library_version("nncf")
    summary: dict[str, Any] = {"quantizer": f"nncf {version}", "ignored_op_types":
                               sorted(ignored.types) if ignored else []}
    notes = [f"quantised by NNCF {version} (nncf.quantize, {NNCF_SAMPLES} calibration samples "
             "at most" + (", the network's convolutions and matrix products only" if ignored
                          else "") + ")"]
    extra: dict[str, Any] = {"from_onnx": fp32_record.path, "transform": summary}
    if not options.eval_data:
        extra["notes"] = notes
        return extra
    extra["accuracy"] = accuracy()
    share, count = fallback_budget(options.max_fallback)
    if not extra["accuracy"]["passed"] and count > 0:
        missed = extra["accuracy"]
        controlled = _accuracy_control(job, nncf, ov.convert_model(
            str(bundle.checked_path(fp32_record))), calibration, ignored, section)
        ov.save_model(controlled, str(job.dest), compress_to_fp16=False)
        extra["accuracy"] = accuracy()
        floats = _float_layers(job)
        summary["accuracy_control"] = {"max_drop": options.max_accuracy_drop / 100,
                                       "passed": extra["accuracy"]["passed"],
                                       "kept_fp32": floats.names,
                                       "kept_mac_share": round(floats.share, 5)}
        said = (f"NNCF's accuracy control: plain NNCF INT8 missed the gate "
                f"({missed['message']}); it kept {len(floats.names)} layer(s) in float "
                f"({floats.share:.2%} of the MACs), {extra['accuracy']['message']}")
        if not extra["accuracy"]["passed"]:  # refused: as plain NNCF INT8, the closer one
            ov.save_model(quantized, str(job.dest), compress_to_fp16=False)
            extra["accuracy"] = missed
            notes.append(f"{said}; the plain NNCF IR is kept, and refused")
            extra["notes"] = notes
            return extra
        if floats.share > share + 1e-9 or len(floats.names) > count:
            raise OutsideBudget(f"{said}, outside --max-fallback ({options.max_fallback}): "
                                "the IR is converted from the Q/DQ ONNX instead, whose own "
                                "search keeps the fewest layers in float")
        extra["accuracy"]["full_int8"] = {"score": missed["reduced"]["score"],
                                          "message": missed["message"]}
        notes.append(said)
    extra["notes"] = notes
    return extra


class OutsideBudget(Exception):
    """NNCF's accuracy control passed the gate outside the budget: the Q/DQ route takes
    over."""


@dataclass(frozen=True)
class _Floats:
    names: list[str]
    share: float


def _float_layers(job: ExportJob) -> _Floats:
    """The compute layers the IR at job.dest keeps in float, by the runtime model here."""
    from toolkit.backends.openvino.layers import openvino_layers

    assert job.dest is not None
    shapes = {spec.name: list(spec.opt) for spec in job.bundle.inputs}
    report = openvino_layers(job.dest, shapes, "f32")
    return _Floats([layer.name for layer in report.layers if layer.precision != "int8"],
                   1.0 - report.mac_shares().get("int8", 0.0))


def _samples(job: ExportJob) -> list[dict[str, np.ndarray]]:
    """Calibration samples one at a time (NNCF counts items, and batch statistics differ),
    read as the ONNX route reads them (--calib-batches batches of up to 32)."""
    from toolkit.export.precision.data import calibration_feeds

    samples: list[dict[str, np.ndarray]] = []
    for inputs in calibration_feeds(job.bundle, job.options.precision_options):
        for i in range(len(next(iter(inputs.values())))):
            samples.append({k: np.asarray(v)[i:i + 1] for k, v in inputs.items()})
            if len(samples) >= NNCF_SAMPLES:
                return samples
    return samples


def _accuracy_control(job: ExportJob, nncf: Any, model: Any, calibration: Any, ignored: Any,
                      section: Any) -> Any:
    """NNCF's search for the quantisers to remove, on the toolkit's own task metric."""
    options = job.options.precision_options
    task = tasks.of(section)
    evaluation = task.hook("evaluation")(str(options.eval_data), job.bundle.inputs, section)
    held_out = task.hook("eval_inputs")(str(options.eval_data), job.bundle.inputs,
                                        max_batches=NNCF_SAMPLES, batch_size=1, section=section)

    def validate(compiled: Any, items: Any) -> tuple[float, None]:
        # the task metric is one number over the whole set (a per-image mAP means nothing):
        # refusing a subset puts NNCF in its mode that ranks by output differences
        if len(list(items)) < len(held_out):
            raise ValueError("the task metric is taken on the whole held-out set")

        def infer(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            result = compiled(feed)
            return {o.get_any_name(): np.asarray(result[o]) for o in compiled.outputs}
        return float(evaluation(infer)["score"]), None

    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    from toolkit.source.data import split_labels

    return nncf.quantize_with_accuracy_control(
        model, calibration, nncf.Dataset([split_labels(f)[0] for f in held_out]), validate,
        max_drop=options.max_accuracy_drop / 100, subset_size=NNCF_SAMPLES,
        ignored_scope=ignored, advanced_accuracy_restorer_parameters=(
            AdvancedAccuracyRestorerParameters(
                max_num_iterations=fallback_budget(options.max_fallback)[1])))
