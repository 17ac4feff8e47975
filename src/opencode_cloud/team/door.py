"""The front door and its starter: their containers, and the door's records of people.

The door is the sandbox image with `OCC_ROLE=door`: Caddy and the login service as the
edge's user, the only published port, nothing of any agent's. The people's records
(password hashes, sessions, the sign-in log) are its login service's, in a SQLite file on
its state volume; the tool changes them through `edge.py admin`, with the request in a
file written through the engine's archive API (never in argv or the environment, which
`docker inspect` shows).

The starter is the only part with the engine's socket: it starts and stops the people's
containers when the door asks (a sign-in, an idle instance), and nothing else; it has no
network, no capability and a read-only file system (docs/team.md).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from opencode_cloud.defaults import (
    EDGE_UID,
    TEAM_IDLE_STOP_ENV,
    TEAM_INSTANCE_ENV,
    TEAM_PREFIX_ENV,
)
from opencode_cloud.docker.container import put_files
from opencode_cloud.docker.models import ContainerFile, Mount
from opencode_cloud.docker.spec import (
    LOG_ROTATION,
    NO_NEW_PRIVILEGES,
    RESTART_POLICY,
    ContainerSettings,
    ContainerSpec,
)
from opencode_cloud.instance import LABEL_CONFIG_HASH
from opencode_cloud.team.errors import DoorNotRunning, DoorRefused
from opencode_cloud.team.layout import (
    DOOR_STATE_DIR,
    EDGE_DIR,
    EDGE_PROGRAM,
    ENGINE_SOCKET,
    STARTER_DIR,
    STARTER_PROGRAM,
    TeamLayout,
)

if TYPE_CHECKING:
    from opencode_cloud.docker.engine import Engine

# The door holds no agent: Caddy, the login service and their sessions.
DOOR_MEMORY_BYTES = 512 << 20
DOOR_PIDS = 512
STARTER_MEMORY_BYTES = 64 << 20
STARTER_PIDS = 32
EDGE_USER = f"{EDGE_UID}:{EDGE_UID}"


def door_spec(
    settings: ContainerSettings,
    layout: TeamLayout,
    *,
    image: str,
    image_id: str | None,
    idle_stop_seconds: int,
) -> ContainerSpec:
    """The front door's container: the service's port, TLS and user name, none of the
    user's environment (provider keys are the people's, not the door's)."""
    spec = ContainerSpec.from_config(settings, layout.instance, image=image, image_id=image_id)
    spec = replace(
        spec,
        name=layout.door,
        env=tuple(
            sorted(
                (
                    f"{TEAM_IDLE_STOP_ENV}={idle_stop_seconds}",
                    f"{TEAM_INSTANCE_ENV}={layout.instance.name}",
                    f"{TEAM_PREFIX_ENV}={layout.prefix}",
                )
            )
        ),
        mounts=(
            Mount("volume", layout.starter_volume, STARTER_DIR),
            Mount("volume", layout.door_state_volume, DOOR_STATE_DIR),
        ),
        memory_bytes=DOOR_MEMORY_BYTES,
        nano_cpus=0,
        pids_limit=DOOR_PIDS,
        role="door",
        network=layout.door_network,
        # It sits on every person's network: it must route nothing between them.
        sysctls=(("net.ipv4.ip_forward", "0"),),
    )
    labels = {**layout.instance.labels("door")}
    return replace(spec, labels={**labels, LABEL_CONFIG_HASH: spec.config_hash()})


def starter_body(layout: TeamLayout, image: str) -> dict[str, Any]:
    """The Engine API's create body of the starter: root for the socket, and nothing else
    (no capability, no network, no writable file but its socket's volume)."""
    return {
        "Image": image,
        "Entrypoint": ["/usr/bin/python3", "-I", STARTER_PROGRAM],
        "Cmd": [],
        "User": "0:0",
        "WorkingDir": "/",
        "Env": [
            f"{TEAM_PREFIX_ENV}={layout.prefix}",
            f"{TEAM_INSTANCE_ENV}={layout.instance.name}",
        ],
        "Labels": layout.instance.labels("starter"),
        "Healthcheck": {"Test": ["NONE"]},
        "NetworkDisabled": True,
        "HostConfig": {
            "NetworkMode": "none",
            "Mounts": [
                {"Type": "bind", "Source": ENGINE_SOCKET, "Target": ENGINE_SOCKET},
                {
                    "Type": "volume",
                    "Source": layout.starter_volume,
                    "Target": STARTER_DIR,
                    "VolumeOptions": {"NoCopy": True},
                },
            ],
            "RestartPolicy": {"Name": RESTART_POLICY},
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "SecurityOpt": [NO_NEW_PRIVILEGES],
            "Privileged": False,
            "Memory": STARTER_MEMORY_BYTES,
            "PidsLimit": STARTER_PIDS,
            "LogConfig": {
                "Type": LOG_ROTATION[0],
                "Config": {"max-size": LOG_ROTATION[1], "max-file": LOG_ROTATION[2]},
            },
        },
    }


def admin(
    client: Engine, layout: TeamLayout, request: dict[str, Any], container: str | None = None
) -> dict[str, Any]:
    """Apply one change to the door's records of people (`edge.py admin`, docs/team.md)
    and return its answer. `container`: the door's, when not `layout.door` (a swarm
    task's).

    Raises:
        DoorNotRunning: the door is stopped or missing.
        DoorRefused: the login service refused the request (its words).
    """
    door = container or layout.door
    info = client.find_container(door)
    if info is None or not info.running:
        raise DoorNotRunning(door)
    path = f"{EDGE_DIR}/admin-{secrets.token_hex(8)}.json"
    content = json.dumps(request).encode()
    put_files(client, door, {path: ContainerFile(content, 0o600, EDGE_UID)})
    output, exit_code = client.exec_run(
        door,
        ["/usr/bin/python3", "-I", EDGE_PROGRAM, "admin", path],
        user=EDGE_USER,
        workdir="/",
    )
    text = b"".join(output).decode(errors="replace").strip()
    code = exit_code()
    answer = _last_json(text)
    if code != 0 or answer is None or "error" in answer:
        message = (answer or {}).get("error") or text.splitlines()[-1:] or ["no answer"]
        raise DoorRefused(message if isinstance(message, str) else message[0])
    return answer


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None
