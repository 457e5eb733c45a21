"""The source option group: where the PyTorch model comes from and how far its files are
trusted (`--model`, `--model-arg`, `--trust-checkpoint`, `--allow-modified`, `--device`).

Declared once, like the other groups (`toolkit/groups.py`): `toolkit export` and `toolkit verify`
take all of it, `bench` and `deploy` the fields they read (`only(...)`), and
`toolkit.export(...)`, `verify_bundle(...)` and `bench_bundle(...)` take the same object, so
the five values travel as one. Pure: no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from toolkit.errors import UsageError
from toolkit.groups import flag
from toolkit.source.model_args import parse_model_args


@dataclass(frozen=True)
class SourceOptions:
    """The PyTorch source of a command: its class, its factory's arguments, whether its pickle
    may be trusted, whether files changed since export may be used, and its device."""

    title: ClassVar[str] = "Source"

    model: str | None = flag(
        None, "--model",
        "LightningModule class pkg.module:Class (when the checkpoint doesn't record it).")
    #: 'NAME=VALUE' texts (the command line's); a mapping of values (from Python) is kept as
    #: its (name, value) pairs, so the group stays hashable
    model_args: tuple[str, ...] | tuple[tuple[str, Any], ...] = flag(
        (), "--model-arg",
        "A factory keyword argument NAME=VALUE, a Python literal (None, 5, 0.25, 'text', "
        "(1, 2)); nothing is evaluated. Repeatable.", cli_type=list[str] | None,
        cli_default=None)
    trust_checkpoint: bool = flag(
        False, "--trust-checkpoint/--no-trust-checkpoint",
        "Allow arbitrary unpickling of the checkpoint on this command (only for files you "
        "trust).")
    allow_modified: bool = flag(
        False, "--allow-modified/--no-allow-modified",
        "Use artifacts whose sha256 differs from the manifest's (changed since export).")
    device: str = flag("cpu", "--device", "cpu or cuda (cuda:N).")

    def __post_init__(self) -> None:
        args = self.model_args
        if args is None:
            args = ()
        if isinstance(args, Mapping):
            bad = [k for k in args if not isinstance(k, str) or not k.isidentifier()]
            if bad:
                raise UsageError(f"model_args: {bad[0]!r} is not a Python argument name")
            args = tuple(args.items())
        elif args and all(isinstance(a, tuple) for a in args):  # pairs, as kept above
            args = tuple(args)
        else:
            args = (args,) if isinstance(args, str) else tuple(str(a) for a in args)
            parse_model_args(args)  # a bad --model-arg is exit 2 before anything loads
        object.__setattr__(self, "model_args", args)
        if self.device != "cpu":  # (toolkit.spec loads numpy: not for the default)
            from toolkit.spec import check_device

            check_device(self.device)

    def factory_args(self) -> dict[str, Any]:
        """The factory's keyword arguments, values parsed."""
        if self.model_args and isinstance(self.model_args[0], tuple):
            return dict(self.model_args)
        return parse_model_args(self.model_args)
