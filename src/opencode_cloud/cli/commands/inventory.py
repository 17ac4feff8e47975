"""`occ list`: every instance on this machine and on the saved hosts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from opencode_cloud.cli.output import format_table
from opencode_cloud.instance import Instance, command_prefix

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.inventory import HostListing, Listed

_COLUMNS = ("HOST", "INSTANCE", "STATE", "URL", "OPENCODE", "")


def _row(item: Listed) -> tuple[str, ...]:
    if item.team:
        note = f"team: {item.people} people, {item.people_running} running"
    elif item.needs_tunnel:
        prefix = command_prefix(Instance(item.instance), item.host)
        note = f"on that host's loopback: `{prefix} open`"
    else:
        note = item.problem or ""
    if item.health and item.health not in ("healthy", "unauthorized") and item.state == "running":
        note = f"HTTP: {item.health}" + (f"; {note}" if note else "")
    return (
        item.host,
        item.instance,
        item.state,
        item.url or "-",
        item.opencode_version or "-",
        note,
    )


def table(listings: list[HostListing]) -> list[str]:
    """The instances as aligned columns, then one line per host that did not answer."""
    rows = [_row(item) for listing in listings for item in listing.instances]
    lines: list[str] = []
    if rows:
        lines.extend(format_table([_COLUMNS, *rows]))
    else:
        lines.append("No instances yet: `occ start` makes one.")
    for listing in listings:
        if not listing.reachable:
            lines.append(f"{listing.name} ({listing.address}): unreachable: {listing.error}")
    return lines


@click.command("list")
@click.pass_obj
def list_(app_ctx: AppContext) -> None:
    """List every instance, here and on the saved hosts: state, URL, opencode version.

    The hosts are asked at the same time; one that does not answer within a few seconds
    is shown as unreachable, with the reason. In team mode the row is the front door's,
    with how many people there are and how many of their instances run.
    """
    from opencode_cloud.inventory import list_instances

    listings = list_instances()
    app_ctx.out.result(
        {"hosts": [listing.to_json() for listing in listings]},
        lambda: table(listings),
    )


def register(group: click.Group) -> None:
    group.add_command(list_)
