"""What the unit tests share: cheap password hashes, and for the tests of the service, its
version changes and `occ doctor` the in-memory engine holding the default image, opencode
served for real on a local port, and a Service over a configuration file, as one `occ`
run makes it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fake_opencode import FakeOpencode
from fakes import SANDBOX_ENV, FakeEngine
from opencode_cloud.access import credentials
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.config.schema import ClusterSettings, Config
from opencode_cloud.config.store import load_config, save_config
from opencode_cloud.defaults import DEFAULT_OPENCODE_VERSION
from opencode_cloud.docker.image import (
    DEFAULT_IMAGE,
    EDGE_LABEL,
    LABEL_EDGE,
    LABEL_OPENCODE_VERSION,
)
from opencode_cloud.service.service import Service
from opencode_cloud.service.versions import Versions
from opencode_cloud.team import cluster as cluster_module
from opencode_cloud.team import door
from opencode_cloud.team.cluster import SWARM_SERVICE_LABEL
from opencode_cloud.team.errors import DoorNotRunning, DoorRefused
from opencode_cloud.team.team import Team
from service_helpers import INSTANCE, OLD, OLD_REF, REF, Make
from team_swarm import PREFIX, REGISTRY, _manager, _team


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """bcrypt at its lowest cost (4, not 10): its slowness is against guessing, which no
    unit test measures, and at the real cost hashing is most of the unit tests' time."""
    monkeypatch.setattr(credentials, "BCRYPT_ROUNDS", 4)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngine]:
    """For `occ` in this process (`cli_runner`): every command's engine is this fake one.
    (Modules whose tests use an `engine` of their own define it.)"""
    from opencode_cloud.cli.context import AppContext

    fake = FakeEngine()
    monkeypatch.setattr(AppContext, "connect", lambda self, timeout=None: fake)
    yield fake


@pytest.fixture
def fake() -> FakeEngine:
    """An engine holding the default release's image."""
    engine = FakeEngine()
    engine.add_image(
        REF,
        env=SANDBOX_ENV,
        labels={LABEL_OPENCODE_VERSION: DEFAULT_OPENCODE_VERSION, LABEL_EDGE: EDGE_LABEL},
    )
    return engine


@pytest.fixture
def serve(fake: FakeEngine) -> Iterator[Callable[[], FakeOpencode]]:
    """Start one more opencode, answering for `fake`'s container that publishes its port."""
    servers: list[FakeOpencode] = []

    def start() -> FakeOpencode:
        servers.append(FakeOpencode(fake).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def opencode(serve: Callable[[], FakeOpencode]) -> FakeOpencode:
    return serve()


@pytest.fixture
def paths(tmp_path: Path) -> InstancePaths:
    return InstancePaths(tmp_path / INSTANCE.name)


@pytest.fixture
def make(fake: FakeEngine, opencode: FakeOpencode, paths: InstancePaths) -> Make:
    """A Service over a configuration file written with `settings`: one `occ` run."""

    def service(**settings: Any) -> Service:
        config = Config(**{"port": opencode.port, "start_timeout": 5, **settings})
        save_config(paths.config_file, config)
        return Service(fake, config, INSTANCE, paths)

    return service


@pytest.fixture
def versions(make: Make, fake: FakeEngine, paths: InstancePaths) -> Callable[..., Versions]:
    """`Versions` of the instance, saving versions into its configuration file; the engine
    holds the release before the default one too (`OLD`)."""
    fake.add_image(OLD_REF, env=SANDBOX_ENV, labels={LABEL_OPENCODE_VERSION: OLD})

    def build(**settings: Any) -> Versions:
        service = make(**settings)

        def save(config: Config) -> Config:
            save_config(paths.config_file, config)
            return load_config(paths.config_file).config

        return Versions(service, save)

    return build


# -- a team on the in-memory swarm (team_swarm.py) ------------------------------------


@pytest.fixture
def records(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """The door's records of people, reached in the container it is given (on a swarm:
    its task's), changed the way `edge.py admin` changes them."""
    people: dict[str, dict[str, Any]] = {}

    def admin(
        client: Any, layout: Any, request: dict[str, Any], container: str | None = None
    ) -> dict[str, Any]:
        name = container or layout.door
        info = client.find_container(name)
        if info is None or not info.running:
            raise DoorNotRunning(name)
        op, person = request["op"], str(request.get("name"))
        if op == "list":
            return {"ok": True, "people": [{"name": n, **r} for n, r in people.items()]}
        if op == "put":
            people[person] = {k: v for k, v in request.items() if k not in ("op", "name")}
        elif person not in people:
            raise DoorRefused(f"nobody called {person}")
        elif op == "remove":
            del people[person]
        else:
            people[person].setdefault("ops", []).append(request)
        return {"ok": True}

    monkeypatch.setattr(door, "admin", admin)
    monkeypatch.setattr(cluster_module, "door_admin", admin)
    return people


@pytest.fixture
def swarm_team(fake: FakeEngine, tmp_path: Path) -> Team:
    """A team whose configuration sets `cluster`, on a manager of three nodes, readied by
    `occ cluster init` (the overlay), with the door's task container running there."""
    _manager(fake)
    fake.create_overlay_network(f"{PREFIX}-cluster", {})
    fake.create_container(
        "door-task.1", {"Image": DEFAULT_IMAGE, "Labels": {SWARM_SERVICE_LABEL: f"{PREFIX}-door"}}
    )
    fake.start_container("door-task.1")
    return _team(fake, tmp_path, Config(port=43999, cluster=ClusterSettings(registry=REGISTRY)))
