"""TorchScript: legacy upstream (torch.jit is deprecated), still what many servers load."""

from toolkit.formats import Format, TritonSpec

FORMAT = Format(
    name="torchscript",
    record_fields="toolkit.backends.torchscript.record:TorchScriptFields",
    order=20,
    title="TorchScript",
    aliases=("ts", "jit"),
    description="TorchScript trace (script when tracing is wrong), frozen — legacy upstream",
    suffixes=(".ts",),
    exporter="toolkit.backends.torchscript.export:export_artifact",
    runner="toolkit.backends.torchscript.runner:open_artifact",
    load_priority=2,
    triton=TritonSpec(platform="pytorch_libtorch", filename="model.pt", indexed_names=True),
    options="toolkit.backends.torchscript.options:TorchScriptOptions",
)
