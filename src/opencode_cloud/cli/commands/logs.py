"""`occ logs`."""

from __future__ import annotations

import re
import sys
import time
from typing import TYPE_CHECKING

import click

from opencode_cloud.cli.options import person_option

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str) -> int:
    """`10m`, `2h`, `1d`, a Unix timestamp, or an ISO date/time -> Unix seconds.

    Raises:
        click.BadParameter: for anything else.
    """
    from datetime import datetime

    match = _RELATIVE.match(value.strip())
    if match:
        return int(time.time()) - int(match.group(1)) * _UNITS[match.group(2)]
    if value.isdigit():
        return int(value)
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a time: use 10m, 2h, 1d, a Unix timestamp or 2026-01-31T12:00",
            param_hint="--since",
        ) from None


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--lines", "-n", type=click.IntRange(min=0), help="Only the last N lines.")
@click.option("--since", help="Only lines since: 10m, 2h, 1d, or a date.")
@click.option("--timestamps", "-t", is_flag=True, help="Prefix each line with its time.")
@person_option
@click.pass_obj
def logs(
    app_ctx: AppContext,
    follow: bool,
    lines: int | None,
    since: str | None,
    timestamps: bool,
    person: str | None,
) -> None:
    """Print opencode's output (stdout and stderr of the container). Ctrl-C ends -f."""
    since_ts = parse_since(since) if since else None
    app_ctx = app_ctx.for_person(person)
    stream = app_ctx.service().logs(
        tail=lines, follow=follow, since=since_ts, timestamps=timestamps
    )
    from opencode_cloud import interrupts

    out = sys.stdout.buffer
    try:
        with interrupts.terminations_interrupt():
            for chunk in stream:
                out.write(chunk)
                out.flush()
    except (KeyboardInterrupt, BrokenPipeError):
        # Ctrl-C (or `kill`) is the normal way out of a follow, and a reader that stops
        # early (`occ logs | head`) is not an error either.
        return


def register(group: click.Group) -> None:
    group.add_command(logs)
