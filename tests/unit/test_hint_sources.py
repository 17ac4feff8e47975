"""`cli/hints.py` is the one writer of `occ ...` commands in messages: below the command
line, errors and findings carry data, and the command line words the commands with the
instance's own `--instance` and `--host` (`instance.command_prefix`). This reads every
module outside `cli/` and fails on a message string that names an `occ` command."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import opencode_cloud

PACKAGE = Path(opencode_cloud.__file__).parent
# `occ` as a command: at the start of a string, or after a space, a backquote, a quote
# or a parenthesis, and followed by a space or the end.
COMMAND = re.compile(r"(?:^|[\s`(\"'])occ(?:\s|$)")

# Strings that may name a command, and why.
ALLOWED = {
    # The producer of the command line itself.
    ("instance.py", "occ"),
    # A setting's description in the JSON Schema editors show, not a message.
    ("config/schema.py", "for `occ rollback`"),
    # access/tls.py is being rewritten on its own; these two hints move to cli/hints.py then.
    ("access/tls.py", "`occ config set tls_cert ...`"),
    ("access/tls.py", "Set it with `occ config set "),
}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _modules() -> Iterator[tuple[str, ast.AST]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if not name.startswith("cli/"):
            yield name, ast.parse(path.read_text(encoding="utf-8"))


def command_strings() -> list[tuple[str, int, str]]:
    """(module, line, text) of each string outside `cli/` that names an `occ` command,
    docstrings left out."""
    found = []
    for name, tree in _modules():
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docs
                and COMMAND.search(node.value)
            ):
                found.append((name, node.lineno, node.value))
    return found


def _allowed(module: str, text: str) -> bool:
    return any(module == where and words in text for where, words in ALLOWED)


def test_no_module_below_the_command_line_writes_an_occ_command() -> None:
    offending = [
        f"{module}:{line}: {text!r}"
        for module, line, text in command_strings()
        if not _allowed(module, text)
    ]
    assert not offending, "write these in cli/hints.py:\n" + "\n".join(offending)


def test_nothing_below_the_command_line_makes_command_lines() -> None:
    """`command_prefix` (and an `occ` property that wraps it) belong to the CLI."""
    offending = []
    for module, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                called = getattr(func, "id", getattr(func, "attr", ""))
                if called == "command_prefix" and module != "instance.py":
                    offending.append(f"{module}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "occ":
                offending.append(f"{module}:{node.lineno}")
    assert not offending


def test_every_allowance_is_still_needed() -> None:
    """An allowance whose string is gone must go too, so the list never hides a new one."""
    found = command_strings()
    for where, words in ALLOWED:
        assert any(module == where and words in text for module, _, text in found), words


def test_the_scan_finds_what_it_looks_for() -> None:
    for text in ("Run `occ start`.", "For example: occ host add x", "occ", "(occ stop)"):
        assert COMMAND.search(text), text
    for text in ("occupied", "the occ-remote host", "opencode-cloud", "docc x"):
        assert not COMMAND.search(text), text
