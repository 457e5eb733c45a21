"""OpenVINO IR: model.xml + model.bin, converted from the bundle's ONNX; the fastest CPU path
on Intel (bf16 on AMX / AVX-512 BF16, INT8 from the CPU-layout Q/DQ ONNX). The inference
precision is always set and recorded: OpenVINO's own default is bf16 on such CPUs."""

from typing import Any

from toolkit.formats import Format, TritonSpec


def nncf_quantises(options: Any) -> bool:
    """INT8 is NNCF's quantisation of the fp32 IR when asked (--openvino-quantizer nncf);
    by default the CPU-layout Q/DQ ONNX is converted."""
    return options.backend("openvino").quantizer == "nncf"


def _int8_from_layout(options: Any) -> bool:
    return not nncf_quantises(options)


def _triton_parameters(record: Any) -> dict[str, str]:
    """What Triton's OpenVINO backend can be told (it reads INFERENCE_NUM_THREADS,
    COMPILATION_NUM_THREADS, HINT_BF16, NUM_STREAMS and PERFORMANCE_HINT, nothing else)."""
    parameters = {"PERFORMANCE_HINT": "LATENCY"}
    if FORMAT.fields_of(record).inference_precision == "bf16":
        parameters["HINT_BF16"] = "YES"
    return parameters


def _triton_caveats(record: Any) -> list[str]:
    if FORMAT.fields_of(record).inference_precision == "bf16":
        return []
    return ["Triton's OpenVINO backend has no setting that pins f32: on a CPU with AMX or "
            "AVX512_BF16 it computes this IR in bf16, which it was not verified in; serve the "
            "bf16 artifact there (verified in bf16), or the ONNX through onnxruntime"]


FORMAT = Format(
    name="openvino",
    record_fields="toolkit.backends.openvino.record:OpenVINOFields",
    order=60,
    title="OpenVINO",
    libraries=("openvino", "nncf"),
    aliases=("ov", "ir"),
    description="OpenVINO IR from the ONNX, inference precision explicit (f32, bf16, int8)",
    suffixes=(".xml",),
    companion_suffixes=(".bin",),
    # fp16 is an inference precision of OpenVINO's GPU and NPU devices; none is here to
    # verify one, so it isn't offered.
    precisions=("fp32", "bf16", "int8"),
    needs_model=False,
    exporter="toolkit.backends.openvino.export:export_artifact",
    runner="toolkit.backends.openvino.runner:open_artifact",
    extra="openvino",
    runtime_module="openvino",
    load_priority=1,
    builds_from=("onnx",),
    layers="toolkit.backends.openvino.layers:openvino_layers",
    # without NNCF, the INT8 IR is converted from the ONNX Runtime (CPU) layout of the Q/DQ ONNX
    int8_layout_needed="cpu",
    int8_from_layout=_int8_from_layout,
    triton=TritonSpec(platform="", backend="openvino", filename="model.xml",
                      parameters=_triton_parameters, caveats=_triton_caveats,
                      note="Triton's OpenVINO backend"),
    options="toolkit.backends.openvino.options:OpenVINOOptions",
)
