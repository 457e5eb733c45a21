"""Export targets by name, with aliases and did-you-mean (after Lightning's registries)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from toolkit.errors import UsageError

# canonical name -> aliases a user may type
TARGETS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx",),
    "torchscript": ("torchscript", "ts", "jit"),
    "pt2": ("pt2", "aoti", "aotinductor", "export"),
    "compile": ("compile", "torch.compile", "inductor"),
    "trt": ("trt", "tensorrt", "engine"),
}
# Runnable but not exportable: the model itself, the reference for verify and bench.
RUN_ONLY: dict[str, tuple[str, ...]] = {"eager": ("eager", "pytorch", "torch")}
ALIASES: dict[str, str] = {
    alias: name for name, names in {**TARGETS, **RUN_ONLY}.items() for alias in names
}

DESCRIPTIONS = {
    "onnx": "ONNX via torch.onnx.export(dynamo=True); runs in ONNX Runtime, feeds TensorRT",
    "torchscript": "TorchScript trace (script when tracing is wrong), frozen — legacy upstream",
    "pt2": "torch.export + AOTInductor package: torch.compile ahead of time, no Python model",
    "compile": "torch.compile in-process, not saved: a comparison point for verify and bench",
    "trt": "TensorRT engine from the ONNX, strongly typed; built on the target GPU",
}


def canonical(name: str) -> str:
    key = name.strip().lower()
    if key in ALIASES:
        return ALIASES[key]
    close = difflib.get_close_matches(key, list(ALIASES), n=1, cutoff=0.5)
    hint = f"; did you mean '{ALIASES[close[0]]}'?" if close else ""
    raise UsageError(
        f"unknown format '{name}'{hint} Known: {', '.join([*TARGETS, *RUN_ONLY])} "
        "(aliases: ts, jit, aoti, tensorrt, engine)"
    )


def parse_targets(values: Iterable[str]) -> list[str]:
    """'onnx,ts' and repeated options -> canonical names, order kept, duplicates dropped."""
    names: list[str] = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                name = canonical(part)
                if name in RUN_ONLY:
                    raise UsageError(f"--to {part}: '{name}' runs the model as it is; it is "
                                     "not an export format (verify and bench accept it)")
                if name not in names:
                    names.append(name)
    if not names:
        raise UsageError("--to needs at least one format, e.g. --to onnx,torchscript,pt2")
    return names
