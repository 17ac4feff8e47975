"""The team package on the in-memory engine: the containers, volumes and networks it makes
for the front door, the starter and each person, and how it changes the door's records.

The door's login service is stood in for by a dict (`records`): its own tests are
`test_edge_team.py` (raw sockets) and the end-to-end ones run the real door."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeEngine
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.config.schema import Config
from opencode_cloud.config.store import save_config
from opencode_cloud.defaults import INTERNAL_PASSWORD_PATH, ROLE_ENV
from opencode_cloud.docker.volume import volume_names
from opencode_cloud.instance import LABEL_CONFIG_HASH, LABEL_PERSON, LABEL_ROLE, InvalidPersonName
from opencode_cloud.service.service import Service
from opencode_cloud.team import door, team_enabled
from opencode_cloud.team.errors import (
    DoorNotRunning,
    PersonExists,
    PersonNotFound,
    TeamAlreadyEnabled,
)
from opencode_cloud.team.team import Team
from service_helpers import INSTANCE

PREFIX = INSTANCE.service_prefix


@pytest.fixture
def records(monkeypatch: pytest.MonkeyPatch, fake: FakeEngine) -> dict[str, dict[str, Any]]:
    """The door's records of people, changed the way `edge.py admin` changes them."""
    people: dict[str, dict[str, Any]] = {}

    def admin(client: Any, layout: Any, request: dict[str, Any]) -> dict[str, Any]:
        info = client.find_container(layout.door)
        if info is None or not info.running:
            raise DoorNotRunning(layout.door)
        op, name = request["op"], str(request.get("name"))
        if op == "list":
            return {"ok": True, "people": [{"name": n, **r} for n, r in people.items()]}
        if op == "put":
            people[name] = {k: v for k, v in request.items() if k not in ("op", "name")}
        elif op == "remove":
            del people[name]
        else:
            people[name].setdefault("ops", []).append(request)
        return {"ok": True}

    monkeypatch.setattr(door, "admin", admin)
    return people


@pytest.fixture
def team(fake: FakeEngine, tmp_path: Path) -> Team:
    paths = InstancePaths(tmp_path / INSTANCE.name)
    config = Config(port=43999, start_timeout=5)
    save_config(paths.config_file, config)
    return answering(Team(Service(fake, config, INSTANCE, paths)))


def answering(team: Team) -> Team:
    """A team whose door and people answer at once (nothing listens on the fake engine)."""
    team.door_answers = lambda: True
    team.person_answers = lambda _container: True
    return team


def _env(fake: FakeEngine, name: str) -> dict[str, str]:
    return dict(e.split("=", 1) for e in fake.containers[name]["Config"]["Env"])


def test_the_door_publishes_the_port_and_holds_none_of_the_users_environment(
    fake: FakeEngine, tmp_path: Path, records: dict[str, Any]
) -> None:
    paths = InstancePaths(tmp_path / INSTANCE.name)
    config = Config(port=43999, env={"OPENAI_API_KEY": "sk-secret"})
    team = answering(Team(Service(fake, config, INSTANCE, paths)))

    team.start()

    door_json = fake.containers[f"{PREFIX}-door"]
    assert door_json["HostConfig"]["PortBindings"]["3000/tcp"][0]["HostPort"] == "43999"
    assert door_json["HostConfig"]["NetworkMode"] == f"{PREFIX}-door-net"
    env = _env(fake, f"{PREFIX}-door")
    assert env[ROLE_ENV] == "door"
    assert "OPENAI_API_KEY" not in env
    assert door_json["Config"]["Labels"][LABEL_ROLE] == "door"
    assert door_json["HostConfig"]["Sysctls"] == {"net.ipv4.ip_forward": "0"}
    mounts = {m["Target"]: m["Source"] for m in door_json["HostConfig"]["Mounts"]}
    assert mounts == {
        "/var/lib/opencode-cloud-edge": f"{PREFIX}-door-state",
        "/run/opencode-cloud/starter": f"{PREFIX}-door-starter",
    }


def test_the_starter_has_the_socket_and_nothing_else(
    fake: FakeEngine, team: Team, records: dict[str, Any]
) -> None:
    team.start()

    body = fake.containers[f"{PREFIX}-door-starter"]
    host = body["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"]
    assert not host.get("CapAdd")
    assert host["ReadonlyRootfs"] is True
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert not host.get("PortBindings")
    sources = sorted(m["Source"] for m in host["Mounts"])
    assert sources == sorted(["/var/run/docker.sock", f"{PREFIX}-door-starter"])


def test_start_hands_the_starter_a_template_of_a_new_persons_instance_for_its_eyes_only(
    fake: FakeEngine, team: Team, records: dict[str, Any]
) -> None:
    team.start()

    starter = f"{PREFIX}-door-starter"
    path = "/run/opencode-cloud/starter/person.json"
    assert fake.file_modes[starter][path] == (0o600, 0)
    template = json.loads(fake.files[starter][path])
    placeholder = template["placeholder"]
    made = json.loads(json.dumps(template).replace(placeholder, "carol"))
    # What the starter makes of it is what `occ user add carol` makes, but the digest.
    wanted = team.person_spec("carol", team._limits(None, None)).create_body()
    del wanted["Labels"][LABEL_CONFIG_HASH]
    assert made["body"] == wanted
    assert sorted(v["Name"] for v in made["volumes"]) == sorted(team.layout.person_volumes("carol"))
    assert made["network"]["Name"] == team.layout.person_network("carol")
    assert made["door"] == f"{PREFIX}-door" and made["port"] == 4096
    assert template["max_people"] > 0


def test_a_person_gets_their_own_container_volumes_and_network(
    fake: FakeEngine, team: Team, records: dict[str, Any]
) -> None:
    team.start()

    password = team.add("alice", memory_bytes=1 << 30, cpus=1.5, email="a@example.com")

    name = f"{PREFIX}-user-alice"
    body = fake.containers[name]
    assert not body["HostConfig"].get("PortBindings")
    assert not body["Config"].get("ExposedPorts")
    assert body["HostConfig"]["NetworkMode"] == f"{name}-net"
    assert body["HostConfig"]["Memory"] == 1 << 30
    assert body["HostConfig"]["NanoCpus"] == 1_500_000_000
    assert _env(fake, name)[ROLE_ENV] == "person"
    assert body["Config"]["Labels"][LABEL_PERSON] == "alice"
    assert {m["Source"] for m in body["HostConfig"]["Mounts"]} == set(
        volume_names(INSTANCE.for_person("alice"))
    )
    assert all(
        v.startswith(f"{PREFIX}-user-alice-") for v in volume_names(INSTANCE.for_person("alice"))
    )
    # Only the door shares the person's network.
    assert fake.networks[f"{name}-net"]["Containers"] == {f"{PREFIX}-door"}
    # The internal password went in as a root-only file, and to the door's record.
    internal = fake.files[name][INTERNAL_PASSWORD_PATH].decode()
    assert fake.file_modes[name][INTERNAL_PASSWORD_PATH] == (0o600, 0)
    record = records["alice"]
    assert record["internal_password"] == internal
    assert record["upstream"] == f"{name}:4096"
    assert record["email"] == "a@example.com"
    import bcrypt

    assert bcrypt.checkpw(password.encode(), record["hash"].encode())
    assert password not in json.dumps(body)
    assert internal not in json.dumps(body)


def test_two_people_are_on_different_networks(
    fake: FakeEngine, team: Team, records: dict[str, Any]
) -> None:
    team.start()
    team.add("alice")
    team.add("bob")

    alice_net = fake.containers[f"{PREFIX}-user-alice"]["HostConfig"]["NetworkMode"]
    bob_net = fake.containers[f"{PREFIX}-user-bob"]["HostConfig"]["NetworkMode"]
    assert alice_net != bob_net
    assert f"{PREFIX}-user-bob" not in fake.networks[alice_net]["Containers"]


def test_adding_someone_twice_or_a_bad_name_is_refused(
    fake: FakeEngine, team: Team, records: dict[str, Any]
) -> None:
    team.start()
    team.add("alice")
    calls = len(fake.calls)

    with pytest.raises(PersonExists):
        team.add("alice")
    with pytest.raises(InvalidPersonName):
        team.add("Alice")
    with pytest.raises(InvalidPersonName):
        team.add("../bob")
    assert len(fake.calls) == calls


def test_people_need_a_running_door(fake: FakeEngine, team: Team, records: dict[str, Any]) -> None:
    with pytest.raises(DoorNotRunning):
        team.add("alice")
    assert f"{PREFIX}-user-alice" not in fake.containers


def test_disable_signs_out_and_stops_the_instance(
    fake: FakeEngine, team: Team, records: dict[str, Any]
) -> None:
    team.start()
    team.add("alice")
    fake.start_container(f"{PREFIX}-user-alice")

    team.disable("alice")

    assert records["alice"]["ops"][-1] == {"op": "disable", "name": "alice"}
    assert fake.containers[f"{PREFIX}-user-alice"]["State"]["Running"] is False
    with pytest.raises(PersonNotFound):
        team.disable("nobody")


def test_remove_keeps_the_volumes_unless_asked(
    fake: FakeEngine, team: Team, records: dict[str, Any]
) -> None:
    team.start()
    team.add("alice")
    team.add("bob")

    team.remove("alice", volumes=False)

    assert "alice" not in records
    assert f"{PREFIX}-user-alice" not in fake.containers
    assert f"{PREFIX}-user-alice-net" not in fake.networks
    assert all(v in fake.volumes for v in volume_names(INSTANCE.for_person("alice")))
    # Bob is untouched.
    assert f"{PREFIX}-user-bob" in fake.containers and "bob" in records

    team.remove("bob", volumes=True)
    assert not any(v in fake.volumes for v in volume_names(INSTANCE.for_person("bob")))
    assert all(v in fake.volumes for v in volume_names(INSTANCE.for_person("alice")))


def test_enabling_copies_the_service_data_to_the_first_person_and_keeps_it(
    fake: FakeEngine, team: Team, records: dict[str, Any]
) -> None:
    team.service.start(wait=False)
    password = team.service.paths.password_file.read_text().strip()

    team.enable_team("ada")

    assert team_enabled(team.paths)
    assert team.first_person() == "ada"
    assert fake.containers[INSTANCE.container_name]["State"]["Running"] is False
    # Every service volume is still there, and was copied into ada's (one helper).
    assert all(v in fake.volumes for v in volume_names(INSTANCE))
    assert all(v in fake.volumes for v in volume_names(INSTANCE.for_person("ada")))
    copies = [c for c in fake.calls if c[0] == "create_container" and "copy-helper" in c[1]]
    assert len(copies) == 1
    import bcrypt

    assert bcrypt.checkpw(password.encode(), records["ada"]["hash"].encode())
    assert records["ada"]["admin"] is True
    with pytest.raises(TeamAlreadyEnabled):
        team.enable_team("ada")


def test_disabling_brings_the_first_person_back_and_keeps_everyone(
    fake: FakeEngine, team: Team, records: dict[str, Any]
) -> None:
    team.service.start(wait=False)
    team.enable_team("ada")
    team.add("bob")

    assert team.disable_team() == "ada"

    assert not team_enabled(team.paths)
    assert f"{PREFIX}-door" not in fake.containers
    for who in ("ada", "bob"):
        assert all(v in fake.volumes for v in volume_names(INSTANCE.for_person(who)))
    copies = [c for c in fake.calls if c[0] == "create_container" and "copy-helper" in c[1]]
    assert len(copies) == 2  # in, then back


def test_a_changed_door_setting_re_creates_the_door(
    fake: FakeEngine, tmp_path: Path, records: dict[str, Any]
) -> None:
    paths = InstancePaths(tmp_path / INSTANCE.name)
    answering(Team(Service(fake, Config(port=43999), INSTANCE, paths))).start()
    first = fake.containers[f"{PREFIX}-door"]["Id"]
    answering(Team(Service(fake, Config(port=43999), INSTANCE, paths))).start()
    assert fake.containers[f"{PREFIX}-door"]["Id"] == first

    steps: list[str] = []
    answering(Team(Service(fake, Config(port=44000), INSTANCE, paths))).start(on_step=steps.append)

    assert fake.containers[f"{PREFIX}-door"]["Id"] != first
    assert any("port" in s for s in steps)


def test_uninstall_takes_the_whole_team_and_its_networks(
    fake: FakeEngine, team: Team, records: dict[str, Any]
) -> None:
    from opencode_cloud.service.uninstall import plan_uninstall, uninstall

    team.start()
    team.add("alice")
    plan = plan_uninstall(fake, INSTANCE, team.paths, volumes=True)
    assert f"{PREFIX}-door" in plan.containers and f"{PREFIX}-user-alice" in plan.containers
    assert sorted(plan.networks) == sorted([f"{PREFIX}-door-net", f"{PREFIX}-user-alice-net"])

    uninstall(fake, INSTANCE, team.paths, plan)

    assert not fake.networks
    assert not [c for c in fake.containers if c.startswith(PREFIX)]
    assert not [v for v in fake.volumes if v.startswith(f"{PREFIX}-user-alice")]


def test_a_person_removed_for_a_restore_comes_back_as_they_were(
    fake: FakeEngine, team: Team, records: dict[str, Any]
) -> None:
    team.start()
    team.add("alice", memory_bytes=1 << 30, cpus=1.5)
    name = f"{PREFIX}-user-alice"
    fake.start_container(name)
    before = fake.files[name][INTERNAL_PASSWORD_PATH]
    with team.person_kept("alice"):
        fake.remove_container(name, force=True)  # what a restore does
    body = fake.containers[name]
    assert body["HostConfig"]["Memory"] == 1 << 30
    assert body["HostConfig"]["NanoCpus"] == 1_500_000_000
    assert fake.files[name][INTERNAL_PASSWORD_PATH] == before
    assert body["State"]["Running"] is True
    assert fake.networks[f"{name}-net"]["Containers"] == {f"{PREFIX}-door"}
