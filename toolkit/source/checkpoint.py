"""Lightning checkpoints and state_dict files, read with `torch.load(weights_only=True)`.

A checkpoint that needs arbitrary unpickling is refused before anything in it runs, unless the
user passes --trust-checkpoint on that command.
"""

from __future__ import annotations

import os
import pickle
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toolkit.errors import UsageError
from toolkit.source.imports import import_object


def _data_only_globals() -> list[Any]:
    """Types that hyperparameters commonly hold and that rebuild without running code
    (argparse hyperparameters, paths): allowed on top of torch's weights-only set."""
    import argparse
    import pathlib

    return [argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath,
            pathlib.WindowsPath, pathlib.PureWindowsPath]


def read_checkpoint(path: Path, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict without executing code from it (unless trusted)."""
    import torch

    if not path.is_file():
        raise UsageError(f"checkpoint {path} not found")
    if not zipfile.is_zipfile(path) and path.stat().st_size < 64:
        raise UsageError(f"checkpoint {path} is empty or truncated")
    try:
        if trust:
            # pickled classes usually live in the user's project, like --model
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            data = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals(_data_only_globals()):
                data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Listing the globals reads the pickle's opcodes only; nothing in it is executed.
        try:
            needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # a damaged pickle: the generic message below still holds
            needed = []
        allowed = {f"{t.__module__}.{t.__qualname__}" for t in _data_only_globals()}
        needed = [n for n in needed if n not in allowed]
        shown = ", ".join(needed[:4]) + (" …" if len(needed) > 4 else "")
        raise UsageError(
            f"checkpoint {path} needs arbitrary unpickling to load"
            + (f" (it stores {shown})" if shown else "")
            + "; nothing in it was run. If you trust where it came from, pass --trust-checkpoint"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise UsageError(
            f"checkpoint {path} can't be read: it looks truncated or is not a PyTorch "
            f"checkpoint ({str(err).splitlines()[0][:160]})"
        ) from None
    if not isinstance(data, Mapping):
        raise UsageError(f"checkpoint {path} holds a {type(data).__name__}, not a dict")
    return dict(data)


def _class_from_checkpoint(ckpt: Mapping[str, Any], path: Path) -> str:
    hparams = ckpt.get("hyper_parameters") or {}
    class_path = hparams.get("_class_path") if isinstance(hparams, Mapping) else None
    if not class_path:
        raise UsageError(
            f"checkpoint {path} does not record its LightningModule class (LightningCLI "
            "records it only in subclass mode); pass --model pkg.module:ClassName"
        )
    module, _, name = str(class_path).rpartition(".")
    return f"{module}:{name}"


def load_lightning_checkpoint(
    path: Path, model_ref: str | None, trust: bool = False
) -> tuple[Any, str]:
    """Rebuild the LightningModule (hyperparameters + weights) from a .ckpt file."""
    import inspect

    ckpt = read_checkpoint(path, trust=trust)
    if "state_dict" not in ckpt:
        raise UsageError(
            f"checkpoint {path} has no 'state_dict'; for a plain state_dict use a factory "
            "source with --weights"
        )
    ref = model_ref or _class_from_checkpoint(ckpt, path)
    cls = import_object(ref, "--model")
    if not isinstance(cls, type):
        raise UsageError(f"--model '{ref}' is not a class")
    loader = getattr(cls, "load_from_checkpoint", None)
    try:
        if loader is not None:
            kwargs: dict[str, Any] = {"map_location": "cpu", "strict": True}
            if "weights_only" in inspect.signature(loader).parameters:
                kwargs["weights_only"] = not trust
            import torch

            with torch.serialization.safe_globals(_data_only_globals()):
                module = loader(str(path), **kwargs)
        else:  # a plain nn.Module class: hyperparameters as keyword arguments
            module = cls(**dict(ckpt.get("hyper_parameters") or {}))
            module.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, KeyError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"checkpoint {path} doesn't fit {ref}: {first[:300]}"
        ) from err
    return module, ref


def load_state_dict_file(module: Any, path: Path) -> None:
    """Load `--weights FILE` (a state_dict, or a checkpoint holding one) into `module`."""
    state = read_checkpoint(path)
    state = state.get("state_dict", state)
    try:
        module.load_state_dict(state)
        return
    except RuntimeError as first_error:
        # Lightning prefixes keys with the attribute holding the network ('model.', 'net.').
        prefixes = {k.split(".", 1)[0] for k in state}
        if len(prefixes) == 1:
            prefix = prefixes.pop() + "."
            try:
                module.load_state_dict({k.removeprefix(prefix): v for k, v in state.items()})
                return
            except RuntimeError:
                pass
        line = str(first_error).strip().splitlines()[0]
        raise UsageError(f"--weights {path} doesn't fit the model: {line[:300]}") from None


