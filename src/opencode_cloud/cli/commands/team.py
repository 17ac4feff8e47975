"""`occ team enable|disable|status|log`, `occ team sso set|show|off|sync` and
`occ user add|list|passwd|totp|sessions|disable|enable|remove|passkey`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from opencode_cloud.cli.group import OrderedGroup
from opencode_cloud.cli.options import log_limit_option
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
@log_limit_option
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
    on_nodes = any(p.node for p in people)  # a team on a swarm: where each one runs
    rows: list[tuple[str, ...]] = [
        ("NAME", "STATE", "ROLE", "2FA", "LAST SIGN-IN", "DISK", "MEMORY")
    ]
    if on_nodes:
        rows[0] = (*rows[0], "NODE")
    for p in people:
        state = "disabled" if p.disabled else p.state
        seen = f"{format_duration(now - p.last_sign_in)} ago" if p.last_sign_in else "never"
        memory = (
            f"{format_bytes(p.memory_bytes)} of {format_bytes(p.memory_limit)}"
            if p.memory_bytes is not None
            else "-"
        )
        second = {"on": "totp", "pending": "totp (pending)"}.get(p.totp or "", "")
        role = "admin" if p.admin else ""
        row = (p.name, state, role, second, seen, format_bytes(p.disk_bytes), memory)
        rows.append((*row, p.node or "-") if on_nodes else row)
    return format_table(rows)


# -- occ team sso ---------------------------------------------------------------------------


@team_group.group("sso", cls=OrderedGroup, no_args_is_help=True)
def sso_group() -> None:
    """Single sign-on with OpenID Connect: people sign in at your identity provider."""


@sso_group.command("set")
@click.option("--issuer", required=True, help="The provider's issuer URL (https://...).")
@click.option("--client-id", required=True, help="The client ID the provider gave this door.")
@click.option(
    "--client-secret-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file holding the client secret on one line (never on the command line).",
)
@click.option("--name", "provider_name", default="single sign-on", show_default=True,
              help='The provider\'s name on the button: "Sign in with NAME".')  # fmt: skip
@click.option("--allow-email", "emails", multiple=True, help="Allow this email (repeatable).")
@click.option("--allow-domain", "domains", multiple=True, help="Allow emails of this domain.")
@click.option("--allow-group", "groups", multiple=True, help="Allow members of this group.")
@click.option("--create-people", is_flag=True, help="Make a person at their first sign-in.")
@click.option("--sso-only", is_flag=True, help="Hide the password form; refuse passwords there.")
@click.option(
    "--allow-http", is_flag=True, help="Allow an http:// issuer on a loopback or private address."
)
@click.pass_obj
def sso_set(
    app_ctx: AppContext,
    issuer: str,
    client_id: str,
    client_secret_file: Path,
    provider_name: str,
    emails: tuple[str, ...],
    domains: tuple[str, ...],
    groups: tuple[str, ...],
    create_people: bool,
    sso_only: bool,
    allow_http: bool,
) -> None:
    """Turn single sign-on on, or change its settings (each call replaces them all)."""
    from opencode_cloud.team import sso

    settings = sso.SsoSettings(
        issuer=issuer,
        client_id=client_id,
        provider_name=provider_name,
        allowed_emails=list(emails),
        allowed_domains=list(domains),
        allowed_groups=list(groups),
        create_people=create_people,
        sso_only=sso_only,
        allow_http=allow_http,
    )
    settings.check()
    secret = sso.read_secret(client_secret_file)
    with app_ctx.changing("team sso set"):
        team = app_ctx.team()
        kept = sso.set_up(team, settings, secret)
    callback = sso.redirect_uri(team)
    app_ctx.out.result(
        {"settings": kept, "redirect_uri": callback},
        lambda: [
            f"Single sign-on with {kept.get('issuer')} is on.",
            f"  Register this redirect URI at the provider: {callback}",
        ],
    )


@sso_group.command("show")
@click.pass_obj
def sso_show(app_ctx: AppContext) -> None:
    """The settings of single sign-on (never the secret) and who is linked to the provider."""
    from opencode_cloud.team import sso

    team = app_ctx.team()
    shown = {**sso.show(team), "redirect_uri": sso.redirect_uri(team)}
    app_ctx.out.result(shown, lambda: sso_lines(shown))


def sso_lines(shown: dict[str, object]) -> list[str]:
    settings = shown.get("settings")
    if not isinstance(settings, dict):
        return ["Single sign-on is off."]
    lines = [f"{key}: {value}" for key, value in settings.items()]
    lines.append(f"redirect URI: {shown['redirect_uri']}")
    links = shown.get("links")
    linked = (
        [str(link["name"]) for link in links if isinstance(link, dict)]
        if isinstance(links, list)
        else []
    )
    lines.append(f"linked: {', '.join(linked) if linked else 'nobody yet'}")
    return lines


@sso_group.command("off")
@click.pass_obj
def sso_off(app_ctx: AppContext) -> None:
    """Turn single sign-on off (people keep their links, for when it is on again)."""
    from opencode_cloud.team import sso

    with app_ctx.changing("team sso off"):
        sso.turn_off(app_ctx.team())
    app_ctx.out.result({"sso": False}, lambda: ["Single sign-on is off."])


@sso_group.command("sync")
@click.pass_obj
def sso_sync(app_ctx: AppContext) -> None:
    """Make the opencode of anyone single sign-on added who has none (the door could not
    make it at their first sign-in)."""
    from opencode_cloud.team import sso

    with app_ctx.changing("team sso sync"):
        result = sso.sync(app_ctx.team())
    made, refused = result.made, result.refused

    def lines() -> list[str]:
        said = [f"Made the opencode of {', '.join(made)}." if made else "Everyone has theirs."]
        return said + [
            f"Not made for {name}: volumes of that name are there already (a person removed "
            f"without --volumes?), and their files would be {name}'s. Once you know whose "
            f"they are, `occ user remove {name} --volumes` deletes that person and them."
            for name in refused
        ]

    app_ctx.out.result({"made": made, "refused": refused}, lines)


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


@user_group.command("totp")
@click.argument("name")
@click.option("--off", is_flag=True, help="Take their TOTP away: the password alone again.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask (with --off).")
@click.pass_obj
def user_totp(app_ctx: AppContext, name: str, off: bool, yes: bool) -> None:
    """Require a code of an authenticator app after a person's password (TOTP). Shows a QR
    code to scan and ten recovery codes, once; their browsers are signed out. Running it
    again replaces both. With --json: the otpauth:// URI and the recovery codes."""
    from opencode_cloud.errors import NotConfirmed

    if off:
        question = f"Turn TOTP off for {name}? Their password alone will sign them in."
        if not app_ctx.confirmed(question, yes):
            raise NotConfirmed(f"TOTP stays on for {name}.", f"user totp {name} --off")
        with app_ctx.changing("user totp --off"):
            app_ctx.team().totp_off(name)
        app_ctx.out.result(
            {"name": name, "totp": None},
            lambda: [f"TOTP is off for {name}: their password alone signs them in."],
        )
        return
    with app_ctx.changing("user totp"):
        enrolled = app_ctx.team().totp(name)
    app_ctx.out.result(
        {"name": name, "totp": "pending", **enrolled},
        lambda: totp_lines(name, enrolled, app_ctx.occ),
    )


def totp_lines(
    name: str, enrolled: dict[str, object], occ: str = "occ", listed_by: str = "user list"
) -> list[str]:
    import io

    import segno

    qr = io.StringIO()
    segno.make(str(enrolled["uri"]), error="m").terminal(out=qr, compact=True)
    secret = str(enrolled["secret"])
    codes = enrolled["recovery_codes"]
    return [
        f"TOTP for {name}: scan this with an authenticator app",
        *qr.getvalue().rstrip("\n").splitlines(),
        "Or type this key into the app: " + " ".join(secret[i : i + 4] for i in range(0, 32, 4)),
        "",
        "Recovery codes, each good once in place of a code (shown only now; keep them safe):",
        *(f"  {code}" for code in (codes if isinstance(codes, list) else [])),
        "",
        f"From now on {name} signs in with a code after their password; their browsers are",
        f"signed out. `{occ} {listed_by}` shows totp (pending) until their first code.",
    ]


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
            backup_file = team.final_backup(name, volumes=volumes)
        removed = team.remove(name, volumes=volumes)
    app_ctx.out.result(
        {"name": name, "removed": removed, "backup": backup_file},
        lambda: [
            f"Removed {name}.",
            *([f"  Final backup: {backup_file}"] if backup_file else []),
            *([] if volumes else ["  Their volumes are kept (remove them with --volumes)."]),
        ],
    )


@user_group.command("restore")
@click.argument("name")
@click.option(
    "--from-backup",
    "file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The person's backup (`occ backup --user NAME`).",
)
@click.option("--node", required=True, help="The node of the swarm to run them on.")
@click.pass_obj
def user_restore(app_ctx: AppContext, name: str, file: Path, node: str) -> None:
    """Team on a swarm: bring a person back on NODE from a backup (their node is lost,
    say). Their volumes are made afresh there of the backup, and their instance runs
    there; what is left of them on their old node is not touched."""
    from opencode_cloud.backup.compression import plain_archive
    from opencode_cloud.backup.verify import verify_archive
    from opencode_cloud.cli.commands.backup import backups_of
    from opencode_cloud.team.drain import SwarmSessionCheck
    from opencode_cloud.team.errors import NotOnCluster, PersonDataOnManager
    from opencode_cloud.team.placement import SwarmPlacement
    from opencode_cloud.team.swarm_backup import restore_on_node

    with app_ctx.changing("user restore"):
        team = app_ctx.team(enabled=True)
        team.require(name)
        placement = team.placement
        if not isinstance(placement, SwarmPlacement):
            raise NotOnCluster(name)
        person_ctx = app_ctx.for_person(name)
        with (
            plain_archive(file.absolute()) as path,
            verify_archive(path, app_ctx.bytes_reporter()) as verified,
        ):

            def restore_here() -> None:
                backups = backups_of(person_ctx)
                if backups.target_state().has_data:
                    raise PersonDataOnManager(name)
                backups.restore(verified, reporter=person_ctx.bytes_reporter())

            where = restore_on_node(
                placement.cluster,
                name,
                node,
                restore_here,
                SwarmSessionCheck(placement.cluster),
                app_ctx.out.progress,
            )
    app_ctx.out.result(
        {"name": name, "node": where, "backup": str(file)},
        lambda: [f"{name} runs on {where} with the data of {file}."],
    )


# -- occ user passkey -----------------------------------------------------------------------


@user_group.group("passkey", cls=OrderedGroup, no_args_is_help=True)
def passkey_group() -> None:
    """Passkeys: people sign in with their fingerprint, face, PIN or security key instead
    of their password. Each person adds theirs at /__occ/passkeys once signed in."""


@passkey_group.command("list")
@click.argument("name")
@click.pass_obj
def passkey_list(app_ctx: AppContext, name: str) -> None:
    """A person's passkeys: name, when added and last used."""
    from opencode_cloud.team import passkeys

    found = passkeys.listing(app_ctx.team(), name)
    app_ctx.out.result({"name": name, "passkeys": found}, lambda: passkey_lines(name, found))


def passkey_lines(name: str, found: list[dict[str, object]]) -> list[str]:
    if not found:
        return [f"{name} has no passkey."]
    rows = [("NAME", "ADDED (UTC)", "LAST USED (UTC)", "ID")]
    for entry in found:
        used = _utc(entry.get("last_used")) if entry.get("last_used") else "never"
        passkey_id = str(entry.get("id") or "")
        rows.append(
            (
                str(entry.get("label") or ""),
                _utc(entry.get("created")),
                used,
                passkey_id[:16] + ("..." if len(passkey_id) > 16 else ""),
            )
        )
    return format_table(rows)


@passkey_group.command("reset")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@click.pass_obj
def passkey_reset(app_ctx: AppContext, name: str, yes: bool) -> None:
    """Remove all of a person's passkeys (a lost or stolen device). They sign in with
    their password again and can add new passkeys; their sessions are left alone (end
    them with `occ user sessions NAME --revoke all`)."""
    from opencode_cloud.errors import NotConfirmed
    from opencode_cloud.team import passkeys

    team = app_ctx.team()
    if not app_ctx.confirmed(f"Remove all of {name}'s passkeys?", yes):
        raise NotConfirmed(f"{name}'s passkeys were kept.", f"user passkey reset {name}")
    with app_ctx.changing("user passkey reset"):
        removed = passkeys.reset(team, name)
    app_ctx.out.result(
        {"name": name, "removed": removed},
        lambda: [
            f"Removed {removed} passkey{'' if removed == 1 else 's'} of {name}.",
            "They sign in with their password, and can add new passkeys.",
        ],
    )


@passkey_group.command("host")
@click.argument("host", required=False)
@click.option(
    "--any", "any_host", is_flag=True, help="Forget the host name: each browser's own host."
)
@click.pass_obj
def passkey_host(app_ctx: AppContext, host: str | None, any_host: bool) -> None:
    """The host name people use, which passkeys are made for (they work there only):
    show it, or set it (code.example.com). Without one, a passkey is made for the host
    the browser asked for. Passkeys need HTTPS, or http://localhost."""
    from opencode_cloud.team import passkeys

    if host is not None and any_host:
        raise click.UsageError("give a host name or --any, not both")
    team = app_ctx.team()
    if host is not None or any_host:
        with app_ctx.changing("user passkey host"):
            current = passkeys.host(team, True, host.strip().lower() if host else None)
    else:
        current = passkeys.host(team)
    app_ctx.out.result(
        {"host": current},
        lambda: [
            f"Passkeys are made for {current}, and work there only."
            if current
            else "Passkeys are made for the host each browser asks for."
        ],
    )


def register(group: click.Group) -> None:
    group.add_command(team_group)
    group.add_command(user_group)
