"""SOURCE -> something to export: a Lightning checkpoint, a factory, a model file or a bundle.

Checkpoints are read with `torch.load(weights_only=True)`: a checkpoint that needs arbitrary
unpickling is refused before anything in it runs, unless the user passes --trust-checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from toolkit.bundle import sha256_file
from toolkit.errors import UsageError, first_line
from toolkit.source.checkpoint import load_lightning_checkpoint, load_state_dict_file
from toolkit.source.imports import import_object
from toolkit.spec import DEFAULT_MAX_BATCH, TensorSpec, with_dynamic_batch

#: torch's seed before a factory is called (recorded in the manifest's source)
FACTORY_SEED = 0


def _refuse_sharded_checkpoint(path: Path) -> None:
    """A directory that is an FSDP or DeepSpeed sharded checkpoint, not a bundle: say how to
    consolidate it into one file (loading shards needs the training topology)."""
    if (path / "manifest.json").is_file():
        return
    names = {p.name for p in path.iterdir()}
    deepspeed = "latest" in names or any(n.startswith(("zero_pp_rank", "mp_rank")) or
                                         (path / n).is_dir() and n.startswith("checkpoint")
                                         for n in names)
    fsdp = ".metadata" in names or any(n.endswith(".distcp") for n in names)
    if deepspeed:
        raise UsageError(
            f"{path} is a DeepSpeed sharded checkpoint directory; consolidate it first: "
            "python -c \"from lightning.pytorch.utilities.deepspeed import "
            f"convert_zero_checkpoint_to_fp32_state_dict as c; c('{path}', 'model.ckpt')\"")
    if fsdp:
        raise UsageError(
            f"{path} is a sharded (FSDP / torch.distributed.checkpoint) checkpoint directory; "
            f"consolidate it first: python -m lightning.fabric.utilities.consolidate_checkpoint "
            f"{path}  (writes {path}.consolidated)")


#: source_kind()'s word for a model file that describes itself (a format's `source_file`),
#: which starts a bundle as its first artifact
FILE_SOURCE = "file"


def source_kind(source: str) -> str:
    """'bundle', 'file', 'checkpoint' or 'factory', judged from the string alone."""
    from toolkit import formats

    path = Path(source)
    if path.is_dir():
        _refuse_sharded_checkpoint(path)
        return "bundle"
    if formats.source_file_format(path.suffix) is not None:
        return FILE_SOURCE
    if path.suffix in (".ckpt", ".pt", ".pth"):
        return "checkpoint"
    if ":" in source and not path.exists():
        return "factory"
    if path.exists():
        return "checkpoint"
    raise UsageError(
        f"source '{source}' not found: give a .ckpt file, "
        f"{formats.files_with('source_file')}, a bundle directory or a factory such as "
        "torchvision.models:resnet18"
    )


# -- inputs ---------------------------------------------------------------------------------
def _example_to_specs(module: Any, example: Any) -> tuple[list[TensorSpec], str, dict]:
    """Specs, call style and numpy values from a LightningModule's example_input_array."""
    import torch

    from toolkit.source.wrapper import forward_parameter_names, spec_from_tensor, to_numpy

    if isinstance(example, Mapping):
        named = {str(k): v for k, v in example.items()}
        style = "keyword"
    elif isinstance(example, (tuple, list)):
        names = forward_parameter_names(module, len(example))
        named = dict(zip(names, example))
        style = "positional"
    elif isinstance(example, torch.Tensor):
        named = {forward_parameter_names(module, 1)[0]: example}
        style = "positional"
    else:
        raise UsageError(
            f"example_input_array is a {type(example).__name__}; use a tensor, tuple or dict"
        )
    specs = [spec_from_tensor(name, value) for name, value in named.items()]
    return specs, style, {k: to_numpy(v) for k, v in named.items()}


def bind_by_name(module: Any, given: Sequence[TensorSpec]) -> tuple[list[TensorSpec], str]:
    """--input specs matched to forward's parameters by name, whatever the order given:
    returned in forward's order, with the call style that binds them (positional when they
    are forward's leading parameters, else keyword). One input whose name matches nothing is
    bound by position (it can't be mixed up); several must each name a parameter."""
    import inspect

    given = list(given)
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return given, "positional"
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return given, "positional"  # forward(*args): position is all there is
    named = [p.name for p in params if p.kind != p.VAR_KEYWORD]
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY,
                                                        p.POSITIONAL_OR_KEYWORD)]
    names = [s.name for s in given]
    unknown = [n for n in names if n not in named]
    if len(given) == 1 and unknown:
        return given, "positional"
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params)
    if unknown and not takes_any:
        raise UsageError(
            f"--input {unknown[0]}: {type(module).__name__}.forward has no parameter of that "
            f"name; its parameters are {', '.join(named) or 'none'}. Name each --input after "
            "the parameter it feeds (in any order)")
    by_name = {s.name: s for s in given}
    ordered = [by_name[n] for n in named if n in by_name] + [by_name[n] for n in unknown]
    if [s.name for s in ordered] == positional[:len(ordered)]:
        return ordered, "positional"
    bad = [n for n in names if n in positional and params[named.index(n)].kind
           == inspect.Parameter.POSITIONAL_ONLY]
    if bad:
        raise UsageError(f"--input {bad[0]}: a positional-only parameter of forward can't be "
                         f"bound by name; give forward's leading parameters: "
                         f"{', '.join(positional)}")
    return ordered, "keyword"


def build_loaded_model(
    module: Any,
    *,
    inputs: Sequence[TensorSpec] | None,
    static: bool,
    source: dict[str, Any],
    max_batch: int = DEFAULT_MAX_BATCH,
):
    """Combine a module with its input spec: --input wins, else example_input_array."""
    from toolkit.source.wrapper import LoadedModel

    example = getattr(module, "example_input_array", None)
    specs, style, values = ([], "positional", None)
    if example is not None:
        specs, style, values = _example_to_specs(module, example)
        if not static:
            specs = [with_dynamic_batch(s, max_batch) for s in specs]
    if inputs:
        given = list(inputs)
        if style == "keyword" and {s.name for s in given} != {s.name for s in specs}:
            raise UsageError(
                f"--input names {[s.name for s in given]} must match the keys of the "
                f"model's example_input_array {[s.name for s in specs]}"
            )
        if style == "positional":
            given, style = bind_by_name(module, given)
        example_shapes = {s.name: s.opt for s in specs}
        if values and any(example_shapes.get(s.name) != s.opt for s in given):
            values = None  # the example no longer fits the shapes the user asked for
        specs = given
    if not specs:
        raise UsageError(
            "the model has no example_input_array; describe its inputs with "
            "--input NAME:SHAPE[:DTYPE], e.g. --input x:1-16x3x224x224"
        )
    loaded = LoadedModel(module=module, inputs=specs, call_style=style,
                         example=values, source=source)
    loaded.hints += embedding_hints(module, specs, values)
    loaded.hints += [f"{s.name} is drawn as {s.mask}-padded attention masks (a run of ones, "
                     "then zeros; several lengths, never an empty row) for golden samples and "
                     "bench; :mask-left pads on the left" for s in specs if s.mask is not None]
    return loaded


def embedding_hints(module: Any, specs: Sequence[TensorSpec],
                    example: Mapping[str, Any] | None) -> list[str]:
    """A note when the model looks rows up in an embedding table and an integer input has no
    value range (neither `:LOW-HIGH` in --input nor an example's values): golden samples would
    draw ids from {0, 1}, so parity would read two rows of the table and pass on the rest
    unseen."""
    import numpy as np
    from torch import nn

    from toolkit.spec import numpy_dtype

    tables = [(name, layer.num_embeddings) for name, layer in module.named_modules()
              if isinstance(layer, (nn.Embedding, nn.EmbeddingBag))]
    unranged = [s.name for s in specs if np.issubdtype(numpy_dtype(s.dtype), np.integer)
                and s.values is None and s.mask is None
                and not (example and s.name in example)]
    if not tables or not unranged:
        return []
    name, rows = max(tables, key=lambda table: table[1])
    return [f"the model has an embedding of {rows} rows ({name or 'the model'}) and integer "
            f"input{'s' if len(unranged) > 1 else ''} {', '.join(unranged)} "
            f"{'have' if len(unranged) > 1 else 'has'} no value range: golden samples draw "
            f"from {{0, 1}}, so parity looks up 2 of its rows; give the range of the ids, "
            f"e.g. --input {unranged[0]}:SHAPE:int64:0-{rows} (0-2 for a mask)"]


def load_model(
    source: str,
    *,
    model_ref: str | None = None,
    weights: str | None = None,
    inputs: Sequence[TensorSpec] | None = None,
    static: bool = False,
    trust_checkpoint: bool = False,
    model_args: dict[str, Any] | None = None,
):
    """Load a checkpoint or factory into a LoadedModel (eval mode, specs resolved).

    `model_args` are a factory's keyword arguments (`--model-arg`), already parsed literals.
    """
    kind = source_kind(source)
    if model_args and kind != "factory":
        raise UsageError("--model-arg passes keyword arguments to a factory "
                         "(pkg.module:function); a checkpoint rebuilds its module from its "
                         "saved hyperparameters")
    if kind == "checkpoint":
        path = Path(source)
        module, ref = load_lightning_checkpoint(path, model_ref, trust=trust_checkpoint)
        info = {"kind": "lightning-checkpoint", "path": str(path.resolve()),
                "sha256": sha256_file(path), "class": ref}
    elif kind == "factory":
        factory = import_object(source, "source")
        if not callable(factory):
            raise UsageError(f"source '{source}' is not callable")
        shown = ", ".join(f"{k}={v!r}" for k, v in (model_args or {}).items())
        import torch

        try:
            # Seeded: a factory's random weights are the same on every call, so the same
            # command builds the same model (a second `export --to ...` joins the bundle,
            # a rebuild of the model matches it); the caller's own RNG state is left as it was.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(FACTORY_SEED)
                module = factory(**(model_args or {}))
        except Exception as err:  # user code
            line = first_line(err, 200)
            raise UsageError(f"factory {source}({shown}) failed: {line}") from err
        info = {"kind": "factory", "path": source, "class": type(module).__qualname__,
                "seed": FACTORY_SEED}
        if model_args:
            info["model_args"] = {k: repr(v) for k, v in model_args.items()}
        if weights:
            load_state_dict_file(module, Path(weights))
            info["weights"] = str(Path(weights).resolve())
            info["sha256"] = sha256_file(weights)
    else:
        raise UsageError(f"'{source}' is a {kind}, not a model to load")
    import torch

    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"'{source}' produced a {type(module).__name__}, not a torch nn.Module")
    if hasattr(module, "_trainer"):
        module._trainer = None  # export the network, not the training object
    if kind == "factory":
        # a factory has no file to hash: its identity is the weights it produced
        info["state_sha256"] = state_sha256(module)
    return build_loaded_model(module, inputs=inputs, static=static, source=info)


def state_sha256(module: Any) -> str:
    """sha256 over a module's state_dict (names, dtypes, shapes and bytes, in order)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()
