"""`occ node drain` (`team/drain.py`) on the in-memory swarm: where people go, what a
failed copy or check leaves (the person back on the drained node, running), and what a
node with nowhere to go changes (nothing). The copy's own program is tested for real in
test_transfer_program.py, the whole on the test swarm in tests/swarm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import isolated_runner, one_error
from fakes import FakeEngine
from opencode_cloud.cli.output import ExitCode
from opencode_cloud.config.schema import ClusterSettings, Config
from opencode_cloud.docker.swarm import SwarmMembership, SwarmNode, pinned_node
from opencode_cloud.instance import LABEL_ROLE, Instance
from opencode_cloud.team.cluster import Cluster
from opencode_cloud.team.drain import Drain
from opencode_cloud.team.errors import DrainFailed, NodeNotFound, NowhereToDrain
from opencode_cloud.team.transfer import RECEIVE_ROLE, SEND_ROLE, WRITTEN_EXIT

GIB = 2**30
INSTANCE = Instance("default")


def node(name: str, memory_gib: int = 8, **kw: object) -> SwarmNode:
    fields: dict[str, object] = {
        "id": f"id-{name}",
        "hostname": name,
        "role": "worker",
        "state": "ready",
        "availability": "active",
        "address": "10.0.0.1",
        "memory_bytes": memory_gib * GIB,
        "cpus": 2.0,
    }
    fields.update(kw)
    return SwarmNode(**fields)  # type: ignore[arg-type]


class FakeCheck:
    """The deep check: each person has the session `s-NAME`; `broken` fail theirs."""

    def __init__(self, broken: set[str] | None = None) -> None:
        self.broken = broken or set()
        self.checked: list[tuple[str, list[str]]] = []

    def sessions(self, name: str) -> list[str] | None:
        return [f"s-{name}"]

    def check(self, name: str, before: list[str]) -> str | None:
        self.checked.append((name, before))
        return "session s-bob, made before the move, is missing" if name in self.broken else None


def team_on(engine: FakeEngine, people: dict[str, tuple[str, int]]) -> Cluster:
    """The team, with each person (name: (node, GiB)) running pinned to their node."""
    team = Cluster(engine, Config(cluster=ClusterSettings(registry="r:5000")), INSTANCE)
    for name, (where, gib) in people.items():
        kept = engine.nodes
        engine.nodes = [n for n in kept if n.hostname == where]  # place() picks it
        team.add_person(name, memory_bytes=gib * GIB)
        engine.nodes = kept
        service = team.layout.person(name).container_name
        version, spec = engine.service_spec(service)  # type: ignore[misc]
        engine.update_service(service, version, spec)  # its task runs
    engine.calls.clear()
    engine.service_bodies = [b for b in engine.service_bodies if "-user-" in b["Name"]]
    return team


def swarm(*nodes: SwarmNode) -> FakeEngine:
    engine = FakeEngine()
    engine.membership = SwarmMembership(state="active", manager=True, node_id=nodes[0].id)
    engine.nodes = list(nodes)
    return engine


def where(engine: FakeEngine, name: str) -> tuple[str | None, list[str]]:
    """The node a person's service is pinned to, and where its running tasks are."""
    service = next(s for s in engine.services if s.name == f"opencode-cloud-user-{name}")
    running = [
        t.node_id for t in engine.tasks if t.service_id == service.id and t.state == "running"
    ]
    return pinned_node(service), running


def one_shots(engine: FakeEngine, role: str) -> list[str]:
    """The nodes each one-shot service of `role` was pinned to, in order."""
    return [
        b["TaskTemplate"]["Placement"]["Constraints"][0].removeprefix("node.id==")
        for b in engine.service_bodies
        if b["Labels"].get(LABEL_ROLE) == role
    ]


def availability(engine: FakeEngine, name: str) -> str:
    return next(n.availability for n in engine.nodes if n.hostname == name)


def test_drain_moves_each_person_where_most_memory_is_free_then_drains_the_node() -> None:
    engine = swarm(node("n1", role="manager"), node("n2"), node("n3", 6))
    team = team_on(engine, {"bob": ("n2", 2), "cat": ("n2", 3), "ann": ("n1", 1)})
    check = FakeCheck()
    result = Drain(team, check).drain("n2")
    # n1 has 7 GiB free, n3 6: bob goes to n1 (5 left), then cat to n3 (6).
    assert [(m["name"], m["to"]) for m in result.moved] == [("bob", "n1"), ("cat", "n3")]
    assert where(engine, "bob") == ("id-n1", ["id-n1"])
    assert where(engine, "cat") == ("id-n3", ["id-n3"])
    assert where(engine, "ann") == ("id-n1", ["id-n1"])
    assert check.checked == [("bob", ["s-bob"]), ("cat", ["s-cat"])]
    # Each copy: a receiver on the target, a sender on the drained node.
    assert one_shots(engine, RECEIVE_ROLE) == ["id-n1", "id-n3"]
    assert one_shots(engine, SEND_ROLE) == ["id-n2", "id-n2"]
    # The old volumes go only after the move, on the drained node.
    assert one_shots(engine, "volume-removal") == ["id-n2", "id-n2"]
    assert result.availability == "drain" and availability(engine, "n2") == "drain"
    # No one-shot service and no one-time key is left.
    assert [s.name for s in engine.services if "-user-" not in s.name] == []
    assert [name for name in engine.secrets if "transfer-key" in name] == []
    assert all(m["seconds_away"] >= 0 and m["sessions_checked"] == 1 for m in result.moved)


def test_what_the_copy_runs_reads_the_source_only_and_keeps_few_capabilities() -> None:
    engine = swarm(node("n1", role="manager"), node("n2"))
    team = team_on(engine, {"bob": ("n2", 1)})
    Drain(team, FakeCheck()).drain("n2")
    bodies = {
        b["Labels"][LABEL_ROLE]: b for b in engine.service_bodies if LABEL_ROLE in b["Labels"]
    }
    person = next(b for b in engine.service_bodies if b["Name"] == "opencode-cloud-user-bob")
    volumes = sorted(
        m["Source"]
        for m in person["TaskTemplate"]["ContainerSpec"]["Mounts"]
        if m["Type"] == "volume"
    )
    for role, read_only, caps in (
        (SEND_ROLE, True, ["DAC_READ_SEARCH"]),
        (RECEIVE_ROLE, False, ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]),
    ):
        container = bodies[role]["TaskTemplate"]["ContainerSpec"]
        assert sorted(m["Source"] for m in container["Mounts"]) == volumes
        assert all(m["ReadOnly"] is read_only for m in container["Mounts"])
        assert container["CapabilityDrop"] == ["ALL"] and container["CapabilityAdd"] == caps
        assert [s["File"]["Name"] for s in container["Secrets"]] == ["/run/secrets/transfer-key"]
        assert bodies[role]["TaskTemplate"]["RestartPolicy"] == {"Condition": "none"}
        assert bodies[role]["TaskTemplate"]["Networks"] == [{"Target": "opencode-cloud-cluster"}]
        # The command is the fixed program and names: no volume content on it.
        assert container["Command"][:3] == ["python3", "-I", "-c"]
        assert sorted(container["Command"][-len(volumes) :]) == volumes


@pytest.mark.parametrize(
    ("end", "target_cleaned"),
    [
        (("failed", f"task: non-zero exit ({WRITTEN_EXIT})"), True),
        # The target had volumes of that name already: the copy wrote nothing there.
        (("failed", "task: non-zero exit (3)"), False),
        # The receiver never ran (or died before it checked the target's volumes): what
        # the target has of the person may be theirs, and stays.
        (("rejected", "No such image: opencode-cloud-sandbox:1"), False),
        (("failed", "task: non-zero exit (1)"), False),
    ],
)
def test_a_failed_copy_puts_the_person_back_running_and_stops_the_drain(
    end: tuple[str, str], target_cleaned: bool
) -> None:
    engine = swarm(node("n1", role="manager"), node("n2"), node("n3", 4))
    team = team_on(engine, {"bob": ("n2", 1), "cat": ("n2", 1)})
    engine.one_shot_ends[RECEIVE_ROLE] = end
    with pytest.raises(DrainFailed) as raised:
        Drain(team, FakeCheck()).drain("n2")
    assert raised.value.person == "bob" and raised.value.moved == []
    assert "runs on n2 again" in str(raised.value)
    assert where(engine, "bob") == ("id-n2", ["id-n2"])
    assert where(engine, "cat") == ("id-n2", ["id-n2"])  # not tried
    # Nothing on the drained node is deleted; the partial copy on n1 is, if it wrote one.
    assert one_shots(engine, "volume-removal") == (["id-n1"] if target_cleaned else [])
    assert availability(engine, "n2") == "active"
    assert [name for name in engine.secrets if "transfer-key" in name] == []


def test_a_failed_check_puts_the_person_back_and_keeps_those_moved_before() -> None:
    engine = swarm(node("n1", role="manager"), node("n2"), node("n3", 4))
    team = team_on(engine, {"ann": ("n2", 1), "bob": ("n2", 1)})
    with pytest.raises(DrainFailed) as raised:
        Drain(team, FakeCheck(broken={"bob"})).drain("n2")
    assert raised.value.moved == ["ann"]
    assert "made before the move, is missing" in str(raised.value)
    assert where(engine, "ann")[0] == "id-n1"
    # bob ran on n1 for the check, and is back on n2, running, on their own volumes.
    assert where(engine, "bob") == ("id-n2", ["id-n2"])
    # ann's old volumes went (moved); bob's copy on n1 goes, his volumes on n2 stay.
    assert one_shots(engine, "volume-removal") == ["id-n2", "id-n1"]
    assert availability(engine, "n2") == "active"


def test_no_other_node_with_room_changes_nothing() -> None:
    engine = swarm(
        node("n1", 2, role="manager"),
        node("n2"),
        node("n3", state="down"),
        node("n4", availability="drain"),
    )
    team = team_on(engine, {"bob": ("n2", 1), "cat": ("n2", 3)})
    before = [(s.name, s.constraints) for s in engine.services]
    with pytest.raises(NowhereToDrain, match="No other node has room for cat"):
        Drain(team, FakeCheck()).drain("n2")
    assert engine.calls == []  # no service made or changed, no node changed
    assert [(s.name, s.constraints) for s in engine.services] == before
    assert availability(engine, "n2") == "active"


def test_without_a_registry_people_move_to_the_manager_only() -> None:
    engine = swarm(node("n1", 4, role="manager"), node("n2"), node("n3", 16))
    team = team_on(engine, {"bob": ("n2", 1)})
    team.config = team.config.model_copy(update={"cluster": ClusterSettings()})
    assert [m.target.hostname for m in Drain(team, FakeCheck()).plan(engine.nodes[1])] == ["n1"]


def test_a_node_that_is_down_is_not_drained() -> None:
    from opencode_cloud.team.errors import NodeNotUsable

    engine = swarm(node("n1", role="manager"), node("n2"))
    team = team_on(engine, {"bob": ("n2", 1)})
    engine.nodes = [engine.nodes[0], node("n2", state="down")]
    with pytest.raises(NodeNotUsable, match=r"n2 takes no new instances \(down"):
        Drain(team, FakeCheck()).drain("n2")
    assert engine.calls == []


def test_a_node_that_does_not_exist_is_named() -> None:
    engine = swarm(node("n1", role="manager"))
    with pytest.raises(NodeNotFound, match="no node called 'n9'"):
        Drain(team_on(engine, {}), FakeCheck()).drain("n9")


def test_the_node_of_the_door_is_paused_not_drained() -> None:
    engine = swarm(node("n1", role="manager"), node("n2"))
    team = team_on(engine, {"ann": ("n1", 1)})
    team.client.create_service(
        {
            "Name": "opencode-cloud-door",
            "Labels": {"io.opencode-cloud.instance": "default", LABEL_ROLE: "door"},
            "TaskTemplate": {"Placement": {"Constraints": ["node.id==id-n1"]}, "Resources": {}},
            "Mode": {"Replicated": {"Replicas": 1}},
        }
    )
    result = Drain(team, FakeCheck()).drain("n1")
    assert [m["to"] for m in result.moved] == ["n2"]
    assert availability(engine, "n1") == "pause"


def test_an_empty_node_that_is_paused_is_drained_without_a_move() -> None:
    engine = swarm(node("n1", role="manager"), node("n2", availability="pause"))
    result = Drain(team_on(engine, {}), FakeCheck()).drain("n2")
    assert result.moved == [] and availability(engine, "n2") == "drain"
    assert [c for c in engine.calls if c[0] != "update_node"] == []


def test_a_drained_node_with_people_takes_the_copy_while_they_leave() -> None:
    engine = swarm(node("n1", role="manager"), node("n2"))
    team = team_on(engine, {"bob": ("n2", 1)})
    engine.nodes = [engine.nodes[0], node("n2", availability="drain")]
    Drain(team, FakeCheck()).drain("n2")
    assert [c[1] for c in engine.calls if c[0] == "update_node"] == ["id-n2 active", "id-n2 drain"]
    assert where(engine, "bob")[0] == "id-n1"


def test_the_check_asks_the_persons_opencode_from_inside_the_door(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opencode_cloud.team.drain import SwarmSessionCheck

    engine = swarm(node("n1", role="manager"), node("n2"))
    team = team_on(engine, {"bob": ("n2", 1)})
    answers = {"/session": (True, b'[{"id": "s1"}]'), "/session/s1/message": (True, b"[]")}
    asked: list[tuple[str, str]] = []

    def ask(name: str, path: str, timeout: float = 10.0) -> tuple[bool, bytes]:
        asked.append((name, path))
        return answers.get(path, (False, b"HTTP Error 404: Not Found"))

    monkeypatch.setattr(team, "ask_person", ask)
    monkeypatch.setattr(team, "wait_person", lambda name, timeout=0: None)
    check = SwarmSessionCheck(team)
    assert check.sessions("bob") == ["s1"]
    assert check.check("bob", ["s1"]) is None
    assert asked[-2:] == [("bob", "/session"), ("bob", "/session/s1/message")]
    assert "session s2, made before the change, is missing" in str(check.check("bob", ["s2"]))
    answers["/session"] = (False, b"connection refused")
    assert check.sessions("bob") is None
    assert "listing sessions failed" in str(check.check("bob", []))


def test_occ_node_drain_and_activate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, engine: FakeEngine
) -> None:
    engine.membership = SwarmMembership(state="active", manager=True, node_id="id-n1")
    engine.nodes = [node("n1", role="manager"), node("n2")]
    occ = isolated_runner(tmp_path, monkeypatch, capsys)
    unknown = occ("node", "drain", "n9")
    assert "no node called 'n9'" in one_error(unknown)
    assert "occ node list" in unknown.err
    assert unknown.code == ExitCode.USAGE
    drained = occ("node", "drain", "n2", "--json")
    assert drained.code == 0, drained.err
    assert json.loads(drained.out) == {"node": "n2", "availability": "drain", "moved": []}
    assert availability(engine, "n2") == "drain"
    activated = occ("node", "activate", "n2")
    assert activated.code == 0, activated.err
    assert "n2 is active" in activated.out
    assert availability(engine, "n2") == "active"


# --------------------------------------------------------------------------- backups, restores


def test_a_backup_reads_a_copy_on_the_manager_while_the_person_runs_again() -> None:
    from opencode_cloud.team.swarm_backup import volumes_on_manager

    engine = swarm(node("n1", role="manager"), node("n2"))
    team = team_on(engine, {"bob": ("n2", 1), "ann": ("n1", 1)})
    volumes = team.layout.person_volumes("bob")
    with volumes_on_manager(team, "bob") as copied:
        assert copied
        assert one_shots(engine, RECEIVE_ROLE) == ["id-n1"]
        assert one_shots(engine, SEND_ROLE) == ["id-n2"]
        assert where(engine, "bob") == ("id-n2", ["id-n2"])  # running again already
        for volume in volumes:  # what the receiver made on the manager
            engine.create_volume(volume, {})
    assert [v for v in volumes if engine.inspect_volume(v) is not None] == []
    # Someone on the manager is read where they are.
    with volumes_on_manager(team, "ann") as copied:
        assert not copied
    assert len(one_shots(engine, RECEIVE_ROLE)) == 1


def test_a_failed_copy_to_the_manager_leaves_the_person_running_and_no_copy() -> None:
    from opencode_cloud.team.errors import VolumesNotCopied
    from opencode_cloud.team.swarm_backup import volumes_on_manager

    engine = swarm(node("n1", role="manager"), node("n2"))
    team = team_on(engine, {"bob": ("n2", 1)})
    engine.one_shot_ends[SEND_ROLE] = ("failed", "task: non-zero exit (1)")
    with pytest.raises(VolumesNotCopied), volumes_on_manager(team, "bob"):
        raise AssertionError("no backup is written of a failed copy")
    assert where(engine, "bob") == ("id-n2", ["id-n2"])


def test_a_restore_unpacks_on_the_manager_and_runs_the_person_on_the_node_chosen() -> None:
    from opencode_cloud.team.swarm_backup import restore_on_node

    engine = swarm(node("n1", role="manager"), node("n2"), node("n3"))
    team = team_on(engine, {"bob": ("n2", 1)})
    engine.nodes = [n if n.hostname != "n2" else node("n2", state="down") for n in engine.nodes]
    volumes = team.layout.person_volumes("bob")
    unpacked: list[str] = []

    def restore_here() -> None:
        unpacked.append("here")
        for volume in volumes:
            engine.create_volume(volume, {})

    check = FakeCheck()
    assert restore_on_node(team, "bob", "n3", restore_here, check) == "n3"
    assert unpacked == ["here"]
    assert one_shots(engine, RECEIVE_ROLE) == ["id-n3"]
    assert one_shots(engine, SEND_ROLE) == ["id-n1"]
    assert where(engine, "bob") == ("id-n3", ["id-n3"])
    assert check.checked == [("bob", [])]
    assert [v for v in volumes if engine.inspect_volume(v) is not None] == []  # none left here


def test_a_restore_onto_a_node_that_takes_nothing_new_changes_nothing() -> None:
    from opencode_cloud.team.errors import NodeNotUsable
    from opencode_cloud.team.swarm_backup import restore_on_node

    engine = swarm(node("n1", role="manager"), node("n2"), node("n3", availability="drain"))
    team = team_on(engine, {"bob": ("n2", 1)})

    def restore_here() -> None:
        raise AssertionError("nothing is unpacked")

    with pytest.raises(NodeNotUsable, match="n3 takes no new instances"):
        restore_on_node(team, "bob", "n3", restore_here, FakeCheck())
    assert engine.calls == []
    assert where(engine, "bob") == ("id-n2", ["id-n2"])


def test_a_restore_whose_copy_never_ran_on_the_node_leaves_its_volumes_there() -> None:
    """bob runs on n2; a restore onto n2 whose receiver is rejected there (no image) must
    not delete bob's volumes on n2: the copy never looked at them."""
    from opencode_cloud.team.errors import VolumesNotCopied
    from opencode_cloud.team.swarm_backup import restore_on_node

    engine = swarm(node("n1", role="manager"), node("n2"))
    team = team_on(engine, {"bob": ("n2", 1)})
    engine.one_shot_ends[RECEIVE_ROLE] = ("rejected", "No such image: opencode-cloud-sandbox:1")

    def restore_here() -> None:
        for volume in team.layout.person_volumes("bob"):
            engine.create_volume(volume, {})

    with pytest.raises(VolumesNotCopied):
        restore_on_node(team, "bob", "n2", restore_here, FakeCheck())
    assert one_shots(engine, "volume-removal") == []


@pytest.mark.parametrize("fails", ["refused here", "copy"])
def test_a_restore_that_fails_leaves_the_person_running_where_they_were(fails: str) -> None:
    """bob runs on n2; a restore onto n3 refused on the manager (it holds bob's data), or
    whose copy fails, leaves bob running on n2 on his own volumes."""
    from opencode_cloud.team.errors import PersonDataOnManager, VolumesNotCopied
    from opencode_cloud.team.swarm_backup import restore_on_node

    engine = swarm(node("n1", role="manager"), node("n2"), node("n3"))
    team = team_on(engine, {"bob": ("n2", 1)})
    engine.one_shot_ends[RECEIVE_ROLE] = ("failed", f"task: non-zero exit ({WRITTEN_EXIT})")

    def restore_here() -> None:
        if fails == "refused here":
            raise PersonDataOnManager("bob")
        for volume in team.layout.person_volumes("bob"):
            engine.create_volume(volume, {})

    with pytest.raises(PersonDataOnManager if fails == "refused here" else VolumesNotCopied):
        restore_on_node(team, "bob", "n3", restore_here, FakeCheck())
    assert where(engine, "bob") == ("id-n2", ["id-n2"])


@pytest.mark.parametrize(("state", "written"), [("running", True), ("pending", False)])
def test_a_copy_out_of_time_says_it_wrote_only_when_its_receiver_runs(
    state: str, written: bool
) -> None:
    """A receiver that still runs at the copy's time limit found the target's volumes empty
    (it exits at once otherwise): what they hold is the copy's. One that never started
    (its node does not take it) looked at nothing."""
    from opencode_cloud.team.errors import VolumesNotCopied
    from opencode_cloud.team.transfer import copy_volumes, volume_mounts

    engine = swarm(node("n1", role="manager"), node("n2"))
    team = team_on(engine, {"bob": ("n2", 1)})
    engine.one_shot_ends[RECEIVE_ROLE] = (state, "")
    found = engine.service_spec(team.layout.person("bob").container_name)
    assert found is not None
    with pytest.raises(VolumesNotCopied) as raised:
        copy_volumes(team, volume_mounts(found[1]), "id-n2", "id-n1", timeout=0.2)
    assert raised.value.written is written
    assert "not done in 0 s" in str(raised.value)


def test_a_copy_the_engine_breaks_off_leaves_the_target_node_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sender's service cannot be made (the receiver may have found bob's volumes on n1
    already, with data): bob goes back running on n2, and nothing on n1 is deleted."""
    from opencode_cloud.docker.errors import DockerError

    engine = swarm(node("n1", role="manager"), node("n2"))
    team = team_on(engine, {"bob": ("n2", 1)})
    create = engine.create_service

    def no_sender(body: dict[str, object]) -> str:
        if SEND_ROLE in str(body["Name"]):
            raise DockerError("Docker engine error: rpc error: code = Unavailable")
        return create(body)

    monkeypatch.setattr(engine, "create_service", no_sender)
    with pytest.raises(DrainFailed, match="Unavailable"):
        Drain(team, FakeCheck()).drain("n2")
    assert where(engine, "bob") == ("id-n2", ["id-n2"])
    assert one_shots(engine, "volume-removal") == []
