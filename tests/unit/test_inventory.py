"""`inventory.list_instances` on the in-memory engine: instances known by their files or
by their containers, a team's front door, a broken configuration, and hosts that refuse
or never answer (asked at the same time, under one deadline)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fake_opencode import FakeOpencode
from fakes import FakeEngine
from opencode_cloud import inventory
from opencode_cloud.config.paths import instance_paths
from opencode_cloud.config.schema import Config
from opencode_cloud.config.store import save_config
from opencode_cloud.defaults import DEFAULT_OPENCODE_VERSION
from opencode_cloud.docker.ssh import HostUnreachable
from opencode_cloud.hosts import Host, HostList
from opencode_cloud.instance import Instance
from opencode_cloud.service.service import Service
from opencode_cloud.team.layout import TeamLayout
from opencode_cloud.team.team import Team


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


def _engines(monkeypatch: pytest.MonkeyPatch, local: FakeEngine, **hosts: Any) -> threading.Event:
    """`connect` gives `local` for this machine and, for each saved host, what `hosts`
    names: an engine, an error to raise, or `"silent"` (waits until the test ends)."""
    done = threading.Event()

    def connect(host: Host | None, timeout: float | None = None, **_: Any) -> Any:
        if host is None:
            return local
        answer = hosts[host.name]
        if answer == "silent":
            done.wait(30)
            raise HostUnreachable(host.address)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(inventory, "connect", connect)
    return done


def _start(fake: FakeEngine, name: str, port: int) -> Service:
    instance = Instance(name)
    paths = instance_paths(instance)
    config = Config(port=port, start_timeout=5)
    save_config(paths.config_file, config)
    service = Service(fake, config, instance, paths)
    service.start()
    return service


def test_every_instance_of_this_machine_with_its_state_url_and_version(
    fake: FakeEngine,
    opencode: FakeOpencode,
    serve: Callable[[], FakeOpencode],
    config_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _start(fake, "alpha", opencode.port)
    other = serve()
    stopped = _start(fake, "beta", other.port)
    stopped.stop()
    save_config(instance_paths(Instance("gamma")).config_file, Config(port=4567))
    broken = instance_paths(Instance("delta")).config_file
    broken.parent.mkdir(parents=True)
    broken.write_text('{"port": 0}')
    (config_dir / "instances" / "Not An Instance").mkdir()
    _engines(monkeypatch, fake)

    [local] = inventory.list_instances()

    rows = {item.instance: item for item in local.instances}
    assert list(rows) == ["alpha", "beta", "delta", "gamma"]
    url = f"http://127.0.0.1:{opencode.port}"
    alpha, beta, gamma, delta = rows["alpha"], rows["beta"], rows["gamma"], rows["delta"]
    assert (alpha.state, alpha.url, alpha.opencode_version, alpha.health) == (
        "running",
        url,
        DEFAULT_OPENCODE_VERSION,
        "healthy",
    )
    assert (beta.state, beta.url, beta.opencode_version) == (
        "exited",
        f"http://127.0.0.1:{other.port}",
        DEFAULT_OPENCODE_VERSION,
    )
    assert (gamma.state, gamma.url, gamma.opencode_version) == (
        "missing",
        "http://127.0.0.1:4567",
        None,
    )
    assert delta.state == "unknown"
    assert delta.problem is not None and "port is 0" in delta.problem


def test_an_instance_known_only_by_its_container_is_listed(
    fake: FakeEngine, opencode: FakeOpencode, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _start(fake, "elsewhere", opencode.port)
    service.paths.config_file.unlink()  # made from another configuration folder
    service.paths.password_file.unlink()
    service.paths.password_hash_file.unlink(missing_ok=True)
    _engines(monkeypatch, fake)

    [local] = inventory.list_instances()

    [item] = local.instances
    assert (item.instance, item.state, item.url) == (
        "elsewhere",
        "running",
        f"http://127.0.0.1:{opencode.port}",
    )
    assert item.health == "unauthorized"  # its password is not here


def test_a_team_is_listed_by_its_front_door_with_its_people(
    fake: FakeEngine, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = Instance("crew")
    paths = instance_paths(instance)
    config = Config(port=43998)
    save_config(paths.config_file, config)
    team = Team(Service(fake, config, instance, paths))
    team.door_answers = lambda: True
    team.start()
    layout = TeamLayout(instance)
    for name in ("ada", "bob"):
        fake.create_network(layout.person_network(name), layout.person(name).labels("network"))
    _engines(monkeypatch, fake)

    [local] = inventory.list_instances()

    [item] = local.instances
    assert (item.instance, item.team, item.state, item.url) == (
        "crew",
        True,
        "running",
        "http://127.0.0.1:43998",
    )
    assert (item.people, item.people_running) == (2, 0)


def test_hosts_that_refuse_or_never_answer_hold_nobody_up(
    fake: FakeEngine, opencode: FakeOpencode, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _start(fake, "alpha", opencode.port)
    remote = FakeEngine()
    HostList(
        {name: Host(name, f"ssh://{name}.example") for name in ("cloud", "down", "silent", "other")}
    ).save()
    done = _engines(
        monkeypatch,
        fake,
        cloud=remote,
        down=HostUnreachable("ssh://down.example", "connect to host: Connection refused"),
        silent="silent",
        other="silent",
    )

    started = time.monotonic()
    try:
        listings = {listing.name: listing for listing in inventory.list_instances(deadline=1.0)}
    finally:
        done.set()
    took = time.monotonic() - started

    assert took < 2.0  # the two silent hosts were waited for at the same time
    assert [item.instance for item in listings["local"].instances] == ["alpha"]
    assert listings["cloud"].reachable and listings["cloud"].instances == []
    assert listings["down"].reachable is False
    assert listings["down"].error == (
        "Cannot reach ssh://down.example over SSH: connect to host: Connection refused."
    )
    for name in ("silent", "other"):
        assert listings[name].reachable is False
        assert listings[name].error == "no answer within 1 s"


def test_the_table_says_what_each_row_is_and_which_hosts_did_not_answer() -> None:
    from opencode_cloud.cli.commands.inventory import table
    from opencode_cloud.inventory import HostListing, Listed

    listings = [
        HostListing(
            "local",
            "this machine",
            instances=[
                Listed("default", "local", "running", "http://127.0.0.1:3000", "1.18.33"),
                Listed(
                    "crew",
                    "local",
                    "running",
                    "http://127.0.0.1:4000",
                    "1.18.33",
                    team=True,
                    people=3,
                    people_running=1,
                ),
                Listed("odd", "local", "unknown", problem="Invalid configuration: port is 0."),
            ],
        ),
        HostListing(
            "far",
            "ssh://far",
            instances=[
                Listed(
                    "work", "far", "running", "http://127.0.0.1:3187", "1.18.33", needs_tunnel=True
                ),
            ],
        ),
        HostListing("down", "ssh://down", reachable=False, error="no answer within 12 s"),
    ]

    lines = table(listings)

    assert lines[0].split() == ["HOST", "INSTANCE", "STATE", "URL", "OPENCODE"]
    assert lines[1].split() == ["local", "default", "running", "http://127.0.0.1:3000", "1.18.33"]
    assert lines[2].endswith("team: 3 people, 1 running")
    assert lines[3].split()[:5] == ["local", "odd", "unknown", "-", "-"]
    assert lines[3].endswith("Invalid configuration: port is 0.")
    assert lines[4].endswith("on that host's loopback: `occ --host far --instance work open`")
    assert lines[5] == "down (ssh://down): unreachable: no answer within 12 s"
    column = lines[0].index("URL")  # the columns line up
    assert all(line[column - 2 : column] == "  " for line in lines[1:5])
    assert table([HostListing("local", "this machine")]) == [
        "No instances yet: `occ start` makes one."
    ]
