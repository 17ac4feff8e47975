"""`Team`: the front door, the starter and the people's instances of one service.

Single-user mode stays the default; `enable` turns the service into a team whose first
person is today's user (their files and sessions copied into their own volumes, the
service's left as they were), and `disable` brings that person's files back to the
single-user service. The people's records live in the door (`door.admin`); their
containers, volumes and networks carry their names (`layout.TeamLayout`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from opencode_cloud.access import credentials
from opencode_cloud.docker.container import create_with_files, put_files, stop_container
from opencode_cloud.docker.errors import ContainerExited, DockerError, HealthTimeout
from opencode_cloud.docker.health import log_tail
from opencode_cloud.docker.helper import copy_volumes
from opencode_cloud.docker.spec import ContainerSpec
from opencode_cloud.docker.volume import ensure_volumes_exist, volume_names
from opencode_cloud.errors import OpencodeCloudError
from opencode_cloud.instance import LABEL_PERSON, LABEL_ROLE
from opencode_cloud.service.endpoint import Endpoint
from opencode_cloud.service.image import image_for
from opencode_cloud.team import door, read_team_file
from opencode_cloud.team.errors import (
    NoBackupOnCluster,
    PersonExists,
    PersonNotFound,
    TeamAlreadyEnabled,
    TeamNotEnabled,
)
from opencode_cloud.team.layout import TeamLayout
from opencode_cloud.team.people import (
    INTERNAL_PASSWORD_BYTES,
    Person,
    PersonLimits,
    internal_password_file,
    password_hash,
    person_limits,
    person_settings,
    person_spec,
    read_internal_password,
)
from opencode_cloud.team.placement import InstanceState, Placement, SwarmPlacement

if TYPE_CHECKING:
    from opencode_cloud.config.paths import InstancePaths
    from opencode_cloud.config.schema import Config
    from opencode_cloud.docker.engine import Engine
    from opencode_cloud.docker.progress import ProgressReporter
    from opencode_cloud.docker.swarm import SwarmEngine
    from opencode_cloud.instance import Instance
    from opencode_cloud.service.service import Service

# Seconds the door gets to answer healthy after it starts.
DOOR_START_TIMEOUT = 60.0
# A disabled person's instance stops at once: their sessions ended already.
DISABLE_STOP_TIMEOUT = 2.0


@dataclass
class TeamStatus:
    url: str
    door: str  # the door container's state
    people: list[Person] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "team": True,
            "url": self.url,
            "door": self.door,
            "people": [p.to_json() for p in self.people],
        }


@dataclass(frozen=True)
class TeamSummary:
    """A team at a glance (`occ list`)."""

    url: str
    door: str  # the door container's state
    version: str | None  # opencode's, of the door's image
    people: int
    running: int  # people whose instance runs


class Team:
    """The team of one service (`service`: the single-user service of the same
    instance, whose image, configuration and certificate the door shares)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.client: Engine = service.client
        self.layout = TeamLayout(service.instance)
        # Whether the door serves, and whether a person's opencode answers (the tests of
        # the in-memory engine give their own).
        self.door_answers: Callable[[], bool] = self._door_answers
        self.person_answers: Callable[[str], bool] = self._person_answers

    @property
    def config(self) -> Config:
        return self.service.config

    def service_config_changed(self, config: Config) -> None:
        """Go on with `config` (saved by the caller: a new version)."""
        from opencode_cloud.service.service import Service

        self.service = Service(self.client, config, self.service.instance, self.service.paths)
        self.__dict__.pop("placement", None)  # made again of the new configuration

    @property
    def paths(self) -> InstancePaths:
        return self.service.paths

    @property
    def instance(self) -> Instance:
        return self.service.instance

    # -- the team's record on this machine (`paths.team_file`) ------------------------------

    def _record(self) -> dict[str, Any]:
        return read_team_file(self.paths)

    @property
    def enabled(self) -> bool:
        return bool(self._record().get("enabled"))

    def first_person(self) -> str | None:
        name = self._record().get("first")
        return name if isinstance(name, str) else None

    def _save_record(self, *, enabled: bool, first: str | None) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        temp = self.paths.team_file.with_suffix(".tmp")
        temp.write_text(json.dumps({"enabled": enabled, "first": first}) + "\n", encoding="utf-8")
        temp.replace(self.paths.team_file)

    # -- the door and the starter -----------------------------------------------------------

    @property
    def url(self) -> str:
        """Where people sign in."""
        return self.placement.url()

    @functools.cached_property
    def placement(self) -> Placement:
        """Where the door and people's instances run: on a swarm when the configuration
        sets `cluster` and the engine is an active swarm manager, else on this engine."""
        membership = getattr(self.client, "swarm_membership", None)
        if "cluster" in self.config.model_fields_set and membership is not None:
            found = membership()
            if found.state == "active" and found.manager:
                from opencode_cloud.team.cluster import Cluster

                swarm = cast("SwarmEngine", self.client)
                cluster = Cluster(swarm, self.config, self.instance)
                return SwarmPlacement(cluster, self.service.tls_material)
        return EnginePlacement(self)

    def admin(self, request: dict[str, Any]) -> dict[str, Any]:
        """Apply one change to the people's records in the door; its answer.

        Raises:
            DoorNotRunning, DoorRefused.
        """
        return self.placement.admin(request)

    def _image(self) -> tuple[str, str | None, list[str]]:
        ref = image_for(self.config)
        info = self.client.inspect_image(ref)
        return ref, (info.id if info else None), list(info.env if info else ())

    def start(
        self,
        *,
        build: bool = False,
        reporter: ProgressReporter | None = None,
        on_step: Callable[[str], None] = lambda _msg: None,
    ) -> str:
        """Bring the door and the starter up (the people's instances start at their
        sign-in); the URL. A door whose settings changed is made again: the people and
        their sessions are on its volume.

        On a swarm, the door's service and everyone's not disabled are scaled back to one
        task, and each person's opencode answers before it returns.

        Raises:
            ContainerExited, HealthTimeout, PortInUse, ImageNotFound, DockerError,
            PersonNotAnswering.
        """
        placement = self.placement
        if isinstance(placement, SwarmPlacement):
            return placement.start_team(on_step)
        action = self.service.ensure_image(build=build, reporter=reporter)
        if action != "present":
            on_step(f"Image {image_for(self.config)} {action}.")
        image, image_id, image_env = self._image()
        layout = self.layout
        self.client.create_network(layout.door_network, self.instance.labels("network"))
        for volume in (layout.door_state_volume, layout.starter_volume):
            self.client.create_volume(volume, self.instance.labels("door"))
        starter = self.client.find_container(layout.starter)
        if starter is not None and starter.image_id != image_id:
            self.client.remove_container(layout.starter, force=True)
            starter = None
        if starter is None:
            self.client.create_container(layout.starter, door.starter_body(layout, image))
        self.client.start_container(layout.starter)
        self.write_person_template()
        wanted = door.door_spec(
            self.config,
            layout,
            image=image,
            image_id=image_id,
            idle_stop_seconds=self.config.idle_stop_minutes * 60,
        )
        existing = self.client.find_container(layout.door)
        if existing is not None:
            changed = wanted.diff(ContainerSpec.from_inspect(existing, image_env))
            if changed:
                on_step(f"Re-creating the front door because {', '.join(changed)} changed.")
                self.client.remove_container(layout.door, force=True)
                existing = None
        if existing is None:
            material = self.service.tls_material()
            files = dict(material.container_files()) if material else {}
            create_with_files(self.client, wanted, self.instance, files)
        for name in self.person_names():
            self.client.create_network(
                layout.person_network(name), layout.person(name).labels("network")
            )
            self.client.connect_network(layout.person_network(name), layout.door)
        self.client.start_container(layout.door)
        self.wait_until(layout.door, self.door_answers, DOOR_START_TIMEOUT, "no sign-in page")
        return self.url

    def wait_until(
        self, name: str, answers: Callable[[], bool], timeout: float, what: str
    ) -> float:
        """Poll `answers` until it says yes while the container `name` runs; the seconds
        it took. (The image's own health check runs every two minutes: too slow to wait
        for.)

        Raises:
            ContainerExited, HealthTimeout.
        """
        started = time.monotonic()
        while True:
            info = self.client.inspect_container(name)
            if not info.running and not info.restarting:
                raise ContainerExited(
                    name, info.exit_code, restarting=False, log_tail=log_tail(self.client, name)
                )
            if info.running and answers():
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise HealthTimeout(
                    name, timeout, what, refused=False, log_tail=log_tail(self.client, name)
                )
            time.sleep(0.2)

    def _door_answers(self) -> bool:
        """Whether the door serves its sign-in page, as this machine reaches it."""
        import urllib.error
        import urllib.request

        endpoint = (
            Endpoint(self.config.bind_address, self.config.port, "", self.config.tls_mode)
            .trusting(self.paths)
            .reached_through(self.service.runtime)
        )
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=endpoint.context)
        )
        try:
            with opener.open(endpoint.base_url + "/__occ/login", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _person_answers(self, container: str) -> bool:
        """Whether opencode in a person's container answers its health check (asked from
        inside: only the door reaches it from outside)."""
        name = container.removeprefix(f"{self.layout.prefix}-user-")
        try:
            return self.person_service(name).ask_inside("/global/health", timeout=2)[0]
        except OpencodeCloudError:
            return False

    def running_version(self) -> str | None:
        """The newest opencode release a person's instance runs (None: nobody's has one)."""
        from opencode_cloud.docker.image import LABEL_OPENCODE_VERSION

        versions = []
        for name in self._person_containers():
            info = self.client.find_container(name)
            version = info.labels.get(LABEL_OPENCODE_VERSION) if info else None
            if version:
                versions.append(tuple(int(p) for p in version.split("-")[0].split(".")))
        return ".".join(map(str, max(versions))) if versions else None

    def stop(self) -> list[str]:
        """Stop the door, the starter and every person's instance; the names stopped."""
        return self.placement.stop_team()

    def stop_containers(self) -> list[str]:
        """Stop the door, the starter and every person's container on this engine; the
        names stopped."""
        stopped = []
        for name in [self.layout.door, self.layout.starter, *self._person_containers()]:
            with contextlib.suppress(DockerError):
                if stop_container(self.client, name):
                    stopped.append(name)
        return stopped

    # -- people ------------------------------------------------------------------------------

    def _person_containers(self) -> list[str]:
        return self.client.list_containers(
            labels=[*self.instance.label_filter(), f"{LABEL_ROLE}=person"]
        )

    def person_names(self) -> list[str]:
        """The people who have a network (made by `add`, removed by `remove`)."""
        names = []
        for network in self.client.list_networks(
            labels=[*self.instance.label_filter(), f"{LABEL_ROLE}=network"]
        ):
            prefix = f"{self.layout.prefix}-user-"
            if network.startswith(prefix) and network.endswith("-net"):
                names.append(network[len(prefix) : -len("-net")])
        return sorted(names)

    def _records(self) -> dict[str, dict[str, Any]]:
        answer = self.admin({"op": "list"})
        return {str(p["name"]): p for p in answer.get("people") or []}

    def require(self, name: str) -> dict[str, Any]:
        record = self._records().get(name)
        if record is None:
            raise PersonNotFound(name)
        return record

    def _limits(self, memory_bytes: int | None, cpus: float | None) -> PersonLimits:
        return person_limits(self.config, memory_bytes, cpus)

    def create_person(
        self, name: str, limits: PersonLimits, internal: str, config: Config | None = None
    ) -> None:
        """The person's volumes, network and (stopped) container, of `config`'s image
        (default: the service's), with `limits` and the internal password `internal`."""
        spec = self.person_spec(name, limits, config)
        person = self.layout.person(name)
        ensure_volumes_exist(self.client, person)
        network = self.layout.person_network(name)
        self.client.create_network(network, person.labels("network"))
        create_with_files(self.client, spec, person, dict(internal_password_file(internal)))
        self.client.connect_network(network, self.layout.door)

    def person_spec(
        self, name: str, limits: PersonLimits, config: Config | None = None
    ) -> ContainerSpec:
        """The container of person `name` with `limits`, of `config`'s image (default: the
        service's)."""
        config = config or self.config
        image = image_for(config)
        found = self.client.inspect_image(image)
        settings = person_settings(config, limits)
        cpus = limits.cpus or (self.client.info().cpus or 0)
        return person_spec(
            settings,
            self.layout,
            name,
            image=image,
            image_id=found.id if found else None,
            nano_cpus=round(cpus * 1e9),
        )

    def write_person_template(self) -> None:
        """Hand the starter the template of a new person's instance (the service's
        settings, `occ user add`'s limits), from which it makes the instance of a person
        made by their first single sign-on."""
        placeholder = "p" + secrets.token_hex(12)  # a name no setting holds
        spec = self.person_spec(placeholder, self._limits(None, None))
        content = door.person_template(self.layout, spec, placeholder)
        put_files(self.client, self.layout.starter, {door.TEMPLATE_PATH: content})

    def person_limits(self, name: str) -> PersonLimits:
        """The limits person `name`'s container was made with.

        Raises:
            PersonNotFound: they have no container.
        """
        info = self.client.find_container(self.layout.person(name).container_name)
        if info is None:
            raise PersonNotFound(name)
        return PersonLimits(
            info.memory_bytes, info.nano_cpus / 1e9 or None, self.config.limits.pids
        )

    def internal_password(self, name: str) -> str:
        """The internal password the door sends to person `name`'s opencode (the one
        handed to their container)."""
        return read_internal_password(self.client, self.layout.person(name).container_name)

    def add(
        self,
        name: str,
        *,
        password: str | None = None,
        admin: bool = False,
        email: str | None = None,
        memory_bytes: int | None = None,
        cpus: float | None = None,
        near_service: bool = False,
    ) -> str:
        """Add a person: their instance (`Placement.add_person`; on one engine their
        volumes, network and stopped container), and their record in the door. Their
        password (made up unless given), to hand them. `near_service`: their instance
        runs where the single-user service's volumes are (the first person's).

        Raises:
            PersonExists, DoorNotRunning, DoorRefused, DockerError.
        """
        self.layout.person(name)  # checks the name
        if name in self._records() or self.placement.has_instance(name):
            raise PersonExists(name)
        password = password or credentials.generate_password()
        internal = secrets.token_hex(INTERNAL_PASSWORD_BYTES)
        upstream = self.placement.add_person(
            name, self._limits(memory_bytes, cpus), internal, near_service=near_service
        )
        self.admin(
            {
                "op": "put",
                "name": name,
                "hash": password_hash(password),
                "internal_password": internal,
                "upstream": upstream,
                "admin": admin,
                "email": email,
            },
        )
        return password

    def start_person(self, name: str, timeout: float = 120.0) -> None:
        """Start the person's instance if it is stopped, and wait until it answers.

        Raises:
            PersonNotFound (no container), ContainerExited, HealthTimeout.
        """
        container = self.layout.person(name).container_name
        info = self.client.find_container(container)
        if info is None:
            raise PersonNotFound(name)
        if not info.running:
            self.client.start_container(container)
        self.wait_until(
            container,
            lambda: self.person_answers(container),
            timeout,
            "opencode does not answer its health check",
        )

    @contextlib.contextmanager
    def person_kept(self, name: str) -> Iterator[None]:
        """Around a change that removes the person's container (a restore of their
        volumes): it is made again afterwards with the same limits and internal
        password, and started again if it ran.

        Raises:
            PersonNotFound: they have no container.
        """
        container = self.layout.person(name).container_name
        limits = self.person_limits(name)
        info = self.client.inspect_container(container)
        internal = self.internal_password(name)
        try:
            yield
        finally:
            if self.client.find_container(container) is None:
                self.create_person(name, limits, internal)
                if info.running:
                    self.start_person(name)

    def passwd(self, name: str, password: str) -> None:
        self.require(name)
        self.admin(
            {"op": "passwd", "name": name, "hash": password_hash(password)},
        )

    def disable(self, name: str) -> None:
        """Sign the person out (their sessions end on their next request) and stop their
        instance (which ends their open terminals and event streams)."""
        self.require(name)
        self.admin({"op": "disable", "name": name})
        self._stop_person(name)

    def enable(self, name: str) -> None:
        self.require(name)
        self.admin({"op": "enable", "name": name})
        self.placement.resume_person(name)

    def sessions(self, name: str) -> list[dict[str, Any]]:
        """Where and when `name` is signed in: each live session's id, times (`created`,
        `seen`, `expires`, Unix seconds), address and browser."""
        self.require(name)
        answer = self.admin({"op": "sessions", "name": name})
        return list(answer.get("sessions") or [])

    def revoke(self, name: str, which: str) -> int:
        """End `name`'s session `which` (an id from `sessions`), or all of them (`all`):
        refused from its next request on. Their instance is stopped too, as by `disable`:
        only that ends what a revoked browser still holds open (an event stream, a
        terminal); it starts again at their next request. How many ended."""
        self.require(name)
        answer = self.admin({"op": "revoke", "name": name, "session": which})
        self.placement.end_connections(name)
        return int(answer.get("revoked") or 0)

    def totp(self, name: str) -> dict[str, Any]:
        """A new TOTP seed and ten new recovery codes for `name`, replacing theirs, to be
        shown once: `secret`, `uri` (otpauth://) and `recovery_codes`. From now on they
        sign in with a code after their password; their browsers are signed out."""
        self.require(name)
        issuer = "opencode-cloud"
        if not self.instance.is_default:
            issuer = f"{issuer} {self.instance.name}"
        request = {"op": "totp", "name": name, "issuer": issuer}
        answer = self.admin(request)
        return {key: answer.get(key) for key in ("secret", "uri", "recovery_codes")}

    def totp_off(self, name: str) -> None:
        """Take `name`'s TOTP and recovery codes away: their password alone signs them in."""
        self.require(name)
        self.admin({"op": "totp-off", "name": name})

    def _stop_person(self, name: str) -> None:
        self.placement.stop_person(name)

    def stop_instance(self, name: str) -> None:
        """Stop person `name`'s container on this engine, if they have one."""
        container = self.layout.person(name).container_name
        if self.client.find_container(container) is not None:
            stop_container(self.client, container, DISABLE_STOP_TIMEOUT)

    def log(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` lines of the sign-in log (of `name` only, when given), oldest
        first: time, name, event and address; never a secret."""
        request: dict[str, Any] = {"op": "log", "limit": limit}
        if name is not None:
            request["name"] = name
        return list(self.admin(request).get("log") or [])

    def remove(self, name: str, *, volumes: bool) -> list[str]:
        """Take the person out: their record, container and network; their volumes only
        with `volumes`. The names of what was removed."""
        self.require(name)
        self.admin({"op": "remove", "name": name})
        return self.placement.remove_person(name, volumes=volumes)

    def remove_instance(self, name: str, *, volumes: bool) -> list[str]:
        """Remove person `name`'s container and network from this engine (their volumes
        too with `volumes`); the names of what was removed."""
        person = self.layout.person(name)
        removed = []
        if self.client.find_container(person.container_name) is not None:
            self.client.remove_container(person.container_name, force=True)
            removed.append(person.container_name)
        network = self.layout.person_network(name)
        self.client.disconnect_network(network, self.layout.door)
        self.client.remove_network(network)
        removed.append(network)
        if volumes:
            for volume in volume_names(person):
                self.client.remove_volume(volume)
                removed.append(volume)
        return removed

    def person_service(self, name: str) -> Service:
        """The service of person `name`'s instance: their container and volumes."""
        from opencode_cloud.service.service import Service

        return Service(self.client, lambda: self.config, self.layout.person(name), self.paths)

    def final_backup(self, name: str, *, volumes: bool = True) -> str | None:
        """A backup of the person's volumes into the configuration folder's `backups/`,
        before they are removed (and their volumes deleted too, with `volumes`); None
        when they have no volume here, or (without `volumes`) they are on another node.

        Raises:
            NoBackupOnCluster (with `volumes`), BackupWriteFailed, DockerError.
        """
        try:
            self.placement.check_backup(name)
        except NoBackupOnCluster:
            if volumes:
                raise
            return None
        if not any(self.client.inspect_volume(v) for v in volume_names(self.layout.person(name))):
            return None
        from opencode_cloud.backup.backups import Backups

        return str(Backups(self.person_service(name)).final("removed").path)

    def people(self) -> list[Person]:
        """Everyone, with their instance's state, memory in use and disk."""
        records = self._records()
        states = self.placement.states()
        all_volumes = [v for name in records for v in volume_names(self.layout.person(name))]
        sizes = self.client.volume_sizes(all_volumes) if all_volumes else {}
        people = []
        for name, record in sorted(records.items()):
            found = states.get(name)
            volumes = list(volume_names(self.layout.person(name)))
            known = [sizes[v] for v in volumes if sizes.get(v) is not None]
            people.append(
                Person(
                    name=name,
                    admin=bool(record.get("admin")),
                    email=record.get("email"),
                    disabled=bool(record.get("disabled")),
                    created=record.get("created"),
                    last_sign_in=record.get("last_sign_in"),
                    last_seen=record.get("last_seen"),
                    totp=record.get("totp"),
                    state=found.state if found else "missing",
                    memory_bytes=found.memory_in_use if found else None,
                    memory_limit=found.memory_limit if found else 0,
                    disk_bytes=sum(k for k in known if k is not None) if known else None,
                    volumes=[v for v in volumes if v in sizes],
                    node=found.node if found else None,
                )
            )
        return people

    def summary(self) -> TeamSummary:
        """The door and how many people have an instance, and how many of those run,
        from the engine alone (`status` asks the door for each person's record)."""
        from opencode_cloud.docker.image import LABEL_OPENCODE_VERSION

        info = self.client.find_container(self.layout.door)
        running = 0
        for name in self._person_containers():
            person = self.client.find_container(name)
            running += bool(person and person.running)
        # Where the door listens, from its container when there is one.
        url = Endpoint.of(ContainerSpec.from_inspect(info)).url if info else self.url
        return TeamSummary(
            url=url,
            door="missing" if info is None else str(info.status),
            version=info.labels.get(LABEL_OPENCODE_VERSION) if info else None,
            people=len(self.person_names()),
            running=running,
        )

    def status(self) -> TeamStatus:
        state = self.placement.door_state()
        people = self.people() if state == "running" else []
        return TeamStatus(url=self.url, door=state, people=people)

    # -- turning team mode on and off ---------------------------------------------------------

    def enable_team(self, first: str, on_step: Callable[[str], None] = lambda _m: None) -> str:
        """Turn the single-user service into a team whose first person is `first`, with
        the service's password, files and sessions (copied into their volumes; the
        service's volumes are left as they are).

        Raises:
            TeamAlreadyEnabled, PersonExists, DockerError.
        """
        if self.enabled:
            raise TeamAlreadyEnabled(self.instance.name)
        self.layout.person(first)  # checks the name before anything changes
        password, _ = credentials.load_or_create_password(self.paths)
        if self.service.runtime.state() is not None:
            on_step("Stopping the single-user service.")
            self.service.stop()
        self.placement.start_door(on_step)
        person = self.layout.person(first)
        ensure_volumes_exist(self.client, person)
        image, _, _ = self._image()
        ensure_volumes_exist(self.client, self.instance)
        on_step(f"Copying the service's files and sessions to {first}'s volumes.")
        copy_volumes(
            self.client,
            self.instance,
            list(zip(volume_names(self.instance), volume_names(person), strict=True)),
            image=image,
            replace=True,
        )
        if first in self._records():  # the team was on before: the same first person
            self.passwd(first, password)
            self.enable(first)
        else:
            self.add(first, password=password, admin=True, near_service=True)
        self._save_record(enabled=True, first=first)
        return self.url

    def disable_team(self, on_step: Callable[[str], None] = lambda _m: None) -> str:
        """Stop the team and bring the first person's files and sessions back to the
        single-user service's volumes; every person's volumes, and the door's records,
        stay (enabling the team again finds them). The caller starts the service. The
        first person's name.

        Raises:
            TeamNotEnabled, DockerError.
        """
        if not self.enabled:
            raise TeamNotEnabled(self.instance.name)
        first = self.first_person()
        on_step("Stopping the front door and everyone's instance.")
        self.stop()
        if first is not None and all(
            self.client.inspect_volume(v) is not None
            for v in volume_names(self.layout.person(first))
        ):
            on_step(f"Copying {first}'s files and sessions back to the service's volumes.")
            image, _, _ = self._image()
            ensure_volumes_exist(self.client, self.instance)
            copy_volumes(
                self.client,
                self.instance,
                list(
                    zip(
                        volume_names(self.layout.person(first)),
                        volume_names(self.instance),
                        strict=True,
                    )
                ),
                image=image,
                replace=True,
            )
        self.placement.remove_door()
        self._save_record(enabled=False, first=first)
        return first or ""


class EnginePlacement:
    """Every container of the team on the one engine `occ` talks to: the door and the
    starter, each person's container on a network of their own."""

    def __init__(self, team: Team) -> None:
        self.team = team

    def url(self) -> str:
        config = self.team.config
        return Endpoint(config.bind_address, config.port, "", config.tls_mode).url

    def start_door(self, on_step: Callable[[str], None]) -> str:
        return self.team.start(on_step=on_step)

    def door_state(self) -> str:
        info = self.team.client.find_container(self.team.layout.door)
        return str(info.status) if info else "missing"

    def admin(self, request: dict[str, Any]) -> dict[str, Any]:
        return door.admin(self.team.client, self.team.layout, request)

    def has_instance(self, name: str) -> bool:
        container = self.team.layout.person(name).container_name
        return self.team.client.find_container(container) is not None

    def volumes_left(self, name: str) -> list[str]:
        person = self.team.layout.person(name)
        if any(self.team.client.inspect_volume(v) for v in volume_names(person)):
            return ["this engine"]
        return []

    def add_person(
        self, name: str, limits: PersonLimits, internal: str, *, near_service: bool = False
    ) -> str:
        self.team.create_person(name, limits, internal)
        return self.team.layout.upstream(name)

    def remove_person(self, name: str, *, volumes: bool) -> list[str]:
        return self.team.remove_instance(name, volumes=volumes)

    def stop_person(self, name: str) -> None:
        self.team.stop_instance(name)

    def resume_person(self, name: str) -> None:
        """Nothing: the starter starts their instance at their next sign-in."""

    def end_connections(self, name: str) -> None:
        """Their instance stops; the starter starts it again at their next request."""
        self.team.stop_instance(name)

    def stop_team(self) -> list[str]:
        return self.team.stop_containers()

    def remove_door(self) -> None:
        """The door's and the starter's containers go; people's stay, stopped."""
        client, layout = self.team.client, self.team.layout
        with contextlib.suppress(DockerError):
            client.remove_container(layout.door, force=True)
        with contextlib.suppress(DockerError):
            client.remove_container(layout.starter, force=True)

    def states(self) -> dict[str, InstanceState]:
        client = self.team.client
        states = {}
        for container in self.team._person_containers():
            info = client.find_container(container)
            if info is None:
                continue
            states[info.labels.get(LABEL_PERSON, "")] = InstanceState(
                str(info.status),
                client.memory_in_use(info.name) if info.running else None,
                info.memory_bytes,
            )
        return states

    def check_backup(self, name: str) -> None:
        """Nothing to refuse: the volumes are on this engine."""
