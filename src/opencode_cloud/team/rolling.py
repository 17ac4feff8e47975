"""`occ update` in team mode: everyone to a new opencode, one person at a time.

For each person in turn, as `service.versions` does for one: their instance is stopped,
opencode's data snapshotted, a container of the new image made under their name (with
the same internal password and limits), started and checked deeply (health, the list of
sessions, a session made before still reads). The first person whose check fails gets
their old container and data back, and the update stops there: those after them stay on
the old version, those before keep the new one. Only when everyone passed do the front
door and the starter move to the new image, and the configuration to the new version.

The deep check asks opencode from inside the person's container (the edge's user, with
the health check's credentials file): only the front door reaches it from outside.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from opencode_cloud.docker import container as containers
from opencode_cloud.docker.errors import DockerError
from opencode_cloud.docker.image import remove_unnamed_sandbox_images
from opencode_cloud.service.image import image_for
from opencode_cloud.service.snapshots import drop_snapshot, restore_snapshot, take_snapshot
from opencode_cloud.team.errors import TeamUpdateFailed
from opencode_cloud.team.people import (
    PersonLimits,
    read_internal_password,
)

if TYPE_CHECKING:
    from opencode_cloud.config.schema import Config
    from opencode_cloud.docker.models import ContainerInfo
    from opencode_cloud.docker.progress import ProgressReporter
    from opencode_cloud.team.team import Team

# Seconds a person's new version gets to answer healthy.
PERSON_START_TIMEOUT = 120.0


@dataclass
class TeamUpdateResult:
    target: str
    updated: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    seconds_unavailable: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RollingUpdate:
    def __init__(self, team: Team, on_step: Callable[[str], None] = lambda _m: None) -> None:
        self.team = team
        self.client = team.client
        self.layout = team.layout
        self._step = on_step

    def run(
        self,
        target_config: Config,
        save_version: Callable[[Config], Config],
        *,
        reporter: ProgressReporter | None = None,
    ) -> TeamUpdateResult:
        """Move everyone, then the door, to `target_config`'s version.

        Raises:
            TeamUpdateFailed: a person's check failed (they are back on the old version).
            BuildFailed, PullFailed: no new image; nothing changed.
        """
        from opencode_cloud.service.service import Service

        target = image_for(target_config)
        self._step(f"Preparing {target} while everyone keeps working ...")
        Service(self.client, target_config, self.team.instance, self.team.paths).ensure_image(
            reporter=reporter
        )
        image = self.client.inspect_image(target)
        result = TeamUpdateResult(target=target)
        names = [n for n in self.team.person_names() if self._container(n) is not None]
        for index, name in enumerate(names):
            info = self._container(name)
            assert info is not None
            if image is not None and info.image_id == image.id:
                result.already.append(name)
                continue
            self._step(f"Updating {name} ({index + 1} of {len(names)}) ...")
            problem, down = self._update_person(name, info, target_config, target)
            if problem is not None:
                raise TeamUpdateFailed(name, problem, result.updated, names[index + 1 :])
            result.updated.append(name)
            result.seconds_unavailable[name] = round(down, 2)
        saved = save_version(target_config)
        self._step("Moving the front door to the new image ...")
        self.team.service_config_changed(saved)
        self.team.start()
        return result

    def _container(self, name: str) -> ContainerInfo | None:
        return self.client.find_container(self.layout.person(name).container_name)

    def _update_person(
        self, name: str, info: ContainerInfo, target_config: Config, target: str
    ) -> tuple[str | None, float]:
        """Their new version, checked; (what is wrong, or None; seconds unavailable)."""
        person = self.layout.person(name)
        container = person.container_name
        was_running = info.running
        if not was_running:
            containers.start_container(self.client, container)
        try:
            self._wait(container)
            before = self._sessions(container)
        except DockerError as error:
            return f"its current version does not answer ({error.message})", 0.0
        internal = read_internal_password(self.client, container)
        previous = f"{container}-previous"
        if self.client.find_container(previous) is not None:
            self.client.remove_container(previous, force=True)
        down = time.monotonic()
        containers.stop_container(self.client, container)
        self.client.rename_container(container, previous)
        # The person's network lets only one container have their name: the old one
        # leaves it while the new one is tried.
        network = self.layout.person_network(name)
        self.client.disconnect_network(network, previous)
        snap = None
        try:
            snap = take_snapshot(self.client, person, info, target)
            self._create(name, info, target_config, internal)
            containers.start_container(self.client, container)
            self._wait(container)
            problem = self._deep_check(container, before)
        except DockerError as error:
            problem = error.message
        except BaseException:
            self._recover(name, previous, snap)
            raise
        unavailable = time.monotonic() - down
        if problem is not None:
            self._step(f"{name}: the new version does not work ({problem}); going back ...")
            self._recover(name, previous, snap)
            if not was_running:
                containers.stop_container(self.client, container)
            return problem, unavailable
        self.client.remove_container(previous, force=True)
        remove_unnamed_sandbox_images(self.client)
        if not was_running:
            containers.stop_container(self.client, container)
        return None, unavailable

    def _create(self, name: str, old: ContainerInfo, config: Config, internal: str) -> None:
        """The person's container of `config`'s image, with the old one's limits."""
        limits = PersonLimits(
            memory_bytes=old.memory_bytes or config.limits.memory_bytes,
            cpus=old.nano_cpus / 1e9 or None,
            pids=config.limits.pids,
        )
        self.team.create_person(name, limits, internal, config)

    def _recover(self, name: str, previous: str, snap: Any) -> None:
        """The new container goes, the snapshot's data comes back, the old one returns."""
        person = self.layout.person(name)
        container = person.container_name
        if self.client.find_container(container) is not None:
            self.client.remove_container(container, force=True)
        if snap is not None:
            restore_snapshot(self.client, person, snap)
            drop_snapshot(self.client, snap)
        self.client.rename_container(previous, container)
        self.client.connect_network(self.layout.person_network(name), container)
        containers.start_container(self.client, container)
        self._wait(container)

    def _wait(self, container: str) -> None:
        self.team.wait_until(
            container,
            lambda: self.team.person_answers(container),
            PERSON_START_TIMEOUT,
            "opencode does not answer its health check",
        )

    # -- asking opencode from inside the person's container -----------------------------------

    def _get(self, container: str, path: str) -> Any:
        name = container.removeprefix(f"{self.layout.prefix}-user-")
        answered, body = self.team.person_service(name).ask_inside(path, timeout=10)
        if not answered:
            raise DockerError(f"GET {path} failed")
        return json.loads(body)

    def _sessions(self, container: str) -> list[dict[str, Any]]:
        sessions = self._get(container, "/session")
        return sessions if isinstance(sessions, list) else []

    def _deep_check(self, container: str, before: list[dict[str, Any]]) -> str | None:
        return deep_check(lambda path: self._get(container, path), before)


def deep_check(get: Callable[[str], Any], before: list[dict[str, Any]]) -> str | None:
    """What is wrong with a person's new version (None: nothing), asked through `get`
    (a path's JSON answer, DockerError when it fails): their sessions list, and the first
    session of `before` (listed before the change) is there and its messages read."""
    try:
        sessions = get("/session")
    except (DockerError, ValueError) as error:
        return f"listing sessions failed ({error})"
    sessions = sessions if isinstance(sessions, list) else []
    if before:
        wanted = str(before[0].get("id"))
        if not any(str(s.get("id")) == wanted for s in sessions):
            return f"session {wanted}, made before the change, is missing"
        try:
            get(f"/session/{wanted}/message")
        except (DockerError, ValueError) as error:
            return f"reading session {wanted} failed ({error})"
    return None
