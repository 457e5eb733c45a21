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
    exporter="toolkit.backends.compile.export:export_artifact",
    runner="toolkit.backends.compile.runner:open_model",
)
