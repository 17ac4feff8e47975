"""Engine data, parsed once: what `docker inspect` says about a container, an image, a volume.

Every read of the engine's JSON happens in the `parse_*` functions below; the rest of the
tool works with these frozen dataclasses and never looks up raw inspect keys.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

HealthStatus = Literal["starting", "healthy", "unhealthy"]


class ContainerStatus(enum.StrEnum):
    """Docker's state word for a container (`State.Status`)."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"

    @property
    def active(self) -> bool:
        """Holds a process (or is about to): stopping it means something."""
        return self in (ContainerStatus.RUNNING, ContainerStatus.RESTARTING, ContainerStatus.PAUSED)


# The addresses that mean "every address of the machine".
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")


def addresses_overlap(one: str, other: str) -> bool:
    """Two listening addresses conflict: the same, or either listens on every address."""
    return one == other or one in WILDCARD_ADDRESSES or other in WILDCARD_ADDRESSES


@dataclass(frozen=True)
class PortBinding:
    """A container port published on a host address."""

    host_ip: str
    host_port: int


@dataclass(frozen=True)
class Mount:
    """A volume or host folder mounted into the container."""

    type: Literal["volume", "bind"]
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerFile:
    """A file the tool writes into a container (`container.put_files`): its bytes, mode
    and owner (uid and gid alike)."""

    content: bytes
    mode: int
    owner: int


@dataclass(frozen=True)
class ContainerInfo:
    """One container, as the engine describes it."""

    id: str
    name: str
    image: str  # the reference it was created from (`Config.Image`)
    image_id: str  # the image it runs (`sha256:...`)
    status: ContainerStatus
    health: HealthStatus | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    restart_count: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    env: tuple[str, ...] = ()
    hostname: str = ""
    working_dir: str = ""
    user: str = ""
    ports: Mapping[int, tuple[PortBinding, ...]] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    restart_policy: str = ""
    restart_retries: int = 0
    stop_timeout: int | None = None
    security_opt: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    memory_bytes: int = 0
    nano_cpus: int = 0
    pids_limit: int | None = None
    log_config: Mapping[str, Any] = field(default_factory=dict)
    network_mode: str = ""  # the network it was created on (`default`: the engine's bridge)
    sysctls: Mapping[str, str] = field(default_factory=dict)  # kernel settings of its own

    @property
    def running(self) -> bool:
        return self.status is ContainerStatus.RUNNING

    @property
    def restarting(self) -> bool:
        return self.status is ContainerStatus.RESTARTING

    def published(self, container_port: int) -> PortBinding | None:
        """Where `container_port` is published on the host (its first binding)."""
        bindings = self.ports.get(container_port) or ()
        return bindings[0] if bindings else None


@dataclass(frozen=True)
class ImageInfo:
    """One image in the local engine."""

    id: str
    tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    env: tuple[str, ...] = ()
    size_bytes: int = 0
    user: str = ""  # the user its processes start as (`USER`); empty: root


@dataclass(frozen=True)
class EngineInfo:
    """The engine and the machine it runs on (`docker info`)."""

    version: str
    api_version: str
    cpus: int
    memory_bytes: int
    root_dir: str  # where images and volumes live (`DockerRootDir`)
    rootless: bool
    operating_system: str


@dataclass(frozen=True)
class VolumeInfo:
    """One named volume."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    driver: str = "local"


# --------------------------------------------------------------------------- parsers


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _timestamp(value: Any) -> str | None:
    # The engine writes the zero time for "never": 0001-01-01T00:00:00Z.
    return str(value) if value and not str(value).startswith("0001-") else None


def _port_bindings(host: dict[str, Any]) -> dict[int, tuple[PortBinding, ...]]:
    ports: dict[int, tuple[PortBinding, ...]] = {}
    for key, bindings in _dict(host.get("PortBindings")).items():
        number, _, protocol = str(key).partition("/")
        if protocol not in ("", "tcp") or not number.isdigit():
            continue
        ports[int(number)] = tuple(
            PortBinding(str(b.get("HostIp") or "0.0.0.0"), int(b["HostPort"]))
            for b in bindings or []
            if isinstance(b, dict) and str(b.get("HostPort") or "").isdigit()
        )
    return ports


def _mounts(host: dict[str, Any]) -> tuple[Mount, ...]:
    mounts = []
    for m in host.get("Mounts") or []:
        kind: Literal["volume", "bind"] = "bind" if m.get("Type") == "bind" else "volume"
        mounts.append(
            Mount(kind, str(m.get("Source", "")), str(m.get("Target", "")), bool(m.get("ReadOnly")))
        )
    return tuple(mounts)


def parse_container(raw: Mapping[str, Any]) -> ContainerInfo:
    """A `GET /containers/{id}/json` answer as a `ContainerInfo`."""
    config = _dict(raw.get("Config"))
    host = _dict(raw.get("HostConfig"))
    state = _dict(raw.get("State"))
    health = _dict(state.get("Health")).get("Status")
    policy = _dict(host.get("RestartPolicy"))
    try:
        status = ContainerStatus(str(state.get("Status") or "created"))
    except ValueError:
        status = ContainerStatus.DEAD
    return ContainerInfo(
        id=str(raw.get("Id", "")),
        name=str(raw.get("Name", "")).lstrip("/"),
        image=str(config.get("Image", "")),
        image_id=str(raw.get("Image", "")),
        status=status,
        health=health if health in ("starting", "healthy", "unhealthy") else None,
        exit_code=state.get("ExitCode") if isinstance(state.get("ExitCode"), int) else None,
        oom_killed=bool(state.get("OOMKilled")),
        restart_count=int(raw.get("RestartCount") or 0),
        started_at=_timestamp(state.get("StartedAt")),
        finished_at=_timestamp(state.get("FinishedAt")),
        labels=dict(_dict(config.get("Labels"))),
        env=_strings(config.get("Env")),
        hostname=str(config.get("Hostname", "")),
        working_dir=str(config.get("WorkingDir", "")),
        user=str(config.get("User", "")),
        ports=_port_bindings(host),
        mounts=_mounts(host),
        restart_policy=str(policy.get("Name") or "no"),
        restart_retries=int(policy.get("MaximumRetryCount") or 0),
        stop_timeout=config.get("StopTimeout")
        if isinstance(config.get("StopTimeout"), int)
        else None,
        security_opt=_strings(host.get("SecurityOpt")),
        cap_drop=_strings(host.get("CapDrop")),
        cap_add=_strings(host.get("CapAdd")),
        memory_bytes=int(host.get("Memory") or 0),
        nano_cpus=int(host.get("NanoCpus") or 0),
        pids_limit=int(host["PidsLimit"]) if host.get("PidsLimit") else None,
        log_config=dict(_dict(host.get("LogConfig"))),
        network_mode=str(host.get("NetworkMode") or ""),
        sysctls={str(k): str(v) for k, v in _dict(host.get("Sysctls")).items()},
    )


def parse_image(raw: Mapping[str, Any]) -> ImageInfo:
    """A `GET /images/{name}/json` answer as an `ImageInfo`."""
    config = _dict(raw.get("Config"))
    return ImageInfo(
        id=str(raw.get("Id", "")),
        tags=_strings(raw.get("RepoTags")),
        labels=dict(_dict(config.get("Labels"))),
        env=_strings(config.get("Env")),
        size_bytes=int(raw.get("Size") or 0),
        user=str(config.get("User") or ""),
    )


def parse_volume(raw: Mapping[str, Any]) -> VolumeInfo:
    """A `GET /volumes/{name}` answer as a `VolumeInfo`."""
    return VolumeInfo(
        name=str(raw.get("Name", "")),
        labels=dict(_dict(raw.get("Labels"))),
        driver=str(raw.get("Driver") or "local"),
    )


def parse_engine(info: Mapping[str, Any], version: Mapping[str, Any]) -> EngineInfo:
    """`GET /info` and `GET /version` answers as an `EngineInfo`."""
    security = [str(option) for option in info.get("SecurityOptions") or []]
    return EngineInfo(
        version=str(version.get("Version", "")),
        api_version=str(version.get("ApiVersion", "")),
        cpus=int(info.get("NCPU") or 0),
        memory_bytes=int(info.get("MemTotal") or 0),
        root_dir=str(info.get("DockerRootDir") or ""),
        rootless=any("rootless" in option for option in security),
        operating_system=str(info.get("OperatingSystem") or ""),
    )
