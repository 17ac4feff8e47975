"""Every instance on this machine and on the saved hosts, at a glance (`occ list`).

An instance is known by its files (a folder under the configuration directory, or a
host's folder there) or by its container on the engine (the service's, or a team's
front door), so one made from another configuration folder is listed too. The engines
are asked at the same time, each in a thread of its own with a deadline: a host that
does not answer is listed as unreachable, with the reason, and holds nobody up.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opencode_cloud.config.paths import config_dir, instance_paths
from opencode_cloud.errors import OpencodeCloudError
from opencode_cloud.hosts import LOCAL, Host, HostList, connect, host_root
from opencode_cloud.instance import (
    DEFAULT_INSTANCE,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_ROLE,
    Instance,
)

if TYPE_CHECKING:
    from opencode_cloud.docker.engine import Engine

# Seconds an SSH login to a host may take, and all the questions to one engine together.
LOGIN_TIMEOUT = 5.0
HOST_DEADLINE = 12.0
# Seconds one request to an engine may take.
REQUEST_TIMEOUT = 5.0
# The roles of the containers that stand for an instance: its service, a team's door.
_ROLES = ("service", "door")


@dataclass
class Listed:
    """One instance, as `occ list` shows it.

    Attributes:
        state: Of its container (running, exited, ..., `missing` when it has none; the
            front door's in team mode), or `unknown` when it could not be asked.
        people, people_running: In team mode, how many people have an instance, and how
            many of those run (None otherwise).
        needs_tunnel: It listens on the remote host's loopback: `occ tunnel` reaches it.
        problem: Why it could not be asked (an invalid configuration, say).
    """

    instance: str
    host: str
    state: str
    url: str | None = None
    opencode_version: str | None = None
    health: str | None = None
    team: bool = False
    people: int | None = None
    people_running: int | None = None
    needs_tunnel: bool = False
    problem: str | None = None


@dataclass
class HostListing:
    """One engine and its instances; `error` says why it could not be asked."""

    name: str
    address: str
    reachable: bool = True
    error: str | None = None
    instances: list[Listed] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _known_by_files(base: Path) -> set[str]:
    """The instances that have files under `base`."""
    names = set()
    default = instance_paths(Instance(), base)
    if default.config_file.exists() or default.password_file.exists():
        names.add(DEFAULT_INSTANCE)
    with contextlib.suppress(OSError):
        names |= {p.name for p in (base / "instances").iterdir() if p.is_dir()}
    return names


def _known_by_containers(client: Engine) -> dict[str, bool]:
    """The instances whose service or front door is a container on the engine, and
    whether it is a team's door."""
    names: dict[str, bool] = {}
    for role in _ROLES:
        for name in client.list_containers(
            labels=[f"{LABEL_MANAGED}=true", f"{LABEL_ROLE}={role}"]
        ):
            info = client.find_container(name)
            instance = info.labels.get(LABEL_INSTANCE) if info else None
            if instance:
                names[instance] = names.get(instance, False) or role == "door"
    return names


def _describe(
    client: Engine, host: str, instance: Instance, base: Path | None, *, door: bool
) -> Listed:
    """One instance of the engine `client`, its files under `base`; `door`: a team's
    front door is among its containers."""
    from opencode_cloud.access.credentials import read_password
    from opencode_cloud.config.store import load_config
    from opencode_cloud.service.service import Service
    from opencode_cloud.team import team_enabled
    from opencode_cloud.team.team import Team

    paths = instance_paths(instance, base)
    service = Service(client, lambda: load_config(paths.config_file).config, instance, paths)
    try:
        if door or team_enabled(paths):
            team = Team(service).summary()
            return Listed(
                instance.name,
                host,
                team.door,
                team.url,
                team.version,
                team=True,
                people=team.people,
                people_running=team.running,
            )
        result = service.overview(read_password(paths))
    except OpencodeCloudError as error:
        return Listed(instance.name, host, "unknown", problem=error.message)
    return Listed(
        instance.name,
        host,
        result.state,
        result.url,
        result.opencode_version,
        result.http_health,
        needs_tunnel=result.needs_tunnel,
    )


def _list_host(name: str, address: str, host: Host | None) -> HostListing:
    """The instances of `host` (None: this machine's engine)."""
    listing = HostListing(name, address)
    base = host_root(host.name) if host is not None else None
    try:
        client = connect(host, REQUEST_TIMEOUT, login_timeout=LOGIN_TIMEOUT)
    except OpencodeCloudError as error:
        return HostListing(name, address, reachable=False, error=error.message)
    try:
        containers = _known_by_containers(client)
        names = _known_by_files(base or config_dir()) | set(containers)
        for instance_name in sorted(names, key=lambda n: (n != DEFAULT_INSTANCE, n)):
            try:
                instance = Instance(instance_name)
            except OpencodeCloudError:
                continue  # a folder that is not an instance's
            door = containers.get(instance_name, False)
            listing.instances.append(_describe(client, name, instance, base, door=door))
    except OpencodeCloudError as error:  # the engine stopped answering meanwhile
        return HostListing(name, address, reachable=False, error=error.message)
    finally:
        client.close()
    return listing


def list_instances(deadline: float = HOST_DEADLINE) -> list[HostListing]:
    """Every instance on this machine's engine and on each saved host, asked at the
    same time; a host that has not answered within `deadline` seconds is listed as
    unreachable (its thread is left to end by itself).

    Raises:
        HostError: the list of hosts cannot be read.
    """
    hosts = HostList.load()
    places: list[tuple[str, str, Host | None]] = [(LOCAL, "this machine", None)]
    places += [(h.name, h.address, h) for _, h in sorted(hosts.hosts.items())]
    found: dict[int, HostListing] = {}

    def ask(index: int, place: tuple[str, str, Host | None]) -> None:
        try:
            found[index] = _list_host(*place)
        except Exception as exc:  # whatever went wrong there, the other hosts are listed
            name, address, _host = place
            found[index] = HostListing(name, address, reachable=False, error=repr(exc))

    threads = [
        threading.Thread(target=ask, args=(index, place), daemon=True)
        for index, place in enumerate(places)
    ]
    for thread in threads:
        thread.start()
    end = time.monotonic() + deadline
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    return [
        found.get(index)
        or HostListing(name, address, reachable=False, error=f"no answer within {deadline:g} s")
        for index, (name, address, _host) in enumerate(places)
    ]
