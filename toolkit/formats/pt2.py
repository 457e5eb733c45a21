"""AOTInductor package: torch.compile ahead of time, loadable without the model's code."""

from toolkit.formats import Format, TritonSpec

FORMAT = Format(
    name="pt2",
    order=30,
    aliases=("aoti", "aotinductor", "export"),
    description="torch.export + AOTInductor package: torch.compile ahead of time, no Python "
                "model",
    suffixes=(".pt2",),
    exporter="toolkit.export.pt2:export_artifact",
    runner="toolkit.runtime.aoti:open_artifact",
    load_priority=1,
    triton=TritonSpec(platform="torch_aoti", filename="model.pt2", indexed_names=True,
                      max_batch=1,
                      note="Triton's torch_aoti platform (PyTorch backend, 26.03+) is beta and "
                      "serves batch size 1 only"),
)
