"""All terminal output of the CLI: results to stdout (text or JSON), the rest to stderr.

JSON goes to stdout and nothing else does when `--json` is on, so `occ status --json | jq`
always works; progress, warnings and errors go to stderr. Colour only on a terminal and
never with NO_COLOR.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TextIO


class ExitCode(IntEnum):
    """Exit codes scripts can rely on."""

    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_RUNNING = 3
    DOCKER_UNAVAILABLE = 4
    CONFIG_INVALID = 5
    LOCKED = 6
    START_FAILED = 7
    INTERRUPTED = 130


@dataclass
class Output:
    """Where and how the CLI writes.

    Attributes:
        json: results as JSON on stdout.
        verbosity: -1 quiet, 0 normal, 1 verbose.
        debug: tracebacks on errors.
    """

    json: bool = False
    verbosity: int = 0
    debug: bool = False
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)

    @property
    def interactive(self) -> bool:
        """True when a person is at the keyboard: prompts, spinners and colour are fine."""
        return _isatty(sys.stdin) and _isatty(self.stdout) and not self.json

    @property
    def color(self) -> bool:
        return _isatty(self.stderr) and not os.environ.get("NO_COLOR")

    def progress(self, message: str) -> None:
        """A step of a longer operation (stderr; hidden by -q)."""
        if self.verbosity >= 0:
            print(message, file=self.stderr, flush=True)

    def detail(self, message: str) -> None:
        """Extra detail shown with -v."""
        if self.verbosity > 0:
            print(message, file=self.stderr, flush=True)

    def warn(self, message: str) -> None:
        """A warning; always shown, even with -q."""
        prefix = "\033[33mWarning:\033[0m" if self.color else "Warning:"
        print(f"{prefix} {message}", file=self.stderr, flush=True)

    def error(self, message: str, hint: str = "", details: list[str] | None = None) -> None:
        """An error: `details` (log lines, say) first, then the one-line error and its hint,
        so the last lines a user reads say what went wrong and what to run."""
        for line in details or []:
            print(line, file=self.stderr, flush=True)
        prefix = "\033[31mError:\033[0m" if self.color else "Error:"
        print(f"{prefix} {message}", file=self.stderr, flush=True)
        if hint:
            print(f"Hint: {hint}", file=self.stderr, flush=True)
        if self.json:
            self.emit_json({"error": message, "hint": hint, "details": details or []})

    def emit_json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, default=str), file=self.stdout, flush=True)

    def result(self, data: Any, human: Callable[[], Iterable[str]]) -> None:
        """Print a command's result: `data` as JSON with --json, else `human()`'s lines."""
        if self.json:
            self.emit_json(data)
            return
        for line in human():
            print(line, file=self.stdout, flush=True)

    def line(self, text: str = "") -> None:
        """One line of human output on stdout (nothing with --json)."""
        if not self.json:
            print(text, file=self.stdout, flush=True)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def format_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as lines of left-aligned columns two spaces apart (the first row: headings)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def format_bytes(size: int | None) -> str:
    """1536 -> '1.5 KiB'; None -> 'unknown'."""
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def format_duration(seconds: float | None) -> str:
    """3725 -> '1h 2m'; None -> '-'."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
