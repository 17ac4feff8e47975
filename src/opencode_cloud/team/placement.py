"""Where a team's front door and people's instances run: `Placement`.

`Team` (team.py) speaks to one `Placement`: the engine `occ` talks to
(`team.EnginePlacement`, every container on that one machine), or a Docker Swarm through
that engine as its manager (`SwarmPlacement`, through `Cluster`; docs/cluster.md).
`Team.placement` chooses: the swarm when the configuration sets `cluster` and the engine
is an active swarm manager.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from opencode_cloud.docker.swarm import pinned_node
from opencode_cloud.instance import LABEL_INSTANCE, LABEL_PERSON
from opencode_cloud.team.errors import NoBackupOnCluster
from opencode_cloud.team.reach import reaches

if TYPE_CHECKING:
    from opencode_cloud.access.tls import TlsMaterial
    from opencode_cloud.team.cluster import Cluster
    from opencode_cloud.team.people import PersonLimits


@dataclass(frozen=True)
class InstanceState:
    """A person's instance as `occ user list` shows it."""

    state: str  # running, exited, ... (the container's), or the swarm task's
    memory_in_use: int | None  # None: not known (not running, or on another node)
    memory_limit: int


class Placement(Protocol):
    """Where the door and each person's instance run, and how the door's records are
    reached."""

    def url(self) -> str:
        """Where people sign in."""
        ...

    def start_door(self, on_step: Callable[[str], None]) -> str:
        """Bring the door up; its URL."""
        ...

    def door_state(self) -> str:
        """The door's state: running, exited, ..., or missing."""
        ...

    def admin(self, request: dict[str, Any]) -> dict[str, Any]:
        """One change to the people's records in the door (`door.admin`)."""
        ...

    def has_instance(self, name: str) -> bool:
        """Whether person `name` has an instance."""
        ...

    def add_person(
        self, name: str, limits: PersonLimits, internal: str, *, near_service: bool = False
    ) -> str:
        """Make person `name`'s instance with `limits` and the internal password
        `internal`; where the door reaches it (its upstream). `near_service`: where the
        single-user service's volumes are (the first person's, copied there)."""
        ...

    def remove_person(self, name: str, *, volumes: bool) -> list[str]:
        """Remove person `name`'s instance (their volumes too with `volumes`); the names
        of what was removed."""
        ...

    def stop_person(self, name: str) -> None:
        """Stop person `name`'s instance (a disabled person's), if it can be stopped."""
        ...

    def states(self) -> dict[str, InstanceState]:
        """Each person's instance by their name."""
        ...

    def check_backup(self, name: str) -> None:
        """Refuse a final backup of `name`'s volumes that this engine cannot read.

        Raises:
            NoBackupOnCluster.
        """
        ...


class SwarmPlacement:
    """The door as a service on the manager, each person as a service pinned to a node.
    `tls_material`: the certificate the configuration asks the door to serve (None: TLS
    is off)."""

    def __init__(
        self, cluster: Cluster, tls_material: Callable[[], TlsMaterial | None] = lambda: None
    ) -> None:
        self.cluster = cluster
        self.tls_material = tls_material

    def url(self) -> str:
        return self.cluster.door_url()

    def start_door(self, on_step: Callable[[str], None]) -> str:
        on_step(f"Starting the front door on the swarm's manager ({self.cluster.client.host}).")
        material = self.tls_material()
        return self.cluster.start_door(tls_files=material.container_files() if material else None)

    def door_state(self) -> str:
        if self.cluster.door_running():
            return "running"
        return "not running" if self.cluster.has_door() else "missing"

    def admin(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.cluster.door_admin(request)

    def has_instance(self, name: str) -> bool:
        return self.cluster.person_service(name) is not None

    def add_person(
        self, name: str, limits: PersonLimits, internal: str, *, near_service: bool = False
    ) -> str:
        return self.cluster.run_person(name, internal, limits, on_manager=near_service).upstream

    def remove_person(self, name: str, *, volumes: bool) -> list[str]:
        return self.cluster.remove_person(name, volumes=volumes)

    def stop_person(self, name: str) -> None:
        """Nothing: on a swarm people's instances run all the time (the door refuses a
        disabled person's requests)."""

    def states(self) -> dict[str, InstanceState]:
        client = self.cluster.client
        services = client.swarm_services(labels=[f"{LABEL_INSTANCE}={self.cluster.instance.name}"])
        # Their task's state, or `unreachable` on a node that is down (team/reach.py).
        found = reaches(client.swarm_nodes(), services, client.swarm_tasks())
        return {
            s.labels[LABEL_PERSON]: InstanceState(
                found[s.labels[LABEL_PERSON]].state, None, s.memory_reserved
            )
            for s in services
            if s.labels.get(LABEL_PERSON)
        }

    def check_backup(self, name: str) -> None:
        service = self.cluster.person_service(name)
        node_id = pinned_node(service) if service is not None else None
        if node_id is None or node_id == self.cluster.membership().node_id:
            return
        nodes = {n.id: n.hostname for n in self.cluster.client.swarm_nodes()}
        raise NoBackupOnCluster(name, nodes.get(node_id, node_id))
