"""AOTInductor package: torch.compile ahead of time, loadable without the model's code."""

from toolkit.formats import Format

FORMAT = Format(
    name="pt2",
    aliases=("aoti", "aotinductor", "export"),
    description="torch.export + AOTInductor package: torch.compile ahead of time, no Python "
                "model",
    suffixes=(".pt2",),
    exporter="toolkit.export.pt2:export_artifact",
    runner="toolkit.runtime.aoti:open_artifact",
    load_priority=1,
)
