"""Generic code names no format: a format's knowledge lives in its declaration
(`toolkit/formats/<name>.py`) and its backend package (`toolkit/backends/<name>/`).

A format is named by no generic module of `toolkit/` (its name and aliases, as words, in code,
strings and comments alike). Not generic: the backend packages (a backend may name the
formats it is built from or routes through: TensorRT's `--via torchscript`), the format table,
and the demos. PyTorch's own namespaces (`torch.jit`, `torch.compile`, `torch.onnx`) and
`re.compile` are libraries' APIs, not the formats, and don't count."""

from __future__ import annotations

import re
from pathlib import Path

from toolkit import formats

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"
BACKENDS = PACKAGE / "backends"

#: formats held to their name alone, and why: eager's aliases are PyTorch's own names
#: ('torch', 'pytorch'), which generic code can't avoid saying
NAME_ONLY = {"eager": "its aliases are the library's names"}

#: the table declares every format; a demo picks the formats it shows, as the README does
NOT_GENERIC = (PACKAGE / "formats", PACKAGE / "demo")
DEMO_COMMANDS = ("demo.py", "demo_common.py", "demo_ddp.py", "demo_detection.py")


def _generic(path: Path) -> bool:
    return not (BACKENDS in path.parents
                or any(home in path.parents for home in NOT_GENERIC)
                or (path.parent == PACKAGE / "cli" and path.name in DEMO_COMMANDS))


def _says(fmt: formats.Format, text: str, aliases: bool = True) -> bool:
    """Whether `text` names `fmt` (its name, or an alias), as a word."""
    names = (fmt.name, *fmt.aliases) if aliases else (fmt.name,)
    alternatives = "|".join(re.escape(n) for n in names)
    # torch.jit, torch.compile, torch.onnx, re.compile: libraries' APIs, not the formats
    words = re.compile(r"(?<![A-Za-z0-9_])(?<!torch\.)(?<!re\.)(" + alternatives
                       + r")(?![A-Za-z0-9_])", re.IGNORECASE)
    return words.search(text) is not None


def _naming(fmt: formats.Format, aliases: bool = True) -> list[str]:
    return sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                  if _generic(p) and _says(fmt, p.read_text(), aliases))


def test_every_format_has_a_backend_package():
    missing = [f.name for f in formats.all_formats() if not (BACKENDS / f.name).is_dir()]
    assert not missing, f"formats without toolkit/backends/<name>/: {missing}"


def test_no_generic_module_names_a_format():
    named = {f.name: _naming(f, aliases=f.name not in NAME_ONLY)
             for f in formats.all_formats()}
    assert not {name: where for name, where in named.items() if where}, named


def test_the_rule_finds_names_and_aliases_but_not_library_apis():
    onnx, trt, compile_, eager = (formats.get(n) for n in ("onnx", "trt", "compile", "eager"))
    assert _says(onnx, "# exported to ONNX first") and _says(trt, "a TensorRT-built engine")
    assert _says(compile_, "--to inductor") and _says(eager, "eager PyTorch", aliases=False)
    assert not _says(onnx, "torch.onnx.export(model)") and not _says(compile_, "re.compile(x)")
    assert not _says(onnx, "toolkit_legacy_onnx_module") and not _says(onnx, "onnxruntime")
    assert not _says(eager, "import torch", aliases=False)
