"""One road from the command line to the engine: a command asks the operations
(`Service`, `Versions`, `Backups`, the doctor's checks, hosts), and only they ask the
engine. This reads every command module and fails on one that imports the engine layer,
reaches for the engine client (or where a service runs) through an attribute, or calls a
method only the engine has; and on any module of the command line besides its context
that connects to an engine.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from import_graph import PACKAGE, imports_in

CLI = PACKAGE / "cli"
COMMANDS = CLI / "commands"
# The engine client and the runtime, as commands would reach them.
REACHING = frozenset({"client", "runtime", "engine", "connect"})
# What a command may reach for all the same, and why.
ALLOWED = {
    # The doctor makes its connection itself, to report why it fails; it is handed the
    # context's way of making one, the one place that connects.
    ("doctor.py", "connect"),
}
OPERATIONS = ("service", "backup", "doctor", "hosts.py", "access", "config", "cli/context.py")


def _defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }


def engine_only_methods() -> set[str]:
    """The methods of `Engine` (docker/engine.py) that no operation has a method of the
    same name for (`build`, `pull` and `host` are a service's too)."""
    tree = ast.parse((PACKAGE / "docker" / "engine.py").read_text(encoding="utf-8"))
    engine = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Engine")
    methods = {n.name for n in engine.body if isinstance(n, ast.FunctionDef)}
    operations: set[str] = set()
    for where in OPERATIONS:
        root = PACKAGE / where
        for path in [root] if root.is_file() else root.rglob("*.py"):
            operations |= _defined_names(path)
    return methods - operations


def _attributes(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute):
            yield node.lineno, node.attr


def test_no_command_imports_the_engine_layer() -> None:
    offending = [
        f"{path.name}:{item.line}: {item.target}"
        for path in sorted(COMMANDS.glob("*.py"))
        for item in imports_in(path)
        if item.target.startswith("opencode_cloud.docker") or "connect" in item.names
    ]
    assert offending == []


def test_no_command_reaches_for_the_engine() -> None:
    forbidden = REACHING | engine_only_methods()
    offending = [
        f"{path.name}:{line}: .{name}"
        for path in sorted(COMMANDS.glob("*.py"))
        for line, name in _attributes(path)
        if name in forbidden and (path.name, name) not in ALLOWED
    ]
    assert offending == []


def test_every_allowance_is_still_needed() -> None:
    for filename, name in ALLOWED:
        assert any(attr == name for _line, attr in _attributes(COMMANDS / filename)), name


def test_only_the_context_connects_to_the_engine() -> None:
    offending = [
        f"{path.relative_to(CLI)}:{item.line}: {item.target} {item.names}"
        for path in sorted(CLI.rglob("*.py"))
        if path.name != "context.py"
        for item in imports_in(path)
        if item.target == "opencode_cloud.docker.client" or "connect" in item.names
    ]
    assert offending == []
    context = {item.target for item in imports_in(CLI / "context.py")}
    assert "opencode_cloud.hosts" in context  # the scan does see the one that connects


def test_the_engine_only_methods_are_the_engine_calls() -> None:
    methods = engine_only_methods()
    assert {"find_container", "inspect_image", "list_containers", "exec_run"} <= methods
    assert {"tunnel", "remote", "reach", "is_local"} <= methods
    assert not {"build", "pull", "host"} & methods  # the service's own, too
