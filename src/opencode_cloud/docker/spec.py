"""`ContainerSpec`: everything that shapes the service container, in one frozen value.

The wanted spec comes from the configuration (`from_config`), the actual one from the
engine (`from_inspect`). Creating the container (`create_body`), deciding whether to
re-create it (`diff`, which names each changed setting) and the config-hash label
(`config_hash`) all derive from it, so a new container setting is one field here plus
its two readers. docs/architecture.md walks through such a change.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Protocol

from opencode_cloud.defaults import (
    CONTAINER_PORT,
    DEFAULT_BIND_ADDRESS,
    DEFAULT_MEMORY_BYTES,
    DEFAULT_PIDS_LIMIT,
    DEFAULT_PORT,
    DEFAULT_STOP_TIMEOUT,
    DEFAULT_USERNAME,
    GID_ENV,
    HOSTNAME,
    LOG_MAX_FILES,
    LOG_MAX_SIZE,
    ROLE_ENV,
    RUNTIME_UID,
    TLS_CERT_ENV,
    TLS_ENV,
    UID_ENV,
)
from opencode_cloud.docker.models import ContainerInfo, Mount
from opencode_cloud.docker.volume import VOLUME_SPECS
from opencode_cloud.instance import LABEL_CONFIG_HASH, Instance
from opencode_cloud.opencode import KNOWN_PROVIDERS, USERNAME_ENV

if TYPE_CHECKING:
    from opencode_cloud.mounts import HostMount

NO_NEW_PRIVILEGES = "no-new-privileges:true"
# Where `docker exec` starts unless told otherwise: outside the agent's folders, so that a
# root shell (or `python3`, which imports from where it starts) reads nothing of the
# agent's. opencode and `occ shell` start in the projects folder (WORKING_DIR).
CONTAINER_WORKDIR = "/"
# Back after a crash and after the engine restarts (a reboot), but not once stopped.
RESTART_POLICY = "unless-stopped"
LOG_ROTATION = ("json-file", LOG_MAX_SIZE, str(LOG_MAX_FILES))
# What the entrypoint needs as root, before it drops to its three users for good: move
# the runtime user to another uid and drop to the users (SETUID, SETGID), hand the tool's
# volumes and the edge's files to their users (CHOWN, and DAC_OVERRIDE to walk folders
# only their owner may enter); KILL stays with the supervisor (PID 1, the edge's user) to
# pass a stop on to opencode. Every other capability is dropped; after the drop opencode
# and the edge hold none.
HARDENING = (
    NO_NEW_PRIVILEGES,
    "drop:ALL",
    "add:CHOWN",
    "add:DAC_OVERRIDE",
    "add:KILL",
    "add:SETGID",
    "add:SETUID",
)


class ContainerSettings(Protocol):
    """What `from_config` reads from a configuration (`config.schema.Config` has it all).

    The engine layer names the settings it needs instead of importing the configuration.
    """

    @property
    def port(self) -> int: ...
    @property
    def bind_address(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def env(self) -> Mapping[str, str]: ...
    @property
    def stop_timeout(self) -> int: ...
    @property
    def mounts(self) -> Sequence[str]: ...
    @property
    def limits(self) -> ResourceLimits: ...
    @property
    def tls_mode(self) -> str: ...


class ResourceLimits(Protocol):
    """The `limits` setting: memory in bytes, CPUs (None: all of the engine's), processes."""

    @property
    def memory_bytes(self) -> int: ...
    @property
    def cpus(self) -> float | None: ...
    @property
    def pids(self) -> int: ...


def _reason(text: str) -> Any:
    """Field metadata: how a change of this field reads in "re-created because X changed"."""
    return field(metadata={"reason": text})


def canonical_address(address: str) -> str:
    """`::1` and `0::1` are one address; anything unparsable is kept as it is."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


@dataclass(frozen=True)
class ContainerSpec:
    """The service container as wanted or as found. Fields without a `reason` (its name
    and labels) do not count as a change."""

    name: str
    image: str  # the reference the container is created from
    image_id: str | None = _reason("image")  # what that reference pointed to
    port: int = _reason("port")
    bind_address: str = _reason("bind address")
    username: str = _reason("user name")
    env: tuple[str, ...] = _reason("environment")  # the user's `KEY=VALUE`, sorted
    mounts: tuple[Mount, ...] = _reason("mounts")  # volumes and host folders, by target
    runtime_uid: int = _reason("runtime user")  # who opencode runs as: see the entrypoint
    runtime_gid: int = _reason("runtime group")
    # Docker brings it back after a crash or an engine restart, unless it was stopped:
    # docs/operations.md says why this policy and not on-failure.
    restart_policy: str = _reason("restart policy")
    stop_timeout: int = _reason("stop timeout")
    memory_bytes: int = _reason("memory limit")
    nano_cpus: int = _reason("CPU limit")  # billionths of a CPU, as the engine counts
    pids_limit: int = _reason("process limit")
    log_rotation: tuple[str, str, str] = _reason("log rotation")  # driver, max size, files
    hostname: str = _reason("hostname")
    working_dir: str = _reason("working directory")
    hardening: tuple[str, ...] = _reason("security options")  # SecurityOpt, drop:/add: caps
    # What the edge serves on the published port: `off` (HTTP), `self-signed` or `custom`
    # (HTTPS). Which certificate is not part of it: a new one is handed to the container
    # as it is (`Service.start`), without re-creating it.
    tls: str = _reason("TLS")
    # What the sandbox runs (docs/team.md): `single`, or in team mode `door` or `person`.
    role: str = _reason("role")
    # The network it is created on: "" for the engine's default bridge; in team mode a
    # network of its own (a person's instance publishes no port: `port` 0).
    network: str = _reason("network")
    # Kernel settings of its network namespace (the front door's: it forwards nothing
    # between the people's networks it sits on).
    sysctls: tuple[tuple[str, str], ...] = _reason("kernel settings")
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)

    # -- the two readers ----------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        settings: ContainerSettings,
        instance: Instance,
        *,
        image: str,
        image_id: str | None,
        labels: Mapping[str, str] | None = None,
        engine_cpus: int = 0,
    ) -> ContainerSpec:
        """The container the configuration asks for.

        Args:
            engine_cpus: the engine's CPU count, the CPU limit when the setting says "all"
                (0: unknown, no limit).
            image, image_id: the image reference it runs and what that resolves to now.
            labels: labels added to the instance's own and the config hash.
        """
        from opencode_cloud.mounts import HostMount  # here: `occ status` reads specs only

        host_mounts = [HostMount.parse(text) for text in settings.mounts]
        uid, gid = runtime_owner(host_mounts)
        spec = cls(
            name=instance.container_name,
            image=image,
            image_id=image_id,
            port=settings.port,
            bind_address=canonical_address(settings.bind_address),
            username=settings.username,
            # A provider's key never goes into a container's environment (`docker
            # inspect` shows it): one still in the configuration waits for the start that
            # moves it into opencode's key store (providers/migrate.py).
            env=tuple(
                sorted(
                    f"{k}={v}" for k, v in settings.env.items() if k not in KNOWN_PROVIDERS.values()
                )
            ),
            mounts=_sorted(
                [
                    *(
                        Mount("volume", instance.volume_name(v.kind), v.mount_point)
                        for v in VOLUME_SPECS
                    ),
                    *(Mount("bind", m.host, m.container, m.read_only) for m in host_mounts),
                ]
            ),
            runtime_uid=uid,
            runtime_gid=gid,
            restart_policy=RESTART_POLICY,
            stop_timeout=settings.stop_timeout,
            memory_bytes=settings.limits.memory_bytes,
            nano_cpus=round((settings.limits.cpus or engine_cpus) * 1e9),
            pids_limit=settings.limits.pids,
            log_rotation=LOG_ROTATION,
            hostname=HOSTNAME,
            working_dir=CONTAINER_WORKDIR,
            hardening=HARDENING,
            tls=settings.tls_mode,
            role="single",
            network="",
            sysctls=(),
        )
        all_labels = {**instance.labels("service"), **(labels or {})}
        return replace(spec, labels={**all_labels, LABEL_CONFIG_HASH: spec.config_hash()})

    @classmethod
    def from_inspect(cls, info: ContainerInfo, image_env: Iterable[str] = ()) -> ContainerSpec:
        """The spec an existing container was made with.

        Args:
            image_env: the image's own environment, which the container's also lists and
                which is not the user's.
        """
        inherited = set(image_env)
        # Variables the tool sets from other fields (or set in earlier releases).
        own = {USERNAME_ENV, UID_ENV, GID_ENV, TLS_ENV, TLS_CERT_ENV, ROLE_ENV}
        values = dict(e.split("=", 1) for e in info.env if "=" in e)
        binding = info.published(CONTAINER_PORT)
        return cls(
            name=info.name,
            image=info.image,
            image_id=info.image_id,
            port=binding.host_port if binding else 0,
            bind_address=canonical_address(binding.host_ip) if binding else "",
            username=values.get(USERNAME_ENV, DEFAULT_USERNAME),
            env=tuple(
                sorted(e for e in info.env if e not in inherited and e.split("=", 1)[0] not in own)
            ),
            mounts=_sorted(info.mounts),
            runtime_uid=_number(values.get(UID_ENV), RUNTIME_UID),
            runtime_gid=_number(values.get(GID_ENV), RUNTIME_UID),
            restart_policy=info.restart_policy,
            stop_timeout=info.stop_timeout
            if info.stop_timeout is not None
            else DEFAULT_STOP_TIMEOUT,
            memory_bytes=info.memory_bytes,
            nano_cpus=info.nano_cpus,
            pids_limit=info.pids_limit or 0,
            log_rotation=(
                str(info.log_config.get("Type", "")),
                str((info.log_config.get("Config") or {}).get("max-size", "")),
                str((info.log_config.get("Config") or {}).get("max-file", "")),
            ),
            hostname=info.hostname,
            working_dir=info.working_dir,
            hardening=(
                *info.security_opt,
                *(f"drop:{c}" for c in info.cap_drop),
                *sorted(f"add:{c.removeprefix('CAP_')}" for c in info.cap_add),
            ),
            tls=values.get(TLS_ENV, "off"),
            role=values.get(ROLE_ENV, "single"),
            network="" if info.network_mode in ("", "default", "bridge") else info.network_mode,
            sysctls=tuple(sorted(info.sysctls.items())),
            labels=dict(info.labels),
        )

    # -- what derives from it -------------------------------------------------------------

    def without_env(self, inherited: Iterable[str]) -> ContainerSpec:
        """The spec without variables the image sets to the same value itself."""
        inherited = set(inherited)
        return replace(self, env=tuple(e for e in self.env if e not in inherited))

    def diff(self, actual: ContainerSpec) -> list[str]:
        """What differs between this (wanted) spec and `actual`, in words for the user."""
        return [
            f.metadata["reason"]
            for f in fields(self)
            if "reason" in f.metadata and getattr(self, f.name) != getattr(actual, f.name)
        ]

    def config_hash(self) -> str:
        """A stable digest (64 hex digits) of every field that counts as a change.

        The container carries it as the label `io.opencode-cloud.config-hash`, so people
        and scripts can tell containers made from the same settings apart.
        """
        data = {
            f.name: _plain(getattr(self, f.name)) for f in fields(self) if "reason" in f.metadata
        }
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        import hashlib  # here only: OpenSSL's load is a tenth of `occ status`, which needs none

        return hashlib.sha256(canonical.encode()).hexdigest()

    def create_body(self) -> dict[str, Any]:
        """The Engine API's `POST /containers/create` body for this spec."""
        security = [h for h in self.hardening if not h.startswith(("drop:", "add:"))]
        dropped = [h.removeprefix("drop:") for h in self.hardening if h.startswith("drop:")]
        added = [h.removeprefix("add:") for h in self.hardening if h.startswith("add:")]
        return {
            "Image": self.image,
            "Hostname": self.hostname,
            "WorkingDir": self.working_dir,
            "Env": [
                f"{USERNAME_ENV}={self.username}",
                f"{UID_ENV}={self.runtime_uid}",
                f"{GID_ENV}={self.runtime_gid}",
                f"{TLS_ENV}={self.tls}",
                *([f"{ROLE_ENV}={self.role}"] if self.role != "single" else []),
                *self.env,
            ],
            "Labels": dict(self.labels),
            "ExposedPorts": {f"{CONTAINER_PORT}/tcp": {}} if self.port else {},
            "StopSignal": "SIGTERM",
            "StopTimeout": self.stop_timeout,
            "HostConfig": {
                "PortBindings": {
                    f"{CONTAINER_PORT}/tcp": [
                        {"HostIp": self.bind_address, "HostPort": str(self.port)}
                    ]
                }
                if self.port
                else {},
                **({"NetworkMode": self.network} if self.network else {}),
                **({"Sysctls": dict(self.sysctls)} if self.sysctls else {}),
                "Mounts": [
                    {
                        "Type": m.type,
                        "Source": m.source,
                        "Target": m.target,
                        "ReadOnly": m.read_only,
                    }
                    for m in self.mounts
                ],
                "AutoRemove": False,
                "RestartPolicy": {"Name": self.restart_policy},
                "Memory": self.memory_bytes,
                "NanoCpus": self.nano_cpus,
                "PidsLimit": self.pids_limit,
                "LogConfig": {
                    "Type": self.log_rotation[0],
                    "Config": {
                        "max-size": self.log_rotation[1],
                        "max-file": self.log_rotation[2],
                    },
                },
                "SecurityOpt": security,
                "CapDrop": dropped,
                "CapAdd": added,
                "Privileged": False,
            },
        }


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return value


def _sorted(mounts: Iterable[Mount]) -> tuple[Mount, ...]:
    return tuple(sorted(mounts, key=lambda m: m.target))


def _number(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() else default


def runtime_owner(host_mounts: Sequence[HostMount]) -> tuple[int, int]:
    """The uid and gid opencode runs as: the owner of the first mounted host folder, so
    what the agent writes there belongs to that owner on the host; the image's own user
    (1000) without mounts, or when the folder belongs to root (the agent never runs as
    root). Read on this machine: with a remote engine the folder's owner there may differ.

    Raises:
        MountError: the first folder's group is root's, or its owner is the edge's uid.
    """
    from opencode_cloud.mounts import folder_owner

    for mount in host_mounts:
        if os.path.exists(mount.host):
            return folder_owner(mount.host) or (RUNTIME_UID, RUNTIME_UID)
    return RUNTIME_UID, RUNTIME_UID


@dataclass(frozen=True)
class DefaultLimits:
    """The `limits` setting at its defaults."""

    memory_bytes: int = DEFAULT_MEMORY_BYTES
    cpus: float | None = None
    pids: int = DEFAULT_PIDS_LIMIT


@dataclass(frozen=True)
class DefaultSettings:
    """Every container setting at its default: what a caller without a configuration gets."""

    port: int = DEFAULT_PORT
    bind_address: str = DEFAULT_BIND_ADDRESS
    username: str = DEFAULT_USERNAME
    env: Mapping[str, str] = field(default_factory=dict)
    stop_timeout: int = DEFAULT_STOP_TIMEOUT
    mounts: Sequence[str] = ()
    limits: DefaultLimits = field(default_factory=DefaultLimits)
    tls_mode: str = "off"
