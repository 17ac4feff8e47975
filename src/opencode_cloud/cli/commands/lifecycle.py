"""`occ start`, `occ stop`, `occ restart`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.service.service import StartResult

F = TypeVar("F", bound=Callable[..., Any])

WAIT_TIMEOUT_HELP = "Seconds to wait for opencode to answer healthy (default: start_timeout)."
STOP_TIMEOUT_HELP = "Seconds opencode gets to shut down before the kill (default: stop_timeout)."


def old_timeout_option(new: str) -> Callable[[F], F]:
    """`--timeout`, the old name of `new` (`--wait-timeout` or `--stop-timeout`): still
    accepted, with a warning, and hidden from the help."""
    return click.option(
        "--timeout", "old_timeout", type=float, hidden=True, help=f"Old name of {new}."
    )


def timeout_from(
    app_ctx: AppContext, value: float | None, old: float | None, name: str
) -> float | None:
    """The timeout given as `name` or by its old name `--timeout`; a positive number."""
    if old is not None:
        if value is not None:
            raise click.UsageError(f"{name} and --timeout are the same option: give it once")
        app_ctx.out.warn(f"--timeout is the old name of {name}: use {name}.")
        value = old
    if value is not None and value <= 0:
        raise click.BadParameter("must be greater than 0", param_hint=name)
    return value


def _apply_start_options(ctx: AppContext, port: int | None, bind: str | None, yes: bool) -> None:
    """`--port` / `--bind` are saved to the configuration, so later starts keep them."""
    if port is None and bind is None:
        return
    from opencode_cloud.cli.commands.config import save_change
    from opencode_cloud.config.edit import set_value

    def change(data: Any) -> Any:
        if bind is not None:
            data = set_value(data, "bind_address", bind)
        if port is not None:
            data = set_value(data, "port", str(port))
        return data

    save_change(ctx, change, yes=yes)


def _take_env_keys(ctx: AppContext) -> tuple[dict[str, tuple[str, str]], bytes | None]:
    """Provider keys set with `occ config env`, taken out of the configuration before the
    start makes the container (so none is in its environment): each variable's provider
    id and key, and the file as it was, to put back when the move fails."""
    from opencode_cloud.cli.commands.config import save_change
    from opencode_cloud.config.store import validate_config
    from opencode_cloud.errors import OpencodeCloudError
    from opencode_cloud.providers.migrate import env_keys, without_env_keys

    try:
        env = ctx.config.env
    except OpencodeCloudError:
        return {}, None  # the start reports the broken file
    found = {name: (pid, env[name]) for name, pid in env_keys(env).items()}
    if not found:
        return {}, None
    original = ctx.paths.config_file.read_bytes()
    save_change(ctx, lambda data: validate_config(without_env_keys(data)))
    return found, original


def _start_moving_env_keys(
    ctx: AppContext, start: Callable[[], StartResult], *, move: bool = True
) -> StartResult:
    """`start`, and the provider keys of the configuration's `env` moved into opencode's
    key store once it runs (unless not `move`: a start that does not wait for opencode);
    on any failure the configuration file is put back as it was."""
    found, original = _take_env_keys(ctx) if move else ({}, None)
    if not found:
        return start()
    from opencode_cloud.config.store import write_atomically
    from opencode_cloud.providers.migrate import store_env_keys

    try:
        result = start()
        moved = store_env_keys(ctx.service(), found)
    except BaseException:
        if original is not None:
            write_atomically(ctx.paths.config_file, original)
        raise
    ctx.out.warn(
        f"Moved {', '.join(moved)} out of the configuration's env into opencode's key store "
        f"(`{ctx.occ} provider list`): keys no longer sit in the container's environment."
    )
    return result


def warn_of_team_env_keys(ctx: AppContext) -> None:
    """In team mode a provider key of the configuration's `env` reaches no one: whose key
    it is, and so whose agent may read it, is the admin's choice. Say so, with the way to
    give it, at each team start while it is there."""
    from opencode_cloud.errors import OpencodeCloudError
    from opencode_cloud.providers.migrate import env_keys

    try:
        found = env_keys(ctx.config.env)
    except OpencodeCloudError:
        return  # the start reports the broken file
    for name, provider_id in sorted(found.items()):
        ctx.out.warn(
            f"{name} in the configuration's env is given to no one in team mode: give a "
            f"person a key with `{ctx.occ} provider add {provider_id} --user NAME`, then "
            f"`{ctx.occ} config env unset {name}`."
        )


def render_start(ctx: AppContext, result: StartResult, show_password: bool) -> None:
    from opencode_cloud.access import credentials

    password = result.password
    if show_password and password is None:
        password, _ = credentials.load_or_create_password(ctx.paths)
    data = result.to_json()
    if password is not None:
        data["password"] = password

    def human() -> list[str]:
        waited = result.seconds_to_healthy is not None
        head = (
            "opencode is already running"
            if result.already_running and not waited
            else "opencode is running"
        )
        where = f" on {result.host}" if result.host else ""
        lines = [f"{head}{where} at {result.url}", f"  User:     {result.username}"]
        if password is not None:
            lines.append(f"  Password: {password}")
        if result.password_created:
            lines.append(
                f"  (saved in {ctx.paths.password_file}; show it again with `{ctx.occ} auth show`)"
            )
        elif password is None:
            lines.append(f"  Password: run `{ctx.occ} auth show` to see it")
        if result.needs_tunnel:
            lines.append(
                f"  It listens on that host's loopback only: `{ctx.occ} tunnel` reaches it "
                "from here."
            )
        lines.extend(certificate_lines(result, ctx.occ))
        if result.seconds_to_healthy is not None:
            lines.append(f"  Ready in {result.seconds_to_healthy:.1f} s.")
        return lines

    ctx.out.result(data, human)


# Why the instance's CA was made anew (`tls.NewCa.reason`), in words.
NEW_CA_REASONS = {
    "names": "the certificate now serves {names}, which the old CA was not allowed to sign for",
    "expiring": "the old one was close to its end",
    "unconstrained": "the old one, made by an earlier release, could sign for any name",
    "unreadable": "the old one could not be read, or its key was gone",
}


def certificate_lines(result: StartResult, occ: str) -> list[str]:
    """What a start did to the certificate and the CA, for people."""
    lines = []
    until = (result.certificate_not_after or "")[:10]
    if result.certificate_renewed == "reloaded":
        lines.append(
            f"  New TLS certificate (valid until {until}), taken by the running service "
            "without a restart."
        )
    elif result.certificate_renewed == "written":
        lines.append(f"  New TLS certificate (valid until {until}).")
    return lines + new_ca_lines(result.new_ca, occ)


def new_ca_lines(new_ca: dict[str, Any] | None, occ: str) -> list[str]:
    """What to do about a CA made anew (`tls.NewCa.to_json()`), for people."""
    if not new_ca:
        return []
    why = NEW_CA_REASONS.get(new_ca["reason"], new_ca["reason"]).format(
        names=", ".join(new_ca["names"])
    )
    return [
        f"  A new CA was made for this instance, because {why}.",
        f"  Browsers and clients that trusted the old one must now trust {new_ca['ca_file']} "
        f"(valid until {new_ca['not_after'][:10]}; `{occ} auth show` names it).",
    ]


@click.command()
@click.option("--port", "-p", type=int, help="Host port to publish on (saved).")
@click.option("--bind", help="Host address to listen on (saved). Default 127.0.0.1.")
@click.option("--build", is_flag=True, help="Build the image even if present.")
@click.option("--pull", is_flag=True, help="Pull the image from the registries.")
@click.option("--wait-timeout", type=float, help=WAIT_TIMEOUT_HELP)
@old_timeout_option("--wait-timeout")
@click.option("--no-wait", is_flag=True, help="Do not wait for readiness.")
@click.option(
    "--open",
    "open_browser",
    is_flag=True,
    help="Open the URL in a browser (through a tunnel, for a remote host's loopback).",
)
@click.option("--show-password", is_flag=True, help="Print the password even if not new.")
@click.option("--yes", "-y", is_flag=True, help="Confirm exposing the service beyond localhost.")
@click.pass_obj
def start(
    app_ctx: AppContext,
    port: int | None,
    bind: str | None,
    build: bool,
    pull: bool,
    wait_timeout: float | None,
    old_timeout: float | None,
    no_wait: bool,
    open_browser: bool,
    show_password: bool,
    yes: bool,
) -> None:
    """Start opencode: build or pull the image, create volumes and container, wait until ready.

    On a running service it says so and exits 0. When a setting that shapes the container
    changed (port, bind address, environment, image), the container is re-created; the
    volumes, and so your data, are kept.

    Examples: occ start | occ start --port 8080 | occ start --bind 0.0.0.0 --yes
    """
    if build and pull:
        raise click.BadParameter("use either --build or --pull, not both")
    timeout = timeout_from(app_ctx, wait_timeout, old_timeout, "--wait-timeout")
    if app_ctx.in_team_mode():
        start_team(app_ctx, port, bind, yes, build=build)
        return
    with app_ctx.changing("start"):
        _apply_start_options(app_ctx, port, bind, yes)
        with app_ctx.spinner("Starting opencode ..."):
            result = _start_moving_env_keys(
                app_ctx,
                lambda: app_ctx.service().start(
                    build=build,
                    pull=pull,
                    wait=not no_wait,
                    timeout=timeout,
                    reporter=app_ctx.reporter(),
                    on_step=app_ctx.out.progress,
                ),
                move=not no_wait,
            )
    render_start(app_ctx, result, show_password)
    if open_browser and result.needs_tunnel:
        from opencode_cloud.cli.commands.host import run_tunnel

        run_tunnel(app_ctx, None, open_browser=True)
    elif open_browser:
        import webbrowser

        webbrowser.open(result.url)


@click.command()
@click.option("--stop-timeout", "-t", type=float, help=STOP_TIMEOUT_HELP)
@old_timeout_option("--stop-timeout")
@click.pass_obj
def stop(app_ctx: AppContext, stop_timeout: float | None, old_timeout: float | None) -> None:
    """Stop opencode. Your data stays in its volumes; `occ start` brings it back."""
    timeout = timeout_from(app_ctx, stop_timeout, old_timeout, "--stop-timeout")
    if app_ctx.in_team_mode():
        with app_ctx.changing("stop"):
            names = app_ctx.team().stop()
        app_ctx.out.result(
            {"stopped": bool(names), "containers": names},
            lambda: [
                f"Stopped the team ({len(names)} containers)." if names else "Already stopped."
            ],
        )
        return
    with app_ctx.changing("stop"):
        stopped = app_ctx.service().stop(timeout)
    message = "Stopped." if stopped else "Already stopped."
    app_ctx.out.result({"stopped": stopped, "was_running": stopped}, lambda: [message])


@click.command()
@click.option("--stop-timeout", type=float, help=STOP_TIMEOUT_HELP)
@click.option("--wait-timeout", type=float, help=WAIT_TIMEOUT_HELP)
@old_timeout_option("--wait-timeout")
@click.pass_obj
def restart(
    app_ctx: AppContext,
    stop_timeout: float | None,
    wait_timeout: float | None,
    old_timeout: float | None,
) -> None:
    """Stop, then start again (applies configuration changes)."""
    stop_after = timeout_from(app_ctx, stop_timeout, None, "--stop-timeout")
    wait_for = timeout_from(app_ctx, wait_timeout, old_timeout, "--wait-timeout")
    # A new image (added packages) is made while the old containers still serve: when it
    # cannot be made, the service goes on as it was.
    if app_ctx.in_team_mode():
        with app_ctx.changing("restart"):
            team = app_ctx.team()
            with app_ctx.spinner("Preparing the image ..."):
                team.service.ensure_image(reporter=app_ctx.reporter())
            team.stop()
        start_team(app_ctx, None, None, False, build=False)
        return
    with app_ctx.changing("restart"):
        from opencode_cloud.service.errors import NeverCreated

        service = app_ctx.service()
        with app_ctx.spinner("Preparing the image ..."):
            service.prepare_image(reporter=app_ctx.reporter(), on_step=app_ctx.out.progress)
        with contextlib.suppress(NeverCreated):  # nothing to stop: then it is just a start
            service.stop(stop_after)
        with app_ctx.spinner("Starting opencode ..."):
            result = _start_moving_env_keys(
                app_ctx,
                lambda: app_ctx.service().start(
                    timeout=wait_for, reporter=app_ctx.reporter(), on_step=app_ctx.out.progress
                ),
            )
    render_start(app_ctx, result, show_password=False)


def start_team(
    app_ctx: AppContext, port: int | None, bind: str | None, yes: bool, *, build: bool
) -> None:
    """`occ start` in team mode: the front door and its starter (the people's instances
    start at their sign-in)."""
    with app_ctx.changing("start"):
        _apply_start_options(app_ctx, port, bind, yes)
        with app_ctx.spinner("Starting the team's front door ..."):
            team = app_ctx.team()
            url = team.start(build=build, reporter=app_ctx.reporter(), on_step=app_ctx.out.progress)
    warn_of_team_env_keys(app_ctx)
    app_ctx.out.result(
        {"team": True, "url": url},
        lambda: [
            f"The team's front door is running at {url}",
            "  Everyone signs in with their own name and password; their opencode starts then.",
            f"  `{app_ctx.occ} user list` shows the people.",
        ],
    )


def register(group: click.Group) -> None:
    group.add_command(start)
    group.add_command(stop)
    group.add_command(restart)
