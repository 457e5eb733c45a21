"""Lightning integration: the bundle comes out of the training run, verified.

    from toolkit.lightning import ExportCallback
"""

from toolkit.lightning.callback import ExportCallback

__all__ = ["ExportCallback"]
