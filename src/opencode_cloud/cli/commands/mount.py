"""`occ mount add|list|remove`: host folders the container sees (the `mounts` key)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from opencode_cloud.cli import completion_values as complete
from opencode_cloud.cli.commands.config import _restart_note, save_change
from opencode_cloud.cli.group import OrderedGroup

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.config.schema import Config
    from opencode_cloud.mounts import HostMount


@click.group("mount", cls=OrderedGroup, no_args_is_help=True)
def mount_group() -> None:
    """Host folders (your code) mounted into the container (applied on the next start)."""


def _stored(data: Any) -> list[Any]:
    """The `mounts` list of a file's raw data, as it is (validation judges it later)."""
    value = data.get("mounts", [])
    return list(value) if isinstance(value, list) else []


def _parsed(stored: list[Any]) -> list[HostMount]:
    from opencode_cloud.mounts import HostMount, MountError

    mounts = []
    for text in stored:
        try:
            mounts.append(HostMount.parse(text))
        except (MountError, TypeError):
            continue  # not a mount: validating the whole file reports it
    return mounts


def _save(app_ctx: AppContext, command: str, change: Callable[[list[Any]], list[Any]]) -> Config:
    """Write the new `mounts` list through `occ config set`'s path: locked, validated,
    atomic; nothing is written on any error."""
    from opencode_cloud.config.store import validate_config

    def apply(data: Any) -> Config:
        new = dict(data)
        mounts = change(_stored(data))
        if mounts:
            new["mounts"] = mounts
        else:
            new.pop("mounts", None)
        return validate_config(new)

    with app_ctx.changing(command):
        return save_change(app_ctx, apply)


def _describe(mount: HostMount) -> dict[str, Any]:
    return {"host": mount.host, "container": mount.container, "read_only": mount.read_only}


def _mode(mount: HostMount) -> str:
    return "read-only" if mount.read_only else "read-write"


def _warn_if_it_holds_the_configuration(app_ctx: AppContext, mount: HostMount) -> None:
    from opencode_cloud.config.paths import config_dir

    if mount.read_only:
        return
    folder = os.path.realpath(config_dir())
    if folder == mount.host or folder.startswith(mount.host.rstrip("/") + "/"):
        app_ctx.out.warn(
            f"{mount.host} holds opencode-cloud's own settings and password ({folder}): "
            "the agent could change them. Mount a folder below it, or add it read-only (:ro)."
        )


@mount_group.command("add")
@click.argument(
    "spec",
    metavar="HOST_PATH[:CONTAINER_PATH][:ro]",
    help="e.g. ~/code, ~/code:/home/opencode/code or ~/code:ro",
)
@click.option("--read-only", "read_only", is_flag=True, help="The agent can read, not change.")
@click.pass_obj
def add(app_ctx: AppContext, spec: str, read_only: bool) -> None:
    """Mount a host folder into the container: `occ mount add ~/code`.

    Without CONTAINER_PATH the folder appears as /home/opencode/projects/<its name>, where
    the web UI's "Open project" dialog lists it.
    """
    from opencode_cloud.mounts import (
        MountError,
        check_new_mount,
        parse_argument,
        remote_mounts_refused,
    )

    if app_ctx.remote_address is not None:
        raise remote_mounts_refused(app_ctx.remote_address)
    mount = parse_argument(spec, read_only=read_only)

    def change(stored: list[Any]) -> list[Any]:
        try:
            check_new_mount(mount, _parsed(stored))
        except MountError as error:
            remove = f"`{app_ctx.occ} mount remove {error.path}`"
            if error.reason == "duplicate-host":
                error.hint = f"To mount it differently, remove that mount first: {remove}."
            elif error.reason == "duplicate-container":
                error.hint = f"{error.hint} (or remove that mount first: {remove})"
            raise
        return [*stored, str(mount)]

    _save(app_ctx, "mount add", change)
    _warn_if_it_holds_the_configuration(app_ctx, mount)
    app_ctx.out.result(
        _describe(mount),
        lambda: [f"{mount.host} -> {mount.container} ({_mode(mount)}) added."],
    )
    _restart_note(app_ctx)


@mount_group.command("list")
@click.pass_obj
def list_(app_ctx: AppContext) -> None:
    """List the host folders mounted into the container."""
    from opencode_cloud.mounts import HostMount

    mounts = [HostMount.parse(text) for text in app_ctx.config.mounts]

    def table() -> list[str]:
        if not mounts:
            return [f"(no host folders mounted; add one with `{app_ctx.occ} mount add ~/code`)"]
        rows = [("HOST", "CONTAINER", "MODE")]
        rows += [(m.host, m.container, _mode(m)) for m in mounts]
        host_width = max(len(row[0]) for row in rows)
        container_width = max(len(row[1]) for row in rows)
        return [
            f"{host:<{host_width}}  {container:<{container_width}}  {mode}"
            for host, container, mode in rows
        ]

    app_ctx.out.result({"mounts": [_describe(m) for m in mounts]}, table)


@mount_group.command("remove")
@click.argument(
    "target",
    metavar="HOST_PATH|CONTAINER_PATH",
    help="Either side of the mount.",
    shell_complete=complete.mount_paths,
)
@click.pass_obj
def remove(app_ctx: AppContext, target: str) -> None:
    """Stop mounting a host folder (the folder itself is not touched)."""
    from opencode_cloud.mounts import HostMount, MountError, find_mount

    removed: list[str] = []

    def change(stored: list[Any]) -> list[Any]:
        try:
            index = find_mount(stored, target)
        except MountError as error:
            if error.reason == "unknown":
                error.hint = f"{error.hint} See them with `{app_ctx.occ} mount list`."
            raise
        removed.append(stored[index])
        return [text for i, text in enumerate(stored) if i != index]

    _save(app_ctx, "mount remove", change)
    try:
        data: dict[str, Any] = _describe(HostMount.parse(removed[0]))
    except MountError:
        data = {"removed": removed[0]}
    app_ctx.out.result(data, lambda: [f"{removed[0]} removed."])
    _restart_note(app_ctx)
