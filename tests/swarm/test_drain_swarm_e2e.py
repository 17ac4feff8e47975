"""`occ node drain` on the test swarm, as an operator runs it: a person with a session in
their opencode, a file in their project and one in their home moves off their node to
another; afterwards they sign in at the door again and find it all there, their old node
keeps none of their volumes and takes nothing new, and the door served the others
throughout."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from occ_helpers import OCC, run
from opencode_cloud.docker.volume import HOME, PROJECTS
from swarm_helpers import NODES, PREFIX, SCRIPT, STATE_DIR, Swarm, door_request, node_address

pytestmark = [pytest.mark.swarm, pytest.mark.alongside]

PORT = 8794


@pytest.fixture
def occ_env(swarm: Swarm, image_on_manager: str, tmp_path: Path) -> Iterator[dict[str, str]]:
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
    for n in (2, 3):
        swarm.docker(1, "node", "update", "--availability", "active", f"occsw-n{n}", check=False)
    # A moved person's volumes are on a node their removed service's tasks just left.
    label = f"label=io.opencode-cloud.instance={instance}"
    deadline = time.monotonic() + 60
    for n in NODES:
        while time.monotonic() < deadline:
            swarm.docker(n, "container", "prune", "-f", "--filter", label, check=False)
            left = swarm.docker(
                n, "volume", "ls", "-q", "--filter", f"name=opencode-cloud-{instance}-", check=False
            )
            if not left.stdout.split():
                break
            swarm.docker(n, "volume", "rm", *left.stdout.split(), check=False)
            time.sleep(1)


def _until_ok(url: str, who: tuple[str, str], body: object = None, timeout: float = 240) -> object:
    began, status, answer = time.monotonic(), 0, None
    while time.monotonic() - began < timeout:
        try:
            status, answer = door_request(url, "/session", who, body)
        except OSError as error:  # no answer in time: the door tried a task that is gone
            status, answer = 0, error
        if status == 200:
            return answer
        time.sleep(2)
    raise AssertionError(f"{who[0]} got {status} from the door: {answer}")


def _container(swarm: Swarm, node: int, service: str) -> str:
    found = swarm.docker(
        node, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"
    ).stdout.split()
    assert found, f"{service} runs no container on n{node}"
    return found[0]


@pytest.mark.timeout(900)
def test_drain_moves_a_person_with_their_sessions_files_and_home(
    swarm: Swarm, occ_env: dict[str, str]
) -> None:
    prefix = f"opencode-cloud-{occ_env['OCC_INSTANCE']}"
    url = f"http://{node_address(1)}:{PORT}"
    # n3 takes nothing new: bob lands on n2, and moves to the manager (which has the image).
    swarm.docker(1, "node", "update", "--availability", "pause", "occsw-n3")
    run(occ_env, "cluster", "init")
    ada = ("ada", json.loads(run(occ_env, "--json", "team", "enable", "--name", "ada").stdout))
    ada_password = json.loads(run(occ_env, "--json", "auth", "show").stdout)["password"]
    bob = ("bob", f"bob-{uuid.uuid4().hex[:10]}")
    added = subprocess.run(
        [*OCC, "user", "add", "bob", "--memory", "1g", "--password-stdin"],
        env=occ_env, input=bob[1] + "\n", capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    service = f"{prefix}-user-bob"
    assert swarm.running_on(service) == "occsw-n2"

    made = _until_ok(url, bob, {"title": "before the move"})
    assert isinstance(made, dict)
    session_id = made["id"]
    inside = _container(swarm, 2, service)
    swarm.docker(
        2, "exec", "-u", "opencode", inside, "sh", "-c",
        f"echo kept > {PROJECTS.mount_point}/plan.md && echo mine > {HOME.mount_point}/.notes"
        f" && ln -s /etc/shadow {HOME.mount_point}/shadow-link",
    )  # fmt: skip
    bob_volumes = f"name={service}-"
    assert swarm.docker(2, "volume", "ls", "-q", "--filter", bob_volumes).stdout.split()

    # ada works through the door throughout (once her instance answers at all).
    _until_ok(url, (ada[0], ada_password))
    ada_answers: list[int] = []
    done = threading.Event()

    def ask_as_ada() -> None:
        while not done.is_set():
            try:
                ada_answers.append(door_request(url, "/session", (ada[0], ada_password))[0])
            except OSError as error:  # no answer at all
                ada_answers.append(-1)
                print(f"ada: {error}")
            time.sleep(0.5)

    asking = threading.Thread(target=ask_as_ada, daemon=True)
    asking.start()
    began = time.monotonic()
    drained = subprocess.run(
        [*OCC, "--json", "node", "drain", "occsw-n2"],
        env=occ_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    took = time.monotonic() - began
    done.set()
    asking.join()
    assert drained.returncode == 0, drained.stderr
    result = json.loads(drained.stdout)
    print(f"occ node drain {took:.1f} s: {result}")
    assert result["availability"] == "drain"
    assert [(m["name"], m["from"], m["to"]) for m in result["moved"]] == [
        ("bob", "occsw-n2", "occsw-n1")
    ]
    assert 0 < result["moved"][0]["seconds_away"] < took
    assert result["moved"][0]["sessions_checked"] == 1  # the one made before, read after
    assert ada_answers and set(ada_answers) == {200}, ada_answers

    # bob's instance runs on n1, with everything he had.
    assert swarm.running_on(service) == "occsw-n1"
    sessions = _until_ok(url, bob)
    assert isinstance(sessions, list)
    assert session_id in [s["id"] for s in sessions]
    assert door_request(url, f"/session/{session_id}/message", bob)[0] == 200
    moved = _container(swarm, 1, service)
    shown = swarm.docker(
        1, "exec", "-u", "opencode", moved, "sh", "-c",
        f"cat {PROJECTS.mount_point}/plan.md {HOME.mount_point}/.notes;"
        f" readlink {HOME.mount_point}/shadow-link; stat -c %U {HOME.mount_point}/.notes",
    ).stdout.split()  # fmt: skip
    assert shown == ["kept", "mine", "/etc/shadow", "opencode"]
    # n2 keeps none of his volumes (nor the copy's services, nor its key), and is drained.
    assert swarm.docker(2, "volume", "ls", "-q", "--filter", bob_volumes).stdout == ""
    services = swarm.docker(1, "service", "ls", "--format", "{{.Name}}").stdout
    assert "volume-" not in services and "session-check" not in services
    assert "transfer-key" not in swarm.docker(1, "secret", "ls").stdout
    nodes = json.loads(run(occ_env, "--json", "node", "list").stdout)["nodes"]
    by_name = {n["name"]: n for n in nodes}
    assert by_name["occsw-n2"]["availability"] == "drain"
    assert "bob" in by_name["occsw-n1"]["instances"]

    run(occ_env, "node", "activate", "occsw-n2")
    nodes = json.loads(run(occ_env, "--json", "node", "list").stdout)["nodes"]
    assert {n["name"]: n["availability"] for n in nodes}["occsw-n2"] == "active"


def _power_off(swarm: Swarm, node: int) -> None:
    """Node `node` as if its machine went off: its engine, containerd and containers
    killed at once (SIGKILL), nothing stopped cleanly."""
    pids = [(STATE_DIR / f"n{node}" / "dockerd.pid").read_text().strip()]
    listed = subprocess.run(
        ["bash", "-c", f"find /sys/fs/cgroup/*/{PREFIX}-n{node} -name cgroup.procs "
         f"-exec cat {{}} + 2>/dev/null; ip netns pids {PREFIX}-n{node}"],
        capture_output=True, text=True,
    )  # fmt: skip
    pids += listed.stdout.split()
    subprocess.run(["kill", "-KILL", *sorted(set(pids))], capture_output=True)


def _power_on(swarm: Swarm, node: int) -> None:
    """Start node `node`'s engine again as `scripts/swarm.sh up` does, and wait until it
    answers."""
    main = subprocess.run(
        ["bash", "-c", f"eval \"$(sed -n '/^node_main() {{/,/^}}/p' {SCRIPT})\"; "
         "declare -f node_main"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    directory = STATE_DIR / f"n{node}"
    with open(directory / "dockerd.log", "ab") as log:
        subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{PREFIX}-n{node}", "--", "unshare", "-m", "-u",
             "--", "bash", "-euo", "pipefail", "-c",
             f"{main}\nnode_main {node} '{directory}/daemon.json'"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while swarm.docker(node, "version", check=False).returncode != 0:
        assert time.monotonic() < deadline, f"n{node}'s engine does not start again"
        time.sleep(0.5)


def _node_state(swarm: Swarm, name: str) -> str:
    return swarm.docker(1, "node", "inspect", name, "--format", "{{.Status.State}}").stdout.strip()


@pytest.mark.timeout(900)
def test_a_person_whose_node_is_lost_comes_back_elsewhere_from_their_backup(
    swarm: Swarm, occ_env: dict[str, str], tmp_path: Path
) -> None:
    prefix = f"opencode-cloud-{occ_env['OCC_INSTANCE']}"
    url = f"http://{node_address(1)}:{PORT}"
    swarm.docker(1, "node", "update", "--availability", "pause", "occsw-n3")
    run(occ_env, "cluster", "init")
    run(occ_env, "team", "enable", "--name", "ada")
    ada = ("ada", json.loads(run(occ_env, "--json", "auth", "show").stdout)["password"])
    bob = ("bob", f"bob-{uuid.uuid4().hex[:10]}")
    added = subprocess.run(
        [*OCC, "user", "add", "bob", "--memory", "1g", "--password-stdin"],
        env=occ_env, input=bob[1] + "\n", capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    service = f"{prefix}-user-bob"
    assert swarm.running_on(service) == "occsw-n2"
    made = _until_ok(url, bob, {"title": "before the loss"})
    assert isinstance(made, dict)
    swarm.docker(
        2, "exec", "-u", "opencode", _container(swarm, 2, service), "sh", "-c",
        f"echo kept > {PROJECTS.mount_point}/plan.md",
    )  # fmt: skip

    # The backup of a person on another node comes to this machine, and they run on.
    backup = tmp_path / "bob.tar"
    began = time.monotonic()
    backed = run(occ_env, "--json", "backup", "--user", "bob", str(backup))
    print(f"occ backup --user bob (on n2) {time.monotonic() - began:.1f} s")
    assert json.loads(backed.stdout)["volumes"], backed.stdout
    assert backup.stat().st_size > 0
    assert not [v for v in swarm.docker(1, "volume", "ls", "-q").stdout.split() if service in v]
    _until_ok(url, bob)

    _power_off(swarm, 2)
    try:
        deadline = time.monotonic() + 120
        while _node_state(swarm, "occsw-n2") != "down":
            assert time.monotonic() < deadline, "the manager does not see n2 down"
            time.sleep(1)
        swarm.docker(1, "node", "update", "--availability", "active", "occsw-n3")
        began = time.monotonic()
        restored = subprocess.run(
            [*OCC, "--json", "user", "restore", "bob", "--from-backup", str(backup),
             "--node", "occsw-n3"],
            env=occ_env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        print(f"occ user restore bob --node occsw-n3 {time.monotonic() - began:.1f} s")
        assert restored.returncode == 0, restored.stderr
        assert json.loads(restored.stdout)["node"] == "occsw-n3"
        assert swarm.running_on(service) == "occsw-n3"
        sessions = _until_ok(url, bob)
        assert isinstance(sessions, list)
        assert made["id"] in [s["id"] for s in sessions]
        shown = swarm.docker(
            3, "exec", "-u", "opencode", _container(swarm, 3, service),
            "cat", f"{PROJECTS.mount_point}/plan.md",
        ).stdout  # fmt: skip
        assert shown.strip() == "kept"
        assert door_request(url, "/session", ada)[0] == 200
        # Nothing of bob stays on the manager.
        volumes = swarm.docker(1, "volume", "ls", "-q").stdout.split()
        assert not [v for v in volumes if service in v]
    finally:
        _power_on(swarm, 2)
        deadline = time.monotonic() + 120
        while _node_state(swarm, "occsw-n2") != "ready":
            assert time.monotonic() < deadline, "n2 does not join the swarm again"
            time.sleep(1)
