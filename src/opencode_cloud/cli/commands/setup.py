"""`occ setup`: a short interactive set-up, from nothing to a running service.

It checks the engine (and offers to install one where the quick start would), asks where
the service should be reachable, on which port, and which folder holds the user's code,
then saves what changed and starts the service. Every question has a flag, and `--yes`
asks nothing, for scripts. Run again, the current settings are the defaults and only the
answers that differ are written. Bad input is refused before anything changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from opencode_cloud.errors import NotConfirmed, OpencodeCloudError

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.config.edit import ConfigSource
    from opencode_cloud.config.schema import Config
    from opencode_cloud.mounts import HostMount
    from opencode_cloud.service.service import Service

LOCAL, NETWORK = "local", "network"
NETWORK_BIND = "0.0.0.0"
LOCAL_BIND = "127.0.0.1"
TLS_CHOICES = ("auto", "self-signed", "off")  # the `tls` key's modes (config.schema.TLS_MODES)


@dataclass
class Answers:
    """What the user chose: the settings to write (as `occ config set` takes them) and the
    host folders to add."""

    settings: dict[str, str] = field(default_factory=dict)
    mounts: list[HostMount] = field(default_factory=list)


def _needs_a_terminal() -> NotConfirmed:
    return NotConfirmed(
        "`occ setup` asks its questions only on a terminal (and not with --json): give "
        "the answers as flags (`occ setup --help` lists them).",
        command="setup",
    )


# --------------------------------------------------------------------------- the engine


def _engine_answers(app_ctx: AppContext) -> bool:
    try:
        app_ctx.service()
    except OpencodeCloudError:
        return False
    return True


def _ensure_engine(app_ctx: AppContext, ask: bool) -> None:
    """The engine answers, or is installed and started (asked first on a terminal) where
    the quick start would; elsewhere, the error says how to get one.

    Raises:
        EngineUnavailable: no engine, and none this command can make (or the user said no).
        EngineInstallFailed: installing or starting it failed.
    """
    try:
        app_ctx.service()
        app_ctx.out.progress("The Docker engine answers.")
        return
    except OpencodeCloudError as error:
        from opencode_cloud.doctor.engine_install import Machine, plan_for

        if app_ctx.remote_address is not None:
            raise  # another machine's engine: not this machine's to install
        plan = plan_for(error, Machine.here())
        if plan is None:
            raise
        if not plan.can_act:
            error.hint = plan.manual
            raise
        app_ctx.out.progress(f"{error.message} This command can {plan.describe()}.")
        if ask and not click.confirm("Do that now?", default=True, err=True):
            raise
    from opencode_cloud.doctor.engine_install import RealActions, carry_out

    carry_out(plan, RealActions(), lambda: _engine_answers(app_ctx), on_step=app_ctx.out.progress)
    app_ctx.out.progress("The Docker engine answers.")


# --------------------------------------------------------------------------- the answers


def _checked(key: str) -> Any:
    """A prompt's value_proc: the text, when `key` accepts it; asks again when not."""
    from opencode_cloud.config.edit import parse_value

    def check(text: str) -> str:
        try:
            parse_value(key, text)
        except OpencodeCloudError as error:
            raise click.BadParameter(error.message) from None
        return text

    return check


def _mount_of(text: str) -> HostMount:
    from opencode_cloud.mounts import parse_argument

    return parse_argument(text)


def _checked_mount(text: str) -> str:
    from opencode_cloud.mounts import MountError, check_mount

    if text.strip().lower() in ("", "none"):
        return ""
    try:
        check_mount(_mount_of(text))
    except MountError as error:
        raise click.BadParameter(error.message) from None
    return text


def _reachability(config: Config, expose: bool | None, ask: bool, port: int) -> str:
    current = NETWORK if config.exposed else LOCAL
    if expose is not None:
        return NETWORK if expose else LOCAL
    if not ask:
        return current
    click.echo("Where should opencode be reachable?", err=True)
    click.echo(f"  {LOCAL:<8} this machine only (http://127.0.0.1:{port})", err=True)
    click.echo(
        f"  {NETWORK:<8} other machines too, over HTTPS (a certificate from this tool's own CA)",
        err=True,
    )
    return str(
        click.prompt(
            "Reachable from", default=current, type=click.Choice([LOCAL, NETWORK]), err=True
        )
    )


def _default_host_names(config: Config) -> str:
    if config.host_names:
        return ",".join(config.host_names)
    import socket

    return socket.getfqdn() or socket.gethostname()


def gather(
    config: Config,
    *,
    ask: bool,
    port: int | None,
    expose: bool | None,
    tls: str | None,
    host_names: tuple[str, ...],
    mounts: tuple[str, ...],
    ask_folder: bool = True,
) -> Answers:
    """The settings that differ from `config`, from the flags, and (when `ask`) from the
    questions whose flags were not given, their defaults being the current values.

    Raises:
        ConfigValidationError, MountError: a flag's value is refused.
    """
    from opencode_cloud.config.edit import parse_value
    from opencode_cloud.mounts import HostMount, check_mount

    wanted: dict[str, str] = {}
    if port is None and ask:
        port = int(
            click.prompt("Port", default=config.port, type=click.IntRange(1, 65535), err=True)
        )
    if port is not None:
        wanted["port"] = str(port)
    where = _reachability(config, expose, ask, port or config.port)
    if where == NETWORK and not config.exposed:
        wanted["bind_address"] = NETWORK_BIND
    elif where == LOCAL and config.exposed:
        wanted["bind_address"] = LOCAL_BIND
    if tls is not None:
        wanted["tls"] = tls
    elif where == NETWORK and config.tls == "off":
        wanted["tls"] = "auto"  # the network answer is "over HTTPS"
    if host_names:
        wanted["host_names"] = ",".join(host_names)
    elif ask and where == NETWORK:
        wanted["host_names"] = click.prompt(
            "Names or addresses other machines use for this one (comma-separated)",
            default=_default_host_names(config),
            value_proc=_checked("host_names"),
            err=True,
        )
    for key, raw in wanted.items():
        parse_value(key, raw)  # a refused flag: one error, before anything changes
    current = {key: json.dumps(getattr(config, key)) for key in wanted}
    settings = {
        key: raw for key, raw in wanted.items() if json.dumps(parse_value(key, raw)) != current[key]
    }
    existing = [HostMount.parse(text) for text in config.mounts]
    chosen = list(mounts)
    if not chosen and ask and ask_folder:
        default = existing[0].host if existing else ""
        answer = click.prompt(
            "Folder with your code, mounted into the container (Enter for none)"
            if not default
            else "Folder with your code, mounted into the container",
            default=default,
            show_default=bool(default),
            value_proc=_checked_mount,
            err=True,
        )
        chosen = [answer] if answer else []
    new_mounts = []
    for text in chosen:
        mount = _mount_of(text)
        if any(m.host == mount.host and m.container == mount.container for m in existing):
            continue  # already mounted there: nothing changes
        check_mount(mount)
        new_mounts.append(mount)
    return Answers(settings, new_mounts)


def _apply(app_ctx: AppContext, answers: Answers, yes: bool) -> Config:
    """Write what changed, as `occ config set` and `occ mount add` do: under the lock,
    validated, the file's comments kept; nothing is written on any error."""
    from opencode_cloud.cli.commands.config import save_change
    from opencode_cloud.config.edit import set_value
    from opencode_cloud.mounts import HostMount, check_new_mount

    def change(data: Any) -> Config:
        from opencode_cloud.config.schema import Config
        from opencode_cloud.config.store import validate_config

        config: ConfigSource = data
        for key, raw in answers.settings.items():
            config = set_value(config, key, raw)
        if answers.mounts:
            stored = list(data.get("mounts", []))
            for mount in answers.mounts:
                check_new_mount(mount, [HostMount.parse(text) for text in stored])
                stored.append(str(mount))
            config = set_value(config, "mounts", json.dumps(stored))
        return config if isinstance(config, Config) else validate_config(dict(config))

    return save_change(app_ctx, change, yes=yes)


def _changes(answers: Answers) -> list[str]:
    lines = [f"  {key} = {raw}" for key, raw in answers.settings.items()]
    lines += [f"  mount {m.host} -> {m.container}" for m in answers.mounts]
    return lines


# --------------------------------------------------------------------------- the command


@click.command()
@click.option(
    "--yes",
    "-y",
    is_flag=True,
    help=(
        "Ask nothing: what no flag gives keeps its current value; install and start the "
        "engine where needed; confirm exposing the service."
    ),
)
@click.option("--port", "-p", type=click.IntRange(1, 65535), help="Host port to serve on.")
@click.option(
    "--expose/--no-expose",
    default=None,
    help="Reachable from other machines over HTTPS, or from this machine only.",
)
@click.option("--tls", type=click.Choice(TLS_CHOICES), help="HTTPS mode (default: auto).")
@click.option(
    "--host-name",
    "host_names",
    multiple=True,
    metavar="NAME",
    help="A name or address other machines use for this one (repeatable).",
)
@click.option(
    "--mount",
    "mounts",
    multiple=True,
    metavar="HOST_PATH[:CONTAINER_PATH][:ro]",
    help="A folder with your code, mounted into the container (repeatable).",
)
@click.option(
    "--provider",
    metavar="NAME",
    help="The AI provider whose API key to store (anthropic, openai, ...; `occ provider`).",
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The file holding that provider's key (it never goes on the command line).",
)
@click.option("--no-start", is_flag=True, help="Save the answers without starting the service.")
@click.pass_obj
def setup(
    app_ctx: AppContext,
    yes: bool,
    port: int | None,
    expose: bool | None,
    tls: str | None,
    host_names: tuple[str, ...],
    mounts: tuple[str, ...],
    provider: str | None,
    api_key_file: Path | None,
    no_start: bool,
) -> None:
    """Set up opencode step by step: engine, where it is reachable, your code, start.

    On a terminal it asks, showing the current settings as defaults; flags answer
    questions ahead, and with --yes nothing is asked (for scripts). Only the answers that
    differ from the current settings are written. It ends with the service running and
    the URL, user name and password to sign in with.

    Examples: occ setup | occ setup --yes --port 8080 --mount ~/code | occ setup --yes
    --expose --host-name box.lan
    """
    ask = not yes
    if ask and not app_ctx.out.interactive:
        raise _needs_a_terminal()
    if app_ctx.remote_address is not None and mounts:
        from opencode_cloud.mounts import remote_mounts_refused

        raise remote_mounts_refused(app_ctx.remote_address)
    for text in mounts:
        _mount_of(text)  # a malformed flag is refused before anything is asked or changed
    key = _provider_flags(provider, api_key_file, ask=ask, no_start=no_start)
    if ask:
        named = "" if app_ctx.instance.name == "default" else f" (instance {app_ctx.instance.name})"
        app_ctx.out.progress(
            f"Setting up opencode{named}. Enter keeps the answer shown in brackets."
        )
    if not no_start:
        _ensure_engine(app_ctx, ask)
    answers = gather(
        app_ctx.config,
        ask=ask,
        ask_folder=app_ctx.remote_address is None,
        port=port,
        expose=expose,
        tls=tls,
        host_names=host_names,
        mounts=mounts,
    )
    out = app_ctx.out
    if answers.settings or answers.mounts:
        _apply(app_ctx, answers, yes)
        out.progress("Saved:")
        for line in _changes(answers):
            out.progress(line)
    else:
        out.progress("The settings stay as they are.")
    if no_start:
        out.result(
            {"changed": _changes_json(answers), "started": False},
            lambda: [f"Start it with `{app_ctx.occ} start`."],
        )
        return
    _start(app_ctx, ask=ask, provider=provider, key=key)


def _changes_json(answers: Answers) -> dict[str, Any]:
    return {
        "settings": answers.settings,
        "mounts": [str(m) for m in answers.mounts],
    }


def _start(app_ctx: AppContext, *, ask: bool, provider: str | None, key: str | None) -> None:
    """Start (or re-create, when a setting changed) as `occ start` does, store the
    provider's key, and say how to sign in."""
    from opencode_cloud.cli.commands.lifecycle import render_start, start_team

    if app_ctx.in_team_mode():
        start_team(app_ctx, None, None, True, build=False)
        if provider or ask:
            app_ctx.out.progress(
                "In team mode each person's provider keys go to their own opencode: "
                f"`{app_ctx.occ} provider add NAME --user PERSON`."
            )
        return
    with app_ctx.changing("setup"), app_ctx.spinner("Starting opencode ..."):
        service = app_ctx.service()
        result = service.start(reporter=app_ctx.reporter(), on_step=app_ctx.out.progress)
    _provider_step(app_ctx, service, ask=ask, provider=provider, key=key)
    render_start(app_ctx, result, show_password=ask)
    app_ctx.out.line(f"Open {result.url} and sign in with this user name and password.")
    if result.url.startswith("https://"):
        app_ctx.out.line(
            "Browsers warn about the certificate until you trust this instance's CA: "
            f"`{app_ctx.occ} auth show` names its file."
        )


# --------------------------------------------------------------------------- the provider


def _provider_flags(
    provider: str | None, key_file: Path | None, *, ask: bool, no_start: bool
) -> str | None:
    """The key of `--provider`, read from `--api-key-file` (None: to be asked for at the
    provider step); both refused before anything changes.

    Raises:
        UnknownProvider, BadProviderInput, KeyNotGiven; click.UsageError.
    """
    if provider is None:
        if key_file is not None:
            raise click.UsageError("--api-key-file needs --provider NAME")
        return None
    if no_start:
        raise click.UsageError("--provider stores the key in the running service: drop --no-start")
    from opencode_cloud.providers.keys import check_key, check_provider

    check_provider(provider)
    if key_file is None:
        if not ask:
            raise click.UsageError("--provider needs --api-key-file FILE with --yes")
        return None
    from opencode_cloud.cli.commands.provider import read_key

    return check_key(read_key(key_file, False))


def _checked_provider(known: tuple[str, ...]) -> Any:
    def check(text: str) -> str:
        from opencode_cloud.providers.keys import check_provider

        name = text.strip().lower()
        if name in ("", "none"):
            return ""
        try:
            check_provider(name)
        except OpencodeCloudError as error:
            raise click.BadParameter(f"{error.message} Known: {', '.join(known)}.") from None
        return name

    return check


def _checked_key(text: str) -> str:
    from opencode_cloud.providers.keys import check_key

    try:
        return check_key(text)
    except OpencodeCloudError as error:
        raise click.BadParameter(error.message) from None


def _provider_step(
    app_ctx: AppContext, service: Service, *, ask: bool, provider: str | None, key: str | None
) -> None:
    """Store the provider's key in opencode's key store: the one the flags gave, or (on a
    terminal) the one asked for, the key typed without echo. A provider whose key is
    stored already is the default answer, and keeping it changes nothing."""
    from opencode_cloud.providers.keys import add_provider, known_providers, list_providers

    if provider is None:
        if not ask:
            return
        known = known_providers()
        stored = [entry.id for entry in list_providers(service) if entry.auth]
        if stored:
            click.echo(f"Provider keys stored: {', '.join(stored)}.", err=True)
        else:
            click.echo(
                "opencode answers with an AI provider's model: it needs its API key.", err=True
            )
        click.echo(f"Known providers: {', '.join(known)}.", err=True)
        default = stored[0] if stored else ""
        provider = click.prompt(
            "AI provider" if default else "AI provider (Enter to skip)",
            default=default,
            show_default=bool(default),
            value_proc=_checked_provider(known),
            err=True,
        )
        if not provider or provider in stored:
            return
    if key is None:
        key = click.prompt(
            f"API key for {provider} (not shown)",
            hide_input=True,
            err=True,
            value_proc=_checked_key,
        )
    with app_ctx.changing("provider add"):
        entry = add_provider(service, provider, key)
    app_ctx.out.progress(f"Key for {entry.id} stored in opencode's key store.")


def register(group: click.Group) -> None:
    group.add_command(setup)
