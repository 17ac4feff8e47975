"""Every Docker name of a team, derived from its instance (docs/team.md, "Names")."""

from __future__ import annotations

from dataclasses import dataclass

from opencode_cloud.defaults import EDGE_STATE_DIR
from opencode_cloud.docker.volume import VOLUME_SPECS
from opencode_cloud.instance import Instance

# Where the front door's login service keeps people and sessions (a volume: they survive
# re-creating the door), and where the starter's socket is (shared by door and starter).
DOOR_STATE_DIR = EDGE_STATE_DIR
STARTER_DIR = "/run/opencode-cloud/starter"
STARTER_PROGRAM = "/usr/local/lib/opencode-cloud/starter.py"
ENGINE_SOCKET = "/var/run/docker.sock"
# opencode's port in a person's container, on the person's network.
PERSON_PORT = 4096


@dataclass(frozen=True)
class TeamLayout:
    """The names of one instance's team: `instance` is the service's own (no person)."""

    instance: Instance

    @property
    def prefix(self) -> str:
        return self.instance.service_prefix

    @property
    def door(self) -> str:
        return f"{self.prefix}-door"

    @property
    def door_state_volume(self) -> str:
        return f"{self.prefix}-door-state"

    @property
    def door_network(self) -> str:
        return f"{self.prefix}-door-net"

    @property
    def starter(self) -> str:
        return f"{self.prefix}-door-starter"

    @property
    def starter_volume(self) -> str:
        return f"{self.prefix}-door-starter"

    @property
    def cluster_network(self) -> str:
        """The overlay network of a team on a swarm: the door reaches people over it."""
        return f"{self.prefix}-cluster"

    def person(self, name: str) -> Instance:
        """The instance of person `name`: their container and volumes."""
        return self.instance.for_person(name)

    def person_network(self, name: str) -> str:
        return f"{self.person(name).prefix}-net"

    def person_volumes(self, name: str) -> list[str]:
        person = self.person(name)
        return [person.volume_name(spec.kind) for spec in VOLUME_SPECS]

    def upstream(self, name: str) -> str:
        """Where the door reaches the person's opencode: their container, by name, on
        their network."""
        return f"{self.person(name).container_name}:{PERSON_PORT}"
