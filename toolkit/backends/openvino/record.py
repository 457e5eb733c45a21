"""The record fields only an OpenVINO IR has, validated with the manifest (pydantic only:
reading a bundle imports no OpenVINO)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Flag = Annotated[str, Field(max_length=64)]


class OpenVINOFields(BaseModel):
    # strict like the manifest; fields a newer toolkit adds are left for it
    model_config = ConfigDict(strict=True, extra="ignore")

    #: the precision the IR is compiled with, set explicitly: OpenVINO's own default is bf16
    #: on a CPU with AMX or AVX512_BF16
    inference_precision: Literal["f32", "bf16", "f16"] | None = None
    #: the CPU flags that choice was made for (a bf16 IR moved to a CPU without them is said)
    cpu_flags: Annotated[list[Flag], Field(max_length=512)] | None = None
