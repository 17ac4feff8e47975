"""`occ cluster init`, `occ cluster status` and `occ node list` against the test swarm,
with the real sandbox image: `occ` talks to the manager only, and a node without internet
gets the image from the registry on the test network."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from opencode_cloud.docker.image import DEFAULT_IMAGE
from swarm_helpers import NODES, Swarm

pytestmark = [pytest.mark.swarm, pytest.mark.alongside]

REPO = Path(__file__).resolve().parents[2]
OCC = REPO / ".venv" / "bin" / "occ"


def _image_on_manager(swarm: Swarm) -> None:
    """The sandbox image on the manager, as if built there: copied from this machine's
    engine (where scripts/test.sh builds it), since the swarm has no internet."""
    if swarm.docker(1, "image", "inspect", DEFAULT_IMAGE, check=False).returncode == 0:
        return
    found = subprocess.run(["docker", "image", "inspect", DEFAULT_IMAGE], capture_output=True)
    if found.returncode != 0:
        pytest.fail(f"{DEFAULT_IMAGE} is missing here: scripts/sandbox-image.sh builds it")
    swarm.load_on_manager(DEFAULT_IMAGE)


@pytest.fixture
def occ_swarm(swarm: Swarm, tmp_path: Path):
    """`occ` as an operator runs it against the manager, for an instance of its own."""
    env = {
        **os.environ,
        "DOCKER_HOST": swarm.manager_host,
        "OCC_CONFIG_DIR": str(tmp_path / "cfg"),
        "OCC_INSTANCE": f"occsw-{uuid.uuid4().hex[:6]}",
    }
    env.pop("OCC_HOST", None)

    def occ(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(OCC), *args], env=env, capture_output=True, text=True, timeout=600
        )

    yield occ
    network = f"opencode-cloud-{env['OCC_INSTANCE']}-cluster"
    swarm.docker(1, "network", "rm", network, check=False)


def _wait_task(swarm: Swarm, service: str, states: set[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        out = swarm.docker(1, "service", "ps", service, "--format", "{{.CurrentState}}").stdout
        state = out.split()[0].lower() if out.split() else ""
        if state in states:
            return state
        time.sleep(0.5)
    raise AssertionError(f"{service}: {state!r} after {timeout} s")


@pytest.mark.timeout(600)
def test_cluster_init_gets_the_image_to_a_node_without_internet(swarm: Swarm, occ_swarm) -> None:
    _image_on_manager(swarm)
    ref = f"{swarm.registry}/{DEFAULT_IMAGE}"
    # n3 has nothing but the registry to get the image from.
    for image in swarm.docker(3, "image", "ls", "-q", "--no-trunc").stdout.split():
        swarm.docker(3, "image", "rm", "-f", image, check=False)
    set_registry = occ_swarm("config", "set", "cluster", json.dumps({"registry": swarm.registry}))
    assert set_registry.returncode == 0, set_registry.stderr

    began = time.monotonic()
    init = occ_swarm("--json", "cluster", "init")
    print(f"occ cluster init (push of the image) took {time.monotonic() - began:.1f} s")
    assert init.returncode == 0, init.stderr
    status = json.loads(init.stdout)
    assert status["manager"] == "occsw-n1"
    assert status["image"] == ref
    assert status["network_ready"] is True
    assert status["problems"] == []
    network = swarm.docker(1, "network", "inspect", status["network"]).stdout
    assert json.loads(network)[0]["Driver"] == "overlay"
    assert json.loads(network)[0]["Attachable"] is True

    # A one-shot task pinned to n3 runs the image: n3 pulled it from the registry.
    name = f"occsw-pull-{uuid.uuid4().hex[:6]}"
    swarm.docker(
        1, "service", "create", "--detach", "--name", name, "--restart-condition", "none",
        "--constraint", "node.hostname==occsw-n3", "--entrypoint", "/usr/local/bin/opencode",
        ref, "--version",
    )  # fmt: skip
    try:
        assert _wait_task(swarm, name, {"complete", "failed", "rejected"}) == "complete"
        # (pulled by digest, so untagged there)
        on_n3 = swarm.docker(3, "image", "ls", "-q", "--no-trunc").stdout.split()
        on_n1 = swarm.docker(1, "image", "inspect", DEFAULT_IMAGE, "--format", "{{.Id}}")
        assert on_n1.stdout.strip() in on_n3
    finally:
        swarm.docker(1, "service", "rm", name, check=False)


def test_node_list_and_status_through_the_manager(swarm: Swarm, occ_swarm) -> None:
    listed = occ_swarm("--json", "node", "list")
    assert listed.returncode == 0, listed.stderr
    nodes = json.loads(listed.stdout)["nodes"]
    assert [n["name"] for n in nodes] == [f"occsw-n{n}" for n in NODES]
    assert [n["role"] for n in nodes] == ["manager", "worker", "worker"]
    assert all(n["state"] == "ready" and n["memory_bytes"] > 2**30 for n in nodes)
    assert all(n["cpus"] >= 1 for n in nodes)

    status = occ_swarm("--json", "cluster", "status")
    assert status.returncode == 0, status.stderr
    problems = json.loads(status.stdout)["problems"]
    # Before `occ cluster init` and without a registry, both are out of place.
    assert any("network" in p and "does not exist" in p for p in problems)
    assert any("no registry is set" in p for p in problems)


def test_a_worker_is_refused_with_a_hint(swarm: Swarm, tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{swarm.socket(2)}"}
    env["OCC_CONFIG_DIR"] = str(tmp_path / "cfg")
    result = subprocess.run(
        [str(OCC), "cluster", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "is a worker of a swarm, not a swarm manager" in result.stderr
    assert "Hint:" in result.stderr and "manager" in result.stderr.split("Hint:")[1]
    assert not (tmp_path / "cfg").exists() or not any((tmp_path / "cfg").rglob("*.json"))
