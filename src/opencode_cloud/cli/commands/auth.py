"""`occ auth show|rotate|sessions|log|totp`: the single user's credentials, where they are
signed in, the sign-in log and a second factor (team mode has `occ user` and `occ team log`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import click

from opencode_cloud.cli.group import OrderedGroup
from opencode_cloud.cli.options import log_limit_option

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext


@click.group("auth", cls=OrderedGroup, no_args_is_help=True)
def auth_group() -> None:
    """The web UI's credentials."""


@auth_group.command()
@click.pass_obj
def show(app_ctx: AppContext) -> None:
    """Print the URL, user name and password (creating the password if there is none),
    and the CA certificate to trust when the service uses the self-signed certificate."""
    from opencode_cloud.access import credentials
    from opencode_cloud.service.endpoint import service_url

    config = app_ctx.config
    password, _ = credentials.load_or_create_password(app_ctx.paths)
    data: dict[str, str | None] = {
        "url": service_url(config),
        "username": config.username,
        "password": password,
        "tls": config.tls_mode,
        "ca_file": None,
    }
    if config.tls_mode == "self-signed":
        from opencode_cloud.access import tls

        # The one the service's certificate comes from: a start replaces it when it must.
        names = tls.server_names(config.bind_address, config.host_names)
        ca, _ = tls.ensure_ca(app_ctx.paths, names, app_ctx.instance.name, replace=False)
        data["ca_file"] = str(ca)

    def lines() -> list[str]:
        text = [
            f"URL:      {data['url']}",
            f"User:     {data['username']}",
            f"Password: {password}",
        ]
        if data["ca_file"]:
            text.append(f"CA:       {data['ca_file']} (trust it in your browser or client)")
        return text

    app_ctx.out.result(data, lines)


@auth_group.command()
@click.pass_obj
def rotate(app_ctx: AppContext) -> None:
    """Set a new random password and apply it at once: the old one and every signed-in
    browser session stop working (the service keeps running)."""
    with app_ctx.changing("auth rotate"):
        service = app_ctx.service()
        password, _applied = service.rotate_password()
    app_ctx.out.result(
        {"username": app_ctx.config.username, "password": password},
        lambda: [
            f"New password: {password}",
            "The old one no longer works, and every browser is signed out.",
        ],
    )


def _single_user(app_ctx: AppContext) -> None:
    """Refuse in team mode, whose people have their own commands (`occ user ...`)."""
    if app_ctx.in_team_mode():
        from opencode_cloud.team.errors import TeamAlreadyEnabled

        raise TeamAlreadyEnabled(app_ctx.instance.name)


@auth_group.command()
@click.option(
    "--revoke",
    "which",
    metavar="ID|all",
    help="End this session (an ID from the list), or all of them.",
)
@click.pass_obj
def sessions(app_ctx: AppContext, which: str | None) -> None:
    """Where and when you are signed in: each browser session's ID, address, browser, and
    when it began and was last used. With --revoke, end one or all of them: that browser
    is asked to sign in again from its next request on, and what it still holds open
    (event streams, terminals) is closed."""
    from opencode_cloud.cli.commands.team import session_lines

    if which is not None:
        which = which.strip().lower()
        if not re.fullmatch(r"all|[0-9a-f]{12}", which):
            raise click.BadParameter("an ID of `auth sessions` (12 hex digits), or all")
    _single_user(app_ctx)
    service = app_ctx.service()
    if which is not None:
        with app_ctx.changing("auth sessions --revoke"):
            ended = service.revoke_sessions(which)
        app_ctx.out.result(
            {"revoked": ended},
            lambda: [
                "Ended 1 session: that browser must sign in again."
                if ended == 1
                else f"Ended {ended} sessions: those browsers must sign in again."
            ],
        )
        return
    listed = service.ask_edge({"op": "sessions"})["sessions"]
    username = app_ctx.config.username
    app_ctx.out.result(
        {"username": username, "sessions": listed}, lambda: session_lines(username, listed)
    )


@auth_group.command()
@log_limit_option
@click.pass_obj
def log(app_ctx: AppContext, limit: int) -> None:
    """Sign-ins, sign-outs, failed attempts, revoked sessions and changes of the second
    factor, newest last. It holds times, events and addresses; never a password, code or
    session token."""
    from opencode_cloud.cli.commands.team import log_lines

    _single_user(app_ctx)
    lines = app_ctx.service().ask_edge({"op": "log", "limit": limit})["log"]
    username = app_ctx.config.username
    # The sign-in service keeps the user as "owner": the user name may change.
    named = [{**line, "name": username if line.get("name") else ""} for line in lines]
    app_ctx.out.result({"log": named}, lambda: log_lines(named))


@auth_group.command()
@click.option("--off", is_flag=True, help="Take TOTP away: the password alone again.")
@click.option("--status", is_flag=True, help="Only say whether TOTP is on.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask (with --off).")
@click.pass_obj
def totp(app_ctx: AppContext, off: bool, status: bool, yes: bool) -> None:
    """Require a code of an authenticator app after the password (TOTP). Shows a QR code
    to scan and ten recovery codes, once; every browser is signed out. Running it again
    replaces both. While it is on, HTTP Basic credentials are refused (but for the health
    check). With --json: the otpauth:// URI and the recovery codes."""
    from opencode_cloud.cli.commands.team import totp_lines
    from opencode_cloud.errors import NotConfirmed

    _single_user(app_ctx)
    service = app_ctx.service()
    if status:
        state = service.ask_edge({"op": "totp-state"})["totp"]
        words = {"on": "on", "pending": "on (pending: no code used yet)"}.get(state, "off")
        app_ctx.out.result({"totp": state}, lambda: [f"TOTP is {words}."])
        return
    if off:
        question = "Turn TOTP off? The password alone will sign you in."
        if not app_ctx.confirmed(question, yes):
            raise NotConfirmed("TOTP stays on.", "auth totp --off")
        with app_ctx.changing("auth totp --off"):
            service.ask_edge({"op": "totp-off"})
        app_ctx.out.result(
            {"totp": None}, lambda: ["TOTP is off: the password alone signs you in."]
        )
        return
    with app_ctx.changing("auth totp"):
        enrolled = service.enrol_totp()
    username = app_ctx.config.username
    app_ctx.out.result(
        {"username": username, "totp": "pending", **enrolled},
        lambda: totp_lines(username, enrolled, app_ctx.occ, "auth totp --status"),
    )
