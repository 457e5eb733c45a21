"""OpenVINO IR: model.xml + model.bin, converted from the bundle's ONNX; the fastest CPU path
on Intel (bf16 on AMX / AVX-512 BF16, INT8 from the CPU-layout Q/DQ ONNX). The inference
precision is always set and recorded: OpenVINO's own default is bf16 on such CPUs."""

from typing import Any

from toolkit.formats import Format, TritonSpec


def _triton_parameters(record: Any) -> dict[str, str]:
    """Triton's OpenVINO backend passes these to the plugin: run as the bundle verified."""
    return {"INFERENCE_PRECISION_HINT": record.get("inference_precision") or "f32",
            "PERFORMANCE_HINT": "LATENCY"}


FORMAT = Format(
    name="openvino",
    aliases=("ov", "ir"),
    description="OpenVINO IR from the ONNX, inference precision explicit (f32, bf16, int8)",
    suffixes=(".xml",),
    companion_suffixes=(".bin",),
    # fp16 is an inference precision of OpenVINO's GPU and NPU devices; none is here to
    # verify one, so it isn't offered.
    precisions=("fp32", "bf16", "int8"),
    needs_model=False,
    exporter="toolkit.export.openvino:export_artifact",
    runner="toolkit.runtime.openvino:open_artifact",
    extra="openvino",
    load_priority=1,
    builds_from=("onnx",),
    # the INT8 IR is converted from the ONNX Runtime (CPU) layout of the Q/DQ ONNX
    int8_layout_needed="cpu",
    triton=TritonSpec(platform="", backend="openvino", filename="model.xml",
                      parameters=_triton_parameters,
                      note="Triton's OpenVINO backend; the inference precision the bundle "
                      "verified is passed as INFERENCE_PRECISION_HINT"),
)
