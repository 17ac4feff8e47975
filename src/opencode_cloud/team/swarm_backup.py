"""Backups and restores of people whose volumes are on another node of the swarm
(docs/cluster.md, "Backups and restores on the swarm").

`occ` reads and writes volumes through the manager's engine only, in the archive format
of one machine (`opencode_cloud.backup`). So a person's volumes come to the manager for
the time of a backup: their instance stops, its volumes are copied to the manager
(`team/transfer.py`), it starts again on its node at once, and the backup is written of
the copy, which is then deleted. A restore goes the other way: the backup is unpacked
into new volumes on the manager, copied to the node chosen, deleted on the manager, and
the person's service pinned to that node and started there.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from opencode_cloud.docker.errors import DockerError, VolumeInUse
from opencode_cloud.docker.swarm import NODE_READY, pinned_node
from opencode_cloud.team.errors import NodeNotUsable, PersonNotFound, VolumesNotCopied
from opencode_cloud.team.transfer import copy_volumes, pin, volume_mounts

if TYPE_CHECKING:
    from opencode_cloud.team.cluster import Cluster
    from opencode_cloud.team.drain import SessionCheck

# Seconds a copy's removed service gets to let go of the volumes it made on the manager.
VOLUME_RELEASE_TIMEOUT = 30.0


@contextlib.contextmanager
def volumes_on_manager(
    cluster: Cluster, name: str, on_step: Callable[[str], None] = lambda _m: None
) -> Iterator[bool]:
    """For the block, person `name`'s volumes are on the manager, where a backup reads
    them: copied there from their node while their instance is stopped (it starts again
    as soon as the copy is done), and deleted there afterwards. Yields whether a copy was
    made (False: they are on the manager, or have no service).

    Raises:
        VolumesNotCopied (their volumes on the manager are left as they were), DockerError.
    """
    service = cluster.person_service(name)
    node_id = pinned_node(service) if service is not None else None
    manager = cluster.membership().node_id
    if service is None or node_id is None or node_id == manager:
        yield False
        return
    found = cluster.client.service_spec(service.name)
    mounts = volume_mounts(found[1]) if found else []
    volumes = [str(m["Source"]) for m in mounts]
    on_step(f"Copying {name}'s volumes to the manager (their instance stops meanwhile)")
    pin(cluster.client, service.name, node_id, replicas=0)
    try:
        copy_volumes(cluster, mounts, node_id, manager)
    except VolumesNotCopied as error:
        if error.written:
            _remove_here(cluster, volumes)
        raise
    finally:
        pin(cluster.client, service.name, node_id, replicas=1, wait=False)
    try:
        yield True
    finally:
        _remove_here(cluster, volumes)


def restore_on_node(
    cluster: Cluster,
    name: str,
    node: str,
    restore_here: Callable[[], None],
    check: SessionCheck,
    on_step: Callable[[str], None] = lambda _m: None,
) -> str:
    """Bring person `name` back on node `node` (its name or ID) from a backup: their
    service stops (on its old node, if that answers), `restore_here` unpacks the backup
    into their volumes on the manager, they are copied to `node` and deleted on the
    manager, and the service runs on `node`. The node's name.

    Their volumes on the old node are left alone (it may be gone; `occ user remove
    --volumes` or `occ node drain` deal with them).

    Raises:
        PersonNotFound, NodeNotFound, NodeNotUsable, VolumesNotCopied, DockerError, and
        whatever `restore_here` raises; `node` then has none of their volumes, and (but
        for a DockerError once they were copied) the person is back on their old node.
    """
    from opencode_cloud.team.drain import Drain

    service = cluster.person_service(name)
    if service is None:
        raise PersonNotFound(name)
    target = Drain(cluster).node(node)
    if not target.usable:
        raise NodeNotUsable(target.hostname, f"{target.state}, {target.availability}")
    nodes = {n.id: n for n in cluster.client.swarm_nodes()}
    old = pinned_node(service) or target.id
    old_ready = old in nodes and nodes[old].state == NODE_READY
    on_step(f"Stopping {name}'s instance")
    pin(cluster.client, service.name, old, replicas=0, wait=old_ready)
    found = cluster.client.service_spec(service.name)
    mounts = volume_mounts(found[1]) if found else []
    volumes = [str(m["Source"]) for m in mounts]
    manager = cluster.membership().node_id
    try:
        restore_here()
        if target.id != manager:
            on_step(f"Copying the restored volumes to {target.hostname}")
            try:
                copy_volumes(cluster, mounts, manager, target.id)
            except VolumesNotCopied as error:
                if error.written:
                    cluster.remove_volumes(target.id, volumes)
                raise
            finally:
                _remove_here(cluster, volumes)
    except BaseException:
        # Nothing of the backup runs anywhere: the person goes back to where they were.
        pin(cluster.client, service.name, old, replicas=1, wait=False)
        raise
    on_step(f"Starting {name} on {target.hostname}")
    pin(cluster.client, service.name, target.id, replicas=1)
    problem = check.check(name, [])
    if problem is not None:
        raise DockerError(f"{name} runs on {target.hostname}, but {problem}")
    return target.hostname


def _remove_here(cluster: Cluster, volumes: list[str]) -> None:
    """Delete the copies on the manager (one already gone is fine), again while the
    copy's removed service still lets go of them.

    Raises:
        VolumeInUse: still, after VOLUME_RELEASE_TIMEOUT.
    """
    deadline = time.monotonic() + VOLUME_RELEASE_TIMEOUT
    for volume in volumes:
        while cluster.client.inspect_volume(volume) is not None:
            try:
                cluster.client.remove_volume(volume)
            except VolumeInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
