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
from typing import TYPE_CHECKING, Any

from opencode_cloud.defaults import IMAGE_NAME
from opencode_cloud.docker import container as containers
from opencode_cloud.docker import image as images
from opencode_cloud.docker.errors import DockerError
from opencode_cloud.service.errors import NothingToRollBack, NotUpdatable, UpdateFailed
from opencode_cloud.service.image import image_for
from opencode_cloud.service.service import Service
from opencode_cloud.service.snapshots import (
    Snapshot,
    drop_snapshot,
    list_snapshots,
    prune_snapshots,
    restore_snapshot,
    take_snapshot,
)

if TYPE_CHECKING:
    from opencode_cloud.config.schema import Config
    from opencode_cloud.docker.models import ContainerInfo
    from opencode_cloud.docker.progress import ProgressReporter
    from opencode_cloud.opencode import Server
    from opencode_cloud.service.service import InsideSessions


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


def describe(info: ContainerInfo) -> str:
    """The version a container runs, in words: `opencode 1.18.33`, or its image."""
    version = info.labels.get(images.LABEL_OPENCODE_VERSION)
    return f"opencode {version}" if version else info.image


class Versions:
    """Version changes of one instance, on top of its `Service`.

    The service's own container is asked through its runtime; the switch (the old
    container renamed aside, kept until the new one passes its check) is done on the
    engine, as snapshots are: a runtime without containers to rename (a swarm service)
    would bring its own way to switch and go back.
    """

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
        self.save_version = save_version
        self._step = on_step

    def snapshots(self) -> list[Snapshot]:
        """This instance's snapshots, newest first, with their sizes."""
        return list_snapshots(self.client, self.instance)

    def running_version(self) -> str | None:
        """The opencode release the container runs (its image's label); None when it has
        no container, or runs an image that does not say."""
        info = self.service.runtime.state()
        return info.labels.get(images.LABEL_OPENCODE_VERSION) if info else None

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
        service = self.service
        old_config = service.config
        info = service.runtime.state()
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
        before, _ = service.checked_server(password, service.endpoint()).sessions()
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
            new.restore_edge_state(service.edge_state(previous))
            self._step("Taking a snapshot of opencode's data ...")
            snap = take_snapshot(self.client, self.instance, info, target_ref)
            self._step(f"Starting {target_ref} ...")
            new.start(allow_version_change=True, timeout=timeout)
            unavailable = time.monotonic() - down
            problem = self._deep_check(new.checked_server(password, new.endpoint()), before)
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
        images.remove_unnamed_sandbox_images(self.client)
        result = UpdateResult(
            describe(info),
            describe(self.client.inspect_container(service.name)),
            changed=True,
            snapshot=snap.id if snap else None,
            seconds_unavailable=unavailable,
            new_ca=new.new_ca,
        )
        result.removed_snapshots, result.removed_images = prune_snapshots(
            self.client, self.instance, self.service.config.keep_snapshots
        )
        return result

    def _recover(self, previous: str, snap: Snapshot | None, config: Config) -> None:
        """Undo a failed update: the new container goes, the snapshot's data comes back
        into the live volumes, and the old container, untouched, starts again."""
        if self.service.runtime.state() is not None:
            self.service.runtime.remove()
        saved = self._save(config)
        if snap is not None:
            restore_snapshot(self.client, self.instance, snap)
            drop_snapshot(self.client, snap)  # its data is the live data again
        self.client.rename_container(previous, self.service.name)
        Service(self.client, saved, self.instance, self.service.paths).start()

    def rollback(self, *, timeout: float | None = None) -> UpdateResult:
        """Return to the version before the last update, with its snapshot's data. What
        changed since that update is lost, but for the provider keys, which stay as they
        are now.

        Raises:
            NothingToRollBack, UpdateFailed.
        """
        snapshots = self.snapshots()
        if not snapshots:
            raise NothingToRollBack(self.instance.name)
        snap = snapshots[0]
        info = self.service.runtime.state()
        current = describe(info) if info else "nothing"
        config = self._config_for(snap)
        self._step(f"Going back to {snap.image} and the data of {snap.created} ...")
        self._go_back(snap, config)
        drop_snapshot(self.client, snap)
        result = UpdateResult(
            current,
            describe(self.client.inspect_container(self.service.name)),
            changed=True,
            snapshot=snap.id,
        )
        return result

    def _go_back(self, snap: Snapshot, config: Config) -> None:
        """Remove the container, restore the snapshot's data, start `config`'s version."""
        if self.service.runtime.state() is not None:
            self.service.runtime.remove()
        restore_snapshot(self.client, self.instance, snap, keep_keys=True)
        saved = self._save(config)
        old = Service(self.client, saved, self.instance, self.service.paths)
        old.start(allow_version_change=True)

    def _config_for(self, snap: Snapshot) -> Config:
        """The configuration with the snapshot's image or opencode version."""
        config = self.service.config
        image = snap.image
        derived = self.client.inspect_image(image)
        if derived is not None and derived.labels.get(images.LABEL_BASE_REF):
            # An image with added packages: the version is its base's; the packages are
            # the configuration's.
            image = derived.labels[images.LABEL_BASE_REF]
        if image.startswith(f"{IMAGE_NAME}:"):
            version = snap.opencode_version or image.split(":", 1)[1]
            return config.model_copy(update={"opencode_version": version, "image": None})
        return config.model_copy(update={"image": image})

    def _password(self) -> str | None:
        from opencode_cloud.access import credentials

        return credentials.read_password(self.service.paths)

    @staticmethod
    def _deep_check(server: Server | InsideSessions, before: list[dict[str, Any]]) -> str | None:
        """What is wrong with the new version, or None: its sessions must list, and a
        session made before the update must still read."""
        sessions, problem = server.sessions()
        if problem is not None:
            return f"listing sessions failed ({problem})"
        if before:
            wanted = str(before[0].get("id"))
            if not any(str(s.get("id")) == wanted for s in sessions):
                return f"session {wanted}, made before the update, is missing"
            problem = server.read_session(wanted)
            if problem is not None:
                return f"reading session {wanted} failed ({problem})"
        return None
