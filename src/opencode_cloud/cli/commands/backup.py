"""`occ backup`, `occ restore`, `occ uninstall`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import click

from opencode_cloud.cli.group import DefaultCommandGroup
from opencode_cloud.cli.options import person_option
from opencode_cloud.cli.output import format_bytes

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opencode_cloud.backup.backups import Backups
    from opencode_cloud.backup.create import BackupResult
    from opencode_cloud.backup.restore import RestoreResult
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.service.status import PortClash
    from opencode_cloud.service.uninstall import UninstallResult


def backups_of(app_ctx: AppContext) -> Backups:
    """The instance's backups, their steps and any image build shown as the command goes."""
    from opencode_cloud.backup.backups import Backups

    return Backups(
        app_ctx.service(), on_step=app_ctx.out.progress, image_reporter=app_ctx.reporter()
    )


@contextlib.contextmanager
def volumes_here(app_ctx: AppContext) -> Iterator[None]:
    """For the block, a person's volumes on another node of the swarm are on the manager
    (`team/swarm_backup.py`), where the backup reads them; anything else is as it is."""
    person = app_ctx.instance.person
    if person is None:
        yield
        return
    from opencode_cloud.team.placement import SwarmPlacement
    from opencode_cloud.team.swarm_backup import volumes_on_manager

    team_ctx = app_ctx.for_instance(app_ctx.instance.for_person(None))
    placement = team_ctx.team().placement
    if not isinstance(placement, SwarmPlacement):
        yield
        return
    with volumes_on_manager(placement.cluster, person, app_ctx.out.progress):
        yield


# -- backup -------------------------------------------------------------------------------


def _render_backup(app_ctx: AppContext, result: BackupResult) -> None:
    def human() -> list[str]:
        lines = [
            f"Backup written to {result.path} ({format_bytes(result.size_bytes)}: "
            f"{len(result.volumes)} volumes, {result.entries} entries).",
        ]
        if result.compressed and result.plain_bytes:
            lines.append(
                f"Compressed with zstd: {format_bytes(result.plain_bytes)} of archive in "
                f"{format_bytes(result.size_bytes)}."
            )
        if result.paused_seconds is not None:
            what = (
                "its databases were copied"
                if result.consistency == "databases-paused"
                else "its volumes were read"
            )
            lines.append(
                f"The service was paused for {result.paused_seconds:.2f} s while {what} "
                "(unavailable for that long)."
            )
        elif result.consistency in ("paused", "databases-paused"):
            lines.append("The service was paused already; it was left paused.")
        else:
            lines.append("The service was not running: nothing was paused.")
        if result.include_password:
            lines.append("It holds the service password: keep it private (the file is 0600).")
        if result.include_keys:
            lines.append("It holds the provider keys: keep it private (the file is 0600).")
        else:
            lines.append("Provider keys are left out (`--include-keys` puts them in).")
        return lines

    app_ctx.out.result(result.to_json(), human)


class _BackupGroup(DefaultCommandGroup):
    default = "create"


@click.group("backup", cls=_BackupGroup)
def backup_group() -> None:
    """Back up the instance (`occ backup [FILE]`, the same as `occ backup create`), list
    backups, and schedule them.

    Examples: occ backup | occ backup ~/backups/ | occ backup list ~/backups |
    occ backup schedule daily --keep 7
    """


@backup_group.command("create")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("--include-password", is_flag=True, help="Put the service password in it too.")
@click.option("--include-keys", is_flag=True, help="Put the provider keys in it too.")
@click.option("--force", is_flag=True, help="Replace FILE when it exists.")
@person_option
@click.option(
    "--all", "everyone", is_flag=True, help="Team mode: back up every person, one file each."
)
@click.pass_obj
def backup(
    app_ctx: AppContext,
    file: Path | None,
    include_password: bool,
    include_keys: bool,
    force: bool,
    person: str | None,
    everyone: bool,
) -> None:
    """Back up the instance: all its volumes and its configuration in one tar file.

    FILE defaults to opencode-cloud-<instance>-<UTC time>.tar in the current folder (a
    folder given as FILE gets that name inside); a FILE ending in .tar.zst is compressed
    (zstd). The file is private (mode 0600) and is
    never overwritten without --force. A running service is paused while its databases
    are copied, so their copy is consistent: a fraction of a second on a local engine,
    the whole copy on a remote one (the time is printed). Host folders added with `occ
    mount` are not in it.

    Examples: occ backup | occ backup ~/backups/ | occ backup work.tar.zst --include-password
    """
    from opencode_cloud.backup.create import default_backup_name

    if everyone:
        if person is not None:
            raise click.UsageError("use either --user or --all, not both")
        _backup_everyone(
            app_ctx, file, include_password=include_password, include_keys=include_keys, force=force
        )
        return
    app_ctx = app_ctx.for_person(person)
    target = file if file is not None else Path.cwd()
    if target.is_dir():
        target = target / default_backup_name(app_ctx.instance)
    with app_ctx.changing("backup"), volumes_here(app_ctx):
        result = backups_of(app_ctx).create(
            target,
            include_password=include_password,
            include_keys=include_keys,
            force=force,
            reporter=app_ctx.bytes_reporter(),
        )
    _render_backup(app_ctx, result)


def _backup_everyone(
    app_ctx: AppContext,
    folder: Path | None,
    *,
    include_password: bool,
    include_keys: bool,
    force: bool,
) -> None:
    """`occ backup --all`: each person's volumes into a file of their own in `folder`."""
    from opencode_cloud.backup.create import default_backup_name

    target = folder if folder is not None else Path.cwd()
    if not target.is_dir():
        raise click.BadParameter(f"{target} is not a folder", param_hint="FILE")
    names = [p.name for p in app_ctx.team().people()]
    results = []
    for name in names:
        person_ctx = app_ctx.for_person(name)
        with person_ctx.changing("backup"), volumes_here(person_ctx):
            result = backups_of(person_ctx).create(
                target / default_backup_name(person_ctx.instance),
                include_password=include_password,
                include_keys=include_keys,
                force=force,
            )
        results.append({"user": name, **result.to_json()})
        app_ctx.out.progress(f"{name}: {result.path} ({format_bytes(result.size_bytes)})")
    app_ctx.out.result(
        {"backups": results},
        lambda: [f"Backed up {len(results)} people into {target}."],
    )


# -- schedule, run, list ------------------------------------------------------------------


def default_schedule_folder(app_ctx: AppContext) -> Path:
    """Where scheduled backups go unless `--dir` says otherwise."""
    return app_ctx.paths.root / "scheduled-backups"


def _scheduled_folder(app_ctx: AppContext, folder: Path | None) -> Path:
    """`--dir`, else the folder of the instance's schedule, else the default one."""
    from opencode_cloud.config.backup_schedule import read_schedule

    if folder is not None:
        return folder.expanduser().absolute()
    schedule = read_schedule(app_ctx.paths)
    return Path(schedule.folder) if schedule else default_schedule_folder(app_ctx)


@backup_group.command("schedule")
@click.argument("every", type=click.Choice(["daily", "hourly", "off"]))
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="How many scheduled backups of each instance (each person) to keep.",
)
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path),
    help="Where they go (default: scheduled-backups/ in the instance's configuration folder).",
)
@click.pass_obj
def schedule(app_ctx: AppContext, every: str, keep: int, folder: Path | None) -> None:
    """Back up the instance every day or hour, on this machine, without remembering to.

    A systemd timer where systemd runs (system units as root, your user's units
    otherwise), else a line in your crontab, runs `occ backup run` into the folder,
    compressed (zstd), keeping the newest --keep; in team mode, every person is backed
    up. Running it again replaces the schedule; `off` removes it (the backups stay). A
    failed or missed scheduled backup shows in `occ status` and `occ doctor`.

    Examples: occ backup schedule daily | occ backup schedule hourly --keep 48 --dir
    /srv/backups | occ backup schedule off
    """
    import os
    import sys

    from opencode_cloud.backup import schedule as scheduler
    from opencode_cloud.config.paths import config_dir

    instance = app_ctx.instance
    name = scheduler.schedule_name(instance.name, app_ctx.host_name, config_dir())
    if every == "off":
        removed = scheduler.unschedule(app_ctx.paths, name)
        app_ctx.out.result(
            {"instance": instance.name, "schedule": None, "removed": removed},
            lambda: [
                f"Scheduled backups of instance {instance.name} are off"
                + (f" (removed {', '.join(removed)})." if removed else " (none were set up).")
                + " The backups already made are kept."
            ],
        )
        return
    target = folder.expanduser().absolute() if folder else default_schedule_folder(app_ctx)
    if target.exists() and not target.is_dir():
        raise click.BadParameter(f"{target} is not a folder", param_hint="--dir")
    argv = [sys.executable, "-m", "opencode_cloud", "--instance", instance.name]
    if app_ctx.host_name:
        argv += ["--host", app_ctx.host_name]
    argv += ["backup", "run", "--dir", str(target), "--keep", str(keep)]
    job = scheduler.Job(
        name=name,
        every=every,
        argv=tuple(argv),
        env=scheduler.environment(os.environ, config_dir()),
        description=f"opencode-cloud backup of instance {instance.name}",
    )
    method, where = scheduler.install(app_ctx.paths, job, target, keep)
    team = " (every person of the team)" if app_ctx.in_team_mode() else ""
    app_ctx.out.result(
        {
            "instance": instance.name,
            "schedule": every,
            "keep": keep,
            "dir": str(target),
            "method": method,
            "name": name,
        },
        lambda: [
            f"Instance {instance.name}{team} is backed up {every} into {target}, keeping "
            f"the newest {keep}: {where}.",
            f"Check on it with `{app_ctx.occ} backup list` and `{app_ctx.occ} status`.",
        ],
    )


@backup_group.command("run")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path),
    help="Where the backups go (default: the schedule's folder).",
)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    help="Keep the newest N scheduled backups (default: the schedule's, else all).",
)
@click.pass_obj
def run_scheduled(app_ctx: AppContext, folder: Path | None, keep: int | None) -> None:
    """What a schedule runs: a compressed backup of the instance (of every person, in
    team mode) into the folder, then the oldest scheduled backups beyond --keep removed.
    Its outcome is recorded for `occ status` and `occ doctor`.

    Examples: occ backup run | occ backup run --dir /srv/backups --keep 7
    """
    from opencode_cloud.backup.catalog import prune, scheduled_backup_name
    from opencode_cloud.config.backup_schedule import read_schedule, record_run
    from opencode_cloud.errors import OpencodeCloudError

    target = _scheduled_folder(app_ctx, folder)
    if keep is None:
        record = read_schedule(app_ctx.paths)
        keep = record.keep if record is not None else None
    results = []
    removed: list[str] = []
    try:
        if not target.is_dir():
            raise click.ClickException(f"{target} is not a folder")
        contexts = (
            [app_ctx.for_person(p.name) for p in app_ctx.team().people()]
            if app_ctx.in_team_mode()
            else [app_ctx]
        )
        for ctx in contexts:
            with ctx.changing("backup"), volumes_here(ctx):
                result = backups_of(ctx).create(target / scheduled_backup_name(ctx.instance))
            results.append(
                {"user": ctx.instance.person, **result.to_json()}
                if ctx.instance.person
                else result.to_json()
            )
            if keep is not None:
                removed += [str(p) for p in prune(target, ctx.instance, keep)]
    except (OpencodeCloudError, click.ClickException, OSError) as exc:
        message = (
            exc.message if isinstance(exc, OpencodeCloudError | click.ClickException) else str(exc)
        )
        record_run(app_ctx.paths, ok=False, message=" ".join(str(message).split()))
        raise
    record_run(
        app_ctx.paths,
        ok=True,
        message=f"{len(results)} backup{'s' if len(results) != 1 else ''} into {target}",
    )
    app_ctx.out.result(
        {"backups": results, "removed": removed},
        lambda: [
            *(f"Backup written to {r['path']} ({format_bytes(r['size_bytes'])})." for r in results),
            *(f"Removed the old backup {path}." for path in removed),
        ],
    )


@backup_group.command("list")
@click.argument("folder", required=False, type=click.Path(path_type=Path))
@click.option("--dir", "dir_option", type=click.Path(path_type=Path), help="The same as FOLDER.")
@click.pass_obj
def list_command(app_ctx: AppContext, folder: Path | None, dir_option: Path | None) -> None:
    """List the backups in a folder: when each was made, its size, whose it is, and
    whether it holds the password and the provider keys. The folder defaults to the
    scheduled backups' one.

    Examples: occ backup list | occ backup list ~/backups | occ --json backup list
    """
    from opencode_cloud.backup.catalog import list_backups
    from opencode_cloud.config.backup_schedule import read_last_run

    target = _scheduled_folder(app_ctx, folder or dir_option)
    if not target.is_dir():
        raise click.BadParameter(f"{target} is not a folder", param_hint="FOLDER")
    found, others = list_backups(target)
    last = read_last_run(app_ctx.paths)

    def human() -> list[str]:
        if not found:
            lines = [f"No backups in {target}."]
        else:
            lines = [
                f"{'Made (UTC)':<21} {'Size':>9}  {'Whose':<24} {'Password':<8}  {'Keys':<4}  File"
            ]
            for b in found:
                whose = b.instance + (f" / {b.person}" if b.person else "")
                lines.append(
                    f"{b.created:<21} {format_bytes(b.size_bytes):>9}  {whose:<24} "
                    f"{'yes' if b.password else 'no':<8}  {'yes' if b.keys else 'no':<4}  "
                    f"{b.path.name}"
                )
        lines += [f"Not a backup this release reads: {p.name}" for p in others]
        if last is not None:
            outcome = "ok" if last.ok else "FAILED"
            lines.append(f"Last scheduled backup: {last.at} {outcome}: {last.message}")
        return lines

    app_ctx.out.result(
        {
            "dir": str(target),
            "backups": [b.to_json() for b in found],
            "unreadable": [str(p) for p in others],
            "last_scheduled": None
            if last is None
            else {"at": last.at, "ok": last.ok, "message": last.message},
        },
        human,
    )


# -- restore ------------------------------------------------------------------------------


def _target_context(app_ctx: AppContext, archive_instance: str) -> AppContext:
    """The instance to restore onto: `--instance` (or OCC_INSTANCE) when given, else the
    one the backup was made from."""
    from click.core import ParameterSource

    from opencode_cloud.instance import Instance

    root = click.get_current_context().find_root()
    source = root.get_parameter_source("instance")
    if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
        return app_ctx
    return app_ctx.for_instance(Instance(archive_instance))


def _restore_lines(app_ctx: AppContext, result: RestoreResult) -> list[str]:
    came_from = (
        f" (backed up from instance {result.source_instance})"
        if result.source_instance != result.instance
        else ""
    )
    settings = "configuration" + (" and password" if result.password_restored else "")
    lines = [
        f"Restored instance {result.instance}{came_from}: {len(result.volumes)} volumes, "
        f"{result.entries} entries ({format_bytes(result.data_bytes)}), and its "
        f"{settings}, in {result.seconds:.1f} s; every checksum matched.",
    ]
    if result.safety_backup is not None:
        lines.append(
            f"What it replaced is saved in {result.safety_backup.path} "
            f"({format_bytes(result.safety_backup.size_bytes)})."
        )
    return lines


def _after_restore_lines(
    app_ctx: AppContext, started_url: str | None, clash: PortClash | None
) -> list[str]:
    occ = app_ctx.occ
    if started_url:
        return [f"opencode is running again at {started_url}"]
    lines = []
    if clash:
        lines.append(
            f"Note: {clash.container} (instance {clash.instance}) publishes port {clash.port}; "
            f"choose another before starting: `{occ} config set port N`."
        )
    lines.append(f"Start it with `{occ} start`.")
    return lines


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--yes", "-y", is_flag=True, help="Replace an instance that has data (it is backed up first)."
)
@person_option
@click.pass_obj
def restore(app_ctx: AppContext, file: Path, yes: bool, person: str | None) -> None:
    """Restore a backup onto an instance: its own (by default), or any other with --instance.

    The whole file is checked first (manifest and every checksum): a truncated, damaged
    or foreign file is refused before anything changes. An instance that has data is
    replaced only with --yes (or when you confirm on a terminal), and is backed up
    first (the command says where). A service that was running is started again; a new
    or stopped one is left stopped. Works across machines and engines (DOCKER_HOST).

    In team mode, `--user NAME` puts a backup's volumes onto that person's instance (the
    configuration and password stay the service's).

    Examples: occ restore backup.tar | occ restore backup.tar --instance copy |
    occ restore alice.tar --user alice
    """
    import shutil

    from opencode_cloud.backup.compression import plain_archive
    from opencode_cloud.backup.errors import ConfirmationNeeded, InvalidBackup
    from opencode_cloud.backup.verify import verify_archive

    shown = file.absolute()
    # The layout first, without the files' contents: enough to know the target, and all
    # an empty target needs, since its restore checks the contents while unpacking them
    # and leaves nothing behind when one does not match.
    with contextlib.ExitStack() as archives:
        # A compressed backup is unpacked first, privately; errors name the file given.
        path = archives.enter_context(plain_archive(shown))
        index = archives.enter_context(
            verify_archive(path, app_ctx.bytes_reporter(), contents=False)
        )
        manifest = index.manifest
        target = (
            app_ctx.for_person(person)
            if person is not None
            else _target_context(app_ctx, manifest.instance)
        )
        had_folder = target.paths.root.exists()
        try:
            with target.changing("restore"):
                backups = backups_of(target)
                state = backups.target_state()
                verified = index
                if not state.is_empty:  # checked whole before anything of it changes
                    verified = archives.enter_context(
                        verify_archive(path, app_ctx.bytes_reporter())
                    )
                later = "" if verified.contents_checked else "; its files are checked as unpacked"
                app_ctx.out.progress(
                    f"Checked {shown}: {verified.entries} entries "
                    f"({format_bytes(verified.data_bytes)}) of instance {manifest.instance}, "
                    f"made {manifest.created} (opencode {manifest.opencode_version or 'unknown'})"
                    f"{later}."
                )
                if state.has_data and not target.confirmed(
                    f"Replace the data of instance {target.instance.name!r} "
                    f"({', '.join(state.volumes_with_data)})? It is backed up first.",
                    yes,
                ):
                    raise ConfirmationNeeded(
                        f"Instance {target.instance.name!r} has data "
                        f"({', '.join(state.volumes_with_data)}); restoring replaces it.",
                        target.instance,
                        f"restore {shown}",
                    )
                if person is not None:
                    # Their container goes with the old volumes; it is made again
                    # (same limits and internal password) and started if it ran.
                    with app_ctx.team().person_kept(person):
                        result = backups.restore(verified, reporter=target.bytes_reporter())
                    result.was_running = False  # (started again above, when it ran)
                else:
                    result = backups.restore(verified, reporter=target.bytes_reporter())
                # What was done is said before the start, which may fail on its own.
                for line in _restore_lines(target, result):
                    target.out.line(line)
                # The configuration is the restored one now: read it afresh.
                fresh = target.for_instance(target.instance)
                started_url = clash = None
                if result.was_running:
                    with fresh.spinner("Starting opencode ..."):
                        started = fresh.service().start(
                            reporter=fresh.reporter(), on_step=fresh.out.progress
                        )
                    started_url = started.url
                else:
                    clash = fresh.service().port_clash() if person is None else None
        except InvalidBackup:
            if not had_folder:  # the lock's folder: nothing else was made there
                shutil.rmtree(target.paths.root, ignore_errors=True)
            raise
    data = result.to_json() | {"started": started_url is not None, "url": started_url}
    target.out.result(data, lambda: _after_restore_lines(target, started_url, clash))


# -- uninstall ----------------------------------------------------------------------------


def _render_uninstall(app_ctx: AppContext, result: UninstallResult) -> None:
    occ = app_ctx.occ

    def human() -> list[str]:
        lines = []
        if result.backup is not None:
            lines.append(
                f"Final backup: {result.backup['path']} "
                f"({format_bytes(result.backup['size_bytes'])}); "
                f"`{occ} restore` brings it back."
            )
        lines += [f"Removed container {name}." for name in result.containers]
        lines += [f"Removed image {name}." for name in result.images]
        lines += [f"Kept image {k.image}: {k.reason}." for k in result.kept_images]
        lines += [f"Removed volume {name}." for name in result.volumes]
        if result.kept_volumes:
            lines.append(
                f"Kept volumes (your data): {', '.join(result.kept_volumes)}; "
                f"`{occ} uninstall --volumes` removes them."
            )
        lines += [
            f"Kept volume {name}: it is not labelled as this instance's."
            for name in result.foreign_volumes
        ]
        lines += [f"Removed file {path}." for path in result.files]
        if len(lines) == (1 if result.backup else 0):
            lines.append(f"Nothing to remove: instance {result.instance} has nothing here.")
        return lines

    app_ctx.out.result(result.to_json(), human)


@click.command()
@click.option(
    "--volumes", is_flag=True, help="Remove the volumes too (sessions, projects, home, ...)."
)
@click.option("--no-backup", is_flag=True, help="With --volumes: no final backup first.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def uninstall(app_ctx: AppContext, volumes: bool, no_backup: bool, yes: bool) -> None:
    """Remove the instance: its container, the sandbox images no other container uses,
    and its files in the configuration folder (config.json and its .bak, the password
    and its hash, the lock).

    The volumes (your sessions, projects and home) are kept unless --volumes; then a
    final backup is written first (into the configuration folder's backups/, unless
    --no-backup) and its path printed. Only what carries the tool's labels for this
    instance is removed: other instances and anything else are never touched. Asks on a
    terminal; elsewhere it needs --yes.

    Examples: occ uninstall | occ uninstall --volumes --yes | occ --instance work uninstall
    """
    from opencode_cloud.backup.errors import ConfirmationNeeded

    instance = app_ctx.instance
    flags = " --volumes" if volumes else ""
    flags += " --no-backup" if no_backup else ""
    with app_ctx.changing("uninstall"):
        service = app_ctx.service()
        plan = service.plan_uninstall(volumes=volumes)
        if not plan.empty:
            app_ctx.out.progress(f"Uninstalling instance {instance.name} removes:")
            for line in plan.lines():
                app_ctx.out.progress(f"  {line}")
            if not app_ctx.confirmed("Remove these?", yes):
                raise ConfirmationNeeded(
                    f"Not uninstalled: instance {instance.name!r} would lose what is listed above.",
                    instance,
                    f"uninstall{flags}",
                )
        final = None
        if plan.volumes and not no_backup:
            app_ctx.out.progress("Writing a final backup of the volumes first ...")
            final = backups_of(app_ctx).final("uninstall", app_ctx.bytes_reporter())
        result = service.uninstall(plan)
        result.backup = final.to_json() if final else None
        unscheduled = _unschedule(app_ctx)
    _render_uninstall(app_ctx, result)
    for what in unscheduled:
        app_ctx.out.line(f"Removed the backup schedule: {what}.")


def _unschedule(app_ctx: AppContext) -> list[str]:
    """The instance's backup schedule removed, when it has one (a timer left behind
    would fail every day)."""
    from opencode_cloud.backup import schedule as scheduler
    from opencode_cloud.config.backup_schedule import read_schedule
    from opencode_cloud.config.paths import config_dir

    record = read_schedule(app_ctx.paths)
    if record is None:
        return []
    name = scheduler.schedule_name(app_ctx.instance.name, app_ctx.host_name, config_dir())
    return scheduler.unschedule(app_ctx.paths, record.name or name)


def register(group: click.Group) -> None:
    group.add_command(backup_group)
    group.add_command(restore)
    group.add_command(uninstall)
