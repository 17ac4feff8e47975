"""`occ team enable` and `occ user add|list|remove` on the test swarm, as a user runs them:
`occ` in a process of its own, DOCKER_HOST at the manager, a configuration that sets
`cluster`. The front door and the first person run on the manager, the people added on
the other nodes; both sign in at the door and work in their own opencode; a person
removed with --volumes leaves nothing on their node."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.error
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from occ_helpers import OCC, run
from opencode_cloud.access.tls import CONTAINER_KEY
from opencode_cloud.defaults import EDGE_UID
from swarm_helpers import NODES, Swarm, door_request, node_address

pytestmark = [pytest.mark.swarm, pytest.mark.alongside]

# The door's port on the manager (each test's own: a removed door's may linger a moment).
PORT = 8790
TLS_PORT = 8791


@pytest.fixture
def occ_env(swarm: Swarm, image_on_manager: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """`occ`'s environment: the manager's engine, a configuration folder and instance of
    this test, the checkout's image, the test swarm's registry and the door's port
    `PORT`."""
    instance = f"occsw-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "OCC_CONFIG_DIR": str(tmp_path / "config"),
        "OCC_INSTANCE": instance,
        "DOCKER_HOST": swarm.manager_host,
        "NO_COLOR": "1",
    }
    run(env, "config", "set", "image", image_on_manager)
    run(env, "config", "set", "port", str(PORT))
    run(env, "config", "set", "cluster", json.dumps({"registry": swarm.registry}))
    yield env
    swarm.remove_team(instance)


def _signs_in_and_works(url: str, name: str, password: str, timeout: float = 240) -> float:
    """Seconds until `name` made a session in their opencode through the door."""
    began = time.monotonic()
    status, answer = 0, None
    while time.monotonic() - began < timeout:
        status, answer = door_request(url, "/session", (name, password), {"title": name})
        if status == 200:
            return time.monotonic() - began
        time.sleep(2)
    raise AssertionError(f"{name} got {status} from the door: {answer}")


@pytest.mark.timeout(900)
def test_occ_runs_a_team_on_the_swarm(swarm: Swarm, occ_env: dict[str, str]) -> None:
    prefix = f"opencode-cloud-{occ_env['OCC_INSTANCE']}"
    began = time.monotonic()
    run(occ_env, "cluster", "init")
    print(f"occ cluster init {time.monotonic() - began:.1f} s")

    began = time.monotonic()
    enabled = json.loads(run(occ_env, "--json", "team", "enable", "--name", "ada").stdout)
    print(f"occ team enable {time.monotonic() - began:.1f} s")
    url = f"http://{node_address(1)}:{PORT}"
    assert enabled["url"] == url
    assert swarm.running_on(f"{prefix}-door") == "occsw-n1"
    assert swarm.running_on(f"{prefix}-user-ada") == "occsw-n1"  # by the service's volumes
    # Nothing of the team runs as a plain container of the manager's engine.
    plain = swarm.docker(1, "ps", "-a", "--format", "{{.Names}} {{.Labels}}").stdout
    assert [
        line for line in plain.splitlines() if prefix in line and "com.docker.swarm" not in line
    ] == []

    passwords = {name: f"{name}-password-{uuid.uuid4().hex[:8]}" for name in ("bob", "cat")}
    nodes = {}
    for name, password in passwords.items():
        added = _add(occ_env, name, password)
        assert f"Added {name}. They sign in at {url}" in added
        nodes[name] = swarm.running_on(f"{prefix}-user-{name}")
    assert sorted(nodes.values()) == ["occsw-n2", "occsw-n3"]

    for name, password in passwords.items():
        seconds = _signs_in_and_works(url, name, password)
        print(f"{name} ({nodes[name]}) answered through the door in {seconds:.1f} s")
    for name, password in passwords.items():
        status, sessions = door_request(url, "/session", (name, password))
        assert status == 200 and isinstance(sessions, list)
        assert [s["title"] for s in sessions] == [name]  # their own opencode
    assert door_request(url, "/session", ("bob", passwords["cat"]))[0] == 401

    listed = json.loads(run(occ_env, "--json", "user", "list").stdout)["people"]
    assert {p["name"]: p["state"] for p in listed} == {
        "ada": "running",
        "bob": "running",
        "cat": "running",
    }

    # cat's volumes are on their node, and go with them.
    cat_node = int(nodes["cat"][-1])
    cat_volumes = f"name={prefix}-user-cat-"
    assert swarm.docker(cat_node, "volume", "ls", "-q", "--filter", cat_volumes).stdout.split()
    began = time.monotonic()
    removed = run(
        occ_env, "--json", "user", "remove", "cat", "--volumes", "--no-backup", "--yes"
    ).stdout
    print(f"occ user remove cat --volumes {time.monotonic() - began:.1f} s")
    assert f"{prefix}-user-cat" in json.loads(removed)["removed"]
    for n in NODES:
        assert swarm.docker(n, "volume", "ls", "-q", "--filter", cat_volumes).stdout == ""
    services = swarm.docker(1, "service", "ls", "--format", "{{.Name}}").stdout.split()
    assert f"{prefix}-user-cat" not in services
    assert not [s for s in services if "volume-removal" in s]
    assert door_request(url, "/session", ("cat", passwords["cat"]))[0] == 401
    assert door_request(url, "/session", ("bob", passwords["bob"]))[0] == 200
    listed = json.loads(run(occ_env, "--json", "user", "list").stdout)["people"]
    assert sorted(p["name"] for p in listed) == ["ada", "bob"]

    # People made at their first single sign-on get their instance from `occ team sso sync`
    # (no starter runs on a swarm), never on volumes a removed person left on a node.
    run(occ_env, "user", "remove", "bob", "--no-backup", "--yes")  # his volumes stay
    bob_node = int(nodes["bob"][-1])
    assert swarm.docker(bob_node, "volume", "ls", "-q", "--filter", f"name={prefix}-user-bob-")
    for name in ("bob", "dan"):
        _made_at_first_sign_in(swarm, f"{prefix}-door", name)
    began = time.monotonic()
    synced = json.loads(run(occ_env, "--json", "team", "sso", "sync").stdout)
    print(f"occ team sso sync {time.monotonic() - began:.1f} s")
    assert synced == {"made": ["dan"], "refused": ["bob"]}
    assert swarm.running_on(f"{prefix}-user-dan") in {f"occsw-n{n}" for n in NODES}
    services = swarm.docker(1, "service", "ls", "--format", "{{.Name}}").stdout.split()
    assert f"{prefix}-user-bob" not in services
    assert not [s for s in services if "volume-search" in s]
    deadline = time.monotonic() + 240
    while _state(occ_env, "dan") != "running":
        assert time.monotonic() < deadline, "dan's instance does not run"
        time.sleep(2)


def _state(env: dict[str, str], name: str) -> str:
    """The state `occ status --user NAME --json` gives."""
    shown = run(env, "--json", "status", "--user", name, check=False).stdout
    return str(json.loads(shown or "{}").get("state"))


def _made_at_first_sign_in(swarm: Swarm, door: str, name: str) -> None:
    """A person in the door's records as its login service makes them at a first single
    sign-on (no password, no instance yet), written in the door's own container."""
    program = """
import os, sys
sys.path.insert(0, "/usr/local/lib/opencode-cloud")
import edge
people = edge.People(edge.Path(os.environ.get("OCC_EDGE_TEAM_DB", edge.DEFAULT_TEAM_DB)))
people._run(
    "INSERT INTO people (name, hash, generation, internal_password, upstream, admin, email,"
    " disabled, created) VALUES (?, ?, 'g', '', '', 0, NULL, 0, 1)",
    sys.argv[1],
    edge.edge_oidc.NO_PASSWORD,
)
"""
    container = swarm.container_of(1, door)
    swarm.docker(
        1, "exec", "-u", f"{EDGE_UID}:{EDGE_UID}", container, "python3", "-I", "-c", program, name
    )


def _add(env: dict[str, str], name: str, password: str) -> str:
    """`occ user add NAME --password-stdin`, its output."""
    proc = subprocess.run(
        [*OCC, "user", "add", name, "--memory", "1g", "--password-stdin"],
        env=env,
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.timeout(600)
def test_occ_serves_the_door_over_https_on_the_swarm(swarm: Swarm, occ_env: dict[str, str]) -> None:
    prefix = f"opencode-cloud-{occ_env['OCC_INSTANCE']}"
    run(occ_env, "config", "set", "port", str(TLS_PORT))
    run(occ_env, "config", "set", "tls", "self-signed")
    run(occ_env, "config", "set", "host_names", node_address(1))
    run(occ_env, "cluster", "init")
    shown = json.loads(run(occ_env, "--json", "auth", "show").stdout)
    enabled = json.loads(run(occ_env, "--json", "team", "enable", "--name", "ada").stdout)
    url = f"https://{node_address(1)}:{TLS_PORT}"
    assert enabled["url"] == url

    trusted = ssl.create_default_context(cafile=shown["ca_file"])
    began = time.monotonic()
    status, answer = 0, None
    while time.monotonic() - began < 180:
        status, answer = door_request(
            url, "/session", ("ada", shown["password"]), {"title": "ada"}, trusted
        )
        if status == 200:
            break
        time.sleep(2)
    assert status == 200, answer
    # A client that does not trust the team's CA gets no connection.
    with pytest.raises(urllib.error.URLError):
        door_request(
            url, "/session", ("ada", shown["password"]), None, ssl.create_default_context()
        )
    # The key is a secret: nowhere in what the manager shows of the door's service or task.
    key_secret = next(
        name
        for name in swarm.docker(1, "secret", "ls", "--format", "{{.Name}}").stdout.split()
        if name.startswith(f"{prefix}-door-key")
    )
    container = swarm.docker(
        1, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={prefix}-door"
    ).stdout.split()[0]
    key = swarm.docker(1, "exec", "-u", "0", container, "cat", CONTAINER_KEY).stdout
    assert "PRIVATE KEY" in key
    shown_there = swarm.docker(1, "service", "inspect", f"{prefix}-door").stdout
    shown_there += swarm.docker(1, "inspect", container).stdout
    assert key.strip().splitlines()[1] not in shown_there
    assert key_secret in shown_there  # mounted by name, its content not shown
