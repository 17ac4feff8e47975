"""`occ auth show` and `occ auth rotate`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from opencode_cloud.cli.group import OrderedGroup

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
