"""The one error boundary's words and exit codes, without click: `cli/app.py` and the
quick path of `occ status` (`cli/quick.py`) end every failure here."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from opencode_cloud.cli.output import ExitCode, Output
from opencode_cloud.errors import NotConfirmed, OpencodeCloudError

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext


def report_failure(error: OpencodeCloudError, app_ctx: AppContext | None, json_output: bool) -> int:
    """`Error: ...` and its hint on stderr (with --json, an object on stdout too); the exit
    code. `app_ctx` None: the failure came before the global options made one."""
    from opencode_cloud.cli.hints import details_for, hint_for
    from opencode_cloud.instance import DEFAULT, command_prefix

    out = app_ctx.out if app_ctx else Output(json=json_output)
    if out.debug or os.environ.get("OCC_DEBUG"):
        import traceback

        traceback.print_exc()
    occ = app_ctx.occ if app_ctx else command_prefix(DEFAULT)
    out.error(error.message, hint_for(error, occ), details_for(error))
    return exit_code_for(error)


def interrupted() -> int:
    print("Interrupted.", file=sys.stderr)
    return ExitCode.INTERRUPTED


def exit_code_for(error: OpencodeCloudError) -> ExitCode:
    """The exit code scripts see for each kind of failure."""
    from opencode_cloud.config.errors import ConfigError
    from opencode_cloud.docker import errors as docker_errors
    from opencode_cloud.docker import ssh
    from opencode_cloud.hosts import HostError
    from opencode_cloud.instance import InvalidInstanceName, InvalidPersonName
    from opencode_cloud.kubernetes import errors as kubernetes_errors
    from opencode_cloud.locking import LockTimeout
    from opencode_cloud.mounts import MountError
    from opencode_cloud.providers import errors as provider_errors
    from opencode_cloud.service import errors as service_errors
    from opencode_cloud.team import errors as team_errors

    by_kind: list[tuple[tuple[type[OpencodeCloudError], ...], ExitCode]] = [
        (
            (
                docker_errors.DockerNotInstalled,
                docker_errors.DaemonNotRunning,
                docker_errors.DockerPermissionDenied,
                docker_errors.EngineTooOld,
                docker_errors.UnknownContext,
                ssh.SshError,
                team_errors.NotASwarmManager,
            ),
            ExitCode.DOCKER_UNAVAILABLE,
        ),
        (
            (
                docker_errors.HealthTimeout,
                docker_errors.ContainerExited,
                docker_errors.PortInUse,
                docker_errors.BuildFailed,
                docker_errors.PullFailed,
                docker_errors.ImageNotFound,
                docker_errors.SessionsFailing,
                service_errors.UpdateFailed,
                team_errors.TeamUpdateFailed,
                team_errors.PersonNotAnswering,
                team_errors.ImagePushFailed,
                team_errors.NoRoomInCluster,
                team_errors.NowhereToDrain,
                team_errors.DrainFailed,
                team_errors.VolumesNotCopied,
            ),
            ExitCode.START_FAILED,
        ),
        (
            (
                service_errors.NeverCreated,
                service_errors.NotRunning,
                service_errors.NotUpdatable,
                service_errors.EdgeTooOld,
                docker_errors.ContainerNotFound,
            ),
            ExitCode.NOT_RUNNING,
        ),
        (
            (service_errors.VersionChange, service_errors.NothingToRollBack, NotConfirmed),
            ExitCode.USAGE,
        ),
        ((ConfigError, MountError), ExitCode.CONFIG_INVALID),
        ((InvalidInstanceName, HostError, ssh.ForwardFailed), ExitCode.USAGE),
        ((LockTimeout,), ExitCode.LOCKED),
        (
            (
                provider_errors.UnknownProvider,
                provider_errors.BadProviderInput,
                provider_errors.KeyNotGiven,
                provider_errors.ProviderNotSet,
            ),
            ExitCode.USAGE,
        ),
        ((team_errors.DoorNotRunning,), ExitCode.NOT_RUNNING),
        (
            (
                team_errors.NodeNotFound,
                team_errors.NodeNotUsable,
                team_errors.NotOnCluster,
                team_errors.PersonDataOnManager,
            ),
            ExitCode.USAGE,
        ),
        ((kubernetes_errors.KubernetesError,), ExitCode.USAGE),
        (
            (
                team_errors.TeamNotEnabled,
                team_errors.TeamAlreadyEnabled,
                team_errors.PersonNotFound,
                team_errors.PersonExists,
                InvalidPersonName,
            ),
            ExitCode.USAGE,
        ),
    ]
    for kinds, code in by_kind:
        if isinstance(error, kinds):
            return code
    return ExitCode.ERROR
