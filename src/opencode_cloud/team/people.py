"""A person's instance: the sandbox with `OCC_ROLE=person`, on a network of its own."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from opencode_cloud.defaults import INTERNAL_PASSWORD_PATH, RUNTIME_UID
from opencode_cloud.docker.models import ContainerFile, Mount
from opencode_cloud.docker.spec import ContainerSpec, ResourceLimits
from opencode_cloud.docker.volume import VOLUME_SPECS
from opencode_cloud.instance import LABEL_CONFIG_HASH
from opencode_cloud.team.layout import TeamLayout

# Bytes of the internal password between the door and a person's opencode.
INTERNAL_PASSWORD_BYTES = 24

if TYPE_CHECKING:
    from opencode_cloud.config.schema import Config
    from opencode_cloud.docker.engine import Engine


@dataclass(frozen=True)
class PersonSettings:
    """The service's settings as a person's container takes them: its user name, its
    environment and its stop timeout, never its port, host folders or TLS (the door has
    those)."""

    username: str
    env: Mapping[str, str]
    stop_timeout: int
    limits: ResourceLimits
    port: int = 0
    bind_address: str = ""
    mounts: Sequence[str] = ()
    tls_mode: str = "off"


@dataclass(frozen=True)
class PersonLimits:
    """What one person's instance may use: `--memory` and `--cpus` of `occ user add`."""

    memory_bytes: int
    cpus: float | None
    pids: int


@dataclass
class Person:
    """One person, as `occ user list` shows them."""

    name: str
    admin: bool = False
    email: str | None = None
    disabled: bool = False
    created: float | None = None
    last_sign_in: float | None = None
    last_seen: float | None = None
    state: str = "missing"  # of their container: running, exited, created, missing
    memory_bytes: int | None = None  # in use now, when it runs
    memory_limit: int = 0
    disk_bytes: int | None = None  # their volumes
    volumes: list[str] = field(default_factory=list)
    totp: str | None = None  # their second factor: "pending" (no code proven yet) or "on"
    node: str | None = None  # the swarm node their instance runs on (None: no swarm)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "admin": self.admin,
            "email": self.email,
            "disabled": self.disabled,
            "created": self.created,
            "last_sign_in": self.last_sign_in,
            "last_seen": self.last_seen,
            "state": self.state,
            "memory_bytes": self.memory_bytes,
            "memory_limit": self.memory_limit,
            "disk_bytes": self.disk_bytes,
            "volumes": self.volumes,
            "totp": self.totp,
            "node": self.node,
        }


def person_settings(config: Config, limits: PersonLimits) -> PersonSettings:
    """What a person's instance takes of the service's configuration."""
    return PersonSettings(
        username="opencode", env=config.env, stop_timeout=config.stop_timeout, limits=limits
    )


def person_limits(config: Config, memory_bytes: int | None, cpus: float | None) -> PersonLimits:
    """A person's limits: those given, else the service's."""
    limits = config.limits
    return PersonLimits(
        memory_bytes=memory_bytes or limits.memory_bytes,
        cpus=cpus if cpus is not None else limits.cpus,
        pids=limits.pids,
    )


def person_spec(
    settings: PersonSettings,
    layout: TeamLayout,
    name: str,
    *,
    image: str,
    image_id: str | None,
    nano_cpus: int,
) -> ContainerSpec:
    """The container of person `name`: their volumes only, no published port, on their
    own network, as the image's runtime user."""
    person = layout.person(name)
    spec = ContainerSpec.from_config(settings, person, image=image, image_id=image_id)
    spec = replace(
        spec,
        mounts=tuple(
            sorted(
                (Mount("volume", person.volume_name(v.kind), v.mount_point) for v in VOLUME_SPECS),
                key=lambda m: m.target,
            )
        ),
        runtime_uid=RUNTIME_UID,
        runtime_gid=RUNTIME_UID,
        nano_cpus=nano_cpus,
        # Their terminal's prompt says whose it is: opencode@alice.
        hostname=name,
        role="person",
        network=layout.person_network(name),
    )
    labels = person.labels("person")
    return replace(spec, labels={**labels, LABEL_CONFIG_HASH: spec.config_hash()})


def internal_password_file(password: str) -> dict[str, ContainerFile]:
    """What a new person's container is handed: opencode's internal password, which the
    door sends with every request it passes on (root's: read in the entrypoint's root
    phase, never by the agent's user)."""
    return {INTERNAL_PASSWORD_PATH: ContainerFile(password.encode(), 0o600, 0)}


def read_internal_password(client: Engine, container: str) -> str:
    """The internal password the tool handed a person's container (through the engine's
    archive API: the file is root's inside)."""
    stream = b"".join(client.get_archive(container, INTERNAL_PASSWORD_PATH))
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        member = tar.next()
        handle = tar.extractfile(member) if member else None
        return handle.read().decode().strip() if handle else ""


def password_hash(password: str) -> str:
    """A person's password as the door keeps it (bcrypt)."""
    import bcrypt

    from opencode_cloud.access.credentials import BCRYPT_ROUNDS

    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(BCRYPT_ROUNDS)).decode("ascii")
