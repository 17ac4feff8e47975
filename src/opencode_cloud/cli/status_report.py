"""What `occ status` gathers and prints, without click: the command (`cli/commands/
status.py`) and its quick path (`cli/quick.py`) both run `report_status`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opencode_cloud.cli.output import ExitCode, format_bytes, format_duration

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.service.status import StatusResult
    from opencode_cloud.team.reach import Reach


def report_status(app_ctx: AppContext, person: str | None, sizes: bool) -> ExitCode:
    """`occ status`: warnings on stderr, the report on stdout; NOT_RUNNING when the
    service (or in team mode the front door) is not running."""
    from opencode_cloud.access import credentials

    if person is None and app_ctx.in_team_mode():
        return _team_status(app_ctx)
    if person is not None and app_ctx.in_team_mode():
        from opencode_cloud.team.placement import SwarmPlacement

        placement = app_ctx.team().placement
        if isinstance(placement, SwarmPlacement):
            return _swarm_person_status(app_ctx, placement.cluster.reach(person))
    app_ctx = app_ctx.for_person(person)
    password = credentials.read_password(app_ctx.paths)
    result = app_ctx.service().status(password, sizes=sizes)
    result.warnings = status_warnings(result, app_ctx.occ) + backup_warnings(app_ctx)
    for warning in result.warnings:
        app_ctx.out.warn(warning)
    app_ctx.out.result(result.to_json(), lambda: _human(result))
    return ExitCode.OK if result.running else ExitCode.NOT_RUNNING


def _human(result: StatusResult) -> list[str]:
    health = result.docker_health or "-"
    if result.http_health:
        health += f" (HTTP: {result.http_health})"
    lines = [
        f"Instance:   {result.instance}",
        *([f"Person:     {result.person} (team mode)"] if result.person else []),
        *([f"Host:       {result.host}"] if result.host else []),
        f"State:      {result.state}",
        f"Health:     {health}",
        f"URL:        {result.url}"
        + (" (on that host; `tunnel` reaches it)" if result.needs_tunnel else ""),
        f"Listening:  {result.bind_address}:{result.port}",
        f"Image:      {result.image or '-'}",
        f"opencode:   {result.opencode_version or '-'}",
        f"Uptime:     {format_duration(result.uptime_seconds)}",
        f"Restarts:   {result.restart_count}"
        + (f" (last run ended: {result.last_exit})" if result.last_exit else ""),
        *([f"Sessions:   failing: {result.session_api}"] if _failing(result) else []),
        *(
            [f"Pending:    restart to apply {', '.join(result.pending_restart)}"]
            if result.pending_restart
            else []
        ),
        "Volumes:",
    ]
    for vol in result.volumes:
        if not vol.exists:
            size = "missing"
        else:
            size = "" if vol.size_bytes is None else format_bytes(vol.size_bytes)
        lines.append(f"  {vol.name:<36} {vol.mount_point:<40} {size}".rstrip())
    if result.snapshots:
        sizes = [s["size_bytes"] for s in result.snapshots if s["size_bytes"] is not None]
        total = f" ({format_bytes(sum(sizes))})" if sizes else ""
        lines.append(f"Snapshots:  {len(result.snapshots)}{total}, for `occ rollback`")
        for snap in result.snapshots:
            size = format_bytes(snap["size_bytes"]) if snap["size_bytes"] is not None else "-"
            lines.append(f"  {snap['created'][:19]}  {snap['image']:<40} {size}")
    if result.log_tail:
        lines += ["Last log lines:", *(f"  {line}" for line in result.log_tail)]
    return lines


def _failing(result: StatusResult) -> bool:
    return result.session_api is not None and result.session_api != "ok"


def status_warnings(result: StatusResult, occ: str) -> list[str]:
    """What `occ status` warns about: exposure, and settings waiting for a restart."""
    warnings = []
    if result.exposed and result.url.startswith("http://"):
        warnings.append(
            f"The service listens on {result.bind_address} over plain HTTP: the password "
            "and session cookies travel in clear to anyone on the network. Turn HTTPS on: "
            f"`{occ} config set tls auto` (or self-signed), then `{occ} restart`."
        )
    elif result.exposed:
        warnings.append(
            f"The service listens on {result.bind_address}: anyone who can reach this "
            "machine can reach the login page (HTTPS, limited guessing)."
        )
    if result.state == "crash-looping":
        warnings.append(
            f"The service keeps crashing ({result.restart_count} restarts, last run ended: "
            f"{result.last_exit}); its last log lines are below. Stop it with `{occ} stop`."
        )
    if _failing(result):
        warnings.append(
            "opencode answers, but cannot read its sessions: see `"
            + occ
            + " logs`. If this began with a version change, go back to the version that worked."
        )
    if result.pending_restart:
        warnings.append(
            "Configuration changed since the container was created ("
            + ", ".join(result.pending_restart)
            + f"): run `{occ} restart` to apply it."
        )
    return warnings


def backup_warnings(app_ctx: AppContext) -> list[str]:
    """A failed or overdue scheduled backup, in a line."""
    from opencode_cloud.config.backup_schedule import schedule_problem

    problem = schedule_problem(app_ctx.paths)
    if problem is None:
        return []
    return [
        f"{problem.rstrip('.')}. See `{app_ctx.occ} doctor`; `{app_ctx.occ} backup run` tries now."
    ]


def _team_status(app_ctx: AppContext) -> ExitCode:
    """`occ status` in team mode: the front door and the people."""
    from opencode_cloud.cli.commands.team import people_lines

    status = app_ctx.team().status()
    for warning in backup_warnings(app_ctx):
        app_ctx.out.warn(warning)
    app_ctx.out.result(
        status.to_json(),
        lambda: [
            f"Team mode at {status.url} (front door: {status.door})",
            *people_lines(status.people),
        ],
    )
    return ExitCode.OK if status.door == "running" else ExitCode.NOT_RUNNING


def _swarm_person_status(app_ctx: AppContext, reach: Reach) -> ExitCode:
    """`occ status --user NAME` of a person on a swarm: their service's task, its node and
    the node's state; NOT_RUNNING, with what to do, when nothing reaches them."""
    from opencode_cloud.team.reach import UNREACHABLE

    occ = app_ctx.occ
    if reach.state == UNREACHABLE:
        app_ctx.out.warn(
            f"{reach.person}'s instance is unreachable: {reach.reason()}. Everyone else works "
            f"on; once the node is back, {reach.person}'s instance runs there again with its "
            f"data. To bring {reach.person} back on another node now, from their last backup: "
            f"`{occ} user restore {reach.person} --from-backup FILE --node OTHER`."
        )
    elif not reach.reachable:
        app_ctx.out.warn(
            f"{reach.person}'s instance is not running: {reach.reason()}. "
            f"See `{occ} cluster status`."
        )
    node = reach.node
    node_line = "-"
    if node is not None:
        node_line = f"{node.hostname} ({node.state}" + (
            f": {node.message})" if node.message and node.state != "ready" else ")"
        )
    app_ctx.out.result(
        reach.to_json(),
        lambda: [
            f"Instance:   {app_ctx.instance.name}",
            f"Person:     {reach.person} (team mode, on the swarm)",
            f"State:      {reach.state}",
            f"Node:       {node_line}",
            f"Why:        {reach.reason()}",
            f"Service:    {reach.service}",
        ],
    )
    return ExitCode.OK if reach.reachable else ExitCode.NOT_RUNNING
