"""The OpenVINO format's exporter: the bundle's ONNX converted to IR (model.xml + model.bin).

fp32 and bf16 convert the fp32 ONNX (bf16 is an inference precision, set when the IR is
compiled, not a graph transform); int8 is NNCF's quantisation of the IR where NNCF is
installed and calibration data given (nncf_quantize.py), else the CPU-layout Q/DQ ONNX
converted, which OpenVINO runs with its INT8 kernels. Weights are saved as they are
(`compress_to_fp16=False`: OpenVINO's default would halve fp32 weights silently). Works from a
bundle alone, without torch.
"""

from __future__ import annotations

from typing import Any

from toolkit.environment import cpu_flags, library_version, require_module
from toolkit.errors import ExportFailed, UsageError, first_line
from toolkit.export.job import ExportJob

#: our precision -> OpenVINO's INFERENCE_PRECISION_HINT; INT8 layers run as int8 whatever
#: the hint, and the hint keeps what is left in f32 instead of the CPU's bf16 default
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
#: the instruction sets that give OpenVINO's CPU plugin native bf16
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def check_bf16_here(flags: list[str] | None = None) -> None:
    """bf16 only where the CPU computes it natively; elsewhere OpenVINO would run f32 and the
    artifact would claim a precision it never ran in (exit 2, naming what is missing)."""
    flags = cpu_flags() if flags is None else flags
    if not any(f in flags for f in BF16_FLAGS):
        raise UsageError(
            "--precision bf16 for openvino needs a CPU with native bf16 (AMX-BF16 or "
            f"AVX512_BF16); this CPU has {', '.join(flags) or 'neither'}: use fp32 or int8 "
            "here, or export bf16 on the target CPU"
        )


def export_artifact(job: ExportJob) -> dict[str, Any]:
    if job.precision == "bf16":
        check_bf16_here()
    ov = require_module("openvino", "exporting OpenVINO IR", extra=job.format.extra)
    assert job.ensure is not None and job.dest is not None
    from toolkit.backends.openvino.nncf_quantize import (
        OutsideBudget,
        nncf_available,
        quantize_with_nncf,
    )

    nncf = nncf_available(job)
    handed_over = None
    if nncf is not None:
        try:
            by_nncf = quantize_with_nncf(job, nncf, ov, lambda: _accuracy(job, "f32"))
            notes = ["runs with INFERENCE_PRECISION_HINT=f32", *by_nncf.pop("notes")]
            return {**by_nncf, "inference_precision": "f32", "cpu_flags": cpu_flags(),
                    "openvino": library_version("openvino") or getattr(ov, "__version__", None),
                    "notes": notes}
        except OutsideBudget as err:
            handed_over = str(err)
        except Exception as err:  # NNCF and OpenVINO raise their own error types
            raise ExportFailed(f"NNCF could not quantise the IR: {first_line(err, 300)}") from err
    (source_format,) = job.format.builds_from
    source_precision = "int8" if job.precision == "int8" else "fp32"
    onnx_record = job.ensure(source_format, source_precision, job.format.int8_layout_needed)
    onnx_path = job.bundle.checked_path(onnx_record)
    try:
        model = ov.convert_model(str(onnx_path))
        ov.save_model(model, str(job.dest), compress_to_fp16=False)
    except Exception as err:  # OpenVINO raises its own error types
        raise ExportFailed(f"OpenVINO could not convert {onnx_path.name}: "
                           f"{first_line(err, 300)}") from err
    hint = INFERENCE_PRECISION[job.precision]
    notes = [f"runs with INFERENCE_PRECISION_HINT={hint}"]
    if handed_over:
        notes.append(handed_over)
    elif job.precision == "int8":
        notes.append(f"converted from {onnx_record.path}, with the layers it keeps in float "
                     "(--openvino-quantizer nncf: NNCF quantises the IR instead)")
    if job.precision == "bf16":
        notes.append("bf16 compute on this CPU's " + "/".join(
            f for f in BF16_FLAGS if f in cpu_flags()))
    extra: dict[str, Any] = {}
    if job.precision != "fp32" and job.options.precision_options.eval_data:
        extra["accuracy"] = _accuracy(job, hint)
    return {
        **extra,
        "from_onnx": onnx_record.path,
        "inference_precision": hint,
        "cpu_flags": cpu_flags(),
        "openvino": library_version("openvino") or getattr(ov, "__version__", None),
        "notes": notes,
    }


def _accuracy(job: ExportJob, hint: str) -> dict[str, Any]:
    """The accuracy gate on --eval-data: this IR at its precision against the fp32 ONNX, both
    run by OpenVINO in f32 (no other runtime needed on the machine)."""
    from toolkit.backends.openvino.runner import OpenVinoRunner
    from toolkit.export.precision.data import accuracy_between

    bundle = job.bundle
    fp32_onnx = bundle.checked_path(job.ensure("onnx", "fp32"))  # type: ignore[misc]
    specs = {"inputs": bundle.inputs, "outputs": bundle.outputs}
    return accuracy_between(bundle, OpenVinoRunner(fp32_onnx, inference_precision="f32", **specs),
                            OpenVinoRunner(job.dest, inference_precision=hint,
                                           precision=job.precision, **specs),
                            job.options.precision_options)
