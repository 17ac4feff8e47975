"""Placeholder application: --version and --help until the commands land."""

from __future__ import annotations

import sys

from opencode_cloud import __version__

USAGE = """Usage: occ [OPTIONS] COMMAND [ARGS]...

  Run opencode as a persistent, secure service in a Docker container.

Options:
  --version  Show the version and exit.
  --help     Show this message and exit.
"""


def run(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--version"]:
        print(f"opencode-cloud {__version__}")
        return 0
    print(USAGE, end="")
    return 0 if not args or args[:1] == ["--help"] else 2
