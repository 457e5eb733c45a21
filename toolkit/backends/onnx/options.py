"""ONNX's option group: the opset torch.onnx writes, and which INT8 graph layout to write.
Pure: onnx is imported only to check an --opset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from toolkit.errors import UsageError
from toolkit.formats.onnx import INT8_LAYOUT_HELP
from toolkit.groups import flag

if TYPE_CHECKING:  # pragma: no cover
    from toolkit.bundle import Bundle

MIN_OPSET = 7  # the oldest opset torch.onnx and ONNX Runtime still handle
#: besides the declared layouts: 'auto' (each for the place asked to run it) and 'both'
LAYOUT_WORDS = ("auto", "both")


@dataclass(frozen=True)
class OnnxOptions:
    """`--opset` and `--int8-layout`."""

    title: ClassVar[str] = "ONNX"

    opset: int | None = flag(None, "--opset", "ONNX opset (default: exporter's).")
    int8_layout: str = flag("auto", "--int8-layout", INT8_LAYOUT_HELP)

    def __post_init__(self) -> None:
        from toolkit import formats

        object.__setattr__(self, "int8_layout", str(self.int8_layout).strip().lower())
        choices = (*LAYOUT_WORDS[:1], *formats.get("onnx").int8_layouts, *LAYOUT_WORDS[1:])
        if self.int8_layout not in choices:
            raise UsageError(f"--int8-layout {self.int8_layout!r}: use one of "
                             f"{', '.join(choices)}")
        if self.opset is not None:
            import onnx

            newest = onnx.defs.onnx_opset_version()
            if isinstance(self.opset, bool) or not MIN_OPSET <= self.opset <= newest:
                raise UsageError(f"--opset {self.opset}: this onnx ({onnx.__version__}) "
                                 f"writes opsets {MIN_OPSET}-{newest}")

    def check_bundle(self, bundle: Bundle, redone: set[str]) -> None:
        """--opset is honoured or refused: a file already in the bundle at another opset,
        which this run would keep or derive from (not in `redone`), is a conflict."""
        if self.opset is None:
            return
        for record in bundle.artifacts:
            if record.opset not in (None, self.opset) and record.format not in redone:
                raise UsageError(
                    f"--opset {self.opset}: {record.path} in the bundle is opset {record.opset}"
                    f", and this run would keep it (reduced precisions derive from it); "
                    f"re-export it from the model with --opset {self.opset} --force")
