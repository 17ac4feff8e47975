"""Where a team's door and people run (`team/placement.py`), on the in-memory engine: the
one engine `occ` talks to, or the swarm it manages when the configuration sets `cluster`;
`occ team enable` and `occ user add|remove` through each.

The door's login service is stood in for by a dict (`records`), as in test_team.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeEngine
from opencode_cloud.config.schema import ClusterSettings, Config
from opencode_cloud.defaults import INTERNAL_PASSWORD_PATH
from opencode_cloud.docker.image import DEFAULT_IMAGE
from opencode_cloud.docker.swarm import SwarmMembership
from opencode_cloud.docker.volume import volume_names
from opencode_cloud.team.cluster import REMOVE_VOLUMES_SCRIPT, SWARM_SERVICE_LABEL
from opencode_cloud.team.errors import (
    NoBackupOnCluster,
    PersonExists,
    VolumesNotRemoved,
)
from opencode_cloud.team.placement import SwarmPlacement
from opencode_cloud.team.team import EnginePlacement, Team
from service_helpers import INSTANCE
from team_swarm import GIB, PREFIX, REGISTRY, _manager, _team


def test_the_engine_alone_unless_cluster_is_set_and_the_engine_manages_a_swarm(
    fake: FakeEngine, tmp_path: Path
) -> None:
    _manager(fake)
    assert isinstance(_team(fake, tmp_path, Config()).placement, EnginePlacement)
    with_cluster = Config(cluster=ClusterSettings(registry=REGISTRY))
    assert isinstance(_team(fake, tmp_path, with_cluster).placement, SwarmPlacement)
    # A worker, or no swarm: the engine alone, as before.
    fake.membership = SwarmMembership("active", False, "id-n2")
    assert isinstance(_team(fake, tmp_path, with_cluster).placement, EnginePlacement)
    fake.membership = SwarmMembership("inactive", False)
    assert isinstance(_team(fake, tmp_path, with_cluster).placement, EnginePlacement)


def test_on_a_swarm_enable_runs_the_door_and_the_first_person_as_services_on_the_manager(
    fake: FakeEngine, swarm_team: Team, records: dict[str, Any]
) -> None:
    swarm_team.service.start(wait=False)

    url = swarm_team.enable_team("ada")

    assert url == "http://10.9.0.1:43999" == swarm_team.url
    door_body, ada_body = fake.service_bodies
    assert door_body["Name"] == f"{PREFIX}-door"
    assert door_body["TaskTemplate"]["Placement"]["Constraints"] == ["node.id==id-n1"]
    # It knows it is on a swarm: nothing starts an instance, a lost one is unreachable.
    assert "OCC_TEAM_SWARM=1" in door_body["TaskTemplate"]["ContainerSpec"]["Env"]
    for body in (door_body, ada_body):  # running (and in the swarm's DNS) within seconds
        assert body["TaskTemplate"]["ContainerSpec"]["Healthcheck"] == {"Interval": 5 * 10**9}
    # The first person runs on the manager, where their volumes were copied.
    assert ada_body["Name"] == f"{PREFIX}-user-ada"
    assert ada_body["TaskTemplate"]["Placement"]["Constraints"] == ["node.id==id-n1"]
    assert all(v in fake.volumes for v in volume_names(INSTANCE.for_person("ada")))
    assert records["ada"]["admin"] is True
    assert records["ada"]["upstream"] == f"{PREFIX}-user-ada:4096"
    (secret,) = ada_body["TaskTemplate"]["ContainerSpec"]["Secrets"]
    assert fake.secrets[secret["SecretName"]].decode() == records["ada"]["internal_password"]
    assert secret["File"]["Name"] == INTERNAL_PASSWORD_PATH
    # No container of the team on the manager's engine itself: no door, no starter.
    assert f"{PREFIX}-door" not in fake.containers
    assert f"{PREFIX}-door-starter" not in fake.containers
    assert swarm_team.status().door == "running"


def test_on_a_swarm_people_go_to_the_nodes_and_their_records_to_the_doors_task(
    fake: FakeEngine, swarm_team: Team, records: dict[str, Any]
) -> None:
    swarm_team.add("bob", password="bob-password", memory_bytes=GIB)
    swarm_team.add("cat", memory_bytes=GIB)
    with pytest.raises(PersonExists):
        swarm_team.add("bob")
    pins = {b["Name"]: b["TaskTemplate"]["Placement"]["Constraints"] for b in fake.service_bodies}
    assert pins == {
        f"{PREFIX}-user-bob": ["node.id==id-n3"],
        f"{PREFIX}-user-cat": ["node.id==id-n2"],
    }
    assert sorted(records) == ["bob", "cat"]
    assert [p.name for p in swarm_team.people()] == ["bob", "cat"]
    assert [p.memory_limit for p in swarm_team.people()] == [GIB, GIB]
    swarm_team.passwd("bob", "another-password")
    swarm_team.disable("bob")
    assert [op["op"] for op in records["bob"]["ops"]] == ["passwd", "disable"]
    # Nothing was made on the manager's engine for them.
    assert not [c for c in fake.containers if "-user-" in c]
    assert not [n for n in fake.networks if "-user-" in n]


def test_removing_with_volumes_deletes_them_on_their_node_by_a_one_shot_service(
    fake: FakeEngine, swarm_team: Team, records: dict[str, Any]
) -> None:
    swarm_team.add("bob", memory_bytes=GIB)
    removed = swarm_team.remove("bob", volumes=True)

    volumes = list(volume_names(INSTANCE.for_person("bob")))
    assert removed[0] == f"{PREFIX}-user-bob" and removed[-len(volumes) :] == volumes
    assert "bob" not in records
    _, remover = fake.service_bodies
    task = remover["TaskTemplate"]
    assert task["Placement"]["Constraints"] == ["node.id==id-n3"]  # bob's node
    assert task["RestartPolicy"] == {"Condition": "none"}
    container = task["ContainerSpec"]
    assert container["Image"] == f"{REGISTRY}/{DEFAULT_IMAGE}"
    assert container["Command"] == ["/bin/sh", "-c", REMOVE_VOLUMES_SCRIPT, "sh", *volumes]
    assert container["CapabilityDrop"] == ["ALL"]
    assert container["Mounts"] == [
        {"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/var/run/docker.sock"}
    ]
    assert task["Networks"] == []
    # Nothing is left of bob, the one-shot service included.
    assert fake.services == []
    assert not [s for s in fake.secrets if "-user-bob-" in s]


def test_a_failed_volume_removal_is_an_error_and_leaves_no_service(
    fake: FakeEngine, swarm_team: Team, records: dict[str, Any]
) -> None:
    swarm_team.add("bob", memory_bytes=GIB)
    fake.one_shot_end = ("failed", "task: non-zero exit (1)")
    with pytest.raises(VolumesNotRemoved, match="non-zero exit"):
        swarm_team.remove("bob", volumes=True)
    assert fake.services == []


def test_without_volumes_no_one_shot_service_runs(
    fake: FakeEngine, swarm_team: Team, records: dict[str, Any]
) -> None:
    swarm_team.add("bob", memory_bytes=GIB)
    assert swarm_team.remove("bob", volumes=False) == [
        f"{PREFIX}-user-bob",
        *fake.called("remove_secret"),
    ]
    assert len(fake.service_bodies) == 1


def test_a_final_backup_of_volumes_on_another_node_is_refused_only_when_they_go(
    fake: FakeEngine, swarm_team: Team, records: dict[str, Any]
) -> None:
    swarm_team.add("bob", memory_bytes=GIB)  # on n3, not the manager
    with pytest.raises(NoBackupOnCluster, match="n3"):
        swarm_team.final_backup("bob", volumes=True)
    assert swarm_team.final_backup("bob", volumes=False) is None
    assert "bob" in records


def _occ_on_a_swarm(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake: FakeEngine,
    cluster: dict[str, Any],
) -> Any:
    """`occ` against `fake` as the manager of a swarm of n1..n3 with the door's task
    running, for a team with the configuration's `cluster` set to `cluster`."""
    from cli_runner import isolated_runner
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.config.paths import instance_paths

    monkeypatch.setattr(AppContext, "connect", lambda self, timeout=None: fake)
    occ = isolated_runner(tmp_path, monkeypatch, capsys)
    assert occ("config", "set", "cluster", json.dumps(cluster)).code == 0
    instance_paths().team_file.write_text(json.dumps({"enabled": True, "first": "ada"}))
    _manager(fake)
    fake.create_container(
        "door-task.1",
        {"Image": DEFAULT_IMAGE, "Labels": {SWARM_SERVICE_LABEL: "opencode-cloud-door"}},
    )
    fake.start_container("door-task.1")
    return occ


def test_occ_user_remove_volumes_on_another_node_without_no_backup_changes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake: FakeEngine,
    records: dict[str, Any],
) -> None:
    from cli_runner import one_error

    occ = _occ_on_a_swarm(tmp_path, monkeypatch, capsys, fake, {"registry": REGISTRY})
    added = occ("user", "add", "bob", "--memory", "1g")
    assert added.code == 0, added.err
    assert "They sign in at http://10.9.0.1:" in added.out
    services = list(fake.services)

    result = occ("user", "remove", "bob", "--volumes", "--yes")

    assert result.code != 0
    assert "on node n3" in one_error(result)
    assert "--no-backup" in result.err
    assert fake.services == services and "bob" in records
    assert occ("user", "remove", "bob", "--volumes", "--no-backup", "--yes").code == 0
    assert fake.services == [] and "bob" not in records


def test_on_a_swarm_the_doors_certificate_and_key_are_secrets_it_alone_reads(
    fake: FakeEngine, tmp_path: Path, records: dict[str, Any]
) -> None:
    from opencode_cloud.access.tls import CONTAINER_CERT, CONTAINER_KEY
    from opencode_cloud.defaults import EDGE_UID

    _manager(fake)
    fake.create_overlay_network(f"{PREFIX}-cluster", {})
    fake.create_container(
        "door-task.1", {"Image": DEFAULT_IMAGE, "Labels": {SWARM_SERVICE_LABEL: f"{PREFIX}-door"}}
    )
    fake.start_container("door-task.1")
    config = Config(port=43999, tls="self-signed", cluster=ClusterSettings(registry=REGISTRY))
    team = _team(fake, tmp_path, config)

    assert team.placement.start_door(lambda _m: None) == "https://10.9.0.1:43999"

    (door_body,) = fake.service_bodies
    mounted = {s["File"]["Name"]: s for s in door_body["TaskTemplate"]["ContainerSpec"]["Secrets"]}
    assert sorted(mounted) == sorted([CONTAINER_CERT, CONTAINER_KEY])
    key = fake.secrets[mounted[CONTAINER_KEY]["SecretName"]]
    assert key.startswith(b"-----BEGIN") and b"PRIVATE KEY" in key
    assert mounted[CONTAINER_KEY]["File"] == {
        "Name": CONTAINER_KEY,
        "UID": str(EDGE_UID),
        "GID": str(EDGE_UID),
        "Mode": 0o600,
    }
    assert b"CERTIFICATE" in fake.secrets[mounted[CONTAINER_CERT]["SecretName"]]
    assert key.decode() not in json.dumps(door_body)
    # Started again, the door service is left as it is: no new secrets.
    team.placement.start_door(lambda _m: None)
    assert len(fake.secrets) == 2


def test_occ_user_add_without_a_registry_and_no_room_on_the_manager_says_set_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake: FakeEngine,
    records: dict[str, Any],
) -> None:
    from cli_runner import one_error

    occ = _occ_on_a_swarm(tmp_path, monkeypatch, capsys, fake, {})
    manager, *workers = fake.nodes
    fake.nodes = [dataclasses.replace(manager, memory_bytes=GIB // 2), *workers]

    result = occ("user", "add", "bob", "--memory", "1g")  # n2 and n3 have room, no image

    assert result.code != 0
    assert "only node with the image" in one_error(result)
    assert "registry" in result.err and "cluster init" in result.err
    assert fake.services == [] and "bob" not in records


def _made_at_first_sign_in(records: dict[str, Any], name: str) -> None:
    """What the door's records hold of a person made by their first single sign-on: no
    password, no instance yet."""
    records[name] = {"upstream": "", "internal_password": ""}


def test_on_a_swarm_sso_sync_runs_the_new_person_as_a_service_on_a_node(
    swarm_team: Team, fake: FakeEngine, records: dict[str, Any]
) -> None:
    from opencode_cloud.team import sso

    _made_at_first_sign_in(records, "carol")

    result = sso.sync(swarm_team)

    assert result == sso.SyncResult(["carol"], [])
    (service,) = [s for s in fake.services if s.name == f"{PREFIX}-user-carol"]
    assert service.constraints and f"{PREFIX}-user-carol" not in fake.containers
    (set_up,) = records["carol"]["ops"]
    assert set_up["op"] == "oidc-instance" and set_up["upstream"] == f"{PREFIX}-user-carol:4096"
    # Every ready node was asked for leftover volumes, by a one-shot service each, gone now.
    searches = [
        b
        for b in fake.service_bodies
        if b["Labels"].get("io.opencode-cloud.role") == "volume-search"
    ]
    assert sorted(b["TaskTemplate"]["Placement"]["Constraints"][0] for b in searches) == [
        "node.id==id-n1", "node.id==id-n2", "node.id==id-n3"
    ]  # fmt: skip
    assert all(b["TaskTemplate"]["Networks"] == [] for b in searches)
    assert not [s for s in fake.services if "volume-search" in s.name]
    assert sso.sync(swarm_team) == sso.SyncResult([], [])  # carol has hers now


@pytest.mark.parametrize("how", ["volumes on a node", "a node that is down"])
def test_on_a_swarm_sso_sync_never_gives_a_new_person_volumes_left_on_any_node(
    swarm_team: Team, fake: FakeEngine, records: dict[str, Any], how: str
) -> None:
    from opencode_cloud.team import sso

    if how == "volumes on a node":
        fake.one_shot_ends["volume-search"] = ("failed", "task: non-zero exit (3)")
    else:
        fake.nodes = [
            fake.nodes[0],
            dataclasses.replace(fake.nodes[1], state="down"),
            fake.nodes[2],
        ]
    _made_at_first_sign_in(records, "alice")

    result = sso.sync(swarm_team)

    assert result == sso.SyncResult([], ["alice"])
    assert not [s for s in fake.services if s.name == f"{PREFIX}-user-alice"]
    assert "ops" not in records["alice"]
