"""What `occ status` reports about an instance's service (`Service.status` puts it
together): the container as the engine sees it, opencode's answers, the volumes and
snapshots, and the words for how the container is doing (`crash_looping`,
`describe_exit`, which `occ doctor` uses too).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opencode_cloud.docker import image as images
from opencode_cloud.docker import volume as volumes
from opencode_cloud.docker.errors import DockerError
from opencode_cloud.service.snapshots import list_snapshots

if TYPE_CHECKING:
    from opencode_cloud.docker.engine import Engine
    from opencode_cloud.docker.models import ContainerInfo
    from opencode_cloud.instance import Instance
    from opencode_cloud.opencode import Server

# A restarted container that has not run this long since is still crash-looping.
CRASH_LOOP_WINDOW = 30.0
STATUS_LOG_LINES = 10


@dataclass
class VolumeStatus:
    name: str
    mount_point: str
    holds: str
    exists: bool
    size_bytes: int | None


@dataclass
class StatusResult:
    """What `status` reports."""

    instance: str
    container: str
    # missing | created | starting | running | exited | restarting | paused | dead
    state: str
    running: bool
    url: str
    bind_address: str
    port: int
    exposed: bool
    person: str | None = None  # whose instance, in team mode
    docker_health: str | None = None
    http_health: str | None = None  # healthy | unauthorized | unhealthy | unreachable
    session_api: str | None = None  # ok, or what fails when opencode cannot read its data
    opencode_version: str | None = None
    image: str | None = None
    started_at: str | None = None
    uptime_seconds: float | None = None
    restart_count: int = 0
    last_exit_code: int | None = None
    # Why the last run ended, in words: "killed: out of memory", "exit code 1", ...
    last_exit: str | None = None
    # The service's last output lines, when it is not healthy (crash loop, exited, ...).
    log_tail: list[str] = field(default_factory=list)
    pending_restart: list[str] = field(default_factory=list)
    volumes: list[VolumeStatus] = field(default_factory=list)
    # Kept from the last updates, for `occ rollback`: id, image, created, size_bytes.
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    host: str | None = None  # the remote host it runs on (ssh address); None: this machine
    needs_tunnel: bool = False  # it listens on the remote host's loopback only
    warnings: list[str] = field(default_factory=list)  # written by the command line

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PortClash:
    """Another instance's container publishes the port this one is configured for."""

    container: str
    instance: str
    port: int


def describe_container(result: StatusResult, info: ContainerInfo, server: Server | None) -> bool:
    """Fill in what the container and opencode (asked at `server`) say about themselves.
    Without a `server` (a person's instance in team mode, which only the front door
    reaches) the engine's health check is the word on its health.

    Returns:
        Whether its last log lines belong in the report (it is not healthy, and it has
        ended or restarted before).
    """
    result.docker_health = info.health
    result.image = info.image
    result.opencode_version = info.labels.get(images.LABEL_OPENCODE_VERSION)
    result.restart_count = info.restart_count
    if info.finished_at is not None:  # it has ended at least once
        result.last_exit_code = info.exit_code
        result.last_exit = describe_exit(info)
    if info.running:
        result.started_at = info.started_at
        result.uptime_seconds = seconds_since(info.started_at)
        if server is None:  # its health was asked from inside (`Service.ask_inside`)
            if result.http_health != "healthy":
                result.state = "starting"
            return result.http_health != "healthy" and bool(info.restart_count or info.finished_at)
        answer = server.health(timeout=2)
        result.http_health = answer.state
        result.opencode_version = answer.version or result.opencode_version
        if answer.healthy:
            problem = server.session_problem()
            result.session_api = problem or "ok"
            if problem:
                result.http_health = "unhealthy"
        elif answer.state == "unreachable" and info.health != "unhealthy":
            result.state = "starting"  # the process runs, opencode does not answer yet
    if crash_looping(info):
        result.state = "crash-looping"
    return result.http_health != "healthy" and bool(info.restart_count or info.finished_at)


def volume_status(client: Engine, instance: Instance, *, sizes: bool = False) -> list[VolumeStatus]:
    """The instance's volumes: where they are mounted, what they hold, and with `sizes`
    the bytes each one uses. The engine counts those by walking every file of every
    volume (most of a second, more with big projects), so only when asked."""
    found: dict[str, int | None] = {}
    try:
        if sizes:
            found = volumes.volume_sizes(client, instance)
        else:
            found = {volume.name: None for volume in client.list_volumes()}
    except DockerError:
        pass
    return [
        VolumeStatus(
            name=(name := instance.volume_name(spec.kind)),
            mount_point=spec.mount_point,
            holds=spec.holds,
            exists=name in found or volumes.volume_exists(client, name),
            size_bytes=found.get(name),
        )
        for spec in volumes.VOLUME_SPECS
    ]


def snapshot_status(
    client: Engine, instance: Instance, *, sizes: bool = False
) -> list[dict[str, Any]]:
    """The snapshots kept for `occ rollback` (with their sizes when asked); none when the
    engine cannot say."""
    try:
        return [s.to_json() for s in list_snapshots(client, instance, sizes=sizes)]
    except DockerError:
        return []


def crash_looping(info: ContainerInfo) -> bool:
    """Docker keeps restarting it: between two runs, or up again after crashing within
    moments of its last start."""
    if info.restarting:
        return True
    if not info.running or info.restart_count == 0:
        return False
    uptime = seconds_since(info.started_at)
    return uptime is not None and uptime < CRASH_LOOP_WINDOW


def describe_exit(info: ContainerInfo) -> str:
    """How the container's last run ended, in words."""
    if info.oom_killed:
        return "killed: out of memory"
    if info.exit_code in (137, 143):
        return f"stopped (exit code {info.exit_code})"
    return f"exit code {info.exit_code}"


def seconds_since(timestamp: str | None) -> float | None:
    """Seconds since a Docker timestamp (always UTC, nanoseconds: `...T06:10:00.123456789Z`)."""
    if not timestamp:
        return None
    try:
        started = datetime.fromisoformat(timestamp.split(".")[0].rstrip("Z"))
    except ValueError:
        return None
    return max(0.0, time.time() - started.replace(tzinfo=UTC).timestamp())
