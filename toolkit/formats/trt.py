"""TensorRT engine: built on the target GPU from the bundle's ONNX (or via Torch-TensorRT)."""

from typing import Any

from toolkit.formats import Format, TritonSpec


def _from_model(options: Any) -> bool:
    """--via torch-compile / torchscript build from the PyTorch model, not the ONNX."""
    return bool(options.backend("trt").via != "onnx")


FORMAT = Format(
    name="trt",
    order=50,
    title="TensorRT",
    libraries=("tensorrt", "torch-tensorrt", "cuda-python"),
    aliases=("tensorrt", "engine"),
    description="TensorRT engine from the ONNX, strongly typed; built on the target GPU",
    suffixes=(".engine", ".plan"),
    precisions=("fp32", "fp16", "bf16", "int8"),
    needs_model=False,
    exporter="toolkit.backends.trt.export:export_artifact",
    runner="toolkit.backends.trt.runner:open_artifact",
    extra="trt",
    runtime_module="tensorrt",
    load_priority=3,
    builds_from=("onnx",),
    # An fp32 engine may use TF32 (on by default on Ampere and newer)
    presets={"fp32": "tf32"},
    model_route=_from_model,
    int8_layout_needed="trt",
    triton=TritonSpec(platform="tensorrt_plan", filename="model.plan", gpu=True,
                      note="the engine runs only on the GPU model and TensorRT version it was "
                      "built with: Triton's TensorRT must match the bundle's"),
    options="toolkit.backends.trt.options:BuildOptions",
    device_facts="toolkit.backends.trt.device:device_facts",
    record_fields="toolkit.backends.trt.record:TensorRTFields",
)
