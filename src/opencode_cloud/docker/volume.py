"""The named volumes that keep a service's data across restarts, re-creation and upgrades.

Three are mounted where opencode keeps its data (`opencode.DATA_DIR`, `STATE_DIR`,
`CONFIG_DIR`: XDG folders of the runtime user), the two others hold the home and the
projects: nothing the agent or the user sets up is lost when the container is made again.
"""

from __future__ import annotations

from dataclasses import dataclass

from opencode_cloud.defaults import RUNTIME_HOME, WORKING_DIR
from opencode_cloud.docker.engine import Engine
from opencode_cloud.docker.errors import VolumeInUse
from opencode_cloud.instance import DEFAULT, Instance
from opencode_cloud.opencode import CONFIG_DIR, DATA_DIR, STATE_DIR


@dataclass(frozen=True)
class VolumeSpec:
    """One kind of persistent data: the name suffix, where it is mounted, what it holds."""

    kind: str
    mount_point: str
    holds: str


HOME = VolumeSpec(
    "home",
    RUNTIME_HOME,
    "the home folder: SSH keys, git config, shell history, caches, tools installed "
    "with npm -g or pip (into ~/.local)",
)
SESSION = VolumeSpec(
    "session",
    DATA_DIR,
    "session history, provider credentials (auth.json), snapshots, logs",
)
STATE = VolumeSpec(
    "state",
    STATE_DIR,
    "prompt history and recently used models",
)
PROJECTS = VolumeSpec("projects", WORKING_DIR, "project files (the working directory)")
CONFIG = VolumeSpec("config", CONFIG_DIR, "opencode's own configuration")

# The home holds the others' mount points (Docker mounts a parent before its children).
VOLUME_SPECS: tuple[VolumeSpec, ...] = (HOME, SESSION, STATE, PROJECTS, CONFIG)

# The default instance's names.
VOLUME_SESSION = DEFAULT.volume_name(SESSION.kind)
VOLUME_STATE = DEFAULT.volume_name(STATE.kind)
VOLUME_PROJECTS = DEFAULT.volume_name(PROJECTS.kind)
VOLUME_CONFIG = DEFAULT.volume_name(CONFIG.kind)
VOLUME_HOME = DEFAULT.volume_name(HOME.kind)
VOLUME_NAMES: tuple[str, ...] = tuple(DEFAULT.volume_name(s.kind) for s in VOLUME_SPECS)

MOUNT_SESSION = SESSION.mount_point
MOUNT_STATE = STATE.mount_point
MOUNT_PROJECTS = PROJECTS.mount_point
MOUNT_CONFIG = CONFIG.mount_point
MOUNT_HOME = HOME.mount_point


def volume_names(instance: Instance = DEFAULT) -> tuple[str, ...]:
    """Names of every volume of `instance`, in `VOLUME_SPECS` order."""
    return tuple(instance.volume_name(s.kind) for s in VOLUME_SPECS)


def ensure_volumes_exist(client: Engine, instance: Instance = DEFAULT) -> list[str]:
    """Create every volume of `instance` that is missing; idempotent.

    Returns:
        The names of the volumes this call created (empty when all existed).

    Raises:
        DockerError: when the engine refuses.
    """
    created: list[str] = []
    for spec in VOLUME_SPECS:
        name = instance.volume_name(spec.kind)
        if client.inspect_volume(name) is None:
            client.create_volume(name, instance.labels(f"volume-{spec.kind}"))
            created.append(name)
    return created


def volume_exists(client: Engine, name: str) -> bool:
    """Return True if a volume called `name` exists."""
    return client.inspect_volume(name) is not None


def remove_volume(client: Engine, name: str) -> None:
    """Remove volume `name`. A volume that does not exist is not an error.

    Raises:
        VolumeInUse: a container (named in the error) still mounts it; its data is kept.
    """
    users = client.list_containers(volume=name)
    if users:
        raise VolumeInUse(name, users)
    client.remove_volume(name)


def remove_all_volumes(client: Engine, instance: Instance = DEFAULT) -> list[str]:
    """Remove every volume of `instance`. Checks all before removing any.

    Returns:
        The names of the volumes that existed and were removed.

    Raises:
        VolumeInUse: some volume is still mounted; nothing was removed.
    """
    names = [n for n in volume_names(instance) if volume_exists(client, n)]
    for name in names:
        users = client.list_containers(volume=name)
        if users:
            raise VolumeInUse(name, users)
    for name in names:
        client.remove_volume(name)
    return names


def volume_sizes(client: Engine, instance: Instance = DEFAULT) -> dict[str, int | None]:
    """Bytes used by each volume of `instance` (None when the engine does not say)."""
    return client.volume_sizes(volume_names(instance))
