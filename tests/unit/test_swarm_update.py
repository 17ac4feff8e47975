"""`occ update` of a team on a swarm (`team/swarm_update.py`), and its start, stop and
disable there (`team/placement.py`), on the in-memory swarm: the order people move in,
the snapshot and restore on each person's node, and putting everyone back when one
fails. What opencode answers is stood in for by `ask` (by the image the person runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeEngine
from opencode_cloud.cli.hints import hint_for
from opencode_cloud.config.schema import Config
from opencode_cloud.docker.image import DEFAULT_IMAGE
from opencode_cloud.docker.volume import volume_names
from opencode_cloud.team.errors import TeamUpdateFailed
from opencode_cloud.team.placement import SwarmPlacement
from opencode_cloud.team.swarm_update import SNAPSHOT_ROLE, SwarmUpdate
from opencode_cloud.team.team import Team
from service_helpers import INSTANCE
from team_swarm import GIB, PREFIX, REGISTRY

OLD = f"{REGISTRY}/{DEFAULT_IMAGE}"
NEW_LOCAL = "opencode-cloud-sandbox:1.18.34"
NEW = f"{REGISTRY}/{NEW_LOCAL}"
SESSIONS = [{"id": "ses_1", "title": "before"}]


@pytest.fixture
def three(fake: FakeEngine, swarm_team: Team, records: dict[str, Any]) -> Team:
    """ada on the manager (n1), bob on n3, cat on n2, each with one session."""
    swarm_team.service.start(wait=False)
    swarm_team.enable_team("ada")
    swarm_team.add("bob", memory_bytes=GIB)
    swarm_team.add("cat", memory_bytes=GIB)
    fake.add_image(NEW_LOCAL)
    return swarm_team


def _image(fake: FakeEngine, name: str) -> str:
    return str(fake.service_specs[name][1]["TaskTemplate"]["ContainerSpec"]["Image"])


def _update(fake: FakeEngine, team: Team, broken: set[str]) -> tuple[SwarmUpdate, list[Config]]:
    """The update, whose people in `broken` fail every session call on the new image."""
    placement = team.placement
    assert isinstance(placement, SwarmPlacement)
    update = SwarmUpdate(placement.cluster, team.paths)
    update.wait_person = lambda _name: None

    def ask(name: str, path: str) -> tuple[bool, bytes]:
        if name in broken and _image(fake, f"{PREFIX}-user-{name}") == NEW:
            return False, b"UnknownError"
        return True, json.dumps(SESSIONS if path == "/session" else []).encode()

    update.ask = ask
    return update, []


def _run(update: SwarmUpdate, saved: list[Config], team: Team) -> Any:
    target = team.config.model_copy(update={"opencode_version": "1.18.34"})

    def save(config: Config) -> Config:
        saved.append(config)
        return config

    return update.run(target, save)


def _changes(fake: FakeEngine) -> list[tuple[str, str]]:
    """The services made and changed, in order (one-shot ones by their role)."""
    shown = []
    for call, name in fake.calls:
        if call == "update_service":
            shown.append((call, name.removeprefix(f"{PREFIX}-")))
        elif call == "create_service" and SNAPSHOT_ROLE in name:
            shown.append((call, SNAPSHOT_ROLE))
    return shown


def test_everyone_moves_one_at_a_time_then_the_door(fake: FakeEngine, three: Team) -> None:
    update, saved = _update(fake, three, broken=set())
    fake.calls.clear()

    result = _run(update, saved, three)

    assert result.updated == ["ada", "bob", "cat"]
    assert fake.pushed == [NEW]
    for name in ("ada", "bob", "cat"):
        assert _image(fake, f"{PREFIX}-user-{name}") == NEW
    assert _image(fake, f"{PREFIX}-door") == NEW
    # Each person: stopped, snapshotted on their node, given the new image; the door last.
    one = [
        ("update_service", "user-{}"),
        ("create_service", SNAPSHOT_ROLE),
        ("update_service", "user-{}"),
    ]
    expected = [(c, n.format(who)) for who in ("ada", "bob", "cat") for c, n in one]
    assert _changes(fake) == [*expected, ("update_service", "door")]
    # The snapshots were copied on each person's node, and deleted there afterwards.
    snapshots = [b for b in fake.service_bodies if SNAPSHOT_ROLE in b["Name"]]
    pins = [b["TaskTemplate"]["Placement"]["Constraints"] for b in snapshots]
    assert pins == [["node.id==id-n1"], ["node.id==id-n3"], ["node.id==id-n2"]]
    removals = [b for b in fake.service_bodies if "volume-removal" in b["Name"]]
    assert [r["TaskTemplate"]["Placement"]["Constraints"] for r in removals] == pins
    assert all(
        "-snap-" in v for r in removals for v in r["TaskTemplate"]["ContainerSpec"]["Command"][4:]
    )
    assert [c.opencode_version for c in saved] == ["1.18.34"]
    assert [s.name for s in fake.services if SNAPSHOT_ROLE in s.name] == []


def test_the_second_person_failing_puts_the_first_back_and_leaves_the_rest(
    fake: FakeEngine, three: Team
) -> None:
    update, saved = _update(fake, three, broken={"bob"})
    fake.calls.clear()

    with pytest.raises(TeamUpdateFailed) as failed:
        _run(update, saved, three)

    assert failed.value.person == "bob"
    assert failed.value.back == ["ada"] and failed.value.left == ["cat"]
    assert hint_for(failed.value).startswith("Everyone is on the old version again.")
    assert "as is ada" in str(failed.value) and "(cat not updated)" in str(failed.value)
    for name in ("ada", "bob", "cat", "door"):
        key = f"{PREFIX}-{name}" if name == "door" else f"{PREFIX}-user-{name}"
        assert _image(fake, key) == OLD
    assert ("update_service", "user-cat") not in _changes(fake)
    assert ("update_service", "door") not in _changes(fake)
    assert saved == []
    # bob's data came back from his snapshot on his node (a replacing copy from it).
    copies = [b for b in fake.service_bodies if SNAPSHOT_ROLE in b["Name"]]
    bob_copies = [
        c for c in copies if c["TaskTemplate"]["Placement"]["Constraints"] == ["node.id==id-n3"]
    ]
    taken, restored = (c["TaskTemplate"]["ContainerSpec"] for c in bob_copies)
    assert "-delete" not in taken["Command"][2] and "-delete" in restored["Command"][2]
    assert restored["Mounts"][0]["Source"] == taken["Mounts"][1]["Source"]  # the snapshot
    assert restored["Mounts"][0]["ReadOnly"] is True
    # ada's data read on the old version again: kept as it is, no restore of hers.
    ada_copies = [
        c for c in copies if c["TaskTemplate"]["Placement"]["Constraints"] == ["node.id==id-n1"]
    ]
    assert len(ada_copies) == 1
    # Both snapshots were deleted on their nodes afterwards.
    removals = [b for b in fake.service_bodies if "volume-removal" in b["Name"]]
    pins = [r["TaskTemplate"]["Placement"]["Constraints"] for r in removals]
    assert sorted(pins) == [["node.id==id-n1"], ["node.id==id-n3"]]
    # Every person runs again; no one-shot service is left.
    assert all(s.replicas == 1 for s in fake.services)
    assert [s.name for s in fake.services if "-user-" not in s.name and "-door" not in s.name] == []


def test_a_person_put_back_whose_data_the_old_version_cannot_read_gets_their_snapshot(
    fake: FakeEngine, three: Team
) -> None:
    update, saved = _update(fake, three, broken={"bob"})
    calls = {"ada": 0}
    ask = update.ask

    def ada_breaks_once_back(name: str, path: str) -> tuple[bool, bytes]:
        if (
            name == "ada"
            and _image(fake, f"{PREFIX}-user-ada") == OLD
            and fake.calls.count(("update_service", f"{PREFIX}-user-ada")) == 3
        ):
            calls["ada"] += 1
            return False, b"cannot read"
        return ask(name, path)

    update.ask = ada_breaks_once_back

    with pytest.raises(TeamUpdateFailed):
        _run(update, saved, three)

    assert calls["ada"] >= 1
    copies = [b for b in fake.service_bodies if SNAPSHOT_ROLE in b["Name"]]
    ada = [c for c in copies if c["TaskTemplate"]["Placement"]["Constraints"] == ["node.id==id-n1"]]
    assert len(ada) == 2 and "-delete" in ada[1]["TaskTemplate"]["ContainerSpec"]["Command"][2]
    assert _image(fake, f"{PREFIX}-user-ada") == OLD


def test_stop_scales_everything_to_zero_and_start_brings_back_all_but_the_disabled(
    fake: FakeEngine,
    three: Team,
    records: dict[str, Any],
) -> None:
    placement = three.placement
    assert isinstance(placement, SwarmPlacement)
    placement.cluster.wait_person = lambda name, timeout=0: None  # type: ignore[method-assign]
    three.disable("cat")
    records["cat"]["disabled"] = True
    assert three.status().people[2].state == "stopped"

    stopped = three.stop()

    assert sorted(stopped) == [f"{PREFIX}-door", f"{PREFIX}-user-ada", f"{PREFIX}-user-bob"]
    assert all(s.replicas == 0 for s in fake.services)
    three.start()
    replicas = {s.name.removeprefix(f"{PREFIX}-"): s.replicas for s in fake.services}
    assert replicas == {"door": 1, "user-ada": 1, "user-bob": 1, "user-cat": 0}
    nodes = {p.name: p.node for p in three.people()}
    assert nodes == {"ada": "n1", "bob": "n3", "cat": "n2"}
    three.enable("cat")
    assert {s.name: s.replicas for s in fake.services}[f"{PREFIX}-user-cat"] == 1


def test_team_disable_removes_the_door_and_keeps_the_people_and_their_volumes(
    fake: FakeEngine, three: Team
) -> None:
    fake.remove_container("door-task.1", force=True)  # the door's task goes with its service

    three.disable_team()

    names = sorted(s.name.removeprefix(f"{PREFIX}-") for s in fake.services)
    assert names == ["user-ada", "user-bob", "user-cat"]
    assert all(s.replicas == 0 for s in fake.services)
    assert not [s for s in fake.secrets if s.startswith(f"{PREFIX}-door-")]
    assert [s for s in fake.secrets if s.startswith(f"{PREFIX}-user-")]
    assert all(v in fake.volumes for v in volume_names(INSTANCE.for_person("ada")))
    assert Path(three.paths.team_file).exists()
