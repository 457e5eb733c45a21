"""torch.compile in-process: not saved, a comparison point for verify and bench."""

from toolkit.formats import Format

FORMAT = Format(
    name="compile",
    order=40,
    title="torch.compile",
    aliases=("torch.compile", "inductor"),
    description="torch.compile in-process, not saved: a comparison point for verify and bench",
    suffixes=("",),
    runs_from="model",
    exporter="toolkit.export.compile:export_artifact",
    runner="toolkit.runtime.compiled:open_model",
)
