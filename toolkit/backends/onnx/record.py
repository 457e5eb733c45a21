"""ONNX records written before the schema had a field for them, brought forward."""

from __future__ import annotations

from typing import Any


def migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 -> 2: an older INT8 ONNX record (raw JSON, before validation) keeps its
    layout in its transform summary ('profile'; the symmetric TensorRT one by default)."""
    if "layout" in raw or raw.get("precision") != "int8":
        return raw
    transform = raw.get("transform")
    profile = transform.get("profile") if isinstance(transform, dict) else None
    return {**raw, "layout": profile if profile in ("cpu", "trt") else "trt"}
