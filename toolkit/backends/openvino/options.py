"""OpenVINO's option group: who quantises its INT8."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from toolkit.errors import BackendUnavailable, UsageError
from toolkit.groups import flag

#: the Q/DQ ONNX converted, or NNCF on the fp32 IR
QUANTIZERS = ("qdq", "nncf")


@dataclass(frozen=True)
class OpenVINOOptions:
    """`--openvino-quantizer`."""

    title: ClassVar[str] = "OpenVINO"

    quantizer: str = flag(
        "qdq", "--openvino-quantizer",
        "OpenVINO INT8: qdq (the INT8 Q/DQ graph it is built from, converted, with its layers "
        "kept in float) or nncf (NNCF quantises the IR, with its own accuracy control; extra "
        "'nncf').")

    def __post_init__(self) -> None:
        if self.quantizer not in QUANTIZERS:
            raise UsageError(f"--openvino-quantizer {self.quantizer!r}: use one of "
                             f"{', '.join(QUANTIZERS)}")
        if self.quantizer == "nncf":  # said before anything is exported
            from toolkit.modules import module_available

            if not module_available("nncf"):
                raise BackendUnavailable("--openvino-quantizer nncf needs NNCF: pip install "
                                         "'toolkit[nncf]'")
