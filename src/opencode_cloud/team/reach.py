"""Whether a person's instance on the swarm can be reached, and why not (docs/cluster.md,
"When a node is lost"): what `occ status --user`, `occ node list` and `occ cluster status`
say of a person whose node is down or cut off.

A person's service is pinned to one node (their volumes are there). When that node stops
answering, the managers mark it `down` and replace its task by one that waits (`pending`,
no node) until the node is back: the person is unreachable until then, and their instance
starts there again, with the same volumes, once it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opencode_cloud.docker.swarm import (
    NODE_READY,
    SwarmNode,
    SwarmService,
    SwarmTask,
    pinned_node,
)
from opencode_cloud.instance import LABEL_PERSON

# A person whose node is not `ready`: nothing reaches their instance.
UNREACHABLE = "unreachable"
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")


@dataclass(frozen=True)
class Reach:
    """A person's instance on the swarm: the node it runs on (or is pinned to) and the task
    the swarm means to run for it."""

    person: str
    service: str
    node: SwarmNode | None
    task: SwarmTask | None

    @property
    def state(self) -> str:
        """`running`, `unreachable` (its node is not ready), or its task's state
        (`pending`, `preparing`, `starting`, `failed`, ...)."""
        if self.node is not None and self.node.state != NODE_READY:
            return UNREACHABLE
        return self.task.state if self.task is not None else "pending"

    @property
    def reachable(self) -> bool:
        return self.state == "running"

    @property
    def since(self) -> datetime | None:
        """When its task came to its state: for a person on a lost node, about when the
        managers found the node gone (they then replace the task by one that waits)."""
        if self.task is None or self.task.state == "running":
            return None
        found = _RFC3339.match(self.task.timestamp)
        if found is None:
            return None
        return datetime.strptime(found.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)

    def reason(self) -> str:
        """Why it is in its state, in a few words."""
        node = self.node
        where = node.hostname if node is not None else "no node"
        since = f" since {self.since:%H:%M} UTC" if self.since else ""
        if node is not None and self.state == UNREACHABLE:
            why = f" ({node.message})" if node.message else ""
            return f"node {where} is {node.state}{since}{why}"
        if self.state == "running":
            return f"running on node {where}"
        error = f": {self.task.error}" if self.task is not None and self.task.error else ""
        return f"its task is {self.state} on node {where}{since}{error}"

    def to_json(self) -> dict[str, Any]:
        node = self.node
        return {
            "person": self.person,
            "service": self.service,
            "state": self.state,
            "reachable": self.reachable,
            "reason": self.reason(),
            "since": self.since.isoformat() if self.since else None,
            "node": node.hostname if node else None,
            "node_id": node.id if node else None,
            "node_state": node.state if node else None,
            "node_message": node.message if node else None,
            "task_state": self.task.state if self.task else None,
            "task_error": (self.task.error or None) if self.task else None,
        }


def reaches(
    nodes: Sequence[SwarmNode], services: Sequence[SwarmService], tasks: Sequence[SwarmTask]
) -> dict[str, Reach]:
    """Each person's `Reach` by their name, from what the managers answer (`tasks`: those
    the swarm means to run)."""
    by_id = {node.id: node for node in nodes}
    newest: dict[str, SwarmTask] = {}
    for task in tasks:
        known = newest.get(task.service_id)
        if known is None or task.timestamp > known.timestamp:
            newest[task.service_id] = task
    found = {}
    for service in services:
        person = service.labels.get(LABEL_PERSON)
        if not person:
            continue
        current = newest.get(service.id)
        node_id = (current.node_id if current is not None else "") or pinned_node(service) or ""
        found[person] = Reach(person, service.name, by_id.get(node_id), current)
    return found
