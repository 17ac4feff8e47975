"""`occ shell`."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from opencode_cloud.cli.options import person_option

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@person_option
@click.pass_obj
def shell(app_ctx: AppContext, command: tuple[str, ...], person: str | None) -> None:
    """Open a shell in the container, as the runtime user, in the projects folder.

    With a command after `--`, run it there and exit with its exit code. This is the way
    to set things up inside: `occ shell -- git config --global user.name "Ada"`,
    `occ shell -- ssh-keygen -t ed25519`, `occ shell -- gh auth login`. What you set up
    in the home folder is kept when the container is re-created.
    """
    target = app_ctx.for_person(person)
    if person is not None:
        # A person's opencode may be stopped (it starts at their sign-in): start it.
        with target.spinner(f"Starting {person}'s opencode ..."):
            app_ctx.team().start_person(person)
    service = target.service()
    argv = list(command) or ["bash", "-l"]
    terminal = service.terminal(argv, tty=sys.stdin.isatty() and sys.stdout.isatty())
    if terminal is not None:
        sys.stdout.flush()
        if not terminal.needs_this_process:
            os.execv(terminal.program, list(terminal.argv))
        # A remote host: the program goes through this command's SSH connection, which
        # must outlive it.
        raise click.exceptions.Exit(_run_ignoring_interrupts(list(terminal.argv)))
    if not command:
        raise click.UsageError(
            "an interactive shell needs the docker command; give a command after `--` instead"
        )
    output, exit_code = service.run_command(argv)
    out = sys.stdout.buffer
    for chunk in output:
        out.write(chunk)
        out.flush()
    raise click.exceptions.Exit(exit_code() or 0)


def _run_ignoring_interrupts(argv: list[str]) -> int:
    """Run `argv` in the foreground; Ctrl-C is the program's to handle, not this one's."""
    import signal
    import subprocess

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.call(
            argv, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def register(group: click.Group) -> None:
    group.add_command(shell)
