"""`occ node drain NODE`: every person's instance on a node of the swarm moves, with its
data, to other nodes, one at a time (docs/cluster.md, "Draining a node").

For each person: their opencode's sessions are listed; their service is scaled to 0 (the
instance stops, its volumes are let go of); the volumes are copied to the node the
placement picks (`team/transfer.py`); the service is pinned there and started; the deep
check asks the moved opencode for its sessions and reads one made before. Only then are
the volumes on the drained node deleted. A copy or a check that fails puts the person
back on the drained node, running on their untouched volumes, deletes what the copy
wrote on the other node, and stops the drain. Once everyone is off, the node's
availability becomes `drain` (nothing of the swarm runs there any more), or `pause` when
the team's front door runs there. The door's records name each person's service, not a
node: signed-in people stay signed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from opencode_cloud.docker.errors import DockerError
from opencode_cloud.docker.swarm import (
    NODE_ACTIVE,
    NODE_READY,
    SwarmNode,
    pinned_node,
)
from opencode_cloud.instance import LABEL_INSTANCE, LABEL_PERSON, LABEL_ROLE
from opencode_cloud.team.cluster import DOOR_ROLE, person_json
from opencode_cloud.team.errors import (
    DoorNotRunning,
    DrainFailed,
    NodeNotFound,
    NodeNotUsable,
    NowhereToDrain,
    PersonNotAnswering,
    VolumesNotCopied,
    VolumesNotRemoved,
)
from opencode_cloud.team.rolling import deep_check
from opencode_cloud.team.transfer import copy_volumes, pin, volume_mounts

if TYPE_CHECKING:
    from opencode_cloud.team.cluster import Cluster

# Seconds a started opencode gets to answer its check.
CHECK_ANSWER_SECONDS = 120


class SessionCheck(Protocol):
    """The deep check of a person's opencode, wherever on the swarm it runs."""

    def sessions(self, name: str) -> list[str] | None:
        """The IDs of `name`'s sessions (None: their opencode does not answer)."""
        ...

    def check(self, name: str, before: list[str]) -> str | None:
        """What is wrong with `name`'s opencode once started (None: nothing): it must
        list its sessions, with the first of `before`, and read that one."""
        ...


class SwarmSessionCheck:
    """`SessionCheck` from inside the front door (`Cluster.ask_person`): the person's
    opencode asked over the team's overlay as the door asks it, with their internal
    password from the door's own records."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def sessions(self, name: str) -> list[str] | None:
        try:
            listed = person_json(self.cluster.ask_person, name, "/session")
        except (DockerError, DoorNotRunning, ValueError):
            return None
        if not isinstance(listed, list):
            return []
        return [str(s.get("id")) for s in listed if isinstance(s, dict)]

    def check(self, name: str, before: list[str]) -> str | None:
        try:
            self.cluster.wait_person(name, CHECK_ANSWER_SECONDS)
        except PersonNotAnswering as error:
            return str(error)
        return deep_check(
            lambda path: person_json(self.cluster.ask_person, name, path),
            [{"id": session} for session in before],
        )


@dataclass(frozen=True)
class Move:
    """One person's instance to move: from node `source` (ID) to `target`."""

    person: str
    source: str
    target: SwarmNode
    memory_bytes: int


@dataclass
class DrainResult:
    node: str
    availability: str
    moved: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Drain:
    """Moves the team's people off one node (module docstring)."""

    def __init__(
        self,
        cluster: Cluster,
        check: SessionCheck | None = None,
        on_step: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.cluster = cluster
        self.client = cluster.client
        self.check = check or SwarmSessionCheck(cluster)
        self._step = on_step

    def node(self, name: str) -> SwarmNode:
        """The node called `name` (its host name or ID).

        Raises:
            NotASwarmManager, NodeNotFound.
        """
        self.cluster.membership()
        for node in self.client.swarm_nodes():
            if name in (node.hostname, node.id):
                return node
        raise NodeNotFound(name)

    def plan(self, node: SwarmNode) -> list[Move]:
        """Where each person on `node` goes: in turn (by name), the other ready, active
        node with the most memory not promised yet, counting those placed before (the
        manager only, without a registry: no other node could get the image).

        Raises:
            NowhereToDrain.
        """
        services = self.client.swarm_services(
            labels=[LABEL_PERSON, f"{LABEL_INSTANCE}={self.cluster.instance.name}"]
        )
        here = [s for s in services if pinned_node(s) == node.id and s.labels.get(LABEL_PERSON)]
        rows = [r for r in self.cluster.nodes() if r.node.usable and r.node.id != node.id]
        if not self.cluster.config.cluster.registry:  # only the manager has the image
            manager = self.cluster.membership().node_id
            rows = [row for row in rows if row.node.id == manager]
        free = {row.node.id: row.memory_free for row in rows}
        by_id = {row.node.id: row.node for row in rows}
        moves = []
        for service in sorted(here, key=lambda s: s.labels[LABEL_PERSON]):
            name = service.labels[LABEL_PERSON]
            best = max(free, key=lambda i: (free[i], by_id[i].hostname), default=None)
            if best is None or free[best] < service.memory_reserved:
                most = free[best] if best is not None else 0
                raise NowhereToDrain(node.hostname, name, service.memory_reserved, most)
            free[best] -= service.memory_reserved
            moves.append(Move(name, node.id, by_id[best], service.memory_reserved))
        return moves

    def drain(self, name: str) -> DrainResult:
        """Move everyone off node `name`, then mark it drained.

        Raises:
            NotASwarmManager, NodeNotFound, NowhereToDrain and NodeNotUsable (the node is
            down; nothing changed), DrainFailed
            (the person it names runs on the node again; those before stay moved).
        """
        node = self.node(name)
        moves = self.plan(node)
        if moves and node.state != NODE_READY:
            # Nothing runs there to read the volumes: a backup is what is left.
            raise NodeNotUsable(
                node.hostname, f"{node.state}: its volumes cannot be read", down=True
            )
        if moves and node.availability != NODE_ACTIVE:
            # The copy runs on the node: it must take (one-shot) tasks while people leave.
            self._step(f"{node.hostname} is {node.availability}: active while people move")
            self.set_availability(node, NODE_ACTIVE)
        result = DrainResult(node.hostname, "")
        for move in moves:
            self._step(f"Moving {move.person} from {node.hostname} to {move.target.hostname}")
            try:
                seconds, checked = self._move(move)
            except _MoveFailed as failed:
                moved = [m["name"] for m in result.moved]
                raise DrainFailed(node.hostname, move.person, failed.problem, moved) from None
            self._step(f"{move.person} is on {move.target.hostname} (away {seconds:.1f} s)")
            result.moved.append(
                {
                    "name": move.person,
                    "from": node.hostname,
                    "to": move.target.hostname,
                    "seconds_away": round(seconds, 1),
                    "sessions_checked": checked,
                }
            )
        doors = self.client.swarm_services(
            labels=[f"{LABEL_ROLE}={DOOR_ROLE}", f"{LABEL_INSTANCE}={self.cluster.instance.name}"]
        )
        holds_door = any(pinned_node(s) == node.id for s in doors)
        result.availability = "pause" if holds_door else "drain"
        self.set_availability(self.node(node.id), result.availability)
        return result

    def set_availability(self, node: SwarmNode, availability: str) -> None:
        """Set the swarm's availability of `node` (`active`, `pause`, `drain`)."""
        version, spec = self.client.node_spec(node.id)
        if spec.get("Availability") != availability:
            self.client.update_node(node.id, version, {**spec, "Availability": availability})

    # -- one person ---------------------------------------------------------------------

    def _move(self, move: Move) -> tuple[float, int]:
        """Move one person; the seconds they were away, and how many sessions their
        opencode listed before (the check found the first of them after).

        Raises:
            _MoveFailed: they run on the source node again.
        """
        service = self.cluster.layout.person(move.person).container_name
        found = self.client.service_spec(service)
        if found is None:
            raise _MoveFailed(f"{service} is not a service")
        mounts = volume_mounts(found[1])
        volumes = [str(m["Source"]) for m in mounts]
        before = self.check.sessions(move.person) or []
        down = time.monotonic()
        pin(self.client, service, move.source, replicas=0)
        try:
            copy_volumes(self.cluster, mounts, move.source, move.target.id)
        except (VolumesNotCopied, DockerError) as error:
            # The engine broke the copy off: whether its receiver looked at the target's
            # volumes is unknown, and they may be the person's, so they stay.
            written = error.written if isinstance(error, VolumesNotCopied) else False
            self._back(service, move, volumes if written else [])
            raise _MoveFailed(_problem(error)) from error
        try:
            pin(self.client, service, move.target.id, replicas=1)
            found_problem = self.check.check(move.person, before)
        except DockerError as error:
            found_problem = _problem(error)
        if found_problem is not None:
            self._back(service, move, volumes, stop_target=True)
            raise _MoveFailed(found_problem)
        away = time.monotonic() - down
        try:
            self.cluster.remove_volumes(move.source, volumes)
        except VolumesNotRemoved as error:
            self._step(f"{move.person} moved, but their old volumes stay: {error.problem}")
        return away, len(before)

    def _back(
        self, service: str, move: Move, written: list[str], *, stop_target: bool = False
    ) -> None:
        """The person runs on the source node again; what the copy wrote goes."""
        self._step(f"{move.person} goes back to their volumes on the drained node")
        if stop_target:
            pin(self.client, service, move.target.id, replicas=0)
        pin(self.client, service, move.source, replicas=1)
        if written:
            try:
                self.cluster.remove_volumes(move.target.id, written)
            except VolumesNotRemoved as error:
                self._step(f"The partial copy on {move.target.hostname} stays: {error.problem}")


class _MoveFailed(Exception):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _problem(error: Exception) -> str:
    problem_of = getattr(error, "problem", None)
    return str(problem_of or getattr(error, "message", None) or error)
