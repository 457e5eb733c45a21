"""AOTInductor package: torch.compile ahead of time, loadable without the model's code."""

from toolkit.formats import Format, TritonSpec

FORMAT = Format(
    name="pt2",
    order=30,
    title="AOTInductor",
    aliases=("aoti", "aotinductor"),
    description="torch.export + AOTInductor package: torch.compile ahead of time, no Python "
                "model",
    suffixes=(".pt2",),
    exporter="toolkit.backends.pt2.export:export_artifact",
    runner="toolkit.backends.pt2.runner:open_artifact",
    load_priority=1,
    triton=TritonSpec(platform="torch_aoti", filename="model.pt2", indexed_names=True,
                      max_batch=1,
                      note="Triton's torch_aoti platform (PyTorch backend, 26.03+) is beta and "
                      "serves batch size 1 only"),
)
