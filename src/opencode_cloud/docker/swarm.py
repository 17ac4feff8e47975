"""A Docker Swarm as the engine's manager sees it: its nodes, services and tasks.

`occ` talks to one manager only. What the engine answers is parsed here into typed values;
the calls are `DockerClient`'s (`SwarmEngine` names the ones the cluster uses, so the
cluster's logic is tested on an in-memory swarm).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from opencode_cloud.docker.engine import Engine

if TYPE_CHECKING:
    from opencode_cloud.docker.spec import ContainerSpec

# Docker's node states: `ready` is the only one that runs tasks.
NODE_READY = "ready"
# Seconds between a service's health checks (`service_body`).
HEALTH_INTERVAL = 5.0
# Availability: `active` takes new tasks, `pause` keeps its own, `drain` moves them away.
NODE_ACTIVE = "active"


@dataclass(frozen=True)
class SwarmMembership:
    """This engine's place in a swarm (`docker info`'s Swarm part).

    Attributes:
        state: `inactive` (no swarm), `pending`, `active`, `error` or `locked`.
        manager: the engine is a manager (it can answer for the whole swarm).
        node_id: its node's ID ("" outside a swarm).
        address: the address it advertises to the other nodes.
        cluster_id: the swarm's ID (only managers know it).
    """

    state: str
    manager: bool
    node_id: str = ""
    address: str = ""
    cluster_id: str = ""


@dataclass(frozen=True)
class SwarmNode:
    """One machine of the swarm, as its managers know it."""

    id: str
    hostname: str
    role: str  # manager | worker
    state: str  # ready | down | unknown | disconnected
    availability: str  # active | pause | drain
    address: str
    memory_bytes: int
    cpus: float
    leader: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    message: str = ""  # why it is in its state, as the managers say (`heartbeat failure`)

    @property
    def usable(self) -> bool:
        """It runs tasks and takes new ones."""
        return self.state == NODE_READY and self.availability == NODE_ACTIVE


@dataclass(frozen=True)
class SwarmTask:
    """One task (a container the swarm runs, or means to run) of a service."""

    service_id: str
    node_id: str
    state: str  # running, pending, failed, shutdown, ...
    desired_state: str
    memory_reserved: int = 0
    error: str = ""
    timestamp: str = ""  # when it came to its state (RFC 3339, UTC)
    image: str = ""  # what its container runs


@dataclass(frozen=True)
class SwarmService:
    """A service: what it runs, where it may run and what it publishes."""

    id: str
    name: str
    labels: Mapping[str, str]
    constraints: tuple[str, ...] = ()
    memory_reserved: int = 0
    # (published, target) of each port published on the node's own address (mode=host).
    host_ports: tuple[tuple[int, int], ...] = ()
    replicas: int = 1  # how many tasks it wants run (0: stopped)


class SwarmEngine(Engine, Protocol):
    """An engine that is a swarm manager: the engine's calls and the swarm's
    (`DockerClient` has them all; so has the tests' in-memory engine)."""

    def swarm_membership(self) -> SwarmMembership: ...

    def swarm_nodes(self) -> list[SwarmNode]: ...

    def node_spec(self, node_id: str) -> tuple[int, dict[str, Any]]: ...

    def update_node(self, node_id: str, version: int, spec: Mapping[str, Any]) -> None: ...

    def swarm_services(self, *, labels: Sequence[str] = ()) -> list[SwarmService]: ...

    def swarm_tasks(
        self, *, service: str | None = None, ended: bool = False
    ) -> list[SwarmTask]: ...

    def create_overlay_network(self, name: str, labels: Mapping[str, str]) -> None: ...

    def push(self, repository: str, tag: str) -> Iterator[dict[str, Any]]: ...

    def create_secret(self, name: str, data: bytes, labels: Mapping[str, str]) -> str: ...

    def create_service(self, body: Mapping[str, Any]) -> str: ...

    def remove_service(self, name: str) -> bool: ...

    def service_spec(self, name: str) -> tuple[int, dict[str, Any]] | None: ...

    def update_service(self, name: str, version: int, spec: Mapping[str, Any]) -> None: ...

    def list_secrets(self, *, labels: Sequence[str] = ()) -> list[str]: ...

    def remove_secret(self, name: str) -> None: ...


# --------------------------------------------------------------------------- parsing


def parse_membership(info: Mapping[str, Any]) -> SwarmMembership:
    """The Swarm part of `GET /info`."""
    swarm = info.get("Swarm") or {}
    return SwarmMembership(
        state=str(swarm.get("LocalNodeState") or "inactive"),
        manager=bool(swarm.get("ControlAvailable")),
        node_id=str(swarm.get("NodeID") or ""),
        address=str(swarm.get("NodeAddr") or ""),
        cluster_id=str((swarm.get("Cluster") or {}).get("ID") or ""),
    )


def parse_node(data: Mapping[str, Any]) -> SwarmNode:
    """One entry of `GET /nodes`."""
    description = data.get("Description") or {}
    resources = description.get("Resources") or {}
    spec = data.get("Spec") or {}
    status = data.get("Status") or {}
    manager = data.get("ManagerStatus") or {}
    return SwarmNode(
        id=str(data.get("ID") or ""),
        hostname=str(description.get("Hostname") or ""),
        role=str(spec.get("Role") or "worker"),
        state=str(status.get("State") or "unknown"),
        availability=str(spec.get("Availability") or NODE_ACTIVE),
        address=str(status.get("Addr") or ""),
        memory_bytes=int(resources.get("MemoryBytes") or 0),
        cpus=int(resources.get("NanoCPUs") or 0) / 1e9,
        leader=bool(manager.get("Leader")),
        labels=dict(spec.get("Labels") or {}),
        message=str(status.get("Message") or ""),
    )


def _memory_reservation(task_spec: Mapping[str, Any]) -> int:
    reservations = (task_spec.get("Resources") or {}).get("Reservations") or {}
    return int(reservations.get("MemoryBytes") or 0)


def parse_task(data: Mapping[str, Any]) -> SwarmTask:
    """One entry of `GET /tasks`."""
    status = data.get("Status") or {}
    return SwarmTask(
        service_id=str(data.get("ServiceID") or ""),
        node_id=str(data.get("NodeID") or ""),
        state=str(status.get("State") or ""),
        desired_state=str(data.get("DesiredState") or ""),
        memory_reserved=_memory_reservation(data.get("Spec") or {}),
        error=str(status.get("Err") or ""),
        timestamp=str(status.get("Timestamp") or ""),
        image=str(((data.get("Spec") or {}).get("ContainerSpec") or {}).get("Image") or ""),
    )


def parse_service(data: Mapping[str, Any]) -> SwarmService:
    """One entry of `GET /services`."""
    spec = data.get("Spec") or {}
    task = spec.get("TaskTemplate") or {}
    ports = ((spec.get("EndpointSpec") or {}).get("Ports")) or []
    return SwarmService(
        id=str(data.get("ID") or ""),
        name=str(spec.get("Name") or ""),
        labels=dict(spec.get("Labels") or {}),
        constraints=tuple((task.get("Placement") or {}).get("Constraints") or ()),
        memory_reserved=_memory_reservation(task),
        host_ports=tuple(
            (int(p["PublishedPort"]), int(p["TargetPort"]))
            for p in ports
            if p.get("PublishMode") == "host" and p.get("PublishedPort")
        ),
        replicas=int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)),
    )


def pinned_node(service: SwarmService) -> str | None:
    """The node ID a service is pinned to by a `node.id==...` constraint, if any."""
    for constraint in service.constraints:
        key, sep, value = constraint.replace(" ", "").partition("==")
        if sep and key == "node.id":
            return value
    return None


# --------------------------------------------------------------------------- services


@dataclass(frozen=True)
class SecretFile:
    """A swarm secret mounted into a service's containers as a read-only file: root's
    and 0400 unless said otherwise."""

    secret_id: str
    secret_name: str
    target: str  # an absolute path in the container
    owner: int = 0  # its uid and gid
    mode: int = 0o400


def secret_refs(secrets: Sequence[SecretFile]) -> list[dict[str, Any]]:
    """A service's `Secrets`: each secret as a file of the path, owner and mode given."""
    return [
        {
            "File": {"Name": s.target, "UID": str(s.owner), "GID": str(s.owner), "Mode": s.mode},
            "SecretID": s.secret_id,
            "SecretName": s.secret_name,
        }
        for s in secrets
    ]


def service_body(
    spec: ContainerSpec,
    *,
    node_id: str,
    network: str,
    secrets: Sequence[SecretFile] = (),
    memory_reserved: int = 0,
    host_ports: Sequence[tuple[int, int]] = (),
) -> dict[str, Any]:
    """The Engine API's `POST /services/create` body running `spec` as one replica
    pinned to `node_id` (its volumes live there), on the overlay `network` with a DNS
    name and no VIP (`dnsrr`), its secrets as files, and `host_ports` (published,
    target) published on its node's own addresses (host mode: no routing mesh).

    What a swarm service cannot carry of the container is left out: its published port
    (a person's has none), `no-new-privileges` (not in the swarm's API before 1.46).
    """
    body = spec.create_body()
    host = body["HostConfig"]
    container: dict[str, Any] = {
        "Image": spec.image,
        "Hostname": body["Hostname"],
        "Env": body["Env"],
        "Labels": body["Labels"],
        "Dir": body["WorkingDir"],
        "StopSignal": body["StopSignal"],
        "StopGracePeriod": int(spec.stop_timeout * 1e9),
        # The image's own check, more often: a task is in the overlay's DNS (the door
        # finds it) only once its first check passed, which the image's interval delays.
        "Healthcheck": {"Interval": int(HEALTH_INTERVAL * 1e9)},
        "Mounts": host["Mounts"],
        "CapabilityDrop": host["CapDrop"],
        "CapabilityAdd": host["CapAdd"],
        "Sysctls": host.get("Sysctls") or {},
        "Secrets": secret_refs(secrets),
    }
    limits = {"MemoryBytes": host["Memory"], "Pids": host["PidsLimit"]}
    if host["NanoCpus"]:
        limits["NanoCPUs"] = host["NanoCpus"]
    return {
        "Name": spec.name,
        "Labels": body["Labels"],
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": {
                "Limits": limits,
                "Reservations": {"MemoryBytes": memory_reserved or host["Memory"]},
            },
            "RestartPolicy": {"Condition": "any", "Delay": 1_000_000_000},
            "Placement": {"Constraints": [f"node.id=={node_id}"]},
            "Networks": [{"Target": network}],
            "LogDriver": {
                "Name": host["LogConfig"]["Type"],
                "Options": host["LogConfig"]["Config"],
            },
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        "EndpointSpec": {
            "Mode": "dnsrr",
            "Ports": [
                {
                    "Protocol": "tcp",
                    "TargetPort": target,
                    "PublishedPort": published,
                    "PublishMode": "host",
                }
                for published, target in host_ports
            ],
        },
    }
