"""`occ update` of a team on a swarm: everyone to a new image, one person at a time.

As on one machine (`rolling`), each person in turn: their instance stops, opencode's data
is snapshotted, their service is given the new image, and the deep check runs (health,
the list of sessions, a session made before still reads). On a swarm their volumes are
on their node, which `occ` does not reach: the snapshot and its restore are copies made
there by one-shot services (`Cluster.run_once`), and the checks are asked over the
team's overlay from inside the front door (`Cluster.ask_person`).

The first person whose check fails gets the old image and their data as it was, and
everyone updated before them goes back to the old image too (with their data as it is
now when the old version passes the check on it, else with their snapshot): the team
stays on one version. The front door moves last, once everyone passed: the door of the
old image serves people of either version, so a failure never touches it, and everyone
is signed out of nothing while the update runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opencode_cloud.docker.errors import DockerError
from opencode_cloud.docker.helper import COPY_CAPABILITIES, COPY_TIMEOUT, copy_command
from opencode_cloud.docker.progress import NullProgress
from opencode_cloud.docker.swarm import pinned_node
from opencode_cloud.instance import LABEL_PERSON
from opencode_cloud.service.snapshots import LABEL_SNAPSHOT, SNAPSHOT_KINDS
from opencode_cloud.team.cluster import Cluster, person_json
from opencode_cloud.team.errors import PersonNotAnswering, TeamError, TeamUpdateFailed
from opencode_cloud.team.oneshot import TASK_ENDED
from opencode_cloud.team.rolling import TeamUpdateResult, deep_check

if TYPE_CHECKING:
    from opencode_cloud.config.paths import InstancePaths
    from opencode_cloud.config.schema import Config
    from opencode_cloud.docker.progress import ProgressReporter

# The role label of the one-shot services that copy a person's data on their node.
SNAPSHOT_ROLE = "snapshot"
# The states of a task whose container runs: `starting` until the image's health check
# first passes.
TASK_STARTED = ("starting", "running")
# Seconds a person's instance gets to stop (opencode ends its work first).
STOP_TIMEOUT = 120.0
# Seconds a service's task gets to run a new image (its node may pull it first).
TASK_START_TIMEOUT = 300.0


@dataclass
class _Moved:
    """A person given the new image: what to put back should a later person fail."""

    name: str
    node_id: str
    old_image: str
    snapshot: str  # the id of the snapshot of their data taken before
    unavailable: float = 0.0  # seconds from their stop to their new version's check


class SwarmUpdate:
    """The rolling update of the team of `cluster` (the configuration before it)."""

    def __init__(
        self,
        cluster: Cluster,
        paths: InstancePaths,
        on_step: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.cluster = cluster
        self.client = cluster.client
        self.layout = cluster.layout
        self.paths = paths
        self._step = on_step
        # Whether a person answers its health check, and what a path of theirs answers
        # (the tests of the in-memory swarm give their own).
        self.wait_person: Callable[[str], None] = cluster.wait_person
        self.ask: Callable[[str, str], tuple[bool, bytes]] = cluster.ask_person

    def run(
        self,
        target_config: Config,
        save_version: Callable[[Config], Config],
        *,
        reporter: ProgressReporter | None = None,
    ) -> TeamUpdateResult:
        """Move everyone, then the door, to `target_config`'s image.

        Raises:
            TeamUpdateFailed: a person's check failed (everyone is on the old image).
            BuildFailed, PullFailed, ImagePushFailed: no new image; nothing changed.
        """
        from opencode_cloud.service.service import Service

        target_cluster = Cluster(self.client, target_config, self.cluster.instance)
        target = target_cluster.image
        self._step(f"Preparing {target} while everyone keeps working ...")
        Service(self.client, target_config, self.cluster.instance, self.paths).ensure_image(
            reporter=reporter
        )
        target_cluster.push_image(reporter or NullProgress())
        result = TeamUpdateResult(target=target)
        names = self.people()
        moved: list[_Moved] = []
        for index, name in enumerate(names):
            self._step(f"Updating {name} ({index + 1} of {len(names)}) ...")
            try:
                done = self._update_person(name, target)
            except _Failed as failed:
                back = self._put_back(moved)
                raise TeamUpdateFailed(
                    name, failed.problem, [], names[index + 1 :], [m.name for m in back]
                ) from None
            if done is None:
                result.already.append(name)
                continue
            moved.append(done)
            result.updated.append(name)
            result.seconds_unavailable[name] = round(done.unavailable, 2)
        for done in moved:
            self._drop_snapshot(done)
        saved = save_version(target_config)
        self._step("Moving the front door to the new image ...")
        door = Cluster(self.client, saved, self.cluster.instance)
        door.change_service(self.layout.door, image=target)
        self.wait_task(self.layout.door, target)
        door.start_door()  # waits until it takes admin requests
        return result

    def people(self) -> list[str]:
        """The people who have a service, by name."""
        services = self.client.swarm_services(
            labels=[*self.cluster.instance.label_filter(), LABEL_PERSON]
        )
        return sorted(s.labels[LABEL_PERSON] for s in services)

    # -- one person -------------------------------------------------------------------------

    def _update_person(self, name: str, target: str) -> _Moved | None:
        """Person `name` on `target`, checked; None when they were on it already.

        Raises:
            _Failed: their check failed; they are back on the old image and data.
        """
        service_name = self.layout.person(name).container_name
        found = self.client.service_spec(service_name)
        service = self.cluster.person_service(name)
        if found is None or service is None:
            raise _Failed("their service is gone")
        _, spec = found
        old_image = str(spec["TaskTemplate"]["ContainerSpec"]["Image"])
        if old_image == target:
            return None
        node_id = pinned_node(service) or ""
        replicas = int(spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 1))
        try:
            if not replicas:  # a disabled person: checked all the same, then stopped again
                self.cluster.change_service(service_name, replicas=1)
            self.wait_person(name)
            before = self._sessions(name)
        except (TeamError, DockerError, ValueError) as error:
            raise _Failed(f"its current version does not answer ({error})") from None
        snapshot = datetime.now(UTC).strftime("%Y%m%dt%H%M%Sz")
        down = time.monotonic()
        self.cluster.change_service(service_name, replicas=0)
        self.cluster.wait_stopped(service_name, STOP_TIMEOUT)
        moved = _Moved(name, node_id, old_image, snapshot)
        self._copy(moved, back=False)
        try:
            self.cluster.change_service(service_name, image=target, replicas=1)
            self.wait_task(service_name, target)
            self.wait_person(name)
            problem = self._check(name, before)
        except (TeamError, DockerError) as error:
            problem = str(error)
        except BaseException:
            self._restore(moved, replicas)
            raise
        moved.unavailable = time.monotonic() - down
        if problem is not None:
            self._step(f"{name}: the new version does not work ({problem}); going back ...")
            self._restore(moved, replicas)
            self._drop_snapshot(moved)
            raise _Failed(problem)
        if not replicas:
            self.cluster.change_service(service_name, replicas=0)
        return moved

    def _put_back(self, moved: list[_Moved]) -> list[_Moved]:
        """Everyone in `moved` back on their old image, newest first: with their data as
        it is when the old version passes the check on it, else with their snapshot."""
        for done in reversed(moved):
            service_name = self.layout.person(done.name).container_name
            self._step(f"{done.name}: back to the old version ...")
            problem: str | None = None
            try:
                self.cluster.change_service(service_name, image=done.old_image)
                self.wait_task(service_name, done.old_image)
                self.wait_person(done.name)
                problem = self._check(done.name, [])
            except (TeamError, DockerError) as error:
                problem = str(error)
            if problem is not None:
                self._step(f"{done.name}: {problem}; their data goes back to the snapshot ...")
                self._restore(done, 1)
            self._drop_snapshot(done)
        return moved

    def _restore(self, moved: _Moved, replicas: int) -> None:
        """Person's old image and their snapshot's data, with `replicas` again."""
        service_name = self.layout.person(moved.name).container_name
        self.cluster.change_service(service_name, replicas=0)
        self.cluster.wait_stopped(service_name, STOP_TIMEOUT)
        self._copy(moved, back=True)
        self.cluster.change_service(service_name, image=moved.old_image, replicas=replicas)
        if replicas:
            self.wait_task(service_name, moved.old_image)
            self.wait_person(moved.name)

    # -- on the person's node -----------------------------------------------------------------

    def _snapshot_volumes(self, moved: _Moved) -> list[tuple[str, str]]:
        """(live volume, snapshot volume) of each kind of opencode's data."""
        person = self.layout.person(moved.name)
        return [
            (person.volume_name(kind), f"{person.prefix}-snap-{moved.snapshot}-{kind}".lower())
            for kind in SNAPSHOT_KINDS
        ]

    def _copy(self, moved: _Moved, *, back: bool) -> None:
        """Copy opencode's data into the snapshot's volumes on the person's node (made
        there, labelled as snapshots), or `back` from them into the live ones.

        Raises:
            DockerError: the copy failed.
        """
        pairs = self._snapshot_volumes(moved)
        if back:
            pairs = [(snap, live) for live, snap in pairs]
        command, mounts = copy_command(pairs, replace=back)
        labels = {
            **self.layout.person(moved.name).labels("snapshot"),
            LABEL_SNAPSHOT: moved.snapshot,
        }
        problem = self.cluster.run_once(
            moved.node_id,
            SNAPSHOT_ROLE,
            command,
            mounts=[
                {
                    "Type": m.type,
                    "Source": m.source,
                    "Target": m.target,
                    "ReadOnly": m.read_only,
                    "VolumeOptions": {"NoCopy": True, "Labels": labels},
                }
                for m in mounts
            ],
            capabilities=[f"CAP_{c}" for c in COPY_CAPABILITIES],
            timeout=COPY_TIMEOUT,
        )
        if problem is not None:
            what = "restoring" if back else "snapshotting"
            raise DockerError(f"{what} {moved.name}'s data on their node failed: {problem}")

    def _drop_snapshot(self, moved: _Moved) -> None:
        self.cluster.remove_volumes(moved.node_id, [s for _, s in self._snapshot_volumes(moved)])

    # -- asking -------------------------------------------------------------------------------

    def wait_task(self, service_name: str, image: str, timeout: float = TASK_START_TIMEOUT) -> None:
        """Wait until the task of `service_name` the swarm wants runs `image` (its
        container started: the image's own health check, which makes it `running`, is
        slow; the callers ask opencode themselves).

        Raises:
            DockerError: not within `timeout` (with the task's error).
        """
        service = next((s for s in self.client.swarm_services() if s.name == service_name), None)
        if service is None:
            raise DockerError(f"Docker engine error: service {service_name} not found")
        deadline = time.monotonic() + timeout
        while True:
            tasks = self.client.swarm_tasks(service=service.id)
            if any(t.state in TASK_STARTED and t.image == image for t in tasks):
                return
            if time.monotonic() > deadline:
                errors = [t.error or t.state for t in tasks if t.state not in TASK_ENDED]
                raise PersonNotAnswering(
                    service_name, timeout, "; ".join(errors) or "no task runs it"
                )
            time.sleep(0.5)

    def _get(self, name: str, path: str) -> Any:
        return person_json(self.ask, name, path)

    def _check(self, name: str, before: list[dict[str, Any]]) -> str | None:
        return deep_check(lambda path: self._get(name, path), before)

    def _sessions(self, name: str) -> list[dict[str, Any]]:
        sessions = self._get(name, "/session")
        return sessions if isinstance(sessions, list) else []


class _Failed(Exception):
    """A person's update failed and they are back as they were (`problem`: why)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
