"""Imports flow one way (README, Design): a module may import its own package and the layers
below it, never above. Checked on the source text, lazy imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"

# lowest first; a package may import anything on its level or below
LAYERS: list[set[str]] = [
    {"errors", "groups", "spec", "environment", "formats", "tasks", "manifest", "bundle",
     "transaction", "interrupts", "version", "modules"},
    {"source", "detection"},
    {"runtime"},
    {"parity", "bench"},
    {"export", "backends"},
    {"lightning", "deploy", "demo", "remote"},
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
            if target not in LEVEL or LEVEL[target] > LEVEL[unit] or (unit, target) in APART:
                upward.append(f"{path.relative_to(PACKAGE)} imports toolkit.{target}")
    assert not upward, "\n".join(upward)


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_graph() -> dict[str, set[str]]:
    """Module -> the toolkit modules it imports, lazy imports inside functions included
    (the package root, which re-exports the API, left out)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                    "toolkit"):
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    targets.add(child if child in modules else node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("toolkit.")}
        graph[name] = {t for t in targets if t in modules and t not in (name, "toolkit")}
    graph.pop("toolkit", None)
    return graph


def test_no_import_circles_between_modules():
    """Two modules that import each other (even lazily) are one module in two files."""
    graph = _module_graph()
    seen: set[str] = set()
    circles = []
    for start in graph:
        stack, path = [(start, iter(sorted(graph[start])))], [start]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
            elif child == start:
                circles.append(" -> ".join([*path, start]))
            elif child not in path and child not in seen:
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
        seen.add(start)
    assert not circles, "\n".join(circles)
