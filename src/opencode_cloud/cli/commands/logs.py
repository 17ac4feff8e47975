"""`occ logs`."""

from __future__ import annotations

import re
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str) -> int:
    """`10m`, `2h`, `1d`, a Unix timestamp, or an ISO date/time -> Unix seconds.

    Raises:
        typer.BadParameter: for anything else.
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
        raise typer.BadParameter(
            f"{value!r} is not a time: use 10m, 2h, 1d, a Unix timestamp or 2026-01-31T12:00",
            param_hint="--since",
        ) from None


def logs(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[
        int | None, typer.Option("--lines", "-n", min=0, help="Only the last N lines.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only lines since: 10m, 2h, 1d, or a date.")
    ] = None,
    timestamps: Annotated[
        bool, typer.Option("--timestamps", "-t", help="Prefix each line with its time.")
    ] = False,
) -> None:
    """Print opencode's output (stdout and stderr of the container). Ctrl-C ends -f."""
    app_ctx: AppContext = ctx.obj
    since_ts = parse_since(since) if since else None
    stream = app_ctx.service().logs(
        tail=lines, follow=follow, since=since_ts, timestamps=timestamps
    )
    out = sys.stdout.buffer
    try:
        for chunk in stream:
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:
        # Ending a follow is the normal way out of it, not an error.
        return


def register(app: Any) -> None:
    app.command()(logs)
