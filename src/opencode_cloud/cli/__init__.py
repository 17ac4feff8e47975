"""The `opencode-cloud` / `occ` command line."""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of the console scripts."""
    from opencode_cloud.cli.app import run

    sys.exit(run())
