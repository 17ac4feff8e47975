"""The test swarm itself: three engines in one swarm, an overlay between them, a registry
on their network, and no way out of it."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from remote_helpers import busybox_tar
from swarm_helpers import HOST_ADDRESS, NODES, Swarm, node_address

pytestmark = [pytest.mark.swarm, pytest.mark.alongside]

BUSYBOX = "occsw-test/busybox:1"


def test_three_engines_form_one_swarm(swarm: Swarm) -> None:
    nodes = swarm.docker(1, "node", "ls", "--format", "{{json .}}").stdout.splitlines()
    rows = [json.loads(line) for line in nodes]
    assert sorted(row["Hostname"] for row in rows) == [f"occsw-n{n}" for n in NODES]
    assert all(row["Status"] == "Ready" for row in rows)
    assert [row["Hostname"] for row in rows if row["ManagerStatus"]] == ["occsw-n1"]
    engine_ids = {swarm.docker(n, "info", "--format", "{{.ID}}").stdout for n in NODES}
    assert len(engine_ids) == len(NODES)


def test_nodes_reach_each_other_and_nothing_outside(swarm: Swarm) -> None:
    # Node 3's engine listens for the swarm's gossip on 7946.
    gossip = swarm.in_node(2, ["bash", "-c", f"exec 3<>/dev/tcp/{node_address(3)}/7946"])
    assert gossip.returncode == 0, gossip.stderr
    registry = swarm.in_node(3, ["curl", "-sf", "-m3", f"http://{swarm.registry}/v2/"])
    assert registry.returncode == 0, registry.stderr
    # This machine and the internet are out of reach (no route, nothing forwarded).
    for target in (HOST_ADDRESS, "192.0.2.1", "1.1.1.1"):
        probe = swarm.in_node(1, ["curl", "-s", "-m3", f"http://{target}:80/"])
        assert probe.returncode in (7, 28), (target, probe.returncode)


def test_an_image_from_the_registry_runs_on_every_node_over_an_overlay(swarm: Swarm) -> None:
    """The pieces team mode stands on: push to the registry from the manager, a service
    on every node pulling it, an attachable overlay with dnsrr names, host-mode ports."""
    ref = f"{swarm.registry}/{BUSYBOX}"
    suffix = uuid.uuid4().hex[:6]
    network, service = f"occsw-test-net-{suffix}", f"occsw-test-web-{suffix}"
    swarm.docker(1, "import", "-", ref, input=busybox_tar())
    swarm.docker(1, "push", ref)
    swarm.docker(1, "network", "create", "-d", "overlay", "--attachable", network)
    try:
        swarm.docker(
            1, "service", "create", "--name", service, "--mode", "global",
            "--endpoint-mode", "dnsrr", "--network", network,
            "--publish", "mode=host,target=8080,published=18080",
            "--detach", ref, "sh", "-c",
            "hostname >/www/index.html && exec httpd -f -p 8080 -h /www",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        names: set[str] = set()
        while time.monotonic() < deadline and len(names) < len(NODES):
            for n in NODES:
                page = swarm.in_node(1, ["curl", "-sf", "-m2", f"http://{node_address(n)}:18080/"])
                if page.returncode == 0:
                    names.add(page.stdout.strip())
            time.sleep(0.5)
        assert len(names) == len(NODES), names
        # From a task on the manager, every task answers over the overlay, by its dnsrr name.
        task = swarm.docker(
            1, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"
        ).stdout.split()[0]
        lookup = swarm.docker(1, "exec", task, "nslookup", f"tasks.{service}").stdout
        addresses = [
            line.split()[-1] for line in lookup.splitlines()[2:] if line.startswith("Address")
        ]
        assert len(addresses) == len(NODES), lookup
        seen = {
            swarm.docker(1, "exec", task, "wget", "-qO-", f"http://{a}:8080/").stdout.strip()
            for a in addresses
        }
        assert seen == names
    finally:
        swarm.docker(1, "service", "rm", service, check=False)
        time.sleep(1)
        swarm.docker(1, "network", "rm", network, check=False)
