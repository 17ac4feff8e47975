"""One-shot services: a fixed command the tool wrote, run once on one node of the swarm.

`occ` reaches the manager's engine only. What must happen on another node (deleting or
copying a person's volumes) runs there as a service of one replica pinned to the node,
that never restarts, in the team's image, with no capabilities but those it names. Its
task's end (complete, or failed with the engine's error) is its answer; the service is
removed once it ends.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opencode_cloud.docker.swarm import SecretFile, secret_refs
from opencode_cloud.instance import LABEL_INSTANCE, LABEL_MANAGED, LABEL_ROLE

if TYPE_CHECKING:
    from opencode_cloud.docker.swarm import SwarmEngine, SwarmTask

# The states a task ends in (it runs no more, and will not).
TASK_ENDED = ("complete", "failed", "rejected", "shutdown", "orphaned", "remove")


@dataclass(frozen=True)
class OneShot:
    """What a one-shot service runs, and with what.

    Attributes:
        role: its LABEL_ROLE (and part of its name).
        command: the command line (a fixed script and checked arguments).
        user: `uid:gid` it runs as.
        cap_add: capabilities it keeps (all others dropped).
        mounts: the Engine API's mounts.
        network: an overlay it joins ("" for none).
        secrets: swarm secrets it reads as files.
    """

    role: str
    command: Sequence[str]
    user: str = "0:0"
    cap_add: Sequence[str] = ()
    mounts: Sequence[Mapping[str, Any]] = ()
    network: str = ""
    secrets: Sequence[SecretFile] = field(default=(), repr=False)
    memory_bytes: int = 64 * 2**20


class OneShots:
    """Runs `OneShot`s of instance `instance`'s team (names start with `prefix`) in
    `image` through the manager `client`."""

    def __init__(self, client: SwarmEngine, instance: str, prefix: str, image: str) -> None:
        self.client = client
        self.instance = instance
        self.prefix = prefix
        self.image = image

    def start(self, job: OneShot, node_id: str) -> str:
        """Create the service of `job` pinned to `node_id`; its name."""
        name = f"{self.prefix}-{job.role}-{secrets.token_hex(4)}"
        labels = {LABEL_MANAGED: "true", LABEL_INSTANCE: self.instance, LABEL_ROLE: job.role}
        self.client.create_service(
            {
                "Name": name,
                "Labels": labels,
                "TaskTemplate": {
                    "ContainerSpec": {
                        "Image": self.image,
                        "Labels": labels,
                        "Command": list(job.command),
                        "User": job.user,
                        # Not the image's health check: a task stays `starting` until it
                        # passes, and out of the overlay's DNS meanwhile.
                        "Healthcheck": {"Test": ["NONE"]},
                        "CapabilityDrop": ["ALL"],
                        "CapabilityAdd": list(job.cap_add),
                        "Mounts": [dict(m) for m in job.mounts],
                        "Secrets": secret_refs(job.secrets),
                    },
                    "Resources": {"Limits": {"MemoryBytes": job.memory_bytes, "Pids": 64}},
                    "RestartPolicy": {"Condition": "none"},
                    "Placement": {"Constraints": [f"node.id=={node_id}"]},
                    "Networks": [{"Target": job.network}] if job.network else [],
                },
                "Mode": {"Replicated": {"Replicas": 1}},
                "EndpointSpec": {"Mode": "dnsrr", "Ports": []},
            }
        )
        return name

    def wait(self, name: str, timeout: float) -> SwarmTask | None:
        """The ended task of service `name`, or None when it has not ended in `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            tasks = self.client.swarm_tasks(service=name, ended=True)
            ended = [t for t in tasks if t.state in TASK_ENDED]
            if ended:
                return ended[0]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)

    def run(self, job: OneShot, node_id: str, timeout: float) -> str | None:
        """Run `job` on `node_id` to its end, and remove its service: None when it
        completed, else what went wrong."""
        name = self.start(job, node_id)
        try:
            return problem(self.wait(name, timeout), timeout)
        finally:
            self.client.remove_service(name)


def problem(task: SwarmTask | None, timeout: float) -> str | None:
    """What went wrong with a one-shot's ended task (None: it completed)."""
    if task is None:
        return f"not done in {timeout:.0f} s"
    if task.state == "complete":
        return None
    return task.error or task.state
