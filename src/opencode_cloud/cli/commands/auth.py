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
    """Print the URL, user name and password (creating the password if there is none)."""
    from opencode_cloud import credentials
    from opencode_cloud.service import service_url

    config = app_ctx.config
    password, _ = credentials.load_or_create_password(app_ctx.paths)
    data = {"url": service_url(config), "username": config.username, "password": password}
    app_ctx.out.result(
        data,
        lambda: [
            f"URL:      {data['url']}",
            f"User:     {data['username']}",
            f"Password: {password}",
        ],
    )


@auth_group.command()
@click.pass_obj
def rotate(app_ctx: AppContext) -> None:
    """Set a new random password and apply it (a running service restarts)."""
    with app_ctx.changing("auth rotate"):
        service = app_ctx.service()
        password, restarted = service.rotate_password()
        if restarted:
            with app_ctx.spinner("Restarting opencode with the new password ..."):
                service.wait_healthy(password)
    app_ctx.out.result(
        {"username": app_ctx.config.username, "password": password},
        lambda: [f"New password: {password}", "The old one no longer works."],
    )
