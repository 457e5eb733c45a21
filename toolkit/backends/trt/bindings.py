"""Runtime bindings: engine tensor types to buffer dtypes, and IO checks. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from toolkit.errors import UsageError

# -- runtime bindings ----------------------------------------------------------------------
#: tensorrt.DataType member name -> numpy-style dtype name of the buffer toolkit allocates
TRT_DTYPES = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8",
    "UINT8": "uint8", "INT32": "int32", "INT64": "int64", "BOOL": "bool",
}


def buffer_dtype(tensor: str, trt_dtype: str) -> str:
    """The dtype name of an IO buffer for a TensorRT DataType name (FLOAT -> float32)."""
    if trt_dtype not in TRT_DTYPES:
        raise UsageError(
            f"engine tensor '{tensor}' has type {trt_dtype}, which toolkit can't bind; keep the "
            "model's inputs and outputs in fp32/fp16/bf16/int types (quantize inside the graph)"
        )
    return TRT_DTYPES[trt_dtype]


def io_problems(
    engine_inputs: Sequence[str],
    engine_outputs: Sequence[str],
    inputs: Sequence[str],
    outputs: Sequence[str],
) -> list[str]:
    """How the engine's IO tensors differ from the bundle's: inputs must match exactly, every
    bundle output must exist (extra engine outputs are computed but not returned)."""
    problems = []
    if sorted(engine_inputs) != sorted(inputs):
        problems.append(f"engine inputs {sorted(engine_inputs)} != bundle inputs {sorted(inputs)}")
    missing = [name for name in outputs if name not in engine_outputs]
    if missing:
        problems.append(f"bundle outputs {missing} are not outputs of the engine "
                        f"({sorted(engine_outputs)})")
    return problems


def unresolved_dims(shape: Sequence[int]) -> bool:
    """An output shape TensorRT can't know before running (data-dependent: -1 dims)."""
    return any(int(d) < 0 for d in shape)
