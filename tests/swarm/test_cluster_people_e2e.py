"""Team mode on the test swarm (`Cluster.start_door`, `Cluster.add_person`), with the real
opencode image: the front door on the manager, three people spread over the three nodes,
each pinned to its node and reached by the door over the team's overlay by its DNS name
with an internal password that is a swarm secret, nowhere in `docker inspect`; each signs
in at the door and works in their own opencode."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from opencode_cloud.cli.progress import PlainProgress
from opencode_cloud.config.schema import ClusterSettings, Config
from opencode_cloud.docker.client import DockerClient
from opencode_cloud.instance import Instance
from opencode_cloud.team.cluster import Cluster
from swarm_helpers import NODES, Swarm, door_request, node_address

pytestmark = [pytest.mark.swarm, pytest.mark.alongside]


@pytest.fixture
def team(swarm: Swarm, image_on_manager: str) -> Iterator[Cluster]:
    instance = Instance(f"occsw-{uuid.uuid4().hex[:6]}")
    config = Config(image=image_on_manager, cluster=ClusterSettings(registry=swarm.registry))
    with DockerClient(swarm.manager_host) as manager:
        yield Cluster(manager, config, instance)
    swarm.remove_team(instance.name)


@pytest.mark.timeout(900)
def test_three_people_on_three_nodes_sign_in_at_the_door_and_reach_their_own_opencode(
    swarm: Swarm, team: Cluster
) -> None:
    began = time.monotonic()
    team.init(PlainProgress(), lambda _m: None)
    print(f"cluster init (push) {time.monotonic() - began:.1f} s")
    began = time.monotonic()
    url = team.start_door()
    print(f"front door at {url} in {time.monotonic() - began:.1f} s")
    assert url == f"http://{node_address(1)}:{team.config.port}"
    assert team.status().door_url == url
    passwords = {name: f"{name}-password-{uuid.uuid4().hex[:8]}" for name in ("ann", "bob", "cat")}
    people = {
        name: team.add_person(name, password=password, memory_bytes=2**30)
        for name, password in passwords.items()
    }
    assert sorted(p.node for p in people.values()) == [f"occsw-n{n}" for n in NODES]
    for name, person in people.items():
        service = person.upstream.split(":")[0]
        began = time.monotonic()
        assert swarm.running_on(service) == person.node
        deadline = time.monotonic() + 180
        status, answer = 0, None
        while time.monotonic() < deadline:
            status, answer = door_request(url, "/session", (name, passwords[name]), {"title": name})
            if status == 200:
                break
            time.sleep(2)
        print(
            f"{name} ({person.node}) answered through the door in {time.monotonic() - began:.1f} s"
        )
        assert status == 200, answer
        # Over the overlay, without the internal password: nothing.
        refused = swarm.docker(
            1, "run", "--rm", "--network", team.layout.cluster_network,
            "--entrypoint", "/usr/bin/curl", team.image, "-s", "-o", "/dev/null",
            "-w", "%{http_code}", "-m5", f"http://{person.upstream}/global/health",
            check=False,
        )  # fmt: skip
        assert refused.stdout == "401"
        # The password is a file, not in what the engines show of the service or task.
        node = int(person.node[-1])
        container = swarm.docker(
            node, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"
        ).stdout.split()[0]
        shown = swarm.docker(node, "inspect", container).stdout
        shown += swarm.docker(1, "service", "inspect", service).stdout
        assert person.internal_password not in shown
        assert passwords[name] not in shown
        # Its volumes are on its node.
        assert f"{service}-" in swarm.docker(node, "volume", "ls", "-q").stdout

    for name in people:
        status, sessions = door_request(url, "/session", (name, passwords[name]))
        assert status == 200
        assert isinstance(sessions, list)
        assert [s["title"] for s in sessions] == [name]  # their own opencode, nobody else's
    # A wrong password, or another's, gets nothing.
    assert door_request(url, "/session", ("ann", passwords["bob"]))[0] == 401

    nodes = {row.node.hostname: row.instances for row in team.nodes()}
    assert sorted(sum(nodes.values(), ())) == ["ann", "bob", "cat", "door"]
    assert "door" in nodes["occsw-n1"]  # the manager's
    assert team.status().problems == []

    # Taken off the swarm: no sign-in, no service, no secret; the others work on.
    ann = people["ann"].upstream.split(":")[0]
    removed = team.remove_person("ann")
    assert removed[0] == ann and any("-internal-" in r for r in removed[1:])
    assert door_request(url, "/session", ("ann", passwords["ann"]))[0] == 401
    assert swarm.docker(1, "service", "inspect", ann, check=False).returncode != 0
    assert ann not in swarm.docker(1, "secret", "ls", "--format", "{{.Name}}").stdout
    assert door_request(url, "/session", ("bob", passwords["bob"]))[0] == 200
