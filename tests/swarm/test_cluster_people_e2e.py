"""Team mode on the test swarm (`Cluster.start_door`, `Cluster.add_person`), with the real
opencode image: the front door on the manager, three people spread over the three nodes,
each pinned to its node and reached by the door over the team's overlay by its DNS name
with an internal password that is a swarm secret, nowhere in `docker inspect`; each signs
in at the door and works in their own opencode."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencode_cloud.cli.progress import PlainProgress
from opencode_cloud.config.schema import ClusterSettings, Config
from opencode_cloud.docker.client import DockerClient
from opencode_cloud.docker.image import build_image
from opencode_cloud.instance import LABEL_INSTANCE, Instance
from opencode_cloud.team.cluster import Cluster
from swarm_helpers import NODES, Swarm, node_address

pytestmark = [pytest.mark.swarm, pytest.mark.alongside]

# An image of this checkout under a name of its own (the shared sandbox tag is left alone).
IMAGE = "occsw-test/sandbox:swarm"


def _ca_files() -> list[Path]:
    found = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    return [Path(found)] if Path(found).is_file() else []


@pytest.fixture(scope="module")
def image_on_manager(swarm: Swarm) -> Iterator[str]:
    """This checkout's image, built here (cached) and copied to the manager, as if built
    there: the swarm has no internet. Its tag here is removed afterwards."""
    with DockerClient() as local:
        build_image(local, tag=IMAGE, ca_files=_ca_files(), reporter=PlainProgress())
        image_id = local.inspect_image(IMAGE)
    assert image_id is not None
    on_manager = swarm.docker(1, "image", "inspect", IMAGE, "--format", "{{.Id}}", check=False)
    if on_manager.stdout.strip() != image_id.id:
        save = subprocess.Popen(["docker", "save", IMAGE], stdout=subprocess.PIPE)
        load = subprocess.run(
            ["docker", "-H", swarm.manager_host, "load", "-q"],
            stdin=save.stdout,
            capture_output=True,
            timeout=300,
        )
        assert save.wait() == 0 and load.returncode == 0, load.stderr
    yield IMAGE
    subprocess.run(["docker", "image", "rm", IMAGE], capture_output=True)


@pytest.fixture
def team(swarm: Swarm, image_on_manager: str) -> Iterator[Cluster]:
    instance = Instance(f"occsw-{uuid.uuid4().hex[:6]}")
    config = Config(image=image_on_manager, cluster=ClusterSettings(registry=swarm.registry))
    with DockerClient(swarm.manager_host) as manager:
        yield Cluster(manager, config, instance)
    label = f"{LABEL_INSTANCE}={instance.name}"
    for service in swarm.docker(
        1, "service", "ls", "-q", "--filter", f"label={label}"
    ).stdout.split():
        swarm.docker(1, "service", "rm", service, check=False)
    time.sleep(2)
    for secret in swarm.docker(
        1, "secret", "ls", "-q", "--filter", f"label={label}"
    ).stdout.split():
        swarm.docker(1, "secret", "rm", secret, check=False)
    swarm.docker(1, "network", "rm", f"opencode-cloud-{instance.name}-cluster", check=False)
    for n in NODES:
        # (made by the engine at a task's first start: named, not labelled)
        prefix = f"name=opencode-cloud-{instance.name}-"
        volumes = swarm.docker(n, "volume", "ls", "-q", "--filter", prefix, check=False)
        for volume in volumes.stdout.split():
            swarm.docker(n, "volume", "rm", "-f", volume, check=False)


def _running_on(swarm: Swarm, service: str, timeout: float = 180) -> str:
    """The node whose task of `service` runs, once it does."""
    deadline = time.monotonic() + timeout
    rows: list[str] = []
    while time.monotonic() < deadline:
        rows = swarm.docker(
            1, "service", "ps", service, "--format", "{{.Node}} {{.CurrentState}} {{.Error}}"
        ).stdout.splitlines()
        if rows and rows[0].split()[1:2] == ["Running"]:
            return rows[0].split()[0]
        time.sleep(1)
    raise AssertionError(f"{service} does not run: {rows}")


def _door(url: str, path: str, who: tuple[str, str], body: object = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method="POST" if data else "GET")
    token = base64.b64encode(f"{who[0]}:{who[1]}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    if data:
        request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


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
        assert _running_on(swarm, service) == person.node
        deadline = time.monotonic() + 180
        status, answer = 0, None
        while time.monotonic() < deadline:
            status, answer = _door(url, "/session", (name, passwords[name]), {"title": name})
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
        status, sessions = _door(url, "/session", (name, passwords[name]))
        assert status == 200
        assert isinstance(sessions, list)
        assert [s["title"] for s in sessions] == [name]  # their own opencode, nobody else's
    # A wrong password, or another's, gets nothing.
    assert _door(url, "/session", ("ann", passwords["bob"]))[0] == 401

    nodes = {row.node.hostname: row.instances for row in team.nodes()}
    assert sorted(sum(nodes.values(), ())) == ["ann", "bob", "cat", "door"]
    assert "door" in nodes["occsw-n1"]  # the manager's
    assert team.status().problems == []

    # Taken off the swarm: no sign-in, no service, no secret; the others work on.
    ann = people["ann"].upstream.split(":")[0]
    removed = team.remove_person("ann")
    assert removed[0] == ann and any("-internal-" in r for r in removed[1:])
    assert _door(url, "/session", ("ann", passwords["ann"]))[0] == 401
    assert swarm.docker(1, "service", "inspect", ann, check=False).returncode != 0
    assert ann not in swarm.docker(1, "secret", "ls", "--format", "{{.Name}}").stdout
    assert _door(url, "/session", ("bob", passwords["bob"]))[0] == 200
