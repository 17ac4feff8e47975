"""The named volumes that keep a service's data across restarts, re-creation and upgrades.

Each volume is mounted where opencode really keeps that data (XDG directories of the
runtime user `opencode`), not at the plan's `~/.opencode`, which today's opencode never
reads: a volume there would keep nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from opencode_cloud.docker.client import DockerClient, raise_for_status
from opencode_cloud.docker.errors import DockerError, VolumeInUse
from opencode_cloud.instance import DEFAULT, Instance

RUNTIME_HOME = "/home/opencode"


@dataclass(frozen=True)
class VolumeSpec:
    """One kind of persistent data: the name suffix, where it is mounted, what it holds."""

    kind: str
    mount_point: str
    holds: str


SESSION = VolumeSpec(
    "session",
    f"{RUNTIME_HOME}/.local/share/opencode",
    "session history, provider credentials (auth.json), snapshots, logs",
)
STATE = VolumeSpec(
    "state",
    f"{RUNTIME_HOME}/.local/state/opencode",
    "prompt history and recently used models",
)
PROJECTS = VolumeSpec("projects", "/workspace", "project files (the working directory)")
CONFIG = VolumeSpec("config", f"{RUNTIME_HOME}/.config", "opencode's own configuration")

VOLUME_SPECS: tuple[VolumeSpec, ...] = (SESSION, STATE, PROJECTS, CONFIG)

# The plan's names, for the default instance.
VOLUME_SESSION = DEFAULT.volume_name(SESSION.kind)
VOLUME_STATE = DEFAULT.volume_name(STATE.kind)
VOLUME_PROJECTS = DEFAULT.volume_name(PROJECTS.kind)
VOLUME_CONFIG = DEFAULT.volume_name(CONFIG.kind)
VOLUME_NAMES: tuple[str, ...] = tuple(DEFAULT.volume_name(s.kind) for s in VOLUME_SPECS)

MOUNT_SESSION = SESSION.mount_point
MOUNT_STATE = STATE.mount_point
MOUNT_PROJECTS = PROJECTS.mount_point
MOUNT_CONFIG = CONFIG.mount_point


def volume_names(instance: Instance = DEFAULT) -> tuple[str, ...]:
    """Names of every volume of `instance`, in `VOLUME_SPECS` order."""
    return tuple(instance.volume_name(s.kind) for s in VOLUME_SPECS)


def ensure_volumes_exist(client: DockerClient, instance: Instance = DEFAULT) -> list[str]:
    """Create every volume of `instance` that is missing; idempotent.

    Returns:
        The names of the volumes this call created (empty when all existed).

    Raises:
        DockerError: when the engine refuses.
    """
    created: list[str] = []
    for spec in VOLUME_SPECS:
        name = instance.volume_name(spec.kind)
        if volume_exists(client, name):
            continue
        raise_for_status(
            client.request(
                "POST",
                "/volumes/create",
                body={
                    "Name": name,
                    "Driver": "local",
                    "Labels": instance.labels(f"volume-{spec.kind}"),
                },
            )
        )
        created.append(name)
    return created


def volume_exists(client: DockerClient, name: str) -> bool:
    """Return True if a volume called `name` exists."""
    response = client.request("GET", f"/volumes/{quote(name, safe='')}")
    if response.status == 404:
        return False
    raise_for_status(response)
    return True


def containers_using(client: DockerClient, name: str) -> list[str]:
    """Names of the containers (running or not) that mount volume `name`."""
    response = client.request(
        "GET", "/containers/json", query={"all": "true", "filters": {"volume": [name]}}
    )
    raise_for_status(response)
    return [c["Names"][0].lstrip("/") for c in response.body or []]


def remove_volume(client: DockerClient, name: str) -> None:
    """Remove volume `name`. A volume that does not exist is not an error.

    Raises:
        VolumeInUse: a container (named in the message) still mounts it; its data is kept.
    """
    users = containers_using(client, name)
    if users:
        raise VolumeInUse(
            f"Volume {name} is in use by container {', '.join(users)}.",
            f"Remove the container first: docker rm -f {users[0]}",
        )
    response = client.request("DELETE", f"/volumes/{quote(name, safe='')}")
    if response.status == 404:
        return
    if response.status == 409:
        raise VolumeInUse(f"Volume {name} is in use.", response.message)
    raise_for_status(response)


def remove_all_volumes(client: DockerClient, instance: Instance = DEFAULT) -> list[str]:
    """Remove every volume of `instance`. Checks all before removing any.

    Returns:
        The names of the volumes that existed and were removed.

    Raises:
        VolumeInUse: some volume is still mounted; nothing was removed.
    """
    names = [n for n in volume_names(instance) if volume_exists(client, n)]
    for name in names:
        if containers_using(client, name):
            remove_volume(client, name)  # raises VolumeInUse naming the container
    for name in names:
        remove_volume(client, name)
    return names


def volume_sizes(client: DockerClient, instance: Instance = DEFAULT) -> dict[str, int | None]:
    """Bytes used by each volume of `instance` (None when the engine does not say).

    Raises:
        DockerError: when the engine refuses.
    """
    response = client.request("GET", "/system/df")
    raise_for_status(response)
    usage = (response.body or {}).get("Volumes") or []
    wanted = set(volume_names(instance))
    sizes: dict[str, int | None] = dict.fromkeys(wanted)
    for vol in usage:
        if vol.get("Name") in wanted:
            size = (vol.get("UsageData") or {}).get("Size")
            sizes[vol["Name"]] = size if isinstance(size, int) and size >= 0 else None
    return sizes


__all__ = [
    "MOUNT_CONFIG",
    "MOUNT_PROJECTS",
    "MOUNT_SESSION",
    "MOUNT_STATE",
    "VOLUME_CONFIG",
    "VOLUME_NAMES",
    "VOLUME_PROJECTS",
    "VOLUME_SESSION",
    "VOLUME_SPECS",
    "VOLUME_STATE",
    "DockerError",
    "VolumeSpec",
    "containers_using",
    "ensure_volumes_exist",
    "remove_all_volumes",
    "remove_volume",
    "volume_exists",
    "volume_names",
    "volume_sizes",
]
