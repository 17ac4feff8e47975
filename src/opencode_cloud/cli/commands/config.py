"""`occ config ...` and `occ config env ...`: view and edit the configuration file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from opencode_cloud.cli import completion_values as complete
from opencode_cloud.cli.group import OrderedGroup

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.config.schema import Config


@click.group("config", cls=OrderedGroup, no_args_is_help=True)
def config_group() -> None:
    """View and edit the configuration (port, bind address, environment, ...)."""


def confirm_exposure(ctx: AppContext, address: str, yes: bool, tls_mode: str = "off") -> None:
    """Publishing beyond this machine needs an explicit yes (flag or prompt) and a password.

    Raises:
        NotConfirmed: not confirmed; nothing is changed.
    """
    from opencode_cloud.access import credentials
    from opencode_cloud.errors import NotConfirmed

    if tls_mode == "off":
        ctx.out.warn(
            f"Binding to {address} makes the login page reachable from other machines over "
            "plain HTTP (tls is off): the password and session cookies travel in clear. "
            f"Turn HTTPS on with `{ctx.occ} config set tls auto`."
        )
    else:
        ctx.out.warn(
            f"Binding to {address} makes the login page reachable from other machines, "
            f"over HTTPS ({tls_mode} certificate; see `{ctx.occ} auth show` for the CA to "
            "trust). "
            "Keep the password secret."
        )
    if not ctx.confirmed("Expose opencode?", yes):
        raise NotConfirmed(f"Refusing to bind to {address} without confirmation.")
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
            confirm_exposure(ctx, config.bind_address, yes, config.tls_mode)
        return config

    with ctx.changing("config"):
        loaded = update_config(ctx.paths.config_file, guarded)
    for warning in loaded.warnings:
        ctx.out.warn(warning)
    ctx.set_config(loaded.config)
    return loaded.config


def _restart_note(ctx: AppContext) -> None:
    ctx.out.progress(
        f"Applies on the next start: run `{ctx.occ} restart` if the service is running."
    )


@config_group.command()
@click.pass_obj
def show(app_ctx: AppContext) -> None:
    """Print every setting with its current value (defaults included)."""
    from opencode_cloud.config.edit import config_values, is_set

    config = app_ctx.config
    values = config_values(config)

    def human() -> list[str]:
        width = max(len(k) for k in values)
        return [
            f"{key:<{width}}  {json.dumps(value)}" + ("" if is_set(config, key) else "  (default)")
            for key, value in values.items()
        ]

    app_ctx.out.result(values, human)


@config_group.command()
@click.argument("key", help="Setting name.", shell_complete=complete.config_keys)
@click.pass_obj
def get(app_ctx: AppContext, key: str) -> None:
    """Print one setting: `occ config get port`."""
    from opencode_cloud.config.edit import get_value

    value = get_value(app_ctx.config, key)
    app_ctx.out.result(
        {key: value},
        lambda: [value if isinstance(value, str) else json.dumps(value)],
    )


@config_group.command("set")
@click.argument("key", help="Setting name, e.g. port.", shell_complete=complete.config_keys)
@click.argument("value", help="New value, e.g. 8080.")
@click.option("--yes", "-y", is_flag=True, help="Confirm exposing the service beyond localhost.")
@click.pass_obj
def set_(app_ctx: AppContext, key: str, value: str, yes: bool) -> None:
    """Change one setting: `occ config set port 8080`. Lists take JSON or a,b,c.

    Only the text of the setting changes: the file's comments and layout are kept. When
    that cannot be done (a comment inside a list that changes), the file is written
    anew, the old one is kept as config.json.bak, and a warning says so.
    """
    from opencode_cloud.config.edit import get_value, set_value

    config = save_change(app_ctx, lambda data: set_value(data, key, value), yes=yes)
    new = get_value(config, key)
    app_ctx.out.result({key: new}, lambda: [f"{key} = {json.dumps(new)}"])
    _restart_note(app_ctx)


@config_group.command()
@click.argument("key", help="Setting name.", shell_complete=complete.config_keys_set)
@click.pass_obj
def unset(app_ctx: AppContext, key: str) -> None:
    """Put one setting back to its default."""
    from opencode_cloud.config.edit import get_value, unset_value

    config = save_change(app_ctx, lambda data: unset_value(data, key))
    try:
        new = get_value(config, key)
    except Exception:  # an unknown key was removed from the file: nothing to show
        new = None
    app_ctx.out.result({key: new}, lambda: [f"{key} = {json.dumps(new)} (default)"])
    _restart_note(app_ctx)


@config_group.command()
@click.option(
    "--from",
    "draft_from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from this file (the edits kept from a refused edit) instead.",
)
@click.option("--yes", "-y", is_flag=True, help="Confirm exposing the service beyond localhost.")
@click.pass_obj
def edit(app_ctx: AppContext, draft_from: Path | None, yes: bool) -> None:
    """Edit the configuration file in $VISUAL or $EDITOR (else editor, nano or vi).

    The editor works on a copy; the file is replaced only when the whole edited text is
    valid, and then says what changed and whether a restart applies it. An invalid edit
    changes nothing: on a terminal it offers to edit again, otherwise the error names
    the kept copy (`occ config edit --from COPY` goes on with it).
    """
    from opencode_cloud.config import editor
    from opencode_cloud.config.errors import ConfigError, EditNotSaved
    from opencode_cloud.config.store import read_config_text

    path = app_ctx.paths.config_file
    command = editor.choose_editor()
    original = read_config_text(path)
    start = read_config_text(draft_from) if draft_from else original
    draft = editor.make_draft(start)
    while True:
        try:
            editor.run_editor(command, draft)
        except BaseException:  # the editor failed, or was quit with an error: given up
            editor.discard_draft(draft)
            raise
        text = draft.read_text(encoding="utf-8")
        if text == original:
            editor.discard_draft(draft)
            app_ctx.out.result({"changed": {}, "path": str(path)}, lambda: ["No changes."])
            return
        try:
            saved = _save_edit(app_ctx, path, text, original, draft, yes)
            break
        except EditNotSaved:  # not confirmed: editing again would not change that
            raise
        except ConfigError as error:
            if app_ctx.out.interactive:
                app_ctx.out.warn(error.message)
                if click.confirm("Edit again?", default=True, err=True):
                    continue
            raise EditNotSaved(error.message, draft, path=path) from None
    editor.discard_draft(draft)
    if draft_from is not None and editor.is_draft(draft_from):
        editor.discard_draft(draft_from)  # the refused copy it went on from
    _report_edit(app_ctx, original, saved)


def _save_edit(
    app_ctx: AppContext, path: Path, text: str, original: str | None, draft: Path, yes: bool
) -> Config:
    """Validate and write the edited `text` under the instance lock; an edit that newly
    exposes the service must be confirmed first."""
    from opencode_cloud.config.errors import EditNotSaved
    from opencode_cloud.config.store import parse_config_text, replace_config_text, validate_config
    from opencode_cloud.errors import NotConfirmed

    new = validate_config(parse_config_text(text, draft), draft)
    old = _config_or_none(original)
    if new.exposed and (old is None or new.bind_address != old.bind_address):
        try:
            confirm_exposure(app_ctx, new.bind_address, yes, new.tls_mode)
        except NotConfirmed as refused:
            raise EditNotSaved(refused.message, draft, path=path, needs_yes=True) from None
    with app_ctx.changing("config edit"):
        loaded = replace_config_text(path, text, expected=original, source=draft)
    for warning in loaded.warnings:
        app_ctx.out.warn(warning)
    app_ctx.set_config(loaded.config)
    return loaded.config


def _config_or_none(text: str | None) -> Config | None:
    """The configuration `text` holds (the defaults for None); None when it is invalid."""
    from opencode_cloud.config.store import parse_config_text, validate_config
    from opencode_cloud.errors import OpencodeCloudError

    try:
        return validate_config(parse_config_text(text or ""))
    except OpencodeCloudError:
        return None


def _report_edit(app_ctx: AppContext, original: str | None, config: Config) -> None:
    """What the edit changed, and what applies it."""
    from opencode_cloud.config.edit import config_values
    from opencode_cloud.config.schema import Config as Defaults
    from opencode_cloud.team.changes import between

    old = _config_or_none(original)
    before = config_values(old or Defaults())
    after = config_values(config)
    changed = [key for key in after if before.get(key) != after[key]]
    how = between(old, config) if old is not None else None
    data = {
        "changed": {key: {"from": before.get(key), "to": after[key]} for key in changed},
        "path": str(app_ctx.paths.config_file),
        "needs_restart": how.needs_restart if how else True,
        "applies_with": how.needs if how else "restart",
    }

    def human() -> list[str]:
        lines = [f"Saved {app_ctx.paths.config_file}."]
        lines += [
            f"  {key}: {json.dumps(before.get(key))} -> {json.dumps(after[key])}" for key in changed
        ]
        if how is None:
            lines.append(f"The file was invalid before: run `{app_ctx.occ} restart` to apply it.")
        elif how.needs == "restart":
            lines.append(f"Restart to apply ({', '.join(how.touches)}): `{app_ctx.occ} restart`.")
        elif how.needs == "update":
            lines.append(f"The service runs another image: apply it with `{app_ctx.occ} update`.")
        else:
            lines.append("No restart needed.")
        return lines

    app_ctx.out.result(data, human)


_APPLIES_WORDS = {
    "restart": "yes: the container is made again at the next `{occ} restart`",
    "update": "yes: the service runs another image, through `{occ} update`",
    "nothing": "no: read when it is used",
}


@config_group.command()
@click.argument("key", help="Setting name.", shell_complete=complete.config_keys)
@click.pass_obj
def describe(app_ctx: AppContext, key: str) -> None:
    """What one setting does: type, default, rule, example, and whether a change needs a
    restart. `occ config describe port`."""
    from opencode_cloud.config.edit import key_info
    from opencode_cloud.config.schema import EXAMPLES, RETIRED_KEYS
    from opencode_cloud.team.changes import applies

    info = key_info(key)
    how = applies(key)
    data = {
        "key": key,
        "type": info.kind,
        "default": info.default,
        "description": info.description,
        "rule": info.rule,
        "example": None
        if key in RETIRED_KEYS
        else f"{app_ctx.occ} config set {key} {EXAMPLES[key]}",
        "retired": RETIRED_KEYS.get(key),
        "needs_restart": how.needs_restart,
        "applies_with": how.needs,
        "changes": list(how.touches),
    }

    def human() -> list[str]:
        restart = _APPLIES_WORDS[how.needs].format(occ=app_ctx.occ)
        if how.touches:
            restart += f" ({', '.join(how.touches)})"
        lines = [
            f"{key}: {info.description}",
            f"  Type:     {info.kind}",
            f"  Default:  {json.dumps(info.default)}",
            f"  Rule:     {key} {info.rule}",
            *([f"  Example:  {data['example']}"] if data["example"] else []),
            f"  Restart:  {restart}",
        ]
        if key in RETIRED_KEYS:
            lines.append(f"  Retired:  {RETIRED_KEYS[key]}")
        return lines

    app_ctx.out.result(data, human)


@config_group.command()
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def reset(app_ctx: AppContext, yes: bool) -> None:
    """Put every setting back to its default (the old file is kept as config.json.bak)."""
    from opencode_cloud.config.store import reset_config_file
    from opencode_cloud.errors import NotConfirmed

    if not app_ctx.confirmed("Reset every setting?", yes):
        raise NotConfirmed("Not reset: confirmation needed.", "config reset")
    with app_ctx.changing("config reset"):
        backup = reset_config_file(app_ctx.paths.config_file)
    app_ctx.out.result(
        {"reset": True, "backup": str(backup) if backup else None},
        lambda: (
            ["Every setting is back to its default."]
            + ([f"The old file is kept as {backup}."] if backup else [])
        ),
    )


@config_group.command()
@click.pass_obj
def path(app_ctx: AppContext) -> None:
    """Print the configuration file's path."""
    file = app_ctx.paths.config_file
    app_ctx.out.result({"path": str(file), "exists": file.exists()}, lambda: [str(file)])


@config_group.command()
@click.pass_obj
def validate(app_ctx: AppContext) -> None:
    """Check the configuration file; exit 0 when it is valid."""
    _ = app_ctx.config  # loading validates; errors leave through the CLI's error boundary
    file = app_ctx.paths.config_file
    app_ctx.out.result({"valid": True, "path": str(file)}, lambda: [f"{file} is valid."])


@config_group.group("env", no_args_is_help=True)
def env_group() -> None:
    """Environment variables passed to opencode (applied on the next start)."""


@env_group.command("set")
@click.argument("assignment", metavar="KEY=VALUE", help="e.g. TZ=Europe/Paris")
@click.pass_obj
def env_set(app_ctx: AppContext, assignment: str) -> None:
    """Set an environment variable for opencode."""
    from opencode_cloud.config.edit import env_set as set_env

    save_change(app_ctx, lambda data: set_env(data, assignment))
    name = assignment.split("=", 1)[0]
    app_ctx.out.result({"set": name}, lambda: [f"{name} set."])
    _restart_note(app_ctx)


@env_group.command("unset")
@click.argument(
    "name", metavar="KEY", help="Variable name, e.g. TZ.", shell_complete=complete.env_names
)
@click.pass_obj
def env_unset(app_ctx: AppContext, name: str) -> None:
    """Remove an environment variable."""
    from opencode_cloud.config.edit import env_unset as unset_env

    save_change(app_ctx, lambda data: unset_env(data, name))
    app_ctx.out.result({"unset": name}, lambda: [f"{name} removed."])
    _restart_note(app_ctx)


@env_group.command("list")
@click.pass_obj
def env_list(app_ctx: AppContext) -> None:
    """List the environment variables passed to opencode."""
    from opencode_cloud.config.edit import env_list as list_env

    values = list_env(app_ctx.config)
    app_ctx.out.result(
        values,
        lambda: [f"{k}={v}" for k, v in values.items()] or ["(no variables set)"],
    )
