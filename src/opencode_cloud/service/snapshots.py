"""Snapshots of opencode's data: copies of its volumes taken before a version change.

A snapshot is a set of volumes labelled with its id (the UTC time it was taken), the
image the data was made with and what the update went to. `occ update` takes one before
the new version touches the data and restores it when that version fails its check;
`occ rollback` restores the newest on demand; `occ status` lists them. The copies are
made by a short-lived helper container (`docker.helper.copy_volumes`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from opencode_cloud.defaults import IMAGE_NAME
from opencode_cloud.docker import image as images
from opencode_cloud.docker.errors import DockerError
from opencode_cloud.docker.volume import SESSION, VOLUME_SPECS
from opencode_cloud.instance import LABEL_MANAGED, LABEL_PREFIX
from opencode_cloud.opencode import AUTH_FILE, DATA_DIR, MIGRATED

if TYPE_CHECKING:
    from opencode_cloud.docker.engine import Engine
    from opencode_cloud.docker.models import ContainerInfo
    from opencode_cloud.instance import Instance

# The volumes a version change can rewrite: opencode's own data. Projects and the home are
# the user's files, which no opencode release migrates.
SNAPSHOT_KINDS = tuple(spec.kind for spec in VOLUME_SPECS if spec.mount_point in MIGRATED)
LABEL_SNAPSHOT = f"{LABEL_PREFIX}.snapshot"
LABEL_SNAPSHOT_IMAGE = f"{LABEL_PREFIX}.snapshot-image"
LABEL_SNAPSHOT_VERSION = f"{LABEL_PREFIX}.snapshot-opencode-version"
LABEL_SNAPSHOT_TARGET = f"{LABEL_PREFIX}.snapshot-target"
LABEL_SNAPSHOT_KIND = f"{LABEL_PREFIX}.snapshot-kind"


@dataclass
class Snapshot:
    """The data of one instance as it was before an update."""

    id: str
    image: str  # the image that data was made with
    opencode_version: str | None
    target: str  # what the update went to
    volumes: dict[str, str] = field(default_factory=dict)  # kind -> volume name
    size_bytes: int | None = None

    @property
    def created(self) -> str:
        from datetime import UTC, datetime  # here: `occ status` without snapshots needs none

        return datetime.strptime(self.id, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).isoformat()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "created": self.created}


def _now_id() -> str:
    """A snapshot's id: when it was taken, to the second, in UTC (sorts by time)."""
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def list_snapshots(client: Engine, instance: Instance, *, sizes: bool = True) -> list[Snapshot]:
    """The snapshots of `instance`, newest first, with their sizes unless `sizes` is
    False (the engine's disk-usage count is slow)."""
    found: dict[str, Snapshot] = {}
    for volume in client.list_volumes(labels=[*instance.label_filter(), LABEL_SNAPSHOT]):
        labels = volume.labels
        snap = found.setdefault(
            labels[LABEL_SNAPSHOT],
            Snapshot(
                id=labels[LABEL_SNAPSHOT],
                image=labels.get(LABEL_SNAPSHOT_IMAGE, ""),
                opencode_version=labels.get(LABEL_SNAPSHOT_VERSION) or None,
                target=labels.get(LABEL_SNAPSHOT_TARGET, ""),
            ),
        )
        snap.volumes[labels.get(LABEL_SNAPSHOT_KIND, "")] = volume.name
    snapshots = sorted(found.values(), key=lambda s: s.id, reverse=True)
    if not sizes:
        return snapshots
    names = [name for snap in snapshots for name in snap.volumes.values()]
    try:
        counted = client.volume_sizes(names) if names else {}
    except DockerError:  # the engine runs one disk-usage count at a time: sizes unknown
        counted = {}
    for snap in snapshots:
        known = [counted.get(n) for n in snap.volumes.values()]
        snap.size_bytes = sum(k for k in known if k is not None) if known else None
    return snapshots


def take_snapshot(client: Engine, instance: Instance, info: ContainerInfo, target: str) -> Snapshot:
    """Copy opencode's data volumes into new snapshot volumes (the container is stopped);
    `info` is the container whose data it is, `target` what the update goes to."""
    snap = Snapshot(
        id=_now_id(),
        image=info.image,
        opencode_version=info.labels.get(images.LABEL_OPENCODE_VERSION),
        target=target,
    )
    taken = {s.id for s in list_snapshots(client, instance, sizes=False)}
    while snap.id in taken:  # two updates in a second
        time.sleep(1)
        snap.id = _now_id()
    for kind in SNAPSHOT_KINDS:
        name = f"{instance.prefix}-snap-{snap.id}-{kind}".lower()
        labels = {
            **instance.labels(f"snapshot-{kind}"),
            LABEL_SNAPSHOT: snap.id,
            LABEL_SNAPSHOT_IMAGE: snap.image,
            LABEL_SNAPSHOT_VERSION: snap.opencode_version or "",
            LABEL_SNAPSHOT_TARGET: target,
            LABEL_SNAPSHOT_KIND: kind,
        }
        client.create_volume(name, labels)
        snap.volumes[kind] = name
    _copy(
        client,
        instance,
        [(instance.volume_name(k), snap.volumes[k]) for k in SNAPSHOT_KINDS],
        info.image,
    )
    return snap


def restore_snapshot(
    client: Engine, instance: Instance, snap: Snapshot, *, keep_keys: bool = False
) -> None:
    """Put a snapshot's data back into the live volumes (the container is gone), with the
    image the data was made with. `keep_keys`: opencode's key store stays as it is now (a
    key removed since the snapshot must not come back)."""
    keep = {instance.volume_name(SESSION.kind): [AUTH_FILE.removeprefix(DATA_DIR + "/")]}
    _copy(
        client,
        instance,
        [(snap.volumes[k], instance.volume_name(k)) for k in SNAPSHOT_KINDS],
        snap.image,
        replace=True,
        keep=keep if keep_keys else None,
    )


def _copy(
    client: Engine,
    instance: Instance,
    pairs: list[tuple[str, str]],
    image: str,
    *,
    replace: bool = False,
    keep: Mapping[str, Sequence[str]] | None = None,
) -> None:
    # Imported here: `occ status` lists snapshots and never copies one.
    from opencode_cloud.docker.helper import copy_volumes

    copy_volumes(client, instance, pairs, image=image, replace=replace, keep=keep)


def drop_snapshot(client: Engine, snap: Snapshot) -> None:
    for name in snap.volumes.values():
        client.remove_volume(name)


def prune_snapshots(client: Engine, instance: Instance, keep: int) -> tuple[list[str], list[str]]:
    """Keep the newest `keep` snapshots of `instance` (at least one), and the sandbox
    images some container or kept snapshot of any instance still needs.

    Returns:
        The ids of the snapshots removed, and the image tags removed.
    """
    removed_snapshots: list[str] = []
    for snap in list_snapshots(client, instance, sizes=False)[max(1, keep) :]:
        drop_snapshot(client, snap)
        removed_snapshots.append(snap.id)
    tags = [tag for image in client.list_images() for tag in image.tags]
    return removed_snapshots, remove_unneeded_images(client, tags)


def remove_unneeded_images(client: Engine, tags: list[str]) -> list[str]:
    """Remove the sandbox images among `tags` that no managed container and no snapshot of
    any instance needs (nor a derived image either of them needs as its base); the tags
    removed."""
    # Any instance's snapshot may need its image for a rollback, not only this one's.
    needed = {
        volume.labels.get(LABEL_SNAPSHOT_IMAGE, "")
        for volume in client.list_volumes(labels=[LABEL_SNAPSHOT])
    }
    for name in client.list_containers(labels=[f"{LABEL_MANAGED}=true"]):
        info = client.find_container(name)
        if info is not None:
            needed.add(info.image)
    for image in client.list_images(labels=[images.LABEL_BASE_REF]):
        if needed.intersection(image.tags):
            needed.add(image.labels[images.LABEL_BASE_REF])
    removed: list[str] = []
    for tag in tags:
        if tag.startswith(f"{IMAGE_NAME}:") and tag not in needed:
            try:
                client.remove_image(tag)
            except DockerError:
                continue  # a container of another tool or a stage still uses it
            removed.append(tag)
    return removed
