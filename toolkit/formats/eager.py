"""The PyTorch model as it is: the reference every artifact is compared with."""

from toolkit.formats import Format

FORMAT = Format(
    name="eager",
    order=90,
    title="eager PyTorch",
    aliases=("pytorch", "torch"),
    description="the PyTorch model itself (the reference; not an export format)",
    runs_from="model",
    runner="toolkit.backends.eager.runner:open_model",
)
