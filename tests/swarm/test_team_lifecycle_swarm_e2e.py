"""A team's lifecycle on the test swarm through `occ`: three people on three nodes, each
with a file and (but the first) a session; `occ update` to a release that cannot read
their data fails and leaves everyone on the old version with their files and sessions,
whether it fails on the first person or on the second (the first then goes back too);
then `occ stop`, `occ start`, `occ user disable|enable` and `occ team disable`.

The releases, only on the manager's engine (`occ` pushes them to the swarm's registry):
this checkout's image as the default release's (`opencode-cloud-sandbox:1.18.33`); the
same image with opencode 1.15.13 (`BREAKING`), which answers its health check on 1.18.33's
data but fails every session call, even with no session; and the checkout's image as
`BOB_BREAKS`, whose entrypoint first moves bob's opencode data aside (his sessions are
gone for it: the deep check fails for him alone); and the checkout's image with one more
label as `WORKS`, to which everyone, then the door, moves.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from occ_helpers import OCC, run
from opencode_cloud.cli.progress import PlainProgress
from opencode_cloud.defaults import DEFAULT_OPENCODE_VERSION, IMAGE_NAME, WORKING_DIR
from opencode_cloud.docker.client import DockerClient
from opencode_cloud.docker.image import build_image
from opencode_cloud.instance import LABEL_INSTANCE
from opencode_cloud.opencode import DATA_DIR
from swarm_helpers import Swarm, door_request, node_address

pytestmark = [pytest.mark.swarm, pytest.mark.alongside]

PORT = 8792
BREAKING = "1.15.13"
BOB_BREAKS = "1.18.32"
# The checkout's image again, under another release's tag (a new image ID): it works.
WORKS = "1.18.31"
# The entrypoint of `BOB_BREAKS`: in bob's instance (its host name is the person's), every
# entry of opencode's data but the key store goes aside before opencode starts.
BOB_BREAKS_ENTRYPOINT = f"""#!/bin/sh
if [ "$(hostname)" = bob ]; then
  cd {DATA_DIR} && mkdir -p aside && for f in *; do
    case "$f" in aside|auth.json) ;; *) mv "$f" aside/ ;; esac
  done
fi
exec /usr/local/bin/occ-entrypoint "$@"
"""
# People in the order `occ update` takes them (by name), and the node each goes to.
PEOPLE = ("ada", "bob", "cat")


@dataclass
class Team:
    env: dict[str, str]
    prefix: str
    url: str
    passwords: dict[str, str]
    nodes: dict[str, int]  # person -> node number
    sessions: dict[str, str]  # person -> the id of the session made before the update


def _load_on_manager(swarm: Swarm, local: str, there: str) -> None:
    """Image `local` of this machine's engine on the manager's engine as `there`."""
    save = subprocess.Popen(["docker", "save", local], stdout=subprocess.PIPE)
    load = subprocess.run(
        ["docker", "-H", swarm.manager_host, "load", "-q"],
        stdin=save.stdout,
        capture_output=True,
        timeout=600,
    )
    assert save.wait() == 0 and load.returncode == 0, load.stderr
    swarm.docker(1, "tag", local, there)


def _container(swarm: Swarm, node: int, service: str) -> str:
    """The running container of `service` on `node`."""
    found = swarm.docker(
        node, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"
    ).stdout.split()
    assert found, f"no container of {service} on n{node}"
    return found[0]


def _until_200(url: str, path: str, who: tuple[str, str], body: object = None) -> object:
    deadline = time.monotonic() + 300
    status, answer = 0, None
    while time.monotonic() < deadline:
        status, answer = door_request(url, path, who, body)
        if status == 200:
            return answer
        time.sleep(2)
    raise AssertionError(f"{who[0]} {path}: {status} {answer}")


@pytest.fixture(scope="module")
def team(swarm: Swarm, image_on_manager: str, tmp_path_factory) -> Iterator[Team]:
    with DockerClient() as local:
        build_image(
            local,
            tag=f"{image_on_manager}-breaking",
            opencode_version=BREAKING,
            ca_files=[os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"],
            reporter=PlainProgress(),
        )
    swarm.docker(1, "tag", image_on_manager, f"{IMAGE_NAME}:{DEFAULT_OPENCODE_VERSION}")
    _load_on_manager(swarm, f"{image_on_manager}-breaking", f"{IMAGE_NAME}:{BREAKING}")
    # Built on the manager from the image there (a small context, no internet needed).
    context = tmp_path_factory.mktemp("bob-breaks")
    (context / "entrypoint").write_text(BOB_BREAKS_ENTRYPOINT)
    (context / "entrypoint").chmod(0o755)  # COPY keeps the mode
    (context / "Dockerfile").write_text(
        f"FROM {image_on_manager}\nCOPY entrypoint /usr/local/bin/occ-test-entrypoint\n"
        'ENTRYPOINT ["/usr/local/bin/occ-test-entrypoint"]\n'
    )
    swarm.docker(1, "build", "-q", "-t", f"{IMAGE_NAME}:{BOB_BREAKS}", str(context))
    same = tmp_path_factory.mktemp("works")
    (same / "Dockerfile").write_text(f"FROM {image_on_manager}\nLABEL test.release={WORKS}\n")
    swarm.docker(1, "build", "-q", "-t", f"{IMAGE_NAME}:{WORKS}", str(same))
    instance = f"occsw-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "OCC_CONFIG_DIR": str(tmp_path_factory.mktemp("config")),
        "OCC_INSTANCE": instance,
        "DOCKER_HOST": swarm.manager_host,
        "NO_COLOR": "1",
    }
    run(env, "config", "set", "port", str(PORT))
    run(env, "config", "set", "cluster", json.dumps({"registry": swarm.registry}))
    run(env, "cluster", "init")
    run(env, "team", "enable", "--name", "ada")
    prefix = f"opencode-cloud-{instance}"
    url = f"http://{node_address(1)}:{PORT}"
    ada = json.loads(run(env, "--json", "auth", "show").stdout)["password"]
    passwords = {"ada": ada}
    for name in PEOPLE[1:]:
        passwords[name] = f"{name}-{uuid.uuid4().hex[:8]}"
        added = subprocess.run(
            [*OCC, "user", "add", name, "--memory", "1g", "--password-stdin"],
            env=env,
            input=passwords[name] + "\n",
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert added.returncode == 0, added.stderr
    nodes = {n: int(swarm.running_on(f"{prefix}-user-{n}")[-1]) for n in PEOPLE}
    assert sorted(nodes.values()) == [1, 2, 3]
    sessions = {}
    for name in PEOPLE:
        # Each person's own file, in their projects volume on their node.
        container = _container(swarm, nodes[name], f"{prefix}-user-{name}")
        swarm.docker(
            nodes[name], "exec", "-u", "opencode", container,
            "sh", "-c", f"echo {name} > {WORKING_DIR}/{name}-notes.txt",
        )  # fmt: skip
        if name != "ada":  # ada's empty history reads in either release: she updates fine
            made = _until_200(url, "/session", (name, passwords[name]), {"title": f"{name}'s"})
            assert isinstance(made, dict)
            sessions[name] = str(made["id"])
    yield Team(env, prefix, url, passwords, nodes, sessions)
    swarm.remove_team(instance)
    # The single-user service `occ team disable` started on the manager.
    label = f"label={LABEL_INSTANCE}={instance}"
    for container in swarm.docker(1, "ps", "-aq", "--filter", label).stdout.split():
        swarm.docker(1, "rm", "-f", "-v", container, check=False)
    for release in (BREAKING, BOB_BREAKS, WORKS):
        swarm.docker(1, "image", "rm", f"{IMAGE_NAME}:{release}", check=False)
    subprocess.run(["docker", "image", "rm", f"{image_on_manager}-breaking"], capture_output=True)


def _images(swarm: Swarm, team: Team) -> dict[str, str]:
    """The image each person's service runs."""
    return {
        name: swarm.docker(
            1, "service", "inspect", f"{team.prefix}-user-{name}",
            "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        ).stdout.strip()
        for name in PEOPLE
    }  # fmt: skip


def _has_their_data(team: Team, name: str) -> None:
    who = (name, team.passwords[name])
    projects = urllib.parse.quote(WORKING_DIR)
    listing = _until_200(team.url, f"/file?path=&directory={projects}", who)
    assert isinstance(listing, list)
    assert f"{name}-notes.txt" in {entry["name"] for entry in listing}, listing
    if name in team.sessions:
        titles = _until_200(team.url, "/session", who)
        assert isinstance(titles, list)
        assert [s["id"] for s in titles] == [team.sessions[name]]
        said = _until_200(team.url, f"/session/{team.sessions[name]}/message", who)
        assert isinstance(said, list)


def _update_fails(swarm: Swarm, team: Team, release: str) -> str:
    """`occ update` to `release`, which must fail and change nothing; what it said."""
    before = _images(swarm, team)
    old = f"{swarm.registry}/{IMAGE_NAME}:{DEFAULT_OPENCODE_VERSION}"
    assert set(before.values()) == {old}
    began = time.monotonic()
    failed = subprocess.run(
        [*OCC, "update", "--opencode-version", release, "--yes"],
        env=team.env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    print(f"occ update to {release}, failing: {time.monotonic() - began:.1f} s")
    print(failed.stdout, failed.stderr)
    assert failed.returncode == 7, failed.stderr
    assert "Traceback" not in failed.stderr
    assert _images(swarm, team) == before
    door = swarm.docker(
        1, "service", "inspect", f"{team.prefix}-door",
        "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
    ).stdout.strip()  # fmt: skip
    assert door == old
    config = json.loads(run(team.env, "config", "show", "--json").stdout)
    assert config.get("opencode_version", DEFAULT_OPENCODE_VERSION) == DEFAULT_OPENCODE_VERSION
    for name in PEOPLE:
        _has_their_data(team, name)
    # No snapshot volume and no one-shot service is left behind.
    services = swarm.docker(1, "service", "ls", "--format", "{{.Name}}").stdout
    assert "snapshot" not in services and "volume-removal" not in services
    for n in (1, 2, 3):
        volumes = swarm.docker(n, "volume", "ls", "-q", "--filter", f"name={team.prefix}").stdout
        assert "-snap-" not in volumes
    return failed.stderr


@pytest.mark.timeout(1500)
def test_an_update_that_breaks_the_first_or_second_person_leaves_everyone_on_the_old_version(
    swarm: Swarm, team: Team
) -> None:
    said = _update_fails(swarm, team, BREAKING)
    assert "does not work for ada" in said and "(bob, cat not updated)" in said

    said = _update_fails(swarm, team, BOB_BREAKS)
    assert "does not work for bob" in said
    assert "as is ada" in said and "(cat not updated)" in said


@pytest.mark.timeout(600)
def test_an_update_that_works_moves_everyone_then_the_door(swarm: Swarm, team: Team) -> None:
    began = time.monotonic()
    done = run(team.env, "--json", "update", "--opencode-version", WORKS, "--yes")
    print(f"occ update to {WORKS}: {time.monotonic() - began:.1f} s")
    result = json.loads(done.stdout)
    new = f"{swarm.registry}/{IMAGE_NAME}:{WORKS}"
    assert result["updated"] == list(PEOPLE) and result["target"] == new
    assert set(_images(swarm, team).values()) == {new}
    door = swarm.docker(
        1, "service", "inspect", f"{team.prefix}-door",
        "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
    ).stdout.strip()  # fmt: skip
    assert door == new
    assert json.loads(run(team.env, "config", "show", "--json").stdout)["opencode_version"] == WORKS
    for name in PEOPLE:
        _has_their_data(team, name)
    for n in (1, 2, 3):
        volumes = swarm.docker(n, "volume", "ls", "-q", "--filter", f"name={team.prefix}").stdout
        assert "-snap-" not in volumes


@pytest.mark.timeout(600)
def test_stop_start_and_disable_on_the_swarm_keep_everyones_data(swarm: Swarm, team: Team) -> None:
    began = time.monotonic()
    stopped = json.loads(run(team.env, "--json", "stop").stdout)
    print(f"occ stop {time.monotonic() - began:.1f} s")
    assert len(stopped["containers"]) == 4  # the door and three people
    replicas = swarm.docker(
        1, "service", "ls", "--filter", f"name={team.prefix}", "--format", "{{.Replicas}}"
    ).stdout.split()
    assert replicas == ["0/0"] * 4
    listed = json.loads(run(team.env, "--json", "team", "status").stdout)
    assert listed["door"] == "not running"

    began = time.monotonic()
    run(team.env, "start")
    print(f"occ start {time.monotonic() - began:.1f} s")
    people = json.loads(run(team.env, "--json", "user", "list").stdout)["people"]
    assert {p["name"]: (p["state"], p["node"]) for p in people} == {
        name: ("running", f"occsw-n{team.nodes[name]}") for name in PEOPLE
    }
    for name in PEOPLE:
        _has_their_data(team, name)

    # A disabled person's instance stops on their node, and runs again when enabled.
    run(team.env, "user", "disable", "cat")
    people = json.loads(run(team.env, "--json", "user", "list").stdout)["people"]
    assert {p["name"]: p["state"] for p in people}["cat"] == "stopped"
    run(team.env, "user", "enable", "cat")
    _has_their_data(team, "cat")

    # Team mode off: the door's service and secrets go; everyone's volumes stay. The
    # single-user service then runs on the manager, on an address this machine reaches
    # (the manager's loopback is its network namespace's).
    run(team.env, "config", "set", "tls", "off")
    run(team.env, "config", "set", "bind_address", node_address(1), "--yes")
    began = time.monotonic()
    run(team.env, "team", "disable")
    print(f"occ team disable {time.monotonic() - began:.1f} s")
    assert json.loads(run(team.env, "--json", "status").stdout)["state"] == "running"
    services = swarm.docker(1, "service", "ls", "--format", "{{.Name}}").stdout.split()
    assert f"{team.prefix}-door" not in services
    assert not [
        s
        for s in swarm.docker(1, "secret", "ls", "--format", "{{.Name}}").stdout.split()
        if s.startswith(f"{team.prefix}-door-")
    ]
    for name in PEOPLE:
        volumes = swarm.docker(
            team.nodes[name], "volume", "ls", "-q", "--filter", f"name={team.prefix}-user-{name}-"
        ).stdout.split()
        assert len(volumes) == 5, (name, volumes)
