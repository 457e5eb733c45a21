"""The clean, exportable view of a user's model: named flat tensors in, named flat tensors out.

Exporters see `FlatModule`: positional tensors in the bundle's input order, a tuple of tensors
out. It rebuilds the user's calling convention (positional or keyword, like Lightning's
`example_input_array`) and flattens dict / tuple / namedtuple / nested outputs into names such
as `logits`, `aux.0`, `boxes`. Every artifact therefore has the same inputs and outputs.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from toolkit.errors import ExportFailed, UsageError
from toolkit.spec import OutputSpec, TensorSpec, numpy_dtype

TORCH_DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float64": torch.float64, "int64": torch.int64, "int32": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}


def dtype_name(dtype: torch.dtype) -> str:
    for name, value in TORCH_DTYPES.items():
        if value == dtype:
            return name
    raise ExportFailed(f"tensors of dtype {dtype} can't be exported")


def flatten_outputs(value: Any, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """Flatten a model's output into (name, tensor) pairs, in a stable order."""
    if isinstance(value, torch.Tensor):
        return [(prefix or "output", value)]
    if value is None:
        return []
    if isinstance(value, Mapping):  # dict, OrderedDict, Hugging Face ModelOutput
        pairs: list[tuple[str, torch.Tensor]] = []
        for key, item in value.items():
            pairs += flatten_outputs(item, f"{prefix}.{key}" if prefix else str(key))
        return pairs
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        pairs = []
        for key in value._fields:
            pairs += flatten_outputs(getattr(value, key), f"{prefix}.{key}" if prefix else key)
        return pairs
    if isinstance(value, (list, tuple)):
        if len(value) == 1 and not prefix:
            return flatten_outputs(value[0], "output")
        pairs = []
        for i, item in enumerate(value):
            pairs += flatten_outputs(item, f"{prefix}.{i}" if prefix else f"output_{i}")
        return pairs
    raise ExportFailed(
        f"output '{prefix or 'output'}' is a {type(value).__name__}; only tensors (in dicts, "
        "tuples or lists) can be exported"
    )


def forward_parameter_names(module: nn.Module, count: int) -> list[str]:
    """Names for positional inputs, taken from the signature of `forward` when it has them."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [
        p.name for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(names) >= count:
        return names[:count]
    return [f"input_{i}" for i in range(count)] if count > 1 else ["input"]


class FlatModule(nn.Module):
    """Wraps the user's module: positional tensors in, a tuple of tensors out."""

    def __init__(
        self, model: nn.Module, input_names: Sequence[str], call_style: str = "positional"
    ) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.call_style = call_style

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.call_style == "keyword":
            out = self.model(**dict(zip(self.input_names, tensors)))
        else:
            out = self.model(*tensors)
        return tuple(t for _, t in flatten_outputs(out))


@dataclass
class LoadedModel:
    """An nn.Module in eval mode with its input spec, ready to export."""

    module: nn.Module
    inputs: list[TensorSpec]
    call_style: str = "positional"
    # The user's own example values (real data when the module provided them).
    example: dict[str, np.ndarray] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    _outputs: list[OutputSpec] | None = None
    #: set for detectors wrapped to the output contract (source/detector_contract.py): the
    #: manifest's `detection` record (convention, max_detections, score_threshold, nms)
    detection: dict[str, Any] | None = None
    #: what the export should tell the user about this model (a likely detector, ...)
    hints: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.module.eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    @property
    def flat(self) -> FlatModule:
        return FlatModule(self.module, [s.name for s in self.inputs], self.call_style).eval()

    def int_high(self) -> dict[str, int]:
        """Upper bounds for random integer inputs, from the example's values."""
        if not self.example:
            return {}
        return {
            name: int(arr.max()) + 1
            for name, arr in self.example.items()
            if np.issubdtype(arr.dtype, np.integer) and arr.size
        }

    def to_tensors(self, feed: Mapping[str, np.ndarray], device: str = "cpu") -> tuple:
        return tuple(
            torch.from_numpy(np.ascontiguousarray(feed[s.name], dtype=numpy_dtype(s.dtype)))
            .to(device=device, dtype=TORCH_DTYPES[s.dtype])
            for s in self.inputs
        )

    def raw_output(self, feed: Mapping[str, np.ndarray]) -> Any:
        """The module's own output structure (not flattened), under inference mode."""
        with torch.inference_mode():
            return self._call(feed)

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The forward pass on numpy inputs; outputs keyed by their flattened names."""
        with torch.inference_mode():
            return {name: to_numpy(t) for name, t in flatten_outputs(self._call(feed))}

    def _call(self, feed: Mapping[str, np.ndarray]) -> Any:
        tensors = self.to_tensors(feed)
        try:
            if self.call_style == "keyword":
                return self.module(**dict(zip([s.name for s in self.inputs], tensors)))
            return self.module(*tensors)
        except Exception as err:  # the user's forward on the inputs they described
            given = ", ".join(f"{s.name}{list(t.shape)}:{s.dtype}"
                              for s, t in zip(self.inputs, tensors))
            line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise UsageError(
                f"the model's forward failed on {given} ({type(err).__name__}: {line[:200]}); "
                "check the --input shapes and dtypes"
            ) from err

    @property
    def outputs(self) -> list[OutputSpec]:
        """Names and dtypes of the flattened outputs, found by running the example once."""
        if self._outputs is None:
            with torch.inference_mode():
                pairs = flatten_outputs(self._call(self.example_feed(batch=None)))
            names = [n for n, _ in pairs]
            if not names:
                raise ExportFailed("the model returned no tensors")
            if len(set(names)) != len(names):
                raise ExportFailed(f"output names collide after flattening: {names}")
            self._outputs = [OutputSpec(n, dtype_name(t.dtype)) for n, t in pairs]
        return self._outputs

    def example_feed(self, batch: int | None, seed: int = 0) -> dict[str, np.ndarray]:
        """The user's example when it fits `batch`; otherwise seeded random inputs."""
        from toolkit.spec import random_inputs

        if self.example is not None:
            first = next(iter(self.example.values()))
            if batch is None or (first.ndim and first.shape[0] == batch):
                return dict(self.example)
            if first.ndim and first.shape[0] > batch:
                return {k: v[:batch] for k, v in self.example.items()}
            if first.ndim and first.shape[0] < batch:
                # Repeat the real example along the batch axis: real values, wanted batch.
                reps = -(-batch // first.shape[0])
                return {
                    k: np.concatenate([v] * reps, axis=0)[:batch] for k, v in self.example.items()
                }
        return random_inputs(self.inputs, batch=batch, seed=seed, int_high=self.int_high())


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy()


def spec_from_tensor(name: str, tensor: torch.Tensor) -> TensorSpec:
    if not isinstance(tensor, torch.Tensor):
        raise UsageError(
            f"example input '{name}' is a {type(tensor).__name__}; example_input_array must "
            "hold tensors (a tensor, a tuple or a dict of them)"
        )
    return TensorSpec.static(name, tuple(tensor.shape), dtype_name(tensor.dtype))
