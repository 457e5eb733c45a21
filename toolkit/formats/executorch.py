"""ExecuTorch: PyTorch's own edge runtime. A .pte program from torch.export, its operators
lowered to the XNNPACK delegate (fp32, or INT8 by PT2E quantisation), the rest run by
ExecuTorch's portable kernels."""

from toolkit.formats import Format

FORMAT = Format(
    name="executorch",
    order=70,
    title="ExecuTorch",
    aliases=("pte",),
    description="ExecuTorch program (.pte) lowered to XNNPACK: PyTorch's edge runtime (fp32; "
                "int8 by PT2E)",
    suffixes=(".pte",),
    precisions=("fp32", "int8"),
    exporter="toolkit.backends.executorch.export:export_artifact",
    runner="toolkit.backends.executorch.runner:open_artifact",
    extra="executorch",
    runtime_module="executorch",
    libraries=("executorch", "torchao"),
    record_fields="toolkit.backends.executorch.record:ExecuTorchFields",
    describe="toolkit.backends.executorch.runner:describe_file",
    inspect="toolkit.backends.executorch.runner:inspect_file",
    load_priority=3,
)
