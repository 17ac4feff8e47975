"""The `opencode-cloud` / `occ` command line."""

from __future__ import annotations

import contextlib
import os
import sys


def main() -> None:
    """Entry point of the console scripts."""
    # `--version` is answered before anything heavy is imported: it is what scripts and
    # shell prompts call most, and it must stay close to the interpreter's own start-up.
    if sys.argv[1:] == ["--version"]:
        from opencode_cloud import __version__

        print(f"opencode-cloud {__version__}")
        sys.exit(0)
    code = dispatch(sys.argv[1:])
    # Leave without the interpreter's teardown, which takes ~15 ms once a few hundred
    # modules are loaded: every file, lock and connection the command used is closed by
    # the time `run` returns, so only the standard streams need flushing.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BrokenPipeError, ValueError):  # reader gone: `| head`
            stream.flush()
    os._exit(code)


def dispatch(args: list[str]) -> int:
    """The exit code of `occ ARGS`: the quick path when it takes the line (`cli/quick.py`),
    else the click application."""
    from opencode_cloud.cli.quick import run_quick

    code = run_quick(args)
    if code is None:
        from opencode_cloud.cli.app import run

        code = run(args)
    return code
