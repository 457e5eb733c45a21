"""The record fields only an ExecuTorch artifact has, validated with the manifest (pydantic
only: reading a bundle imports no ExecuTorch)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Count = Annotated[int, Field(ge=0)]


class ExecuTorchFields(BaseModel):
    # strict like the manifest; fields a newer toolkit adds are left for it
    model_config = ConfigDict(strict=True, extra="ignore")

    #: the backend the program's operators were lowered to
    delegate: Annotated[str, Field(max_length=64)] = "xnnpack"
    #: operators of the edge program the delegate took, and those left to the portable
    #: kernels (slower, single-threaded): the share says how much of it XNNPACK runs
    delegated_ops: Count = 0
    portable_ops: Count = 0
    #: the portable operators by name (aten.* / torchvision.*), most frequent first
    portable_op_names: Annotated[list[Annotated[str, Field(max_length=200)]],
                                 Field(max_length=64)] = []
    #: INT8 only: the PT2E quantiser and how many calibration samples it saw
    quantizer: Annotated[str, Field(max_length=200)] | None = None
    calibration_samples: Count | None = None
