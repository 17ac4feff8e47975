"""Changing opencode's version without risking the data: update, rollback, snapshots.

opencode changes its database between releases, and a release that cannot read it still
answers its health check. So a version change here is one path, `update`:

1. the new image is built or pulled while the old version keeps serving;
2. the old container is stopped and the volumes opencode writes its data into (session,
   state, config) are copied into snapshot volumes;
3. the new version starts on the live volumes;
4. it is checked deeply: health, the list of sessions, and a session made before;
5. if that check fails, the old image and the snapshot's data come back, and the update
   fails with what went wrong.

`rollback` returns to the version before the last update, and its snapshot, on demand.
Snapshots of the last few updates are kept (the `keep_snapshots` setting); images that no
kept snapshot and no container needs are removed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opencode_cloud.defaults import IMAGE_NAME
from opencode_cloud.docker import container as containers
from opencode_cloud.docker import image as images
from opencode_cloud.docker.errors import DockerError
from opencode_cloud.docker.volume import copy_volumes
from opencode_cloud.errors import OpencodeCloudError
from opencode_cloud.instance import LABEL_MANAGED, LABEL_PREFIX

if TYPE_CHECKING:
    from opencode_cloud.config.schema import Config
    from opencode_cloud.docker.engine import Engine
    from opencode_cloud.docker.models import ContainerInfo
    from opencode_cloud.docker.progress import ProgressReporter
    from opencode_cloud.instance import Instance
    from opencode_cloud.service import Service

# The volumes a version change can rewrite: opencode's own data. Projects and the home are
# the user's files, which no opencode release migrates.
SNAPSHOT_KINDS = ("session", "state", "config")
LABEL_SNAPSHOT = f"{LABEL_PREFIX}.snapshot"
LABEL_SNAPSHOT_IMAGE = f"{LABEL_PREFIX}.snapshot-image"
LABEL_SNAPSHOT_VERSION = f"{LABEL_PREFIX}.snapshot-opencode-version"
LABEL_SNAPSHOT_TARGET = f"{LABEL_PREFIX}.snapshot-target"
LABEL_SNAPSHOT_KIND = f"{LABEL_PREFIX}.snapshot-kind"


class UpdateFailed(OpencodeCloudError):
    """The new version did not work; `rolled_back` says whether the old one is back."""

    def __init__(self, target: str, problem: str, *, rolled_back: bool, previous: str) -> None:
        back = f"; {previous} and its data are back" if rolled_back else ""
        super().__init__(f"Updating to {target} failed: {problem.rstrip('.')}{back}.")
        self.target = target
        self.problem = problem
        self.rolled_back = rolled_back
        self.previous = previous


class NothingToRollBack(OpencodeCloudError):
    """No snapshot of an earlier version is kept for this instance."""

    def __init__(self, instance: str) -> None:
        super().__init__(f"Instance {instance!r} has no snapshot of an earlier version.")
        self.instance = instance


class NotUpdatable(OpencodeCloudError):
    """The instance cannot be updated as it is (it was never started, say)."""


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
        return datetime.strptime(self.id, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).isoformat()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "created": self.created}


@dataclass
class UpdateResult:
    """What `update` or `rollback` did."""

    previous: str
    current: str
    changed: bool
    snapshot: str | None = None
    seconds_unavailable: float | None = None
    removed_snapshots: list[str] = field(default_factory=list)
    removed_images: list[str] = field(default_factory=list)
    # The instance's CA was made anew for the new container (`tls.NewCa.to_json()`).
    new_ca: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _now_id() -> str:
    """A snapshot's id: when it was taken, to the second, in UTC (sorts by time)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def list_snapshots(client: Engine, instance: Instance) -> list[Snapshot]:
    """The snapshots of `instance`, newest first, with their sizes."""
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
    names = [name for snap in snapshots for name in snap.volumes.values()]
    try:
        sizes = client.volume_sizes(names) if names else {}
    except DockerError:  # the engine runs one disk-usage count at a time: sizes unknown
        sizes = {}
    for snap in snapshots:
        known = [sizes.get(n) for n in snap.volumes.values()]
        snap.size_bytes = sum(k for k in known if k is not None) if known else None
    return snapshots


def describe(info: ContainerInfo) -> str:
    """The version a container runs, in words: `opencode 1.18.33`, or its image."""
    version = info.labels.get(images.LABEL_OPENCODE_VERSION)
    return f"opencode {version}" if version else info.image


class Versions:
    """Version changes of one instance, on top of its `Service`."""

    def __init__(
        self,
        service: Service,
        save_version: Callable[[Config], Config],
        on_step: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        """Args:
        save_version: writes a configuration's `opencode_version` and `image` to the
            configuration file (validated, atomic) and returns what was saved; the
            caller holds the instance lock.
        """
        self.service = service
        self.client = service.client
        self.instance = service.instance
        self._save = save_version
        self._step = on_step

    # -- snapshots ------------------------------------------------------------------

    def snapshots(self) -> list[Snapshot]:
        """This instance's snapshots, newest first, with their sizes."""
        return list_snapshots(self.client, self.instance)

    def _take_snapshot(self, info: ContainerInfo, target: str) -> Snapshot:
        """Copy opencode's data volumes into new snapshot volumes (the container is stopped)."""
        snap = Snapshot(
            id=_now_id(),
            image=info.image,
            opencode_version=info.labels.get(images.LABEL_OPENCODE_VERSION),
            target=target,
        )
        while any(s.id == snap.id for s in self.snapshots()):  # two updates in a second
            time.sleep(1)
            snap.id = _now_id()
        for kind in SNAPSHOT_KINDS:
            name = f"{self.instance.prefix}-snap-{snap.id}-{kind}".lower()
            labels = {
                **self.instance.labels(f"snapshot-{kind}"),
                LABEL_SNAPSHOT: snap.id,
                LABEL_SNAPSHOT_IMAGE: snap.image,
                LABEL_SNAPSHOT_VERSION: snap.opencode_version or "",
                LABEL_SNAPSHOT_TARGET: target,
                LABEL_SNAPSHOT_KIND: kind,
            }
            self.client.create_volume(name, labels)
            snap.volumes[kind] = name
        self._copy(
            [(self.instance.volume_name(k), snap.volumes[k]) for k in SNAPSHOT_KINDS],
            image=info.image,
            replace=False,
        )
        return snap

    def _restore(self, snap: Snapshot, image: str) -> None:
        """Put a snapshot's data back into the live volumes (the container is gone)."""
        self._copy(
            [(snap.volumes[k], self.instance.volume_name(k)) for k in SNAPSHOT_KINDS],
            image=image,
            replace=True,
        )

    def _copy(self, pairs: list[tuple[str, str]], *, image: str, replace: bool) -> None:
        copy_volumes(
            self.client, pairs, image=image, labels=self.instance.labels("task"), replace=replace
        )

    def _drop(self, snap: Snapshot) -> None:
        for name in snap.volumes.values():
            self.client.remove_volume(name)

    # -- update and rollback --------------------------------------------------------------

    def update(
        self,
        target_config: Config,
        *,
        reporter: ProgressReporter | None = None,
        timeout: float | None = None,
    ) -> UpdateResult:
        """Move the instance to the version `target_config` names, keeping its data safe.

        Raises:
            NotUpdatable: the instance has no container yet (`occ start` makes one).
            UpdateFailed: the new version did not work; the old one is back.
            BuildFailed, PullFailed: the new image could not be made; nothing changed.
        """
        from opencode_cloud.service import Service, image_for

        service = self.service
        old_config = service.config
        info = self.client.find_container(service.name)
        if info is None:
            raise NotUpdatable(
                f"Instance {self.instance.name!r} has no container to update (it was never "
                "started)."
            )
        target_ref = image_for(target_config)
        new = Service(self.client, target_config, self.instance, service.paths)
        self._step(f"Preparing {target_ref} while {describe(info)} keeps serving ...")
        new.ensure_image(reporter=reporter)
        target_image = self.client.inspect_image(target_ref)
        if target_image is not None and target_image.id == info.image_id and info.running:
            self._save(target_config)
            return UpdateResult(describe(info), describe(info), changed=False)
        password = self._password()
        before, _ = self._sessions(service, password)
        # The new container is made, under the service's name, while the old one still
        # serves under another: the switch is then a stop, a copy and a start.
        previous = f"{service.name}-previous"
        if self.client.find_container(previous) is not None:
            containers.remove_container(self.client, previous, force=True)
        self.client.rename_container(service.name, previous)
        snap: Snapshot | None = None
        unavailable: float | None = None
        try:
            new = Service(self.client, self._save(target_config), self.instance, service.paths)
            new.create()
            down = time.monotonic()
            containers.stop_container(self.client, previous)
            self._step("Taking a snapshot of opencode's data ...")
            snap = self._take_snapshot(info, target_ref)
            self._step(f"Starting {target_ref} ...")
            new.start(allow_version_change=True, timeout=timeout)
            unavailable = time.monotonic() - down
            problem = self._deep_check(new, password, before)
        except DockerError as error:
            problem = error.message
        except BaseException:
            self._recover(previous, snap, old_config)
            raise
        if problem is not None:
            self._step(f"The new version does not work ({problem.rstrip('.')}); going back ...")
            self._recover(previous, snap, old_config)
            raise UpdateFailed(target_ref, problem, rolled_back=True, previous=describe(info))
        containers.remove_container(self.client, previous, force=True)
        result = UpdateResult(
            describe(info),
            describe(self.client.inspect_container(service.name)),
            changed=True,
            snapshot=snap.id if snap else None,
            seconds_unavailable=unavailable,
            new_ca=new.new_ca,
        )
        self._prune(result)
        return result

    def _recover(self, previous: str, snap: Snapshot | None, config: Config) -> None:
        """Undo a failed update: the new container goes, the snapshot's data comes back
        into the live volumes, and the old container, untouched, starts again."""
        from opencode_cloud.service import Service

        if self.client.find_container(self.service.name) is not None:
            containers.remove_container(self.client, self.service.name, force=True)
        saved = self._save(config)
        if snap is not None:
            self._restore(snap, snap.image)
            self._drop(snap)  # its data is the live data again
        self.client.rename_container(previous, self.service.name)
        Service(self.client, saved, self.instance, self.service.paths).start()

    def rollback(self, *, timeout: float | None = None) -> UpdateResult:
        """Return to the version before the last update, with its snapshot's data. What
        changed since that update is lost; the current data is snapshotted first.

        Raises:
            NothingToRollBack, UpdateFailed.
        """
        snapshots = self.snapshots()
        if not snapshots:
            raise NothingToRollBack(self.instance.name)
        snap = snapshots[0]
        info = self.client.find_container(self.service.name)
        current = describe(info) if info else "nothing"
        config = self._config_for(snap)
        self._step(f"Going back to {snap.image} and the data of {snap.created} ...")
        self._go_back(snap, config)
        self._drop(snap)
        result = UpdateResult(
            current,
            describe(self.client.inspect_container(self.service.name)),
            changed=True,
            snapshot=snap.id,
        )
        return result

    def _go_back(self, snap: Snapshot, config: Config) -> None:
        """Remove the container, restore the snapshot's data, start `config`'s version."""
        from opencode_cloud.service import Service

        if self.client.find_container(self.service.name) is not None:
            containers.remove_container(self.client, self.service.name, force=True)
        self._restore(snap, snap.image)
        saved = self._save(config)
        old = Service(self.client, saved, self.instance, self.service.paths)
        old.start(allow_version_change=True)

    def _config_for(self, snap: Snapshot) -> Config:
        """The configuration with the snapshot's image or opencode version."""
        config = self.service.config
        if snap.image.startswith(f"{IMAGE_NAME}:"):
            version = snap.opencode_version or snap.image.split(":", 1)[1]
            return config.model_copy(update={"opencode_version": version, "image": None})
        return config.model_copy(update={"image": snap.image})

    def _password(self) -> str | None:
        from opencode_cloud import credentials

        return credentials.read_password(self.service.paths)

    @staticmethod
    def _sessions(
        service: Service, password: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        from opencode_cloud.docker.health import list_sessions

        endpoint = service.endpoint()
        return list_sessions(
            endpoint.base_url, endpoint.username, password, context=endpoint.context
        )

    def _deep_check(
        self, service: Service, password: str | None, before: list[dict[str, Any]]
    ) -> str | None:
        """What is wrong with the new version, or None: its sessions must list, and a
        session made before the update must still read."""
        from opencode_cloud.docker.health import read_session

        sessions, problem = self._sessions(service, password)
        if problem is not None:
            return f"listing sessions failed ({problem})"
        if before:
            wanted = str(before[0].get("id"))
            if not any(str(s.get("id")) == wanted for s in sessions):
                return f"session {wanted}, made before the update, is missing"
            endpoint = service.endpoint()
            problem = read_session(
                endpoint.base_url, wanted, endpoint.username, password, context=endpoint.context
            )
            if problem is not None:
                return f"reading session {wanted} failed ({problem})"
        return None

    # -- keeping only what a rollback needs --------------------------------------------------

    def _prune(self, result: UpdateResult) -> None:
        keep = max(1, self.service.config.keep_snapshots)
        snapshots = self.snapshots()
        for snap in snapshots[keep:]:
            self._drop(snap)
            result.removed_snapshots.append(snap.id)
        # Any instance's snapshot may need its image for a rollback, not only this one's.
        needed = {
            volume.labels.get(LABEL_SNAPSHOT_IMAGE, "")
            for volume in self.client.list_volumes(labels=[LABEL_SNAPSHOT])
        }
        for name in self.client.list_containers(labels=[f"{LABEL_MANAGED}=true"]):
            info = self.client.find_container(name)
            if info is not None:
                needed.add(info.image)
        for image in self.client.list_images():
            for tag in image.tags:
                if tag.startswith(f"{IMAGE_NAME}:") and tag not in needed:
                    try:
                        self.client.remove_image(tag)
                    except DockerError:
                        continue  # a container of another tool or a stage still uses it
                    result.removed_images.append(tag)
