"""A node lost and back, on the test swarm with the real opencode image, through `occ`:
the door on the manager (with ada), bob and cat each on a node of their own.

- A node's engine killed at once, like a power cut: the people elsewhere keep working
  through the door; the lost person's browser gets the "unreachable" page and their
  scripts a 503, within seconds; `occ node list`, `occ status --user` and `occ cluster
  status` say why. Started again, the node runs the person's instance again with their
  sessions and files, reached by the door without anything done by the admin.
- A node cut off the network (its link down) and plugged back in: the same.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from occ_helpers import OCC, run
from opencode_cloud.docker.volume import MOUNT_PROJECTS
from swarm_helpers import Swarm, door_request, node_address

pytestmark = [pytest.mark.swarm, pytest.mark.alongside]

PORT = 8792
# Seconds a lost person may wait for the door to say so (the door's dial and health check
# time out in 2 s and 1 s), reloading after `RELOAD` seconds without an answer: a request
# under way as the machine goes may go unanswered, as at any power cut.
SAYS_SO_WITHIN = 12.0
RELOAD = 4.0


@dataclass
class Team:
    env: dict[str, str]
    prefix: str
    url: str
    passwords: dict[str, str]
    nodes: dict[str, int]  # person -> the node their instance runs on

    def works(self, name: str) -> int:
        """The status of one request of `name`'s to their opencode through the door."""
        return door_request(self.url, "/session", (name, self.passwords[name]))[0]


@pytest.fixture(scope="module")
def team(
    swarm: Swarm, image_on_manager: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Team]:
    """ada on the manager, bob and cat on the two other nodes, each with a session and a
    file in their projects made before anything is lost."""
    instance = f"occsw-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "OCC_CONFIG_DIR": str(tmp_path_factory.mktemp("config")),
        "OCC_INSTANCE": instance,
        "DOCKER_HOST": swarm.manager_host,
        "NO_COLOR": "1",
    }
    try:
        run(env, "config", "set", "image", image_on_manager)
        run(env, "config", "set", "port", str(PORT))
        run(env, "config", "set", "cluster", json.dumps({"registry": swarm.registry}))
        run(env, "cluster", "init")
        run(env, "team", "enable", "--name", "ada")
        ada = json.loads(run(env, "--json", "auth", "show").stdout)["password"]
        passwords = {"ada": ada}
        prefix = f"opencode-cloud-{instance}"
        nodes = {"ada": 1}
        for name in ("bob", "cat"):
            passwords[name] = f"{name}-password-{uuid.uuid4().hex[:8]}"
            added = subprocess.run(
                [*OCC, "user", "add", name, "--memory", "1g", "--password-stdin"],
                env=env,
                input=passwords[name] + "\n",
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert added.returncode == 0, added.stderr
        for name in ("bob", "cat"):
            nodes[name] = int(swarm.running_on(f"{prefix}-user-{name}", timeout=300)[-1])
        assert sorted(nodes.values()) == [1, 2, 3]
        team = Team(env, prefix, f"http://{node_address(1)}:{PORT}", passwords, nodes)
        began = time.monotonic()
        for name in passwords:
            _wait_for(
                lambda n=name: (
                    door_request(  # type: ignore[misc]
                        team.url, "/session", (n, passwords[n]), {"title": f"{n}'s work"}
                    )[0]
                    == 200
                ),
                300,
                f"{name} works through the door",
            )
            node, service = nodes[name], f"{prefix}-user-{name}"
            _write(swarm, node, service, f"{name} was here")
        print(f"everyone worked through the door in {time.monotonic() - began:.1f} s")
        yield team
    finally:
        swarm.remove_team(instance)


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `check()` holds (every half second)."""
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < timeout, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.5)
    return time.monotonic() - began


NOTE = f"{MOUNT_PROJECTS}/note.txt"


def _write(swarm: Swarm, node: int, service: str, text: str) -> None:
    container = swarm.container_of(node, service)
    swarm.docker(node, "exec", "-u", "1000", container, "sh", "-c", f"echo '{text}' > {NOTE}")


def _read(swarm: Swarm, node: int, service: str) -> str:
    container = swarm.container_of(node, service)
    return swarm.docker(node, "exec", container, "cat", NOTE).stdout.strip()


def _browser(url: str, name: str, password: str) -> urllib.request.OpenerDirector:
    """A browser signed in at the door with the form (its cookies in a jar)."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(jar)
    )
    page = browser.open(url + "/__occ/login", timeout=30).read().decode()
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    form = {"name": name, "password": password, "next": "/", "csrf": found.group(1)}
    request = urllib.request.Request(
        url + "/__occ/login",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Origin": url, "Content-Type": "application/x-www-form-urlencoded"},
    )
    try:  # it goes on to opencode's page, or to the starting page
        browser.open(request, timeout=30).read()
    except urllib.error.HTTPError as error:
        assert error.code == 503, error.code
    assert any(c.name.startswith("occ_session_") for c in jar)
    return browser


def _page_load(
    browser: urllib.request.OpenerDirector, url: str, timeout: float = 30
) -> tuple[int, str]:
    """A page load of `/` (redirects followed): its status and text."""
    request = urllib.request.Request(url + "/", headers={"Accept": "text/html"})
    try:
        with browser.open(request, timeout=timeout) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def _node_down(team: Team, node: int) -> dict[str, object]:
    """`occ node list --json`'s row of `node`, once the managers found it down."""
    row: dict[str, object] = {}

    def down() -> bool:
        nonlocal row
        rows = json.loads(run(team.env, "--json", "node", "list").stdout)["nodes"]
        row = next(r for r in rows if r["name"] == f"occsw-n{node}")
        return row["state"] != "ready"

    seconds = _wait_for(down, 90, f"occsw-n{node} found down")
    print(f"the managers found occsw-n{node} down in {seconds:.1f} s")
    return row


def _lose_and_get_back(
    swarm: Swarm, team: Team, lost: str, lose: Callable[[int], None], back: Callable[[int], None]
) -> None:
    node = team.nodes[lost]
    service = f"{team.prefix}-user-{lost}"
    others = [name for name in team.passwords if name != lost]
    browser = _browser(team.url, lost, team.passwords[lost])
    assert _page_load(browser, team.url)[0] == 200  # opencode's own page
    began = time.monotonic()
    lose(node)
    try:
        # The lost person hears so within seconds, a browser as a page, a script as 503.
        loads = 0
        while True:
            loads += 1
            try:
                status, text = _page_load(browser, team.url, RELOAD)
                break
            except TimeoutError:
                assert time.monotonic() - began < SAYS_SO_WITHIN
        seconds = time.monotonic() - began
        assert status == 503 and "Your opencode is unreachable" in text, (status, text[:300])
        assert seconds < SAYS_SO_WITHIN, seconds
        print(f"{lost}'s unreachable page came {seconds:.1f} s after the loss ({loads} loads)")
        status, answer = door_request(team.url, "/session", (lost, team.passwords[lost]))
        assert status == 503 and "unreachable" in str(answer), (status, answer)
        # Everyone else works on, at once.
        for name in others:
            began = time.monotonic()
            assert team.works(name) == 200
            assert time.monotonic() - began < 5
        # The admin sees why.
        row = _node_down(team, node)
        assert row["unreachable"] == [lost] and row["message"], row
        status_run = run(team.env, "--json", "status", "--user", lost, check=False)
        assert status_run.returncode == 3, status_run.stderr
        shown = json.loads(status_run.stdout)
        assert shown["state"] == "unreachable" and shown["node"] == f"occsw-n{node}", shown
        assert f"user restore {lost} --from-backup FILE --node OTHER" in status_run.stderr
        human = run(team.env, "status", "--user", lost, check=False).stdout
        assert f"node occsw-n{node} is down" in human, human
        problems = json.loads(run(team.env, "--json", "cluster", "status").stdout)["problems"]
        assert any(p.startswith(f"{lost} is unreachable: node occsw-n{node}") for p in problems)
        for name in others:
            assert team.works(name) == 200
        # The browser's page still says so (now from the login service itself).
        assert _page_load(browser, team.url)[0] == 503
    finally:
        back(node)

    # Back: the swarm runs the instance there again (a new task, the node's first one
    # replaced); the door reaches it, nothing lost.
    def back_again() -> bool:
        status = run(team.env, "status", "--user", lost, check=False).returncode
        return status == 0 and team.works(lost) == 200

    seconds = _wait_for(back_again, 240, f"{lost} runs and works again")
    print(f"{lost} ran and worked through the door again {seconds:.1f} s after it was back")
    status, sessions = door_request(team.url, "/session", (lost, team.passwords[lost]))
    assert status == 200 and isinstance(sessions, list)
    assert f"{lost}'s work" in [s["title"] for s in sessions]
    assert _read(swarm, node, service) == f"{lost} was here"
    _wait_for(lambda: _page_load(browser, team.url)[0] == 200, 30, "the browser's page again")
    shown = json.loads(run(team.env, "--json", "status", "--user", lost).stdout)
    assert shown["state"] == "running" and shown["node"] == f"occsw-n{node}"
    for name in others:
        assert team.works(name) == 200


@pytest.mark.timeout(600)
def test_a_node_powered_off_and_on_again(swarm: Swarm, team: Team) -> None:
    _lose_and_get_back(
        swarm,
        team,
        "cat",
        lambda node: swarm.script("node-kill", str(node)),
        lambda node: swarm.script("node-start", str(node)),
    )


@pytest.mark.timeout(600)
def test_a_node_cut_off_the_network_and_plugged_back_in(swarm: Swarm, team: Team) -> None:
    _lose_and_get_back(
        swarm,
        team,
        "bob",
        lambda node: swarm.script("link-down", str(node)),
        lambda node: swarm.script("link-up", str(node)),
    )
