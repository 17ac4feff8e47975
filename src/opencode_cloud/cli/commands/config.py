"""`occ config ...` and `occ config env ...`: view and edit the configuration file."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.config.schema import Config

app = typer.Typer(
    help="View and edit the configuration (port, bind address, environment, ...).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
env_app = typer.Typer(
    help="Environment variables passed to opencode (applied on the next start).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(env_app, name="env")


def confirm_exposure(ctx: AppContext, address: str, yes: bool) -> None:
    """Publishing beyond this machine needs an explicit yes (flag or prompt) and a password.

    Raises:
        OpencodeCloudError: not confirmed; nothing is changed.
    """
    from opencode_cloud import credentials
    from opencode_cloud.errors import OpencodeCloudError

    ctx.out.warn(
        f"Binding to {address} makes the login page reachable from other machines. "
        "Keep the password secret and put TLS in front (a load balancer or reverse proxy)."
    )
    if not (yes or (ctx.out.interactive and typer.confirm("Expose opencode?", default=False))):
        raise OpencodeCloudError(
            f"Refusing to bind to {address} without confirmation.",
            "Run the command again with --yes to expose the service.",
        )
    # Never an open server on the network: make sure the password exists before it is used.
    credentials.load_or_create_password(ctx.paths)


def save_change(ctx: AppContext, change: Callable[[Any], Config], *, yes: bool = False) -> Config:
    """Apply `change` to the file under the instance lock; nothing is written on any error.

    A change that newly exposes the service beyond localhost must be confirmed first.
    """
    from opencode_cloud.config.store import update_config

    def guarded(data: Any) -> Config:
        config = change(data)
        if config.exposed and config.bind_address != data.get("bind_address"):
            confirm_exposure(ctx, config.bind_address, yes)
        return config

    with ctx.changing("config"):
        loaded = update_config(ctx.paths.config_file, guarded)
    for warning in loaded.warnings:
        ctx.out.warn(warning)
    ctx.set_config(loaded.config)
    return loaded.config


def _restart_note(ctx: AppContext) -> None:
    ctx.out.progress("Applies on the next start: run `occ restart` if the service is running.")


@app.command()
def show(ctx: typer.Context) -> None:
    """Print every setting with its current value (defaults included)."""
    from opencode_cloud.config.edit import config_values, is_set

    app_ctx: AppContext = ctx.obj
    config = app_ctx.config
    values = config_values(config)

    def human() -> list[str]:
        width = max(len(k) for k in values)
        return [
            f"{key:<{width}}  {json.dumps(value)}" + ("" if is_set(config, key) else "  (default)")
            for key, value in values.items()
        ]

    app_ctx.out.result(values, human)


@app.command()
def get(ctx: typer.Context, key: Annotated[str, typer.Argument(help="Setting name.")]) -> None:
    """Print one setting, e.g. `occ config get port`."""
    from opencode_cloud.config.edit import get_value

    app_ctx: AppContext = ctx.obj
    value = get_value(app_ctx.config, key)
    app_ctx.out.result(
        {key: value},
        lambda: [value if isinstance(value, str) else json.dumps(value)],
    )


@app.command("set")
def set_(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Setting name, e.g. port.")],
    value: Annotated[str, typer.Argument(help="New value, e.g. 8080.")],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Confirm exposing the service beyond localhost.")
    ] = False,
) -> None:
    """Change one setting, e.g. `occ config set port 8080`. Lists: JSON or a,b,c."""
    from opencode_cloud.config.edit import get_value, set_value

    app_ctx: AppContext = ctx.obj
    config = save_change(app_ctx, lambda data: set_value(data, key, value), yes=yes)
    new = get_value(config, key)
    app_ctx.out.result({key: new}, lambda: [f"{key} = {json.dumps(new)}"])
    _restart_note(app_ctx)


@app.command()
def unset(ctx: typer.Context, key: Annotated[str, typer.Argument(help="Setting name.")]) -> None:
    """Put one setting back to its default."""
    from opencode_cloud.config.edit import get_value, unset_value

    app_ctx: AppContext = ctx.obj
    config = save_change(app_ctx, lambda data: unset_value(data, key))
    try:
        new = get_value(config, key)
    except Exception:  # an unknown key was removed from the file: nothing to show
        new = None
    app_ctx.out.result({key: new}, lambda: [f"{key} = {json.dumps(new)} (default)"])
    _restart_note(app_ctx)


@app.command()
def reset(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Put every setting back to its default (the old file is kept as config.json.bak)."""
    from opencode_cloud.config.store import reset_config_file
    from opencode_cloud.errors import OpencodeCloudError

    app_ctx: AppContext = ctx.obj
    if not yes and not (
        app_ctx.out.interactive and typer.confirm("Reset every setting?", default=False)
    ):
        raise OpencodeCloudError("Not reset: confirmation needed.", "Run `occ config reset --yes`.")
    with app_ctx.changing("config reset"):
        backup = reset_config_file(app_ctx.paths.config_file)
    app_ctx.out.result(
        {"reset": True, "backup": str(backup) if backup else None},
        lambda: (
            ["Every setting is back to its default."]
            + ([f"The old file is kept as {backup}."] if backup else [])
        ),
    )


@app.command()
def path(ctx: typer.Context) -> None:
    """Print the configuration file's path."""
    app_ctx: AppContext = ctx.obj
    file = app_ctx.paths.config_file
    app_ctx.out.result({"path": str(file), "exists": file.exists()}, lambda: [str(file)])


@app.command()
def validate(ctx: typer.Context) -> None:
    """Check the configuration file; exit 0 when it is valid."""
    app_ctx: AppContext = ctx.obj
    _ = app_ctx.config  # loading validates; errors leave through the CLI's error boundary
    file = app_ctx.paths.config_file
    app_ctx.out.result({"valid": True, "path": str(file)}, lambda: [f"{file} is valid."])


@env_app.command("set")
def env_set(
    ctx: typer.Context,
    assignment: Annotated[str, typer.Argument(metavar="KEY=VALUE", help="e.g. TZ=Europe/Paris")],
) -> None:
    """Set an environment variable for opencode."""
    from opencode_cloud.config.edit import env_set as set_env

    app_ctx: AppContext = ctx.obj
    save_change(app_ctx, lambda data: set_env(data, assignment))
    name = assignment.split("=", 1)[0]
    app_ctx.out.result({"set": name}, lambda: [f"{name} set."])
    _restart_note(app_ctx)


@env_app.command("unset")
def env_unset(ctx: typer.Context, name: Annotated[str, typer.Argument(metavar="KEY")]) -> None:
    """Remove an environment variable."""
    from opencode_cloud.config.edit import env_unset as unset_env

    app_ctx: AppContext = ctx.obj
    save_change(app_ctx, lambda data: unset_env(data, name))
    app_ctx.out.result({"unset": name}, lambda: [f"{name} removed."])
    _restart_note(app_ctx)


@env_app.command("list")
def env_list(ctx: typer.Context) -> None:
    """List the environment variables passed to opencode."""
    from opencode_cloud.config.edit import env_list as list_env

    app_ctx: AppContext = ctx.obj
    values = list_env(app_ctx.config)
    app_ctx.out.result(
        values,
        lambda: [f"{k}={v}" for k, v in values.items()] or ["(no variables set)"],
    )
