"""The record fields only a TensorRT engine has, validated with the manifest (pydantic only:
reading a bundle imports no TensorRT). The engine record `compat.engine_record` writes holds
more (build options, profiles, plugins); preflight reads that as it was written."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(max_length=1024)]


class TensorRTFields(BaseModel):
    # strict like the manifest; fields a newer toolkit adds are left for it
    model_config = ConfigDict(strict=True, extra="ignore")

    #: the TensorRT version that built it (an engine runs on that version only)
    tensorrt: Annotated[str, Field(max_length=64)] | None = None
    dla_core: Annotated[int, Field(ge=0)] | None = None
    #: version and hardware compatibility the engine was built with
    compatibility: dict[str, Any] | None = None
    #: bundle name -> engine name, where Torch-TensorRT named the tensors after its graph
    tensor_names: dict[Name, Name] | None = None
