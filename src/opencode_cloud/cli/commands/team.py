"""`occ team enable|disable|status|log` and
`occ user add|list|passwd|sessions|disable|enable|remove`."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

import click

from opencode_cloud.cli.group import OrderedGroup
from opencode_cloud.cli.output import format_bytes, format_duration, format_table

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.team.people import Person


def _first_name() -> str:
    """The first person's default name: the login name on this machine, when it is a
    valid person name."""
    import getpass  # here: every `occ` command loads this module

    from opencode_cloud.instance import PERSON_RULE

    name = (os.environ.get("USER") or getpass.getuser() or "").lower()
    return name if PERSON_RULE.match(name) and name != "root" else "admin"


def _read_password_stdin() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.BadParameter("no password on standard input", param_hint="--password-stdin")
    if len(password) < 8:
        raise click.BadParameter("use at least 8 characters", param_hint="--password-stdin")
    return password


# -- occ team -------------------------------------------------------------------------------


@click.group("team", cls=OrderedGroup, no_args_is_help=True)
def team_group() -> None:
    """Team mode: a sign-in and an opencode of their own for each person."""


@team_group.command("enable")
@click.option(
    "--name",
    "first",
    help="The first person's name: today's user (default: your login name).",
)
@click.pass_obj
def team_enable(app_ctx: AppContext, first: str | None) -> None:
    """Turn team mode on. Today's user becomes the first person, with the same password
    and their sessions and files; everyone signs in at the same URL."""
    first = first or _first_name()
    with app_ctx.changing("team enable"):
        team = app_ctx.team(enabled=False)
        with app_ctx.spinner("Turning team mode on ..."):
            url = team.enable_team(first, on_step=app_ctx.out.progress)
    from opencode_cloud.cli.commands.lifecycle import warn_of_team_env_keys

    warn_of_team_env_keys(app_ctx)
    app_ctx.out.result(
        {"team": True, "url": url, "first": first},
        lambda: [
            f"Team mode is on at {url}",
            f"  {first} signs in with the service's password (`{app_ctx.occ} auth show`).",
            f"  Add people with `{app_ctx.occ} user add NAME`.",
        ],
    )


@team_group.command("disable")
@click.pass_obj
def team_disable(app_ctx: AppContext) -> None:
    """Turn team mode off: the first person's sessions and files go back to the
    single-user service; everyone's volumes stay."""
    with app_ctx.changing("team disable"):
        team = app_ctx.team(enabled=True)
        with app_ctx.spinner("Turning team mode off ..."):
            first = team.disable_team(on_step=app_ctx.out.progress)
            result = app_ctx.service().start(on_step=app_ctx.out.progress)
    app_ctx.out.result(
        {"team": False, "url": result.url, "first": first},
        lambda: [
            f"Team mode is off: opencode runs for one person at {result.url}",
            *([f"  with {first}'s sessions and files."] if first else []),
            "  Everyone's volumes are kept.",
        ],
    )


@team_group.command("status")
@click.pass_obj
def team_status(app_ctx: AppContext) -> None:
    """The team's URL, its front door and its people."""
    team = app_ctx.team(enabled=None)
    if not team.enabled:
        app_ctx.out.result(
            {"team": False},
            lambda: [f"Team mode is off (`{app_ctx.occ} team enable` turns it on)."],
        )
        return
    status = team.status()
    app_ctx.out.result(
        status.to_json(),
        lambda: [
            f"Team mode is on at {status.url} (front door: {status.door})",
            *people_lines(status.people),
        ],
    )


@team_group.command("log")
@click.option("--user", "name", metavar="NAME", help="Only this person's lines.")
@click.option(
    "--limit",
    type=click.IntRange(1, 10000),
    default=100,
    show_default=True,
    help="How many of the newest lines.",
)
@click.pass_obj
def team_log(app_ctx: AppContext, name: str | None, limit: int) -> None:
    """Sign-ins, sign-outs, failed attempts and the admin's changes, newest last. It holds
    times, names, events and addresses; never a password or a session's token."""
    lines = app_ctx.team().log(name, limit)
    app_ctx.out.result({"log": lines}, lambda: log_lines(lines))


def log_lines(lines: list[dict[str, object]]) -> list[str]:
    if not lines:
        return ["Nothing logged yet."]
    rows = [("TIME (UTC)", "NAME", "EVENT", "FROM")]
    for line in lines:
        name = str(line.get("name") or "") or "(unknown name)"
        rows.append((_utc(line.get("time")), name, str(line["event"]), str(line["address"])))
    return format_table(rows)


def _utc(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def people_lines(people: list[Person]) -> list[str]:
    if not people:
        return ["Nobody yet."]
    now = time.time()
    rows = [("NAME", "STATE", "ROLE", "LAST SIGN-IN", "DISK", "MEMORY")]
    for p in people:
        state = "disabled" if p.disabled else p.state
        seen = f"{format_duration(now - p.last_sign_in)} ago" if p.last_sign_in else "never"
        memory = (
            f"{format_bytes(p.memory_bytes)} of {format_bytes(p.memory_limit)}"
            if p.memory_bytes is not None
            else "-"
        )
        rows.append(
            (p.name, state, "admin" if p.admin else "", seen, format_bytes(p.disk_bytes), memory)
        )
    return format_table(rows)


# -- occ user -------------------------------------------------------------------------------


@click.group("user", cls=OrderedGroup, no_args_is_help=True)
def user_group() -> None:
    """The people of a team: each signs in with their own name and password."""


@user_group.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Mark them as an administrator.")
@click.option("--email", help="Their email address (for single sign-on later).")
@click.option("--memory", help="Memory for their opencode: 2g, 512m (default: limits.memory).")
@click.option("--cpus", type=click.FloatRange(min=0.1), help="CPUs for it (default: limits.cpus).")
@click.option("--password-stdin", is_flag=True, help="Read their first password from stdin.")
@click.pass_obj
def user_add(
    app_ctx: AppContext,
    name: str,
    admin: bool,
    email: str | None,
    memory: str | None,
    cpus: float | None,
    password_stdin: bool,
) -> None:
    """Add a person: their own opencode, volumes and network. Prints their first password."""
    from opencode_cloud.config.schema import size_in_bytes
    from opencode_cloud.defaults import MIN_MEMORY_BYTES

    memory_bytes = None
    if memory is not None:
        try:
            memory_bytes = size_in_bytes(memory)
        except ValueError:
            raise click.BadParameter(
                f"{memory!r} is not a size: use 512m, 2g", param_hint="--memory"
            ) from None
        if memory_bytes < MIN_MEMORY_BYTES:
            raise click.BadParameter("below 256m, too little for opencode", param_hint="--memory")
    password = _read_password_stdin() if password_stdin else None
    with app_ctx.changing("user add"):
        team = app_ctx.team()
        app_ctx.instance.for_person(name)
        password = team.add(
            name, password=password, admin=admin, email=email, memory_bytes=memory_bytes, cpus=cpus
        )
    url = team.url
    app_ctx.out.result(
        {"name": name, "url": url, "password": None if password_stdin else password},
        lambda: [
            f"Added {name}. They sign in at {url}",
            f"  Name:     {name}",
            *([] if password_stdin else [f"  Password: {password}"]),
            "  Their opencode starts when they sign in.",
        ],
    )


@user_group.command("list")
@click.pass_obj
def user_list(app_ctx: AppContext) -> None:
    """Everyone: state, last sign-in, disk and memory."""
    people = app_ctx.team().people()
    app_ctx.out.result({"people": [p.to_json() for p in people]}, lambda: people_lines(people))


@user_group.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from stdin.")
@click.pass_obj
def user_passwd(app_ctx: AppContext, name: str, password_stdin: bool) -> None:
    """Give a person a new password (a random one unless --password-stdin); their browsers
    are signed out."""
    from opencode_cloud.access.credentials import generate_password

    password = _read_password_stdin() if password_stdin else generate_password()
    with app_ctx.changing("user passwd"):
        app_ctx.team().passwd(name, password)
    app_ctx.out.result(
        {"name": name, "password": None if password_stdin else password},
        lambda: [
            f"New password for {name}" + ("." if password_stdin else f": {password}"),
            "Their browsers are signed out.",
        ],
    )


@user_group.command("disable")
@click.argument("name")
@click.pass_obj
def user_disable(app_ctx: AppContext, name: str) -> None:
    """Sign a person out at once and stop their opencode; they cannot sign in until
    enabled. Nothing of theirs is deleted."""
    with app_ctx.changing("user disable"):
        app_ctx.team().disable(name)
    app_ctx.out.result(
        {"name": name, "disabled": True},
        lambda: [f"{name} is signed out and disabled; their opencode is stopped."],
    )


@user_group.command("enable")
@click.argument("name")
@click.pass_obj
def user_enable(app_ctx: AppContext, name: str) -> None:
    """Let a disabled person sign in again."""
    with app_ctx.changing("user enable"):
        app_ctx.team().enable(name)
    app_ctx.out.result({"name": name, "disabled": False}, lambda: [f"{name} can sign in again."])


@user_group.command("sessions")
@click.argument("name")
@click.option(
    "--revoke",
    "which",
    metavar="ID|all",
    help="End this session (an ID from the list), or all of them.",
)
@click.pass_obj
def user_sessions(app_ctx: AppContext, name: str, which: str | None) -> None:
    """Where and when a person is signed in: each browser session's ID, address, browser,
    and when it began and was last used. With --revoke, end one or all of them: that
    browser is refused from its next request on, and the person's opencode is stopped
    (it starts again at their next request), which closes what that browser still held
    open: event streams, terminals."""
    team = app_ctx.team()
    if which is not None:
        which = which.strip().lower()
        with app_ctx.changing("user sessions --revoke"):
            ended = team.revoke(name, which)
        app_ctx.out.result(
            {"name": name, "revoked": ended},
            lambda: [
                f"Ended {ended} session{'' if ended == 1 else 's'} of {name}.",
                "Their opencode was stopped; it starts again at their next request.",
            ],
        )
        return
    sessions = team.sessions(name)
    app_ctx.out.result({"name": name, "sessions": sessions}, lambda: session_lines(name, sessions))


def session_lines(name: str, sessions: list[dict[str, object]]) -> list[str]:
    if not sessions:
        return [f"{name} is not signed in anywhere."]
    now = time.time()
    rows = [("ID", "FROM", "SIGNED IN (UTC)", "LAST USED", "BROWSER")]
    for entry in sessions:
        seen = entry.get("seen")
        used = f"{format_duration(now - seen)} ago" if isinstance(seen, int) else "-"
        agent = str(entry.get("agent") or "-")
        rows.append(
            (
                str(entry["id"]),
                str(entry.get("address") or "-"),
                _utc(entry.get("created")),
                used,
                agent if len(agent) <= 60 else agent[:57] + "...",
            )
        )
    return format_table(rows)


@user_group.command("remove")
@click.argument("name")
@click.option(
    "--volumes", is_flag=True, help="Also delete their volumes (their files and sessions)."
)
@click.option("--no-backup", is_flag=True, help="Do not write a final backup first.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@click.pass_obj
def user_remove(app_ctx: AppContext, name: str, volumes: bool, no_backup: bool, yes: bool) -> None:
    """Take a person out of the team. A final backup of their data is written first; their
    volumes are kept unless --volumes."""
    from opencode_cloud.errors import NotConfirmed

    what = "and delete their files and sessions" if volumes else "(their volumes are kept)"
    if not app_ctx.confirmed(f"Remove {name} from the team {what}?", yes):
        raise NotConfirmed(
            f"{name} was not removed.", f"user remove {name}" + (" --volumes" if volumes else "")
        )
    backup_file = None
    with app_ctx.changing("user remove"):
        team = app_ctx.team()
        team.require(name)
        if not no_backup:
            backup_file = team.final_backup(name)
        removed = team.remove(name, volumes=volumes)
    app_ctx.out.result(
        {"name": name, "removed": removed, "backup": backup_file},
        lambda: [
            f"Removed {name}.",
            *([f"  Final backup: {backup_file}"] if backup_file else []),
            *([] if volumes else ["  Their volumes are kept (remove them with --volumes)."]),
        ],
    )


def register(group: click.Group) -> None:
    group.add_command(team_group)
    group.add_command(user_group)
