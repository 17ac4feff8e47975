"""`occ auth show` and `occ auth rotate`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext

app = typer.Typer(help="The web UI's credentials.", no_args_is_help=True, rich_markup_mode=None)


@app.command()
def show(ctx: typer.Context) -> None:
    """Print the URL, user name and password (creating the password if there is none)."""
    from opencode_cloud import credentials
    from opencode_cloud.service import service_url

    app_ctx: AppContext = ctx.obj
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


@app.command()
def rotate(ctx: typer.Context) -> None:
    """Set a new random password and apply it (a running service restarts)."""
    app_ctx: AppContext = ctx.obj
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
