"""A lost node on the swarm, as `occ` tells it (`team/reach.py`, `occ node list`, `occ
cluster status`, `occ status --user`), on the in-memory engine; the managers' JSON as a
20.10 manager answers it about a node that stopped answering."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cli_runner import Result, isolated_runner, one_error
from fakes import FakeEngine
from opencode_cloud.cli.output import ExitCode
from opencode_cloud.config.paths import instance_paths
from opencode_cloud.docker.swarm import (
    HEALTH_INTERVAL,
    SwarmMembership,
    SwarmTask,
    parse_node,
    parse_task,
)
from opencode_cloud.team.placement import SwarmPlacement
from opencode_cloud.team.reach import reaches
from unit.test_cluster import GIB, cluster, manager_engine, node, person

DOWN = node("n3", state="down", message="heartbeat failure")


def lost_ann(engine: FakeEngine) -> None:
    """ann pinned to n3, which is down: the managers replaced her task by one that waits
    (no node) since 12:41:07; bob runs on n2."""
    engine.nodes = [node("n1", role="manager"), node("n2"), DOWN]
    engine.services = [person("ann", "id-n3", 1), person("bob", "id-n2", 1)]
    engine.tasks = [
        SwarmTask("svc-ann", "id-n3", "running", "shutdown", timestamp="2026-12-05T12:30:00Z"),
        SwarmTask("svc-ann", "", "pending", "running", timestamp="2026-12-05T12:41:07.51234Z"),
        SwarmTask("svc-bob", "id-n2", "running", "running", timestamp="2026-12-05T12:30:01Z"),
    ]


def test_the_managers_answers_about_a_lost_node_are_parsed() -> None:
    lost = parse_node(
        {
            "ID": "n3",
            "Description": {"Hostname": "occsw-n3"},
            "Status": {"State": "down", "Message": "heartbeat failure", "Addr": "10.209.0.13"},
        }
    )
    assert (lost.state, lost.message, lost.usable) == ("down", "heartbeat failure", False)
    task = parse_task(
        {
            "ServiceID": "s1",
            "DesiredState": "running",
            "Status": {"State": "pending", "Timestamp": "2026-12-05T12:41:07.512345678Z"},
        }
    )
    assert (task.node_id, task.state, task.timestamp) == (
        "",
        "pending",
        "2026-12-05T12:41:07.512345678Z",
    )


def test_a_person_pinned_to_a_node_that_is_down_is_unreachable_since_their_task_waits() -> None:
    engine = manager_engine(node("n1", role="manager"))
    lost_ann(engine)
    found = reaches(engine.swarm_nodes(), engine.services, engine.swarm_tasks())
    ann, bob = found["ann"], found["bob"]
    assert (ann.state, ann.reachable) == ("unreachable", False)
    assert ann.reason() == "node n3 is down since 12:41 UTC (heartbeat failure)"
    assert ann.to_json()["node"] == "n3" and ann.to_json()["since"] == "2026-12-05T12:41:07+00:00"
    assert (bob.state, bob.reachable, bob.reason()) == ("running", True, "running on node n2")
    # `occ user list` says so too.
    states = SwarmPlacement(cluster(engine)).states()
    assert (states["ann"].state, states["bob"].state) == ("unreachable", "running")
    # Back: the node is ready and the new task runs there.
    engine.nodes[2] = node("n3")
    engine.tasks[1] = SwarmTask(
        "svc-ann", "id-n3", "running", "running", timestamp="2026-12-05T13:00:00Z"
    )
    again = reaches(engine.swarm_nodes(), engine.services, engine.swarm_tasks())["ann"]
    assert (again.state, again.node) == ("running", engine.nodes[2])
    # A task that fails on a ready node is not the node's fault.
    engine.tasks[1] = SwarmTask("svc-ann", "id-n3", "rejected", "running", error="No such image")
    failed = reaches(engine.swarm_nodes(), engine.services, engine.swarm_tasks())["ann"]
    assert failed.state == "rejected" and "No such image" in failed.reason()


def test_cluster_status_lists_the_unreachable_person_with_their_node() -> None:
    engine = manager_engine(node("n1", role="manager"))
    lost_ann(engine)
    problems = cluster(engine, "10.9.0.1:5000").status().problems
    assert "node n3 is down (heartbeat failure)" in problems
    assert "ann is unreachable: node n3 is down since 12:41 UTC (heartbeat failure)" in problems
    assert not [p for p in problems if "bob" in p or "user-ann is not running" in p]


@pytest.fixture
def occ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Result]:
    from opencode_cloud.cli.context import AppContext

    engine = manager_engine(node("n1", role="manager"))
    engine.membership = SwarmMembership("active", True, "id-n1", "10.9.0.1")
    lost_ann(engine)
    monkeypatch.setattr(AppContext, "connect", lambda self, timeout=None: engine)
    run = isolated_runner(tmp_path, monkeypatch, capsys)
    assert run("config", "set", "cluster", "{}").code == 0
    instance_paths().team_file.write_text(json.dumps({"enabled": True, "first": "ada"}))
    return run


def test_node_list_shows_the_node_down_and_its_people_unreachable(
    occ: Callable[..., Result],
) -> None:
    result = occ("node", "list", "--json")
    assert result.code == 0, result.err
    rows = {r["name"]: r for r in json.loads(result.out)["nodes"]}
    assert (rows["n3"]["state"], rows["n3"]["message"]) == ("down", "heartbeat failure")
    assert rows["n3"]["unreachable"] == ["ann"] and rows["n2"]["unreachable"] == []
    human = occ("node", "list").out
    assert "down (heartbeat failure)" in human and "ann (unreachable)" in human
    assert "bob (unreachable)" not in human


def test_status_of_a_person_on_a_lost_node_says_why_and_what_to_do(
    occ: Callable[..., Result],
) -> None:
    result = occ("status", "--user", "ann", "--json")
    assert result.code == ExitCode.NOT_RUNNING
    shown = json.loads(result.out)
    assert (shown["state"], shown["node"], shown["node_state"]) == ("unreachable", "n3", "down")
    assert "ann's instance is unreachable: node n3 is down since 12:41 UTC" in result.err
    assert "occ user restore ann --from-backup FILE --node OTHER" in result.err
    human = occ("status", "--user", "ann")
    assert "State:      unreachable" in human.out and "n3 (down: heartbeat failure)" in human.out
    running = occ("status", "--user", "bob")
    assert running.code == 0, running.err
    assert "State:      running" in running.out and running.err == ""
    nobody = occ("status", "--user", "eve")
    assert nobody.code == ExitCode.USAGE and "nobody called 'eve'" in one_error(nobody)


def test_a_persons_instance_is_checked_often_enough_to_be_back_soon() -> None:
    """A swarm names a task in its DNS only once it is healthy: the image's check (every
    120 s) is run every `HEALTH_INTERVAL` for the team's services, its command and timeouts
    the image's."""
    engine = manager_engine(node("n1", role="manager"), node("n2"))
    cluster(engine, "10.9.0.1:5000").add_person("ann", memory_bytes=GIB)
    (body,) = engine.service_bodies
    assert body["TaskTemplate"]["ContainerSpec"]["Healthcheck"] == {
        "Interval": int(HEALTH_INTERVAL * 1e9)
    }
    assert HEALTH_INTERVAL <= 10
