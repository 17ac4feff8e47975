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
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from opencode_cloud.defaults import (
    INTERNAL_PASSWORD_PATH,
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
from opencode_cloud.docker.volume import VOLUME_SPECS
from opencode_cloud.instance import LABEL_CONFIG_HASH
from opencode_cloud.runtime import edge_admin
from opencode_cloud.team.errors import DoorNotRunning, DoorRefused
from opencode_cloud.team.layout import (
    DOOR_STATE_DIR,
    ENGINE_SOCKET,
    PERSON_PORT,
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
EDGE_USER = edge_admin.EDGE_USER
# The starter's template of a person's instance (sandbox/starter.py): root's, 0600, so the
# door, which mounts the same volume, can neither read the people's environment in it nor
# change it.
TEMPLATE_PATH = f"{STARTER_DIR}/person.json"
# People's instances the starter makes at most, counting those the tool made: a door
# that is not itself any more cannot fill the engine with containers.
MAX_PEOPLE_AT_SIGN_IN = 50


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


def person_template(layout: TeamLayout, spec: ContainerSpec, placeholder: str) -> ContainerFile:
    """The starter's template: `spec`, a person's container made for the name
    `placeholder`, which the starter replaces by the new person's name everywhere."""
    person = layout.person(placeholder)
    body = spec.create_body()
    # Its digest is of the placeholder's spec: a made container would carry a wrong one.
    body["Labels"] = {k: v for k, v in body["Labels"].items() if k != LABEL_CONFIG_HASH}
    template = {
        "placeholder": placeholder,
        "body": body,
        "volumes": [
            {"Name": person.volume_name(v.kind), "Labels": person.labels(f"volume-{v.kind}")}
            for v in VOLUME_SPECS
        ],
        "network": {"Name": layout.person_network(placeholder), "Labels": person.labels("network")},
        "door": layout.door,
        "port": PERSON_PORT,
        "password_path": INTERNAL_PASSWORD_PATH,
        "max_people": MAX_PEOPLE_AT_SIGN_IN,
    }
    return ContainerFile(json.dumps(template).encode(), 0o600, 0)


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
    try:
        return edge_admin.ask(
            lambda files: put_files(client, door, files),
            lambda argv: client.exec_run(door, argv, user=EDGE_USER, workdir="/"),
            "admin",
            request,
        )
    except edge_admin.EdgeRefused as exc:
        raise DoorRefused(str(exc)) from None
