"""`Cluster`: a team's place on a Docker Swarm, seen through one manager (docs/cluster.md).

`init` readies the swarm for the team (the image in the registry every node pulls from,
the overlay network the front door reaches people over); `status` and `nodes` say what
runs where and what is out of place; `place` chooses the node for a new person.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from opencode_cloud.defaults import (
    CONTAINER_PORT,
    EDGE_PROGRAM,
    INTERNAL_PASSWORD_PATH,
    TEAM_SWARM_ENV,
)
from opencode_cloud.docker.errors import DockerError, ImageNotFound
from opencode_cloud.docker.image import registry_ref
from opencode_cloud.docker.progress import handle_pull_chunk
from opencode_cloud.docker.swarm import (
    NODE_READY,
    SecretFile,
    SwarmNode,
    SwarmService,
    pinned_node,
    service_body,
)
from opencode_cloud.instance import LABEL_INSTANCE, LABEL_MANAGED, LABEL_PERSON, LABEL_ROLE
from opencode_cloud.service.image import image_for
from opencode_cloud.team.door import EDGE_USER, door_spec
from opencode_cloud.team.door import admin as door_admin
from opencode_cloud.team.errors import (
    ClusterNotReady,
    DoorNotRunning,
    DoorRefused,
    ImagePushFailed,
    NoRoomInCluster,
    NotASwarmManager,
    PersonNotAnswering,
    PersonNotFound,
    VolumesNotRemoved,
)
from opencode_cloud.team.layout import ENGINE_SOCKET, TeamLayout
from opencode_cloud.team.oneshot import TASK_ENDED, OneShot, OneShots, problem
from opencode_cloud.team.people import (
    INTERNAL_PASSWORD_BYTES,
    PersonLimits,
    password_hash,
    person_limits,
    person_settings,
    person_spec,
)
from opencode_cloud.team.reach import UNREACHABLE, Reach, reaches

if TYPE_CHECKING:
    from opencode_cloud.config.schema import Config
    from opencode_cloud.docker.models import ContainerFile
    from opencode_cloud.docker.progress import ProgressReporter
    from opencode_cloud.docker.swarm import SwarmEngine, SwarmMembership
    from opencode_cloud.instance import Instance

# Seconds the door's service gets to take admin requests after it is created (its node
# may first pull the image).
DOOR_START_TIMEOUT = 180.0
# Seconds a removed service's tasks get to stop and let go of its secrets.
SECRET_RELEASE_TIMEOUT = 30.0
# The label the engine gives each container of a swarm service: the service's name.
SWARM_SERVICE_LABEL = "com.docker.swarm.service.name"
# The role label of the front door's service (a person's service carries LABEL_PERSON).
DOOR_ROLE = "door"
# The role label of the one-shot service that deletes a removed person's volumes.
VOLUME_REMOVAL_ROLE = "volume-removal"
# Seconds a one-shot service on a node gets to start (its node may pull the image) and
# end (`run_once`).
ONE_SHOT_TIMEOUT = 180.0
# Memory a one-shot service of `run_once` may use (a copy of opencode's data: `cp`).
ONE_SHOT_MEMORY = 256 * 2**20
# Seconds a person's instance gets to answer after it (re)starts (its node may pull).
PERSON_START_TIMEOUT = 240.0
# What `ask_person` runs in the door (`python3 -I -c SCRIPT NAME PATH TIMEOUT`): the
# person's upstream and internal password from the door's records (`edge.People`), one
# GET (no redirect followed), the body on stdout; exit 1 on any failure.
ASK_PERSON_SCRIPT = """\
import os, sys, urllib.request
sys.path.insert(0, os.path.dirname(PROGRAM))
import edge
people = edge.People(edge.Path(os.environ.get("OCC_EDGE_TEAM_DB", edge.DEFAULT_TEAM_DB)))
person = people.get(sys.argv[1])
people.close()
if person is None or not person.upstream:
    sys.exit("no upstream for " + sys.argv[1])
request = urllib.request.Request("http://" + person.upstream + sys.argv[2])
request.add_header("Authorization", person.upstream_auth())


class Refused(urllib.request.HTTPRedirectHandler):
    # What answers on the person's port may be their agent's: a redirect would take the
    # internal password elsewhere.
    def redirect_request(self, *args, **kwargs):
        return None


opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), Refused())
try:
    with opener.open(request, timeout=float(sys.argv[3])) as answer:
        sys.stdout.buffer.write(answer.read())
except Exception as error:
    sys.exit(str(error))
""".replace("PROGRAM", repr(EDGE_PROGRAM))
# opencode's health check.
HEALTH_PATH = "/global/health"
# What it runs (`sh -c SCRIPT sh VOLUME...`): for each volume, DELETE /volumes/NAME on the
# node's engine, again while it is in use (409: its container is being removed, or a
# stopped task of a moved person's service holds it: such stopped containers go), until
# it is gone (204) or was already (404). Names are checked person names' volumes.
REMOVE_VOLUMES_SCRIPT = """\
engine() { curl -s --unix-socket /var/run/docker.sock "$@"; }
for volume in "$@"; do
  tries=0
  while :; do
    code=$(engine -o /dev/null -w '%{http_code}' -X DELETE "http://engine/volumes/$volume")
    case "$code" in 204|404) break ;; esac
    filters="{\\"volume\\":[\\"$volume\\"],\\"status\\":[\\"created\\",\\"exited\\",\\"dead\\"]}"
    for id in $(engine -G http://engine/containers/json --data-urlencode all=1 \\
        --data-urlencode "filters=$filters" | grep -o '"Id":"[0-9a-f]*"' | cut -d'"' -f4); do
      engine -o /dev/null -X DELETE "http://engine/containers/$id"
    done
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then echo "$volume: engine answered $code" >&2; exit 1; fi
    sleep 1
  done
done
"""
# The role label of the one-shot service that looks for a person's volumes on a node.
VOLUME_SEARCH_ROLE = "volume-search"
# What it runs (`sh -c SCRIPT sh VOLUME...`): exit 3 when any of the volumes exists on the
# node's engine, 0 when none does, 1 when the engine does not answer.
VOLUMES_EXIST_SCRIPT = """\
for volume in "$@"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket /var/run/docker.sock \\
    "http://engine/volumes/$volume")
  case "$code" in
    200) exit 3 ;;
    404) ;;
    *) echo "$volume: engine answered $code" >&2; exit 1 ;;
  esac
done
"""


@dataclass(frozen=True)
class PlacedPerson:
    """A person's instance on the swarm: where it runs, where the door reaches it, and
    the internal password the door sends it."""

    name: str
    node: str
    upstream: str
    internal_password: str = field(repr=False)


@dataclass(frozen=True)
class NodeRow:
    """A node of the swarm with the team's instances on it."""

    node: SwarmNode
    instances: tuple[str, ...] = ()
    memory_reserved: int = 0

    @property
    def memory_free(self) -> int:
        """Memory the team's instances on the node have not been promised yet."""
        return self.node.memory_bytes - self.memory_reserved

    @property
    def unreachable(self) -> tuple[str, ...]:
        """The instances nothing reaches: all of them, on a node that is not ready."""
        return self.instances if self.node.state != NODE_READY else ()

    def to_json(self) -> dict[str, Any]:
        node = self.node
        return {
            "id": node.id,
            "name": node.hostname,
            "role": node.role,
            "leader": node.leader,
            "address": node.address,
            "state": node.state,
            "message": node.message,
            "availability": node.availability,
            "memory_bytes": node.memory_bytes,
            "cpus": node.cpus,
            "memory_reserved": self.memory_reserved,
            "memory_free": self.memory_free,
            "instances": list(self.instances),
            "unreachable": list(self.unreachable),
        }


@dataclass(frozen=True)
class ClusterStatus:
    """What `occ cluster status` shows."""

    manager: SwarmNode | None
    nodes: list[NodeRow]
    network: str
    network_ready: bool
    image: str
    door_url: str | None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "manager": self.manager.hostname if self.manager else None,
            "manager_address": self.manager.address if self.manager else None,
            "network": self.network,
            "network_ready": self.network_ready,
            "image": self.image,
            "door_url": self.door_url,
            "nodes": [row.to_json() for row in self.nodes],
            "problems": self.problems,
        }


class Cluster:
    """One instance's team on the swarm whose manager `client` is."""

    def __init__(self, client: SwarmEngine, config: Config, instance: Instance) -> None:
        self.client = client
        self.config = config
        self.layout = TeamLayout(instance)
        self.instance = instance

    # -- what the cluster is made of ----------------------------------------------------

    def membership(self) -> SwarmMembership:
        """The engine's place in its swarm.

        Raises:
            NotASwarmManager: it is in none, or only a worker.
        """
        membership = self.client.swarm_membership()
        if membership.state != "active" or not membership.manager:
            raise NotASwarmManager(self.client.host, membership.state, membership.manager)
        return membership

    @property
    def image(self) -> str:
        """The image every node runs: the registry's name for it when there is one."""
        local = image_for(self.config)
        registry = self.config.cluster.registry
        return registry_ref(registry, local) if registry else local

    def _services(self) -> list[SwarmService]:
        return self.client.swarm_services(labels=[f"{LABEL_INSTANCE}={self.instance.name}"])

    def nodes(self) -> list[NodeRow]:
        """Every node, with the team's instances on it and the memory they reserve.

        Raises:
            NotASwarmManager.
        """
        self.membership()
        return self._rows(self.client.swarm_nodes(), self._services())

    def _rows(self, nodes: list[SwarmNode], services: list[SwarmService]) -> list[NodeRow]:
        where: dict[str, str] = {}  # service ID -> node ID: the running task's, or the pin
        for task in self.client.swarm_tasks():
            if task.node_id:
                where[task.service_id] = task.node_id
        on_node: dict[str, list[SwarmService]] = {node.id: [] for node in nodes}
        for service in services:
            node_id = where.get(service.id) or pinned_node(service)
            if node_id in on_node:
                on_node[node_id].append(service)
        return [
            NodeRow(
                node,
                tuple(_instance_name(s) for s in on_node[node.id]),
                sum(s.memory_reserved for s in on_node[node.id]),
            )
            for node in nodes
        ]

    def place(self, memory_bytes: int) -> SwarmNode:
        """The node for a new person allowed `memory_bytes`: of the nodes that take new
        work, the one with the most memory not yet promised to the team, if it has enough.
        Without a registry only this manager has the image (no other node could start
        the instance), so it is the only choice.

        Raises:
            NotASwarmManager, NoRoomInCluster.
        """
        rows = [row for row in self.nodes() if row.node.usable]
        registry = bool(self.config.cluster.registry)
        if not registry:
            manager = self.membership().node_id
            rows = [row for row in rows if row.node.id == manager]
        best = max(rows, key=lambda row: (row.memory_free, row.node.hostname), default=None)
        if best is None or best.memory_free < memory_bytes:
            raise NoRoomInCluster(
                memory_bytes, best.memory_free if best else 0, manager_only=not registry
            )
        return best.node

    # -- the front door -----------------------------------------------------------------

    def start_door(
        self,
        timeout: float = DOOR_START_TIMEOUT,
        tls_files: Mapping[str, ContainerFile] | None = None,
    ) -> str:
        """Run the front door as a service pinned to this manager, publishing the
        service's port in host mode, on the team's overlay; its URL once it takes admin
        requests. People's instances run all the time on a swarm: the door starts none
        (no starter, no idle stop).

        `tls_files` (the certificate and key, `TlsMaterial.container_files`) are handed
        to it as swarm secrets, each a file of the path, owner and mode given: never in
        its environment or `docker service inspect`. A door service already there is left
        as it is (with the certificate it has).

        Raises:
            NotASwarmManager, ClusterNotReady (no `occ cluster init`), DoorNotRunning (not
            up within `timeout`), DockerError.
        """
        membership = self.membership()
        if not self.client.network_exists(self.layout.cluster_network):
            raise ClusterNotReady(self.layout.cluster_network)
        spec = door_spec(
            self.config, self.layout, image=self.image, image_id=None, idle_stop_seconds=0
        )
        if not self.has_door():
            body = service_body(
                replace(spec, network="", env=(*spec.env, f"{TEAM_SWARM_ENV}=1")),
                node_id=membership.node_id,
                network=self.layout.cluster_network,
                secrets=self._secret_files(self.instance.labels("door"), tls_files or {}),
                host_ports=[(self.config.port, CONTAINER_PORT)],
            )
            self.client.create_service(body)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.door_admin({"op": "list"})
                break
            except (DoorNotRunning, DoorRefused, DockerError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        return self.door_url()

    def _door_container(self) -> str:
        """The door's running container: its swarm task's, on this manager."""
        names = self.client.list_containers(labels=[f"{SWARM_SERVICE_LABEL}={self.layout.door}"])
        for name in names:
            info = self.client.find_container(name)
            if info is not None and info.running:
                return name
        raise DoorNotRunning(self.layout.door)

    def door_admin(self, request: dict[str, Any]) -> dict[str, Any]:
        """Apply one change to the people's records in the door's container (`door.admin`).

        Raises:
            DoorNotRunning, DoorRefused.
        """
        return door_admin(self.client, self.layout, request, self._door_container())

    def door_running(self) -> bool:
        try:
            self._door_container()
        except DoorNotRunning:
            return False
        return True

    def has_door(self) -> bool:
        """Whether the team's door is a service of the swarm (running or not)."""
        return any(s.name == self.layout.door for s in self._services())

    def door_url(self) -> str:
        """Where the door serves: the port on this manager's address.

        Raises:
            NotASwarmManager.
        """
        scheme = "http" if self.config.tls_mode == "off" else "https"
        return f"{scheme}://{self.membership().address}:{self.config.port}"

    def _secret_files(
        self, labels: Mapping[str, str], files: Mapping[str, ContainerFile]
    ) -> list[SecretFile]:
        """Each of `files` as a new swarm secret, to mount at its path."""
        made = []
        for target, file in files.items():
            name = f"{self.layout.door}-{target.rsplit('/', 1)[-1]}-{secrets.token_hex(4)}"
            name = name.replace(".", "-")
            secret_id = self.client.create_secret(name, file.content, labels)
            made.append(SecretFile(secret_id, name, target, file.owner, file.mode))
        return made

    # -- people -------------------------------------------------------------------------

    def add_person(
        self,
        name: str,
        *,
        password: str | None = None,
        memory_bytes: int | None = None,
        cpus: float | None = None,
        admin: bool = False,
        email: str | None = None,
    ) -> PlacedPerson:
        """Run person `name`'s instance on the swarm (`run_person`, on the node `place`
        chooses), with a new internal password.

        With a `password`, the person is also recorded in the front door (`start_door`),
        which then signs them in and sends their requests to this instance.

        Raises:
            NotASwarmManager, NoRoomInCluster, DoorNotRunning, DockerError.
        """
        internal = secrets.token_hex(INTERNAL_PASSWORD_BYTES)
        placed = self.run_person(name, internal, person_limits(self.config, memory_bytes, cpus))
        if password is not None:
            self.door_admin(
                {
                    "op": "put",
                    "name": name,
                    "hash": password_hash(password),
                    "internal_password": internal,
                    "upstream": placed.upstream,
                    "admin": admin,
                    "email": email,
                }
            )
        return placed

    def run_person(
        self, name: str, internal: str, limits: PersonLimits, *, on_manager: bool = False
    ) -> PlacedPerson:
        """Run person `name`'s instance: a service of one replica pinned to the node
        `place` chooses, or to this manager with `on_manager` (where volumes copied by
        this engine are), on the team's overlay network under its own DNS name, with the
        internal password `internal` as a swarm secret (a root-only file, never in its
        environment). Its volumes are made on its node, by that engine, at its first start.

        Raises:
            NotASwarmManager, NoRoomInCluster, DockerError.
        """
        person = self.layout.person(name)  # checks the name
        if on_manager:
            membership = self.membership()
            node = next(n for n in self.client.swarm_nodes() if n.id == membership.node_id)
        else:
            node = self.place(limits.memory_bytes)
        labels = person.labels("person")
        secret_name = f"{person.prefix}-internal-{secrets.token_hex(4)}"
        secret_id = self.client.create_secret(secret_name, internal.encode(), labels)
        cpus_given = limits.cpus or node.cpus
        spec = person_spec(
            person_settings(self.config, limits),
            self.layout,
            name,
            image=self.image,
            image_id=None,
            nano_cpus=round(cpus_given * 1e9),
        )
        body = service_body(
            replace(spec, network=""),
            node_id=node.id,
            network=self.layout.cluster_network,
            secrets=[SecretFile(secret_id, secret_name, INTERNAL_PASSWORD_PATH)],
        )
        self.client.create_service(body)
        return PlacedPerson(name, node.hostname, self.layout.upstream(name), internal)

    def reaches(self) -> dict[str, Reach]:
        """Whether each person's instance can be reached, and why not, by their name.

        Raises:
            NotASwarmManager.
        """
        self.membership()
        nodes = self.client.swarm_nodes()
        return reaches(nodes, self._services(), self.client.swarm_tasks())

    def reach(self, name: str) -> Reach:
        """Whether person `name`'s instance can be reached, and why not.

        Raises:
            NotASwarmManager, PersonNotFound (they have no service).
        """
        self.layout.person(name)  # checks the name
        found = self.reaches().get(name)
        if found is None:
            raise PersonNotFound(name)
        return found

    def person_service(self, name: str) -> SwarmService | None:
        """Person `name`'s service, if they have one."""
        wanted = self.layout.person(name).container_name
        return next((s for s in self._services() if s.name == wanted), None)

    def remove_person(self, name: str, *, volumes: bool = False) -> list[str]:
        """Take person `name` off the swarm: their record in the door (when it runs),
        their service and their secrets; with `volumes`, their volumes on their node too
        (`remove_volumes`). The names of what was removed.

        Raises:
            NotASwarmManager, VolumesNotRemoved, DockerError.
        """
        self.membership()
        person = self.layout.person(name)  # checks the name
        service = self.person_service(name)
        node_id = pinned_node(service) if service is not None else None
        removed = []
        # A door that is gone, or that no longer knows them, leaves only the rest to do.
        with contextlib.suppress(DoorNotRunning, DoorRefused):
            self.door_admin({"op": "remove", "name": name})
        if self.client.remove_service(person.container_name):
            removed.append(person.container_name)
        removed.extend(self._remove_secrets(f"{LABEL_PERSON}={name}", f"{person.prefix}-"))
        if volumes and node_id is not None:
            names = self.layout.person_volumes(name)
            self.remove_volumes(node_id, names)
            removed.extend(names)
        return removed

    def _remove_secrets(self, label: str, prefix: str) -> list[str]:
        """Remove the team's secrets with `label` (and the instance's) whose names begin
        with `prefix` (of a service removed just now); their names.

        Raises:
            DockerError: one is still in use after `SECRET_RELEASE_TIMEOUT`.
        """
        removed = []
        # Secrets are only released once no task uses them: the service's tasks stop first.
        labels = [label, f"{LABEL_INSTANCE}={self.instance.name}"]
        for secret in self.client.list_secrets(labels=labels):
            if not secret.startswith(prefix):
                continue
            self.remove_secret_when_free(secret)
            removed.append(secret)
        return removed

    def remove_secret_when_free(self, secret: str) -> None:
        """Remove a swarm secret once no task uses it (a removed service's tasks stop
        first).

        Raises:
            DockerError: still in use after SECRET_RELEASE_TIMEOUT.
        """
        deadline = time.monotonic() + SECRET_RELEASE_TIMEOUT
        while True:
            try:
                self.client.remove_secret(secret)
                return
            except DockerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def remove_door(self) -> list[str]:
        """Take the door's service and its secrets (certificate and key) away, once its
        container is gone (its port is free again); its state volume stays. The names of
        what was removed.

        Raises:
            NotASwarmManager, DockerError.
        """
        self.membership()
        door = self.layout.door
        removed = [door] if self.client.remove_service(door) else []
        deadline = time.monotonic() + SECRET_RELEASE_TIMEOUT
        while self.client.list_containers(labels=[f"{SWARM_SERVICE_LABEL}={door}"]):
            if time.monotonic() > deadline:
                raise DockerError(f"{door}'s container is still there")
            time.sleep(0.5)
        label = f"{LABEL_ROLE}={DOOR_ROLE}"
        return removed + self._remove_secrets(label, f"{door}-")

    def remove_volumes(
        self, node_id: str, volumes: list[str], timeout: float = ONE_SHOT_TIMEOUT
    ) -> None:
        """Delete `volumes` on node `node_id`. `occ` reaches the manager's engine only,
        and no swarm call deletes a volume: a one-shot service (`run_once`) runs a fixed
        script (`REMOVE_VOLUMES_SCRIPT`) with the volume names as its only arguments and
        that node's engine socket, no capabilities and no network; it waits for each
        volume to be let go of by its container, and deletes it (one already gone is
        fine).

        Raises:
            NotASwarmManager, VolumesNotRemoved (it failed, or did not end within
            `timeout`), DockerError.
        """
        socket = {"Type": "bind", "Source": ENGINE_SOCKET, "Target": ENGINE_SOCKET}
        problem = self.run_once(
            node_id,
            VOLUME_REMOVAL_ROLE,
            ["/bin/sh", "-c", REMOVE_VOLUMES_SCRIPT, "sh", *volumes],
            mounts=[socket],
            timeout=timeout,
        )
        if problem is not None:
            raise VolumesNotRemoved(volumes, node_id, problem)

    def run_once(
        self,
        node_id: str,
        role: str,
        command: Sequence[str],
        *,
        mounts: Sequence[Mapping[str, Any]] = (),
        capabilities: Sequence[str] = (),
        timeout: float = ONE_SHOT_TIMEOUT,
    ) -> str | None:
        """Run `command` once on node `node_id`, for what only that node's engine can
        do (its volumes): a one-shot service (`team/oneshot.py`) pinned there that never
        restarts, of the team's image, as root with no capability but `capabilities`, no
        network and `mounts` (the Engine API's); removed once it ended. Why it failed (or did not
        end within `timeout`: its node may first pull the image), or None.

        Raises:
            NotASwarmManager, DockerError.
        """
        self.membership()
        job = OneShot(
            role,
            command,
            cap_add=capabilities,
            mounts=mounts,
            memory_bytes=ONE_SHOT_MEMORY,
        )
        return self.one_shots().run(job, node_id, timeout)

    def nodes_with_volumes(self, volumes: Sequence[str]) -> list[str]:
        """The host names of the nodes that hold any of `volumes` (a removed person's,
        left there): a one-shot service on each node that is ready asks its engine. A
        node that is down counts as holding them: nothing can tell it does not.

        Raises:
            NotASwarmManager, DockerError.
        """
        self.membership()
        job = OneShot(
            VOLUME_SEARCH_ROLE,
            ["/bin/sh", "-c", VOLUMES_EXIST_SCRIPT, "sh", *volumes],
            mounts=[{"Type": "bind", "Source": ENGINE_SOCKET, "Target": ENGINE_SOCKET}],
        )
        runner = self.one_shots()
        nodes = self.client.swarm_nodes()
        started = {
            node.hostname: runner.start(job, node.id) for node in nodes if node.state == NODE_READY
        }
        holding = [node.hostname for node in nodes if node.state != NODE_READY]
        try:
            for hostname, service in started.items():
                # exit 3 is a failed task with that code; anything but "complete" holds them
                if problem(runner.wait(service, ONE_SHOT_TIMEOUT), ONE_SHOT_TIMEOUT) is not None:
                    holding.append(hostname)
        finally:
            for service in started.values():
                self.client.remove_service(service)
        return sorted(holding)

    def one_shots(self) -> OneShots:
        """Runs the team's one-shot services (`team/oneshot.py`) in its image."""
        return OneShots(self.client, self.instance.name, self.layout.prefix, self.image)

    # -- changing what runs -------------------------------------------------------------

    def change_service(
        self,
        name: str,
        *,
        image: str | None = None,
        replicas: int | None = None,
        restart: bool = False,
    ) -> str:
        """Give the service `name` another image, or another count of replicas (0:
        stopped; its node, secrets and volumes stay), or with `restart` a new task of the
        same spec; the image it ran before.

        Raises:
            DockerError: there is no such service, or the swarm refused.
        """
        found = self.client.service_spec(name)
        if found is None:
            raise DockerError(f"Docker engine error: service {name} not found")
        version, spec = found
        container = spec["TaskTemplate"]["ContainerSpec"]
        before = str(container.get("Image") or "")
        if image is not None:
            container["Image"] = image
        if replicas is not None:
            spec["Mode"] = {"Replicated": {"Replicas": replicas}}
        if restart:
            template = spec["TaskTemplate"]
            template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
        self.client.update_service(name, version, spec)
        return before

    def wait_stopped(self, name: str, timeout: float = SECRET_RELEASE_TIMEOUT) -> None:
        """Wait until no task of service `name` runs (after `change_service(replicas=0)`).

        Raises:
            DockerError: one still runs after `timeout`.
        """
        service = next((s for s in self._services() if s.name == name), None)
        deadline = time.monotonic() + timeout
        while service is not None:
            tasks = self.client.swarm_tasks(service=service.id, ended=True)
            if all(t.state in TASK_ENDED for t in tasks):
                return
            if time.monotonic() > deadline:
                raise DockerError(f"{name} did not stop within {timeout:.0f} s")
            time.sleep(0.5)

    def ask_person(self, name: str, path: str, timeout: float = 10.0) -> tuple[bool, bytes]:
        """GET `path` of person `name`'s opencode as the door does, over the team's
        overlay: from inside the door's container on this manager, as the edge's user,
        with their internal password from the door's own records (it never leaves the
        door). Whether it answered 2xx, and the body (or why not).

        Raises:
            DoorNotRunning, DockerError.
        """
        self.layout.person(name)  # checks the name
        output, exit_code = self.client.exec_run(
            self._door_container(),
            ["/usr/bin/python3", "-I", "-c", ASK_PERSON_SCRIPT, name, path, f"{timeout:g}"],
            user=EDGE_USER,
            workdir="/",
        )
        body = b"".join(output)
        return exit_code() == 0, body

    def wait_person(self, name: str, timeout: float = PERSON_START_TIMEOUT) -> None:
        """Wait until person `name`'s opencode answers its health check through the door's
        overlay.

        Raises:
            PersonNotAnswering: not within `timeout`.
        """
        deadline = time.monotonic() + timeout
        said = b""
        while True:
            try:
                answered, said = self.ask_person(name, HEALTH_PATH, timeout=3)
            except (DoorNotRunning, DockerError) as error:
                answered, said = False, str(error).encode()
            if answered:
                return
            if time.monotonic() > deadline:
                reason = said.decode(errors="replace").strip().splitlines()[-1:] or ["no answer"]
                raise PersonNotAnswering(name, timeout, reason[0])
            time.sleep(1)

    def push_image(self, reporter: ProgressReporter) -> None:
        """Push the image of the configuration from this manager to the cluster's
        registry (`image`), when there is one.

        Raises:
            ImagePushFailed.
        """
        if self.config.cluster.registry:
            self._push(image_for(self.config), self.image, reporter)

    # -- commands -----------------------------------------------------------------------

    def init(self, reporter: ProgressReporter, on_step: Callable[[str], None]) -> ClusterStatus:
        """Ready the swarm for the team: the image in the cluster's registry (pushed by
        the manager, which must hold it), and the team's overlay network.

        Raises:
            NotASwarmManager, ImageNotFound (not on the manager), ImagePushFailed.
        """
        self.membership()
        local = image_for(self.config)
        if self.client.inspect_image(local) is None:
            raise ImageNotFound(local)
        if self.config.cluster.registry:
            on_step(f"Pushing {self.image} from the manager")
            self.push_image(reporter)
        on_step(f"Network {self.layout.cluster_network} (overlay, attachable)")
        self.client.create_overlay_network(
            self.layout.cluster_network,
            {LABEL_MANAGED: "true", LABEL_INSTANCE: self.instance.name},
        )
        return self.status()

    def _push(self, local: str, ref: str, reporter: ProgressReporter) -> None:
        repository, tag = ref.rsplit(":", 1)
        self.client.tag_image(local, repository, tag)
        try:
            for chunk in self.client.push(repository, tag):
                error = handle_pull_chunk(chunk, reporter)
                if error is not None:
                    raise ImagePushFailed(ref, error)
        except DockerError as exc:
            raise ImagePushFailed(ref, exc.message) from exc
        reporter.done()

    def status(self) -> ClusterStatus:
        """The manager, the nodes, the front door's URL and what is out of place.

        Raises:
            NotASwarmManager.
        """
        membership = self.membership()
        nodes = self.client.swarm_nodes()
        services = self._services()
        rows = self._rows(nodes, services)
        manager = next((n for n in nodes if n.id == membership.node_id), None)
        network_ready = self.client.network_exists(self.layout.cluster_network)
        door = next((s for s in services if s.labels.get(LABEL_ROLE) == DOOR_ROLE), None)
        door_url = None
        if door is not None and door.host_ports and manager is not None:
            door_url = f"http://{manager.address}:{door.host_ports[0][0]}"
        return ClusterStatus(
            manager=manager,
            nodes=rows,
            network=self.layout.cluster_network,
            network_ready=network_ready,
            image=self.image,
            door_url=door_url,
            problems=self._problems(nodes, services, network_ready),
        )

    def _problems(
        self, nodes: list[SwarmNode], services: list[SwarmService], network_ready: bool
    ) -> list[str]:
        problems = []
        if not network_ready:
            problems.append(f"the team's network {self.layout.cluster_network} does not exist")
        if len(nodes) > 1 and not self.config.cluster.registry:
            problems.append(
                "no registry is set (cluster.registry): nodes other than the manager "
                "have no way to get the image, so new people all go to the manager"
            )
        by_id = {node.id: node for node in nodes}
        for node in nodes:
            if node.state != NODE_READY:
                why = f" ({node.message})" if node.message else ""
                problems.append(f"node {node.hostname} is {node.state}{why}")
            elif node.availability != "active":
                problems.append(
                    f"node {node.hostname} is {node.availability}: nothing new starts there"
                )
        tasks = self.client.swarm_tasks()
        running = {t.service_id for t in tasks if t.state == "running"}
        lost = {
            reach.service: reach
            for reach in reaches(nodes, services, tasks).values()
            if reach.state == UNREACHABLE
        }
        for service in services:
            if service.name in lost:
                problems.append(
                    f"{lost[service.name].person} is unreachable: {lost[service.name].reason()}"
                )
                continue
            if service.id in running:
                continue
            pin = pinned_node(service)
            where = f" (pinned to {by_id[pin].hostname})" if pin in by_id else ""
            problems.append(f"{service.name} is not running{where}")
        return problems


def person_json(ask: Callable[[str, str], tuple[bool, bytes]], name: str, path: str) -> Any:
    """The JSON person `name`'s opencode answers at `path`, asked by `ask` (as
    `Cluster.ask_person`).

    Raises:
        DockerError: it did not answer 2xx; ValueError: not JSON.
    """
    answered, body = ask(name, path)
    if not answered:
        said = body.decode(errors="replace").strip().splitlines()[-1:] or ["no answer"]
        raise DockerError(f"GET {path} failed: {said[0]}")
    return json.loads(body)


def _instance_name(service: SwarmService) -> str:
    """How a team's service is named in lists: its person, or its role."""
    return service.labels.get(LABEL_PERSON) or service.labels.get(LABEL_ROLE) or service.name
