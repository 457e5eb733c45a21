"""Imports flow one way (README, Design): a module may import its own package and the layers
below it, never above. Checked on the source text, lazy imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"

# lowest first; a package may import anything on its level or below
LAYERS: list[set[str]] = [
    {"errors", "spec", "environment", "formats", "manifest", "bundle",
     "transaction", "interrupts"},
    {"source", "tensorrt", "detection"},
    {"runtime"},
    {"parity", "bench"},
    {"export"},
    {"lightning", "deploy", "demo"},
    {"cli", "__init__"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}
# parity and bench share a level but stay independent of each other
APART = {("parity", "bench"), ("bench", "parity")}


def _unit(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "toolkit" and len(parts) > 1:
                found.add(parts[1])
            elif parts == ["toolkit"]:  # from toolkit import runtime, formats
                found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "toolkit" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_every_module_is_in_a_layer():
    units = {_unit(p) for p in PACKAGE.rglob("*.py")}
    assert units <= set(LEVEL), sorted(units - set(LEVEL))


def test_no_module_imports_upward():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path)
        for target in _imports(path):
            if target not in LEVEL:
                continue  # `from toolkit import __version__`
            if LEVEL[target] > LEVEL[unit] or (unit, target) in APART:
                upward.append(f"{path.relative_to(PACKAGE)} imports toolkit.{target}")
    assert not upward, "\n".join(upward)
