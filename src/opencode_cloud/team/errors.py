"""What can go wrong with a team, as data: the command line writes the hints."""

from __future__ import annotations

from opencode_cloud.errors import OpencodeCloudError


class TeamError(OpencodeCloudError):
    """Base of the team's errors."""


class TeamNotEnabled(TeamError):
    """A command for people, while the instance serves one person."""

    def __init__(self, instance: str) -> None:
        super().__init__(f"Instance {instance!r} is not in team mode.")
        self.instance = instance


class TeamAlreadyEnabled(TeamError):
    def __init__(self, instance: str) -> None:
        super().__init__(f"Instance {instance!r} is in team mode already.")
        self.instance = instance


class DoorNotRunning(TeamError):
    """The front door holds the people's records: it must run to change them."""

    def __init__(self, name: str) -> None:
        super().__init__(f"The front door ({name}) is not running.")
        self.name = name


class PersonNotFound(TeamError):
    def __init__(self, person: str) -> None:
        super().__init__(f"There is nobody called {person!r} in the team.")
        self.person = person


class PersonExists(TeamError):
    def __init__(self, person: str) -> None:
        super().__init__(f"{person!r} is in the team already.")
        self.person = person


class DoorRefused(TeamError):
    """The front door's login service refused a change (its own words)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"The front door refused: {message}")


class TeamUpdateFailed(TeamError):
    """A person's new version failed its check: they are back on the old one, and so is
    everyone not updated yet."""

    def __init__(
        self,
        person: str,
        problem: str,
        updated: list[str],
        left: list[str],
        back: list[str] | None = None,
    ) -> None:
        verb = "is" if len(back or []) == 1 else "are"
        again = f", as {verb} {', '.join(back)}," if back else ""
        super().__init__(
            f"The new version does not work for {person} ({problem.rstrip('.')}); {person} is "
            f"back on the old one{again} and the update stopped there"
            + (f" ({', '.join(left)} not updated)." if left else ".")
        )
        self.person = person
        self.updated = updated
        self.left = left
        self.back = back or []


class NotASwarmManager(TeamError):
    """A cluster command, on an engine that is not a manager of an active swarm."""

    def __init__(self, host: str, state: str, manager: bool) -> None:
        where = "a worker of a swarm" if state == "active" and not manager else "in no swarm"
        if state not in ("active", "inactive"):
            where = f"in a swarm it cannot use (state {state})"
        super().__init__(f"The engine at {host} is {where}, not a swarm manager.")
        self.host = host
        self.state = state
        self.manager = manager


class ImagePushFailed(TeamError):
    """The manager could not push the image to the cluster's registry."""

    def __init__(self, ref: str, problem: str) -> None:
        super().__init__(f"Pushing {ref} failed: {problem}")
        self.ref = ref
        self.problem = problem


class NoRoomInCluster(TeamError):
    """No node of the swarm has the memory a new person's instance is allowed."""

    def __init__(self, needed: int, best_free: int, *, manager_only: bool = False) -> None:
        needed_mib, free_mib = needed // 2**20, max(best_free, 0) // 2**20
        super().__init__(
            f"The manager, the only node with the image, has {free_mib} MiB free; a new "
            f"instance needs {needed_mib} MiB."
            if manager_only
            else f"No node has {needed_mib} MiB free for a new instance "
            f"(the most on any node: {free_mib} MiB)."
        )
        self.needed = needed
        self.best_free = best_free
        self.manager_only = manager_only


class ClusterNotReady(TeamError):
    """The swarm has no overlay network of the team: `occ cluster init` was not run."""

    def __init__(self, network: str) -> None:
        super().__init__(f"The swarm is not ready for the team (no network {network}).")
        self.network = network


class VolumesNotRemoved(TeamError):
    """A removed person's volumes could not be deleted on their node."""

    def __init__(self, volumes: list[str], node_id: str, problem: str) -> None:
        super().__init__(
            f"Deleting {', '.join(volumes)} on node {node_id} failed: {problem.rstrip('.')}."
        )
        self.volumes = volumes
        self.node_id = node_id
        self.problem = problem


class PersonNotAnswering(TeamError):
    """A person's instance on the swarm does not answer through the door's network."""

    def __init__(self, person: str, timeout: float, problem: str) -> None:
        super().__init__(
            f"{person}'s opencode did not answer within {timeout:.0f} s ({problem.rstrip('.')})."
        )
        self.person = person
        self.problem = problem


class NoBackupOnCluster(TeamError):
    """A final backup of a person whose volumes are on another node of the swarm."""

    def __init__(self, person: str, node: str) -> None:
        super().__init__(
            f"{person}'s volumes are on node {node}: a final backup is written only of "
            "volumes on the manager."
        )
        self.person = person
        self.node = node


class SsoSettingsError(TeamError):
    """Settings of single sign-on refused before anything was sent to the door."""


class VolumesNotCopied(TeamError):
    """Copying a person's volumes to another node failed; the source is as it was.
    `written`: the target's (new) volumes may hold part of the copy."""

    def __init__(
        self, volumes: list[str], source: str, target: str, problem: str, *, written: bool
    ) -> None:
        super().__init__(
            f"Copying {', '.join(volumes)} from node {source} to node {target} failed: "
            f"{problem.rstrip('.')}."
        )
        self.volumes = volumes
        self.source = source
        self.target = target
        self.problem = problem
        self.written = written


class NodeNotFound(TeamError):
    def __init__(self, node: str) -> None:
        super().__init__(f"The swarm has no node called {node!r}.")
        self.node = node


class NowhereToDrain(TeamError):
    """Draining a node whose people no other node has room for: nothing was changed."""

    def __init__(self, node: str, person: str, needed: int, best_free: int) -> None:
        super().__init__(
            f"No other node has room for {person} ({needed // 2**20} MiB; the most free on "
            f"another ready, active node: {max(best_free, 0) // 2**20} MiB): nothing on "
            f"{node} was changed."
        )
        self.node = node
        self.person = person


class DrainFailed(TeamError):
    """Moving a person off a drained node failed: they run on it again, as before, and
    the drain stopped there."""

    def __init__(self, node: str, person: str, problem: str, moved: list[str]) -> None:
        done = f" ({', '.join(moved)} moved before)" if moved else ""
        super().__init__(
            f"Moving {person} off {node} failed ({problem.rstrip('.')}); {person} runs on "
            f"{node} again with their data, and the drain stopped there{done}."
        )
        self.node = node
        self.person = person
        self.problem = problem
        self.moved = moved


class NodeNotUsable(TeamError):
    """A node that does not run new tasks (down, paused or drained)."""

    def __init__(self, node: str, why: str, *, down: bool = False) -> None:
        super().__init__(f"Node {node} takes no new instances ({why}).")
        self.node = node
        self.down = down  # it runs nothing at all, not even a copy of its volumes


class NotOnCluster(TeamError):
    """A command for people on a swarm, while the team runs on one engine."""

    def __init__(self, person: str) -> None:
        super().__init__(f"The team does not run on a swarm: {person}'s data is on this engine.")
        self.person = person


class PersonDataOnManager(TeamError):
    """A restore through the manager, which holds volumes of the person with data."""

    def __init__(self, person: str) -> None:
        super().__init__(f"{person}'s volumes on the manager hold data: nothing was changed.")
        self.person = person
