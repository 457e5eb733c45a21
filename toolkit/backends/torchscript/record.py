"""The record fields only a TorchScript artifact has, validated with the manifest."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class TorchScriptFields(BaseModel):
    # strict like the manifest; fields a newer toolkit adds are left for it
    model_config = ConfigDict(strict=True, extra="ignore")

    #: how the saved module is called: with the flat inputs (a trace), or as the model's own
    #: forward is (a script: positionally, or by keyword); None in older records: flat
    call_style: Literal["flat", "positional", "keyword"] | None = None
