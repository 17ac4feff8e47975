"""Team mode's place on a swarm (`team/cluster.py`, `occ cluster`, `occ node list`), on
the in-memory engine; the swarm's JSON as a 20.10 manager answers it (`docker/swarm.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import isolated_runner, one_error
from fakes import FakeEngine
from opencode_cloud.cli.output import ExitCode
from opencode_cloud.cli.progress import PlainProgress
from opencode_cloud.config.schema import ClusterSettings, Config
from opencode_cloud.docker.errors import ImageNotFound
from opencode_cloud.docker.image import DEFAULT_IMAGE
from opencode_cloud.docker.swarm import (
    SwarmMembership,
    SwarmNode,
    SwarmService,
    SwarmTask,
    parse_membership,
    parse_node,
    parse_service,
    parse_task,
    pinned_node,
)
from opencode_cloud.instance import LABEL_INSTANCE, LABEL_PERSON, LABEL_ROLE, Instance
from opencode_cloud.team.cluster import Cluster
from opencode_cloud.team.errors import ImagePushFailed, NoRoomInCluster, NotASwarmManager

GIB = 2**30
INSTANCE = Instance("default")


def node(name: str, memory_gib: int = 8, **kw: object) -> SwarmNode:
    fields: dict[str, object] = {
        "id": f"id-{name}",
        "hostname": name,
        "role": "worker",
        "state": "ready",
        "availability": "active",
        "address": f"10.0.0.{len(name)}",
        "memory_bytes": memory_gib * GIB,
        "cpus": 2.0,
    }
    fields.update(kw)
    return SwarmNode(**fields)  # type: ignore[arg-type]


def person(name: str, node_id: str, memory_gib: int) -> SwarmService:
    return SwarmService(
        id=f"svc-{name}",
        name=f"opencode-cloud-user-{name}",
        labels={LABEL_INSTANCE: INSTANCE.name, LABEL_PERSON: name},
        constraints=(f"node.id == {node_id}",),
        memory_reserved=memory_gib * GIB,
    )


def manager_engine(*nodes: SwarmNode) -> FakeEngine:
    engine = FakeEngine()
    engine.membership = SwarmMembership(state="active", manager=True, node_id=nodes[0].id)
    engine.nodes = list(nodes)
    return engine


def cluster(engine: FakeEngine, registry: str | None = "registry.test:5000") -> Cluster:
    config = Config(cluster=ClusterSettings(registry=registry))
    return Cluster(engine, config, INSTANCE)


# --------------------------------------------------------------------------- placement


def test_a_new_person_goes_to_the_node_with_the_most_memory_left() -> None:
    engine = manager_engine(node("n1", role="manager"), node("n2"), node("n3"))
    engine.services = [person("ann", "id-n1", 2), person("bob", "id-n2", 5)]
    assert cluster(engine).place(4 * GIB).hostname == "n3"
    engine.services.append(person("cat", "id-n3", 7))
    # n1: 6 GiB free, n2: 3, n3: 1
    assert cluster(engine).place(4 * GIB).hostname == "n1"


def test_without_a_registry_new_people_go_to_the_manager_alone() -> None:
    engine = manager_engine(node("n1", 4, role="manager"), node("n2", 16), node("n3", 16))
    assert cluster(engine, registry=None).place(GIB).hostname == "n1"
    engine.services = [person("ann", "id-n1", 3)]
    with pytest.raises(NoRoomInCluster) as raised:
        cluster(engine, registry=None).place(2 * GIB)
    assert raised.value.manager_only and raised.value.best_free == GIB
    assert cluster(engine).place(2 * GIB).hostname in {"n2", "n3"}  # with one


def test_placement_skips_nodes_that_are_down_or_drained() -> None:
    engine = manager_engine(
        node("n1", 2, role="manager"),
        node("n2", 16, state="down"),
        node("n3", 16, availability="drain"),
    )
    assert cluster(engine).place(GIB).hostname == "n1"


def test_no_node_with_enough_memory_is_refused() -> None:
    engine = manager_engine(node("n1", 4, role="manager"), node("n2", 4))
    engine.services = [person("ann", "id-n1", 3), person("bob", "id-n2", 2)]
    with pytest.raises(NoRoomInCluster) as raised:
        cluster(engine).place(3 * GIB)
    assert raised.value.best_free == 2 * GIB


def test_a_running_task_places_an_instance_before_its_pin() -> None:
    engine = manager_engine(node("n1", role="manager"), node("n2"))
    engine.services = [person("ann", "id-n1", 1)]
    engine.tasks = [SwarmTask("svc-ann", "id-n2", "running", "running")]
    rows = {row.node.hostname: row for row in cluster(engine).nodes()}
    assert rows["n2"].instances == ("ann",)
    assert rows["n1"].instances == ()
    assert rows["n2"].memory_free == 7 * GIB


# --------------------------------------------------------------------------- managers only


@pytest.mark.parametrize(
    ("membership", "words"),
    [
        (SwarmMembership(state="inactive", manager=False), "in no swarm"),
        (SwarmMembership(state="active", manager=False, node_id="w"), "a worker of a swarm"),
        (SwarmMembership(state="locked", manager=False), "state locked"),
    ],
)
def test_only_a_manager_answers_for_the_cluster(membership: SwarmMembership, words: str) -> None:
    engine = FakeEngine()
    engine.membership = membership
    for call in (cluster(engine).status, cluster(engine).nodes):
        with pytest.raises(NotASwarmManager, match=words):
            call()


# --------------------------------------------------------------------------- init


def test_init_pushes_the_image_and_makes_the_overlay_network() -> None:
    engine = manager_engine(node("n1", role="manager"), node("n2"))
    engine.add_image(DEFAULT_IMAGE)
    steps: list[str] = []
    status = cluster(engine, "10.9.0.1:5000").init(PlainProgress(), steps.append)
    ref = f"10.9.0.1:5000/{DEFAULT_IMAGE}"
    assert engine.pushed == [ref]
    assert status.image == ref
    assert engine.networks["opencode-cloud-cluster"]["Driver"] == "overlay"
    assert engine.networks["opencode-cloud-cluster"]["Labels"][LABEL_INSTANCE] == "default"
    assert status.network_ready
    assert status.problems == []
    assert any(ref in step for step in steps)


def test_init_without_the_image_on_the_manager_changes_nothing() -> None:
    engine = manager_engine(node("n1", role="manager"))
    with pytest.raises(ImageNotFound):
        cluster(engine, "10.9.0.1:5000").init(PlainProgress(), lambda _m: None)
    assert engine.pushed == []
    assert engine.networks == {}


def test_a_refused_push_is_an_error_and_makes_no_network() -> None:
    engine = manager_engine(node("n1", role="manager"))
    engine.add_image(DEFAULT_IMAGE)
    engine.push_error = "unauthorized: authentication required"
    with pytest.raises(ImagePushFailed, match="unauthorized"):
        cluster(engine, "10.9.0.1:5000").init(PlainProgress(), lambda _m: None)
    assert engine.networks == {}


# --------------------------------------------------------------------------- status


def test_status_says_what_is_out_of_place() -> None:
    engine = manager_engine(
        node("n1", role="manager", leader=True),
        node("n2", state="down"),
        node("n3", availability="drain"),
    )
    engine.services = [person("ann", "id-n2", 1), person("bob", "id-n1", 1)]
    engine.tasks = [SwarmTask("svc-bob", "id-n1", "running", "running")]
    status = cluster(engine, registry=None).status()
    assert status.manager is not None and status.manager.hostname == "n1"
    assert status.door_url is None
    assert status.problems == [
        "the team's network opencode-cloud-cluster does not exist",
        "no registry is set (cluster.registry): nodes other than the manager have no way "
        "to get the image, so new people all go to the manager",
        "node n2 is down",
        "node n3 is drain: nothing new starts there",
        "ann is unreachable: node n2 is down",
    ]


def test_status_gives_the_doors_url_on_the_manager() -> None:
    engine = manager_engine(node("n1", role="manager", address="10.9.0.11"))
    engine.services = [
        SwarmService(
            id="svc-door",
            name="opencode-cloud-door",
            labels={LABEL_INSTANCE: "default", LABEL_ROLE: "door"},
            host_ports=((8443, 3000),),
        )
    ]
    assert cluster(engine).status().door_url == "http://10.9.0.11:8443"


# --------------------------------------------------------------------------- parsing


def test_the_managers_answers_are_parsed() -> None:
    info = {
        "Swarm": {
            "NodeID": "rzk",
            "NodeAddr": "10.209.0.11",
            "LocalNodeState": "active",
            "ControlAvailable": True,
            "Cluster": {"ID": "c1"},
        }
    }
    assert parse_membership(info) == SwarmMembership("active", True, "rzk", "10.209.0.11", "c1")
    assert parse_membership({}).state == "inactive"
    raw_node = {
        "ID": "rzk",
        "Spec": {"Labels": {"zone": "a"}, "Role": "manager", "Availability": "active"},
        "Description": {
            "Hostname": "occsw-n1",
            "Resources": {"NanoCPUs": 2000000000, "MemoryBytes": 25276203008},
        },
        "Status": {"State": "ready", "Addr": "10.209.0.11"},
        "ManagerStatus": {"Leader": True, "Reachability": "reachable", "Addr": "x:2377"},
    }
    parsed = parse_node(raw_node)
    assert (parsed.hostname, parsed.role, parsed.cpus, parsed.leader) == (
        "occsw-n1",
        "manager",
        2.0,
        True,
    )
    assert parsed.memory_bytes == 25276203008 and parsed.usable
    service = parse_service(
        {
            "ID": "s1",
            "Spec": {
                "Name": "web",
                "Labels": {"a": "b"},
                "TaskTemplate": {
                    "Placement": {"Constraints": ["node.id==rzk"]},
                    "Resources": {"Reservations": {"MemoryBytes": 1024}},
                },
                "EndpointSpec": {
                    "Mode": "dnsrr",
                    "Ports": [
                        {"TargetPort": 3000, "PublishedPort": 8080, "PublishMode": "host"},
                        {"TargetPort": 9, "PublishedPort": 9, "PublishMode": "ingress"},
                    ],
                },
            },
        }
    )
    assert service.host_ports == ((8080, 3000),)
    assert service.memory_reserved == 1024
    assert pinned_node(service) == "rzk"
    task = parse_task(
        {
            "ServiceID": "s1",
            "NodeID": "rzk",
            "DesiredState": "running",
            "Status": {"State": "rejected", "Err": "No such image"},
        }
    )
    assert (task.state, task.error) == ("rejected", "No such image")


# --------------------------------------------------------------------------- command line


def test_cluster_status_off_a_swarm_is_one_error_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, engine: FakeEngine
) -> None:
    occ = isolated_runner(tmp_path, monkeypatch, capsys)
    result = occ("cluster", "status")
    assert "not a swarm manager" in one_error(result)
    assert "docker swarm init" in result.err
    assert result.code == ExitCode.DOCKER_UNAVAILABLE


def test_node_list_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, engine: FakeEngine
) -> None:
    engine.membership = SwarmMembership(state="active", manager=True, node_id="id-n1")
    engine.nodes = [node("n1", role="manager"), node("n2")]
    engine.services = [person("ann", "id-n2", 1)]
    occ = isolated_runner(tmp_path, monkeypatch, capsys)
    result = occ("node", "list", "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)["nodes"]
    assert [(r["name"], r["instances"], r["memory_free"]) for r in rows] == [
        ("n1", [], 8 * GIB),
        ("n2", ["ann"], 7 * GIB),
    ]
    human = occ("node", "list")
    assert "n2" in human.out and "ann" in human.out and "FREE" in human.out


# --------------------------------------------------------------------------- people


def test_people_are_spread_over_the_nodes_as_pinned_services_with_secret_passwords() -> None:
    engine = manager_engine(node("n1", role="manager"), node("n2"), node("n3"))
    team = cluster(engine, "10.9.0.1:5000")
    placed = [team.add_person(name, memory_bytes=2 * GIB) for name in ("ann", "bob", "cat")]
    assert sorted(p.node for p in placed) == ["n1", "n2", "n3"]
    for person, body in zip(placed, engine.service_bodies, strict=True):
        task = body["TaskTemplate"]
        assert task["Placement"]["Constraints"] == [f"node.id==id-{person.node}"]
        assert body["Mode"] == {"Replicated": {"Replicas": 1}}
        assert body["EndpointSpec"] == {"Mode": "dnsrr", "Ports": []}
        assert task["Networks"] == [{"Target": "opencode-cloud-cluster"}]
        assert task["Resources"]["Reservations"]["MemoryBytes"] == 2 * GIB
        container = task["ContainerSpec"]
        assert container["Image"] == f"10.9.0.1:5000/{DEFAULT_IMAGE}"
        (secret,) = container["Secrets"]
        assert secret["File"] == {
            "Name": "/run/opencode-cloud/internal.password",
            "UID": "0",
            "GID": "0",
            "Mode": 0o400,
        }
        assert engine.secrets[secret["SecretName"]] == person.internal_password.encode()
        # The password is nowhere in what `docker service inspect` shows.
        assert person.internal_password not in json.dumps(body)
        assert body["Name"] == person.upstream.split(":")[0]
    # The fourth goes where most memory is left: all equal now, so by name (n3).
    assert team.add_person("dan", memory_bytes=GIB).node == "n3"


def test_a_door_service_publishes_its_port_on_its_node_only() -> None:
    from opencode_cloud.docker.spec import ContainerSpec, DefaultSettings
    from opencode_cloud.docker.swarm import service_body

    spec = ContainerSpec.from_config(
        DefaultSettings(port=8080), INSTANCE, image="img:1", image_id=None
    )
    body = service_body(spec, node_id="m1", network="net", host_ports=[(8080, 3000)])
    assert body["EndpointSpec"] == {
        "Mode": "dnsrr",
        "Ports": [
            {"Protocol": "tcp", "TargetPort": 3000, "PublishedPort": 8080, "PublishMode": "host"}
        ],
    }
    assert body["TaskTemplate"]["Placement"]["Constraints"] == ["node.id==m1"]
    container = body["TaskTemplate"]["ContainerSpec"]
    assert container["Env"] == spec.create_body()["Env"]
    assert container["CapabilityDrop"] == spec.create_body()["HostConfig"]["CapDrop"]


def test_a_removed_person_leaves_no_service_and_no_secret() -> None:
    engine = manager_engine(node("n1", role="manager"), node("n2"))
    team = cluster(engine)
    team.add_person("ann", memory_bytes=GIB)
    team.add_person("bob", memory_bytes=GIB)
    removed = team.remove_person("ann")
    assert [s.name for s in engine.services] == ["opencode-cloud-user-bob"]
    assert removed[0] == "opencode-cloud-user-ann"
    assert [n for n in engine.secrets if "-user-ann-" in n] == []
    assert len([n for n in engine.secrets if "-user-bob-" in n]) == 1
    assert team.remove_person("ann") == []  # again: nothing left to remove
