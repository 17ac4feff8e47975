"""`occ provider add|list|remove`: provider keys, kept in opencode's own auth store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from opencode_cloud.cli import completion_values as complete
from opencode_cloud.cli.group import OrderedGroup
from opencode_cloud.cli.options import person_option

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.providers.keys import ProviderEntry
    from opencode_cloud.service.service import Service


@click.group("provider", cls=OrderedGroup, no_args_is_help=True)
def provider_group() -> None:
    """Model providers' API keys (Anthropic, OpenAI, your own OpenAI-compatible server).

    Keys are kept in opencode's own key store, never in the container's environment.
    """


def _service(app_ctx: AppContext, person: str | None) -> Service:
    """The running service whose keys change: a person's is started first, like `occ shell`."""
    if person is None and app_ctx.in_team_mode():
        raise click.UsageError("team mode: name whose keys these are with --user NAME")
    target = app_ctx.for_person(person)
    if person is not None:
        with target.spinner(f"Starting {person}'s opencode ..."):
            app_ctx.team().start_person(person)
    return target.service()


def read_key(key_file: Path | None, key_stdin: bool) -> str:
    """The key from a file, standard input, or typed on the terminal without echo.

    Raises:
        KeyNotGiven: none of them, or an unreadable file.
    """
    from opencode_cloud.providers.errors import KeyNotGiven

    if key_file is not None:
        try:
            return key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not a UTF-8 text file"
            raise KeyNotGiven(str(key_file), reason) from None
    if key_stdin:
        return sys.stdin.read()
    if sys.stdin.isatty():
        return str(click.prompt("API key", hide_input=True, err=True))
    raise KeyNotGiven()


def _line(entry: ProviderEntry) -> str:
    how = {"api": "key stored", "oauth": "signed in", None: "no key"}.get(entry.auth, entry.auth)
    where = f"  {entry.base_url} ({', '.join(entry.models)})" if entry.base_url else ""
    return f"{entry.id:<16} {how}{where}"


@provider_group.command("add")
@click.argument("name", metavar="NAME", shell_complete=complete.provider_names)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the key from this file.",
)
@click.option("--key-stdin", is_flag=True, help="Read the key from standard input.")
@click.option("--base-url", help="A custom OpenAI-compatible provider: its API's base URL.")
@click.option(
    "--model", "models", multiple=True, help="A model of the custom provider (repeatable)."
)
@person_option
@click.pass_obj
def add(
    app_ctx: AppContext,
    name: str,
    key_file: Path | None,
    key_stdin: bool,
    base_url: str | None,
    models: tuple[str, ...],
    person: str | None,
) -> None:
    """Store a provider's API key: `occ provider add anthropic --key-file ~/anthropic.key`.

    Without --key-file or --key-stdin the key is asked for (not shown as you type). A
    custom OpenAI-compatible server: `occ provider add mine --base-url
    https://llm.example.com/v1 --model llama-3 --key-file key.txt`.
    """
    from opencode_cloud.providers.keys import add_provider, check_key, check_provider

    if key_file is not None and key_stdin:
        raise click.UsageError("use either --key-file or --key-stdin, not both")
    check_provider(name, base_url=base_url, models=models)
    key = check_key(read_key(key_file, key_stdin))
    service = _service(app_ctx, person)
    with app_ctx.changing("provider add"):
        entry = add_provider(service, name, key, base_url=base_url, models=models)
    app_ctx.out.result(
        {"added": entry.to_json()},
        lambda: [f"Key for {entry.id} stored in opencode's key store; used from the next prompt."],
    )


@provider_group.command("list")
@person_option
@click.pass_obj
def list_(app_ctx: AppContext, person: str | None) -> None:
    """Show which providers have a key stored (never the key)."""
    from opencode_cloud.providers.keys import list_providers

    entries = list_providers(_service(app_ctx, person))
    app_ctx.out.result(
        [entry.to_json() for entry in entries],
        lambda: [_line(entry) for entry in entries] or ["(no provider keys stored)"],
    )


@provider_group.command("remove")
@click.argument("name", metavar="NAME")
@person_option
@click.pass_obj
def remove(app_ctx: AppContext, name: str, person: str | None) -> None:
    """Delete a provider's stored key."""
    from opencode_cloud.providers.keys import remove_provider

    service = _service(app_ctx, person)
    with app_ctx.changing("provider remove"):
        entry = remove_provider(service, name)
    lines = [f"Key for {entry.id} removed." if entry.auth else f"{entry.id} removed."]
    if entry.base_url is not None:
        # opencode reads its global configuration once, when it starts.
        lines.append(
            f"{entry.id} is out of opencode's configuration; opencode lists it until it "
            f"restarts (`{app_ctx.occ} restart`)."
        )
    app_ctx.out.result(
        {"removed": entry.id, "restart_needed": entry.base_url is not None}, lambda: lines
    )
