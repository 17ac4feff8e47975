"""`occ status`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from opencode_cloud.cli.options import person_option
from opencode_cloud.cli.output import ExitCode
from opencode_cloud.cli.status_report import report_status

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext


@click.command()
@person_option
@click.option(
    "--sizes",
    is_flag=True,
    help="Count the bytes each volume and snapshot uses (slow: reads every file).",
)
@click.pass_obj
def status(app_ctx: AppContext, person: str | None, sizes: bool) -> None:
    """Show state, health, URL, image, uptime, restarts and volumes.

    Exit code 0 when running, 3 when not. With --json, everything as one JSON object.
    """
    code = report_status(app_ctx, person, sizes)
    if code != ExitCode.OK:
        raise click.exceptions.Exit(code)


def register(group: click.Group) -> None:
    group.add_command(status)
