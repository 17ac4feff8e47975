"""`occ update` and `occ rollback`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from opencode_cloud.cli.commands.lifecycle import old_timeout_option, timeout_from

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.config.schema import Config
    from opencode_cloud.service.versions import UpdateResult, Versions


def _versions(app_ctx: AppContext) -> Versions:
    from opencode_cloud.config.edit import get_value
    from opencode_cloud.config.store import update_config, validate_config
    from opencode_cloud.service.versions import Versions

    def save_version(config: Config) -> Config:
        """Write the version keys that differ from what the file gives now."""

        def change(data: dict[str, Any]) -> Config:
            current = validate_config(data)
            for key in ("opencode_version", "image"):
                wanted = get_value(config, key)
                if get_value(current, key) != wanted:
                    if wanted is None:
                        data.pop(key, None)
                    else:
                        data[key] = wanted
            return validate_config(data)

        loaded = update_config(app_ctx.paths.config_file, change)
        app_ctx.set_config(loaded.config)
        return loaded.config

    return Versions(app_ctx.service(), save_version, on_step=app_ctx.out.progress)


def _render(app_ctx: AppContext, result: UpdateResult, verb: str) -> None:
    def human() -> list[str]:
        if not result.changed:
            return [f"Already on {result.current}."]
        lines = [f"{verb} from {result.previous} to {result.current}."]
        if result.seconds_unavailable is not None:
            lines.append(f"  Unavailable for {result.seconds_unavailable:.1f} s.")
        if result.snapshot and verb == "Updated":
            lines.append(
                f"  Snapshot {result.snapshot} kept: `{app_ctx.occ} rollback` goes back to it."
            )
        if result.removed_snapshots:
            lines.append(f"  Older snapshots removed: {', '.join(result.removed_snapshots)}.")
        if result.removed_images:
            lines.append(f"  Images no rollback needs removed: {', '.join(result.removed_images)}.")
        from opencode_cloud.cli.commands.lifecycle import new_ca_lines

        return lines + new_ca_lines(result.new_ca, app_ctx.occ)

    app_ctx.out.result(result.to_json(), human)


@click.command()
@click.option("--opencode-version", help="The opencode release to move to (default: config).")
@click.option(
    "--wait-timeout", type=float, help="Seconds to wait for the new version to answer healthy."
)
@old_timeout_option("--wait-timeout")
@click.option("--yes", "-y", is_flag=True, help="Go to an older release without asking.")
@click.pass_obj
def update(
    app_ctx: AppContext,
    opencode_version: str | None,
    wait_timeout: float | None,
    old_timeout: float | None,
    yes: bool,
) -> None:
    """Change opencode's version safely: prepare the new image while the old one serves,
    snapshot opencode's data, switch, check that sessions still read, and go back to the
    old version and data automatically when they do not.

    Without --opencode-version it moves to the version the configuration names (after
    `occ config set opencode_version X`, or a new opencode-cloud release's default).

    Examples: occ update | occ update --opencode-version 1.18.33
    """
    from opencode_cloud.config.edit import parse_value

    timeout = timeout_from(app_ctx, wait_timeout, old_timeout, "--wait-timeout")
    with app_ctx.changing("update"):
        config = app_ctx.config
        if opencode_version is not None:
            parse_value("opencode_version", opencode_version)  # a clear error for bad input
            config = config.model_copy(update={"opencode_version": opencode_version})
        versions = _versions(app_ctx)
        if app_ctx.in_team_mode():
            _update_team(app_ctx, versions, config, yes)
            return
        _confirm_going_back(app_ctx, versions, config, yes)
        with app_ctx.spinner("Updating ..."):
            result = versions.update(config, reporter=app_ctx.reporter(), timeout=timeout)
    _render(app_ctx, result, "Updated")


def _update_team(app_ctx: AppContext, versions: Versions, target: Config, yes: bool) -> None:
    """`occ update` in team mode: everyone, one at a time (`team.rolling`; on a swarm
    `team.swarm_update`)."""
    from opencode_cloud.team.placement import SwarmPlacement
    from opencode_cloud.team.rolling import RollingUpdate
    from opencode_cloud.team.swarm_update import SwarmUpdate

    team = app_ctx.team()
    _confirm_going_back(app_ctx, versions, target, yes, running=team.running_version())
    placement = team.placement
    updater = (
        SwarmUpdate(placement.cluster, team.paths, app_ctx.out.progress)
        if isinstance(placement, SwarmPlacement)
        else RollingUpdate(team, on_step=app_ctx.out.progress)
    )
    with app_ctx.spinner("Updating everyone, one at a time ..."):
        result = updater.run(target, versions.save_version, reporter=app_ctx.reporter())

    def human() -> list[str]:
        lines = [f"Everyone is on {result.target}."]
        for name in result.updated:
            lines.append(
                f"  {name}: updated (unavailable {result.seconds_unavailable[name]:.1f} s)"
            )
        if result.already:
            lines.append(f"  Already on it: {', '.join(result.already)}.")
        return lines

    app_ctx.out.result(result.to_json(), human)


def _confirm_going_back(
    app_ctx: AppContext,
    versions: Versions,
    target: Config,
    yes: bool,
    *,
    running: str | None = None,
) -> None:
    """Moving to an older release is where data gets lost: say so, and ask."""
    running = running or versions.running_version()
    if not running or target.image or _release(target.opencode_version) >= _release(running):
        return
    message = (
        f"opencode {target.opencode_version} is older than the running {running}; older "
        "releases may not read newer data (a snapshot is kept, and a failed check goes back)."
    )
    if yes:
        app_ctx.out.warn(message)
        return
    if not app_ctx.confirmed(f"{message} Continue?", yes):
        from opencode_cloud.errors import NotConfirmed

        raise NotConfirmed(
            f"Not updated: {message}", f"update --opencode-version {target.opencode_version}"
        )


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("-")[0].split("."))


@click.command()
@click.option("--yes", "-y", is_flag=True, help="Do not ask before replacing the current data.")
@click.pass_obj
def rollback(app_ctx: AppContext, yes: bool) -> None:
    """Go back to the version before the last update, with the data it had then.

    What changed since that update (sessions, settings in opencode) is replaced by the
    snapshot taken before it; provider keys stay as they are now.
    """
    with app_ctx.changing("rollback"):
        versions = _versions(app_ctx)
        snapshots = versions.snapshots()
        if snapshots and not yes:
            message = (
                f"Going back to {snapshots[0].image} replaces opencode's data with the "
                f"snapshot of {snapshots[0].created} (provider keys stay as they are)."
            )
            if not app_ctx.confirmed(f"{message} Continue?", yes):
                from opencode_cloud.errors import NotConfirmed

                raise NotConfirmed(f"Not rolled back: {message}", "rollback")
        with app_ctx.spinner("Rolling back ..."):
            result = versions.rollback()
    _render(app_ctx, result, "Rolled back")


def register(group: click.Group) -> None:
    group.add_command(update)
    group.add_command(rollback)
