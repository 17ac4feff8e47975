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

from opencode_cloud.docker.swarm import SwarmService, pinned_node
from opencode_cloud.docker.volume import volume_names
from opencode_cloud.instance import LABEL_INSTANCE, LABEL_PERSON
from opencode_cloud.team.errors import NoBackupOnCluster
from opencode_cloud.team.reach import reaches

# Seconds the team's services get to stop (opencode ends its work first).
STOP_TIMEOUT = 120.0

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
    node: str | None = None  # the swarm node it runs on (None: the engine's own)


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

    def volumes_left(self, name: str) -> list[str]:
        """Where volumes of the name `name` are (a removed person's, left there): this
        engine, or the swarm's nodes that hold them; empty when none is."""
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

    def resume_person(self, name: str) -> None:
        """Let person `name`'s instance run again (an enabled person's)."""
        ...

    def end_connections(self, name: str) -> None:
        """End what person `name`'s browsers hold open in their instance (their sessions
        were revoked)."""
        ...

    def stop_team(self) -> list[str]:
        """Stop the door and everyone's instance (data kept); the names stopped."""
        ...

    def remove_door(self) -> None:
        """Remove the door (team mode turned off); people's instances and every volume
        stay."""
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
        """The door (made when missing), then every person not disabled scaled to one
        task: on a swarm people's instances run all the time."""
        on_step(f"Starting the front door on the swarm's manager ({self.cluster.client.host}).")
        material = self.tls_material()
        url = self.cluster.start_door(tls_files=material.container_files() if material else None)
        people = self.cluster.door_admin({"op": "list"}).get("people") or []
        disabled = {str(p.get("name")) for p in people if p.get("disabled")}
        for service in self._team_services():
            name = service.labels.get(LABEL_PERSON)
            if name and name not in disabled and not service.replicas:
                self.cluster.change_service(service.name, replicas=1)
        return url

    def door_state(self) -> str:
        if self.cluster.door_running():
            return "running"
        return "not running" if self.cluster.has_door() else "missing"

    def admin(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.cluster.door_admin(request)

    def has_instance(self, name: str) -> bool:
        return self.cluster.person_service(name) is not None

    def volumes_left(self, name: str) -> list[str]:
        return self.cluster.nodes_with_volumes(volume_names(self.cluster.layout.person(name)))

    def add_person(
        self, name: str, limits: PersonLimits, internal: str, *, near_service: bool = False
    ) -> str:
        return self.cluster.run_person(name, internal, limits, on_manager=near_service).upstream

    def remove_person(self, name: str, *, volumes: bool) -> list[str]:
        return self.cluster.remove_person(name, volumes=volumes)

    def stop_person(self, name: str) -> None:
        """Scale their service to 0: on a swarm no starter starts it at a sign-in, so a
        disabled person's instance stays stopped until `resume_person`."""
        self.cluster.change_service(self.cluster.layout.person(name).container_name, replicas=0)

    def resume_person(self, name: str) -> None:
        self.cluster.change_service(self.cluster.layout.person(name).container_name, replicas=1)

    def end_connections(self, name: str) -> None:
        """A new task of their service: the old one's connections end, and they can
        sign in again at once."""
        person = self.cluster.layout.person(name).container_name
        self.cluster.change_service(person, restart=True)

    def stop_team(self) -> list[str]:
        """Every service of the team scaled to 0 (volumes, secrets and nodes kept)."""
        stopped = []
        for service in self._team_services():
            if service.replicas:
                self.cluster.change_service(service.name, replicas=0)
                stopped.append(service.name)
        for name in stopped:
            self.cluster.wait_stopped(name, STOP_TIMEOUT)
        return stopped

    def start_team(self, on_step: Callable[[str], None]) -> str:
        """The door, then everyone not disabled, scaled back to one task; waits until
        the door takes requests and each person's opencode answers. The URL."""
        layout = self.cluster.layout
        if self.cluster.has_door():
            self.cluster.change_service(layout.door, replicas=1)
        url = self.start_door(on_step)
        for name, state in sorted(self.states().items()):
            if state.state == "stopped":  # disabled
                continue
            on_step(f"Waiting for {name} ...")
            self.cluster.wait_person(name)
        return url

    def remove_door(self) -> None:
        """The door's service and secrets go; people's services stay, stopped (like
        stopped containers on one machine: they keep the node their volumes are on)."""
        self.cluster.remove_door()

    def _team_services(self) -> list[SwarmService]:
        client = self.cluster.client
        return client.swarm_services(labels=[f"{LABEL_INSTANCE}={self.cluster.instance.name}"])

    def states(self) -> dict[str, InstanceState]:
        client = self.cluster.client
        services = self._team_services()
        # Their task's state, `unreachable` on a node that is down (team/reach.py), or
        # `stopped` for a service scaled to 0.
        found = reaches(client.swarm_nodes(), services, client.swarm_tasks())
        states = {}
        for s in services:
            person = s.labels.get(LABEL_PERSON)
            if not person:
                continue
            reach = found[person]
            node = reach.node.hostname if reach.node is not None else pinned_node(s)
            state = reach.state if s.replicas else "stopped"
            states[person] = InstanceState(state, None, s.memory_reserved, node)
        return states

    def check_backup(self, name: str) -> None:
        service = self.cluster.person_service(name)
        node_id = pinned_node(service) if service is not None else None
        if node_id is None or node_id == self.cluster.membership().node_id:
            return
        nodes = {n.id: n.hostname for n in self.cluster.client.swarm_nodes()}
        raise NoBackupOnCluster(name, nodes.get(node_id, node_id))
