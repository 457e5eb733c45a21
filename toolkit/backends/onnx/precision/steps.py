"""Reduced-precision artifacts of a bundle: fp16/bf16 casts or INT8 Q/DQ written into the ONNX,
then an accuracy gate on labelled data (fp32 ONNX against the reduced one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit import tasks
from toolkit.bundle import Bundle, atomic_path
from toolkit.errors import ToolkitError, UsageError, first_line
from toolkit.export.job import PrecisionOptions, fallback_budget
from toolkit.export.precision.data import (
    accuracy_between,
    calibration_feeds,
    judging_feeds,
)

NETWORK_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def make_reduced_onnx(bundle: Bundle, base: dict[str, Any], dest: Path, precision: str,
                      options: PrecisionOptions, layout: str | None = None) -> dict[str, Any]:
    """Write `dest` from the bundle's fp32 ONNX; returns the record's extra fields."""
    from toolkit.backends.onnx.precision.fp16 import convert_float16
    from toolkit.backends.onnx.precision.int8 import quantize_int8
    from toolkit.backends.onnx.precision.speed import default_session_speedup

    source = bundle.checked_path(base)
    calibration: list[dict[str, Any]] = []
    scan = None
    with atomic_path(dest, suffix=".onnx") as tmp:
        if precision in ("fp16", "bf16"):
            # bf16 has fp32's range: only fp16 needs the values measured
            scan, skipped = range_scan(bundle, source, options) if precision == "fp16" \
                else (None, None)
            summary = convert_float16(source, tmp,
                                      dtype="float16" if precision == "fp16" else "bfloat16",
                                      keep_fp32_nodes=scan.keep_nodes if scan else ())
            if scan is not None:
                summary["range_scan"] = scan.to_dict()
            for note in (scan.note() if scan else None, skipped):
                if note:
                    summary.setdefault("warnings", []).append(note)
        elif precision == "int8":
            calibration = calibration_feeds(bundle, options)
            # A detector's post-processing (box decoding, NMS, padding) stays fp32: only the
            # network's heavy ops are quantized, as boxes in int8 would move by whole pixels.
            network_only = tasks.of(bundle.detection).quantize_network_only
            op_types = NETWORK_OPS if network_only else None
            summary = quantize_int8(source, tmp, calibration,
                                    method=options.calib_method, op_types=op_types,
                                    profile=layout or "cpu")
            if summary["profile"] == "cpu":
                summary["default_session"] = default_session_speedup(
                    source, tmp, {k: v[:1] for k, v in calibration[0].items()})
        else:
            raise UsageError(f"--precision {precision}: supported are fp32, fp16, bf16, int8")
    extra: dict[str, Any] = {"exporter": f"toolkit {precision} transform of {base['path']}",
                             "transform": summary}
    if summary.get("warnings"):
        extra["notes"] = list(summary["warnings"])
    if precision == "int8":
        extra.setdefault("notes", []).append(layout_note(summary))
        timing = summary.get("default_session")
        if timing and timing["speedup"] < SLOWER:
            extra["notes"].append(
                f"slower than fp32 here: {timing['p50_ms']:.3g} ms vs "
                f"{timing['fp32_p50_ms']:.3g} ms at batch 1 in a default ONNX Runtime session "
                f"on this CPU ({timing['speedup']:.2f}x); for ONNX Runtime CPU keep fp32 (or "
                "try fp16)")
    if precision in ("fp16", "bf16") and summary.get("weights_converted_fraction") == 0.0:
        # e.g. a model the exporter put inside an ONNX Loop (torchvision detectors with a
        # dynamic batch): subgraphs stay fp32, so this file is the fp32 model
        extra.setdefault("notes", []).append(
            f"no weight was converted to {precision} (the computation sits in subgraphs, which "
            "stay fp32): this artifact computes in fp32")
    if options.eval_data:
        extra["accuracy"] = accuracy_check(bundle, source, dest, options)
    try:
        from toolkit.backends.onnx.precision.controlled import fp16_search, int8_search

        if precision == "int8":
            controlled(bundle, source, dest, options, calibration, extra, int8_search())
        elif precision == "fp16" and summary.get("weights_converted_fraction"):
            feeds = [sample.inputs for sample in bundle.golden()]
            feeds += judging_feeds(bundle.inputs, options,
                                   tasks.of(bundle.detection))[0]
            kept = list(scan.keep_nodes) if scan is not None else []
            controlled(bundle, source, dest, options, feeds, extra,
                       fp16_search(source, "float16", kept))
    except ToolkitError:
        raise
    except Exception as err:  # onnx and onnxruntime raise many types: the search is a help,
        # not a step; the file stays as converted and is judged so
        extra.setdefault("notes", []).append(
            f"the accuracy-controlled search could not run ({first_line(err, 200)}): this "
            f"{precision} file is judged as converted")
    return extra


def controlled(bundle: Bundle, source: Path, dest: Path, options: PrecisionOptions,
               feeds: list[dict[str, Any]], extra: dict[str, Any], searched: Any) -> None:
    """A reduced file that misses the gate it will be judged by (the task metric on
    --eval-data, else the parity preset on the samples that judge it) gets the
    accuracy-controlled search (`searched`: INT8's layers or fp16's blocks)."""
    from toolkit.backends.onnx.precision.controlled import (
        AccuracyGate,
        ParityGate,
        Verdict,
        accuracy_controlled,
    )

    if fallback_budget(options.max_fallback)[1] == 0:
        return
    precision = searched.precision
    accuracy = extra.get("accuracy")
    if accuracy is not None:
        if accuracy["passed"] or accuracy["fp32"]["score"] <= 0:  # passed, or a vacuous gate
            return
        gate: Any = AccuracyGate(bundle, options, accuracy["fp32"]["score"])
        missed = Verdict(False, accuracy["reduced"]["score"], accuracy["message"])
        accuracy_controlled(bundle, source, dest, options, feeds, extra, gate, missed,
                            lambda: accuracy_check(bundle, source, dest, options), searched)
        return
    golden = bundle.manifest.golden
    if precision == "int8" and not (golden and golden.real):
        return  # INT8 judged on noise only: no gate worth searching for
    gate = ParityGate(bundle, precision)
    missed = gate.judge(dest)
    if not missed.passed:
        accuracy_controlled(bundle, source, dest, options, feeds, extra, gate, missed,
                            searched=searched)


def range_scan(bundle: Bundle, source: Path, options: PrecisionOptions
               ) -> tuple[Any, str | None]:
    """The fp32 model's values on the golden samples and the real data given (--eval-data,
    else --calib-data): which nodes fp16 can't hold. A scan that can't run (a model past
    protobuf's 2 GiB, a session that won't load with every tensor exposed) is said, not fatal:
    the op-type list still applies."""
    from toolkit.backends.onnx.precision.ranges import scan_ranges

    feeds = [sample.inputs for sample in bundle.golden()]
    task = tasks.of(bundle.detection)
    feeds += judging_feeds(bundle.inputs, options, task)[0]
    try:
        return scan_ranges(source, feeds), None
    except Exception as err:  # onnx and onnxruntime raise many types; the reason is kept
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        return None, (f"fp16 range scan skipped ({reason}): only the sensitive op types stay "
                      "fp32, so a large activation elsewhere may overflow")


def layout_note(summary: dict[str, Any]) -> str:
    """Where an INT8 file runs best, in the words the export prints and the manifest keeps."""
    if summary.get("profile") == "trt":
        return ("TensorRT layout (symmetric int8 Q/DQ, explicit quantization): build engines "
                "from it; on ONNX Runtime CPU the cpu layout (--int8-layout cpu) is faster")
    weights = ("7-bit weights, as this CPU lacks VNNI" if summary.get("reduce_range")
               else "8-bit weights (this CPU has VNNI)")
    return (f"ONNX Runtime CPU layout (uint8 activations, {weights}): load it in a plain "
            "InferenceSession; for TensorRT export --int8-layout trt")


SLOWER = 0.9  # INT8 below 0.9x fp32's speed is called slower; closer is within the noise


def accuracy_check(bundle: Bundle, fp32_path: Path, reduced_path: Path,
                   options: PrecisionOptions) -> dict[str, Any]:
    """The task's score (accuracy, or mAP for a detector) of the fp32 and the reduced ONNX on
    labelled data, and the gate's verdict on the drop."""
    from toolkit.backends.onnx.runner import OnnxRuntimeRunner

    return accuracy_between(
        bundle, OnnxRuntimeRunner(fp32_path, inputs=bundle.inputs, outputs=bundle.outputs),
        OnnxRuntimeRunner(reduced_path, inputs=bundle.inputs, outputs=bundle.outputs), options)
