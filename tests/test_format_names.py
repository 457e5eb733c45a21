"""Generic code names no format: a format's knowledge lives in its declaration
(`toolkit/formats/<name>.py`) and its backend package (`toolkit/backends/<name>/`).

A format is named by no generic module of `toolkit/` (its name and aliases, as words, in code,
strings and comments alike). Not generic: the backend packages (a backend may name the
formats it is built from or routes through: TensorRT's `--via torchscript`), the format table,
and the demos. PyTorch's own namespaces (`torch.jit`, `torch.compile`, `torch.onnx`) and
`re.compile` are libraries' APIs, not the formats, and don't count.

The formats declared before backend packages existed are moving into theirs and still keep
code by stage (export/, runtime/, parity/); how many modules name each is counted here,
and the count may only fall (lower BEFORE_BACKENDS when a move brings it down; a format
leaves the list when it reaches zero, and the strict rule then holds for it)."""

from __future__ import annotations

import re
from pathlib import Path

from toolkit import formats

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"
BACKENDS = PACKAGE / "backends"

#: generic modules that name a format, at the last count. onnx: the detection contract's NMS
#: and batch Loop are built for ONNX's exporters (`_OnnxNonMaxSuppression`, the legacy
#: tracing module), in detection/ and source/; eager: its aliases are PyTorch's own names
#: ('torch', 'pytorch'), which generic code can't avoid, so it is held to its name alone
BEFORE_BACKENDS = {"onnx": 4, "eager": 0}


#: the table declares every format; a demo picks the formats it shows, as the README does
NOT_GENERIC = (PACKAGE / "formats", PACKAGE / "demo")
DEMO_COMMANDS = ("demo.py", "demo_common.py", "demo_ddp.py", "demo_detection.py")


def _own(fmt: formats.Format, path: Path) -> bool:
    return (BACKENDS in path.parents
            or any(home in path.parents for home in NOT_GENERIC)
            or (path.parent == PACKAGE / "cli" and path.name in DEMO_COMMANDS))


def _naming(fmt: formats.Format, aliases: bool = True) -> list[str]:
    names = (fmt.name, *fmt.aliases) if aliases else (fmt.name,)
    # torch.jit, torch.compile, torch.onnx, re.compile: libraries' APIs, not the formats
    alternatives = "|".join(re.escape(n) for n in names)
    words = re.compile(r"(?<![A-Za-z0-9_])(?<!torch\.)(?<!re\.)(" + alternatives
                       + r")(?![A-Za-z0-9_])", re.IGNORECASE)
    return sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                  if not _own(fmt, p) and words.search(p.read_text()))


def test_a_format_in_a_backend_package_is_named_nowhere_else():
    for fmt in formats.all_formats():
        if fmt.name not in BEFORE_BACKENDS:
            assert (BACKENDS / fmt.name).is_dir(), f"{fmt.name} has no backend package"
            assert not _naming(fmt), (fmt.name, _naming(fmt))


def test_the_older_formats_are_named_in_no_more_modules_than_before():
    # by name only: older aliases are common words (pt2's 'export', trt's 'engine')
    counts = {f.name: len(_naming(f, aliases=False)) for f in formats.all_formats()
              if f.name in BEFORE_BACKENDS}
    grown = {name: (count, BEFORE_BACKENDS.get(name, 0)) for name, count in counts.items()
             if count > BEFORE_BACKENDS.get(name, 0)}
    assert not grown, f"modules naming a format (now, before): {grown}"
