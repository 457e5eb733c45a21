"""ONNX: the portable artifact; ONNX Runtime runs it, TensorRT builds from it."""

from toolkit.formats import Format, TritonSpec

#: --int8-layout's help: the layouts an INT8 ONNX comes in (the option group's choices)
INT8_LAYOUT_HELP = ("INT8 ONNX layout: cpu (uint8 activations, fastest on ONNX Runtime CPU), "
                    "trt (symmetric int8 Q/DQ for TensorRT), both, or auto: each format asked "
                    "for gets the layout it runs (cpu for --to onnx).")

FORMAT = Format(
    name="onnx",
    order=10,
    title="ONNX",
    libraries=("onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript"),
    description="ONNX via torch.onnx.export(dynamo=True); runs in ONNX Runtime, feeds TensorRT",
    suffixes=(".onnx",),
    # weights past protobuf's 2 GB limit go to model.onnx.data, which the graph names
    companion_suffixes=(".onnx.data",),
    companions_optional=True,
    companions_named_inside=True,
    precisions=("fp32", "fp16", "int8"),
    needs_model=True,  # fp32 comes from the model; fp16/int8 are derived from the fp32 ONNX
    exporter="toolkit.backends.onnx.export:export_artifact",
    runner="toolkit.backends.onnx.runner:open_artifact",
    extra="onnxruntime",
    runtime_module="onnxruntime",
    describe="toolkit.backends.onnx.file:describe_file",
    inspect="toolkit.backends.onnx.file:inspect_file",
    localize="toolkit.backends.onnx.localize:localize_onnx",
    layers="toolkit.backends.onnx.layers:onnx_layers",
    load_priority=0,
    int8_layouts=("cpu", "trt"),
    triton=TritonSpec(platform="onnxruntime_onnx", filename="model.onnx"),
    options="toolkit.backends.onnx.options:OnnxOptions",
    migrate="toolkit.backends.onnx.record:migrate",
    source_file="toolkit.backends.onnx.file:source_specs",
)
