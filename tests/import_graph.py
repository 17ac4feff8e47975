"""The package's import graph, read from its source: which module imports which.

Every import counts, wherever it stands: at module level, inside a function (the lazy
imports that keep start-up fast), or under `TYPE_CHECKING`. `from opencode_cloud.x
import y` is an import of the module `opencode_cloud.x.y` when there is one, else of
`opencode_cloud.x`. The test modules of the layers and of the command line's road to the
engine share it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import opencode_cloud

PACKAGE = Path(opencode_cloud.__file__).resolve().parent
ROOT = PACKAGE.name


def module_name(path: Path) -> str:
    """`opencode_cloud.docker.client` for `.../opencode_cloud/docker/client.py`."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@dataclass(frozen=True)
class Import:
    """One import of a module of the package: who, whom, the names taken, and where."""

    source: str
    target: str
    names: tuple[str, ...]
    line: int


def imports_in(path: Path, known: set[str] | None = None) -> Iterator[Import]:
    """The imports of package modules in the file at `path`."""
    known = set(modules()) if known is None else known
    source = module_name(path) if path.is_relative_to(PACKAGE) else path.stem
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == ROOT:
                    yield Import(source, _known(alias.name, known), (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != ROOT:
                continue
            for alias in node.names:
                whole = f"{base}.{alias.name}"
                target = whole if whole in known else _known(base, known)
                yield Import(source, target, (alias.name,), node.lineno)


def _known(name: str, known: set[str]) -> str:
    """The longest prefix of `name` that is a module of the package."""
    while name not in known and "." in name:
        name = name.rpartition(".")[0]
    return name


def graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (itself left out)."""
    found = modules()
    known = set(found)
    edges: dict[str, set[str]] = {name: set() for name in found}
    for name, path in found.items():
        for item in imports_in(path, known):
            if item.target != name:
                edges[name].add(item.target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            part = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                part.append(member)
                if member == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def part_of(module: str) -> str:
    """The top-level piece a module belongs to: `docker` for `opencode_cloud.docker.x`,
    `errors` for `opencode_cloud.errors`, `__init__` for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"
