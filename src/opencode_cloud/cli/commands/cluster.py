"""`occ cluster init|status` and `occ node list|drain|activate`: team mode's place on a
Docker Swarm, through one manager (docs/cluster.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from opencode_cloud.cli.group import OrderedGroup
from opencode_cloud.cli.output import format_bytes, format_table

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.team.cluster import ClusterStatus, NodeRow


@click.group("cluster", cls=OrderedGroup, no_args_is_help=True)
def cluster_group() -> None:
    """Team mode on a Docker Swarm: run it on the swarm this engine manages."""


@cluster_group.command("init")
@click.pass_obj
def cluster_init(app_ctx: AppContext) -> None:
    """Ready the swarm this engine manages for the team: push the image to the registry
    named by `cluster.registry`, and make the team's overlay network."""
    with app_ctx.changing("cluster init"):
        status = app_ctx.cluster().init(app_ctx.reporter(), app_ctx.out.progress)
    app_ctx.out.result(status.to_json(), lambda: status_lines(status))


@cluster_group.command("status")
@click.pass_obj
def cluster_status(app_ctx: AppContext) -> None:
    """The manager, the nodes, the front door's URL and what is out of place."""
    status = app_ctx.cluster().status()
    app_ctx.out.result(status.to_json(), lambda: status_lines(status))


def status_lines(status: ClusterStatus) -> list[str]:
    manager = status.manager
    lines = [
        f"Manager:  {manager.hostname} ({manager.address})" if manager else "Manager:  unknown",
        f"Image:    {status.image}",
        f"Network:  {status.network}" + ("" if status.network_ready else " (missing)"),
        f"Door:     {status.door_url or 'not running on the cluster'}",
        "",
        *node_lines(status.nodes),
    ]
    if status.problems:
        lines += ["", "Out of place:", *(f"  - {problem}" for problem in status.problems)]
    return lines


@click.group("node", cls=OrderedGroup, no_args_is_help=True)
def node_group() -> None:
    """The machines of the swarm the team runs on."""


@node_group.command("list")
@click.pass_obj
def node_list(app_ctx: AppContext) -> None:
    """Each node: its state, availability, capacity and the team's instances on it."""
    rows = app_ctx.cluster().nodes()
    app_ctx.out.result({"nodes": [row.to_json() for row in rows]}, lambda: node_lines(rows))


@node_group.command("drain")
@click.argument("node")
@click.pass_obj
def node_drain(app_ctx: AppContext, node: str) -> None:
    """Move each person's instance on NODE, with its data, to other nodes, one at a
    time (stopped, copied, started there and checked), then mark NODE drained."""
    from opencode_cloud.team.drain import Drain

    with app_ctx.changing("node drain"):
        result = Drain(app_ctx.cluster(), on_step=app_ctx.out.progress).drain(node)

    def lines() -> list[str]:
        moved = [
            f"{m['name']}: {m['from']} -> {m['to']} (away {m['seconds_away']:.1f} s)"
            for m in result.moved
        ]
        return [*moved, f"{result.node} is {result.availability}: nothing new starts there."]

    app_ctx.out.result(result.to_json(), lines)


@node_group.command("activate")
@click.argument("node")
@click.pass_obj
def node_activate(app_ctx: AppContext, node: str) -> None:
    """Let NODE take new instances again (its availability back to active)."""
    from opencode_cloud.team.drain import Drain

    with app_ctx.changing("node activate"):
        drain = Drain(app_ctx.cluster())
        found = drain.node(node)
        drain.set_availability(found, "active")
    app_ctx.out.result(
        {"node": found.hostname, "availability": "active"},
        lambda: [f"{found.hostname} is active: new instances may start there."],
    )


def node_lines(rows: list[NodeRow]) -> list[str]:
    table = [["NODE", "ROLE", "STATE", "AVAILABILITY", "CPUS", "MEMORY", "FREE", "INSTANCES"]]
    for row in rows:
        node = row.node
        role = f"{node.role} (leader)" if node.leader else node.role
        table.append(
            [
                node.hostname,
                role,
                f"{node.state} ({node.message})"
                if row.unreachable and node.message
                else node.state,
                node.availability,
                f"{node.cpus:g}",
                format_bytes(node.memory_bytes),
                format_bytes(row.memory_free),
                ", ".join(
                    f"{i} (unreachable)" if i in row.unreachable else i for i in row.instances
                )
                or "-",
            ]
        )
    return format_table(table)


def register(group: click.Group) -> None:
    group.add_command(cluster_group)
    group.add_command(node_group)
