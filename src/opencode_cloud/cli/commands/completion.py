"""`occ completion`: the shell completion script."""

from __future__ import annotations

import os
import sys

import click

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", required=False, type=click.Choice(SHELLS), help="Default: from $SHELL.")
@click.pass_context
def completion(ctx: click.Context, shell: str | None) -> None:
    """Print the completion script for bash, zsh or fish.

    Enable it in the shell's start-up file, e.g. in ~/.bashrc: eval "$(occ completion bash)"
    """
    from click.shell_completion import get_completion_class

    if shell is None:
        shell = os.path.basename(os.environ.get("SHELL", ""))
        if shell not in SHELLS:
            raise click.UsageError("Name the shell: occ completion bash|zsh|fish", ctx)
    complete_class = get_completion_class(shell)
    if complete_class is None:  # pragma: no cover - SHELLS are all built into click
        raise click.BadParameter(f"no completion for {shell}", ctx, param_hint="SHELL")
    root = ctx.find_root()
    prog_name = root.info_name or "occ"
    complete_var = "_{}_COMPLETE".format(prog_name.replace("-", "_").upper())
    script = complete_class(root.command, {}, prog_name, complete_var).source()
    sys.stdout.write(script if script.endswith("\n") else script + "\n")
    sys.stdout.flush()
