"""Team mode end to end: the real front door, the real starter, a real opencode for each
person, and Chromium.

One team serves the whole module (a start builds nothing new: the session's image): it
begins as a single-user service with a session and a file, is turned into a team whose
first person is `ada`, gets `bob`, and ends turned off and on again."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from browser_helpers import ARTIFACTS, run_in_terminal
from occ_helpers import docker, free_port, remove_everything_of, run
from opencode_cloud.kubernetes.manifests import KUBERNETES_VERSION

pytestmark = pytest.mark.e2e


@dataclass
class Team:
    env: dict[str, str]
    url: str
    instance: str
    prefix: str
    passwords: dict[str, str] = field(default_factory=dict)

    def container(self, person: str) -> str:
        return f"{self.prefix}-user-{person}"

    @property
    def door(self) -> str:
        return f"{self.prefix}-door"


def request(
    url: str,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: Any = None,
    basic: tuple[str, str] | None = None,
) -> tuple[int, Any]:
    """One HTTP request to the door, without following redirects."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, method=method, data=data, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if basic:
        token = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())
    try:
        with opener.open(req, timeout=30) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def titles(url: str, who: tuple[str, str]) -> set[str]:
    """The titles of the sessions `who` (name, password) sees, waiting for their
    instance to start."""
    deadline = time.monotonic() + 90
    while True:
        status, sessions = request(url, "/session", basic=who)
        if status == 200:
            return {s["title"] for s in sessions}
        assert status in (502, 503), (status, sessions)
        assert time.monotonic() < deadline, "the instance did not start"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, sandbox_image: str) -> Iterator[Team]:
    instance = f"e2e-team-{secrets.token_hex(3)}"
    env = {
        **os.environ,
        "OCC_CONFIG_DIR": str(tmp_path_factory.mktemp("team") / "config"),
        "OCC_INSTANCE": instance,
        "NO_COLOR": "1",
    }
    port = free_port()
    run(env, "config", "set", "port", str(port))
    run(env, "config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
    try:
        run(env, "start")
        creds = json.loads(run(env, "--json", "auth", "show").stdout)
        single = (creds["username"], creds["password"])
        status, _ = request(creds["url"], "/session", method="POST", basic=single,
                            body={"title": "before-team"})  # fmt: skip
        assert status == 200
        run(env, "shell", "--", "sh", "-c", "echo hello > ~/projects/ada-notes.txt")
        enabled = json.loads(run(env, "--json", "team", "enable", "--name", "ada").stdout)
        url = enabled["url"]
        added = json.loads(run(env, "--json", "user", "add", "bob").stdout)
        result = Team(env, url, instance, f"opencode-cloud-{instance}")
        result.passwords = {"ada": creds["password"], "bob": added["password"]}
        yield result
    finally:
        remove_everything_of(instance)


def sign_in(browser: Any, team: Team, person: str) -> tuple[Any, Any]:
    """A browser of its own for `person`, signed in at the door and past the starting
    page: (context, page)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(team.url + "/", wait_until="load", timeout=30_000)
    assert "/__occ/login" in page.url, page.url
    page.fill("#name", person)
    page.fill("#password", team.passwords[person])
    page.click("button[type=submit]")
    page.get_by_text("Projects", exact=True).wait_for(timeout=120_000)
    return context, page


def page_fetch(page: Any, method: str, path: str, body: Any = None) -> Any:
    return page.evaluate(
        """async ([method, path, body]) => {
             const answer = await fetch(path, {
               method, headers: {'Content-Type': 'application/json'},
               body: body === null ? undefined : JSON.stringify(body)});
             return {status: answer.status, body: await answer.text()};
           }""",
        [method, path, body],
    )


def test_two_people_in_two_browsers_see_only_their_own(browser: Any, team: Team) -> None:
    ada_context, ada = sign_in(browser, team, "ada")
    bob_context, bob = sign_in(browser, team, "bob")
    try:
        for page, title in ((ada, "ada-only"), (bob, "bob-only")):
            made = page_fetch(page, "POST", "/session", {"title": title})
            assert made["status"] == 200, made
        seen = {}
        for person, page in (("ada", ada), ("bob", bob)):
            listed = page_fetch(page, "GET", "/session")
            assert listed["status"] == 200
            seen[person] = {s["title"] for s in json.loads(listed["body"])}
        # ada keeps what she had before the team; nobody sees the other's.
        assert {"before-team", "ada-only"} <= seen["ada"]
        assert "bob-only" not in seen["ada"]
        assert seen["bob"] == {"bob-only"}
        # Their terminals: each in their own container, with their own files.
        ada_terminal = run_in_terminal(ada, "hostname; whoami; ls ~/projects", "ada")
        bob_terminal = run_in_terminal(bob, "hostname; whoami; ls ~/projects", "bob")
        assert "ada-notes.txt" in ada_terminal and "ada-notes.txt" not in bob_terminal
        assert re.search(r"^ada$", ada_terminal, re.M), ada_terminal
        assert re.search(r"^bob$", bob_terminal, re.M), bob_terminal
        assert not re.search(r"^root$", ada_terminal + bob_terminal, re.M)
        ARTIFACTS.mkdir(exist_ok=True)
        ada.screenshot(path=str(ARTIFACTS / "team-ada.png"))
        bob.screenshot(path=str(ARTIFACTS / "team-bob.png"))
    finally:
        ada_context.close()
        bob_context.close()


def _cookie(team: Team, person: str) -> str:
    """A session cookie of `person`'s, signed in with the form (name=value)."""
    from raw_http import session_cookie, statuses
    from raw_http import sign_in as raw_sign_in

    port = int(team.url.rsplit(":", 1)[1])
    answer = raw_sign_in(port, person, team.passwords[person])
    assert statuses(answer)[0] in (303, 302), answer[:400]
    return f"occ_session_{port}={session_cookie(answer)}"


def _internal_password(team: Team, person: str) -> str:
    """What the agent in `person`'s container can read: its opencode's internal password
    (in the environment of its own process)."""
    script = (
        "import os\n"
        "for pid in os.listdir('/proc'):\n"
        "    try: env = open(f'/proc/{pid}/environ','rb').read().split(b'\\0')\n"
        "    except OSError: continue\n"
        "    for e in env:\n"
        "        if e.startswith(b'OPENCODE_SERVER_PASSWORD='):\n"
        "            print(e.split(b'=', 1)[1].decode())\n"
        "            raise SystemExit\n"
    )
    out = subprocess.run(
        ["docker", "exec", "-u", "1000:1000", team.container(person), "python3", "-c", script],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    assert out, "the agent could not read its own opencode's password"
    return out


def test_nothing_a_client_sends_reaches_another_persons_instance(team: Team) -> None:
    titles(team.url, ("bob", team.passwords["bob"]))  # bob's instance runs
    cookie = _cookie(team, "ada")
    bob_container = team.container("bob")
    tricks: list[dict[str, str]] = [
        {},
        {"X-Occ-Person": "bob"},
        {"X-Occ-Upstream": f"{bob_container}:4096"},
        {"X-Occ-Person": "bob", "X-Occ-Upstream": f"{bob_container}:4096"},
        {"Host": bob_container},
        {"Host": f"{bob_container}:4096"},
        {"X-Forwarded-Host": bob_container, "Forwarded": f"host={bob_container}"},
    ]
    for extra in tricks:
        status, sessions = request(team.url, "/session", headers={"Cookie": cookie, **extra})
        # ada's own sessions, or (another host name: her cookie is not this one's) none.
        assert status in (200, 401), (extra, status, sessions)
        if status == 200:
            seen = {s["title"] for s in sessions}
            assert "bob-only" not in seen and "ada-only" in seen, extra
    assert request(team.url, "/session", headers={"Cookie": cookie})[0] == 200
    for path in (f"//{bob_container}:4096/session", "/../session", "/%2e%2e/session"):
        status, sessions = request(team.url, path, headers={"Cookie": cookie})
        assert status != 200 or "bob-only" not in json.dumps(sessions), path
    # A stolen internal password opens nothing at the door.
    internal = _internal_password(team, "ada")
    for user in ("opencode", "ada", "bob"):
        status, _ = request(team.url, "/session", basic=(user, internal))
        assert status == 401, user
    # From ada's container, bob's is not reachable at all (by name or by address).
    bob_address = docker(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", bob_container
    ).split()[0]
    probe = (
        "import socket,sys\n"
        "for host in sys.argv[1:]:\n"
        "    try: socket.create_connection((host, 4096), timeout=3); print('reached', host)\n"
        "    except OSError as e: print('refused', host, e)\n"
    )
    out = subprocess.run(
        ["docker", "exec", "-u", "1000:1000", team.container("ada"), "python3", "-c", probe,
         bob_address, bob_container],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert "reached" not in out and out.count("refused") == 2, out
    # The door, on everyone's network, routes nothing between them.
    forwarding = docker("exec", team.door, "cat", "/proc/sys/net/ipv4/ip_forward").strip()
    assert forwarding == "0"
    # The door is the only container with a published port.
    for person in ("ada", "bob"):
        assert docker("port", team.container(person)).strip() == ""


def test_every_command_acts_on_the_person_named(team: Team, tmp_path: Path) -> None:
    ada_files = run(team.env, "shell", "--user", "ada", "--", "ls", "/home/opencode/projects")
    bob_files = run(team.env, "shell", "--user", "bob", "--", "ls", "/home/opencode/projects")
    assert "ada-notes.txt" in ada_files.stdout and "ada-notes.txt" not in bob_files.stdout
    status = json.loads(run(team.env, "--json", "status", "--user", "bob").stdout)
    assert (status["person"], status["container"]) == ("bob", team.container("bob"))
    assert (status["http_health"], status["session_api"]) == ("healthy", "ok")
    assert all(v["name"].startswith(team.container("bob") + "-") for v in status["volumes"])
    doctor = run(team.env, "--json", "doctor", "--user", "ada")
    assert json.loads(doctor.stdout)["ok"] is True, doctor.stdout
    assert "Local access" in run(team.env, "logs", "--user", "bob").stdout
    team_status = json.loads(run(team.env, "--json", "status").stdout)
    assert team_status["door"] == "running"
    people = {p["name"]: p for p in team_status["people"]}
    assert set(people) == {"ada", "bob"} and people["ada"]["admin"] is True
    assert people["bob"]["state"] == "running" and people["bob"]["memory_bytes"] > 0
    assert people["ada"]["last_sign_in"] is not None and people["ada"]["disk_bytes"] > 0

    written = json.loads(run(team.env, "--json", "backup", "--all", str(tmp_path)).stdout)
    files = sorted(Path(b["path"]).name for b in written["backups"])
    assert [f.split("-user-")[1].split("-")[0] for f in files] == ["ada", "bob"], files
    assert all((tmp_path / f).stat().st_mode & 0o777 == 0o600 for f in files)


def test_kubernetes_render_takes_the_team_as_it_runs(team: Team, tmp_path: Path) -> None:
    """The running team's manifests pass the strict schema check, and each person's
    Secret holds the internal password their opencode runs with."""
    out = tmp_path / "k8s"
    host = ("--host-name", "team.example.com")
    run(team.env, "kubernetes", "render", "--with-secrets", *host, "--out", str(out))
    manifests = [yaml.safe_load(path.read_text()) for path in sorted(out.iterdir())]
    for manifest in manifests:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    secrets = {m["metadata"]["name"]: m["stringData"] for m in manifests if m["kind"] == "Secret"}
    for person in ("ada", "bob"):
        run(team.env, "shell", "--user", person, "--", "true")  # their instance runs
        files = secrets[f"{team.container(person)}-files"]
        assert files["internal.password"] == _internal_password(team, person)


def test_a_scheduled_backup_covers_every_person(team: Team, tmp_path: Path) -> None:
    folder = tmp_path / "scheduled"
    folder.mkdir()
    for _ in range(2):
        run(team.env, "backup", "run", "--dir", str(folder), "--keep", "1")
        time.sleep(1.1)  # the names carry the second
    listed = json.loads(run(team.env, "--json", "backup", "list", str(folder)).stdout)
    whose = sorted(b["user"] for b in listed["backups"])
    assert whose == ["ada", "bob"], listed  # one each: the older ones went
    assert all(b["compressed"] and b["scheduled"] for b in listed["backups"])


def test_list_and_open_show_the_team_at_its_door(team: Team, tmp_path: Path) -> None:
    run(team.env, "shell", "--user", "bob", "--", "true")  # starts bob's instance
    listed = json.loads(run(team.env, "--json", "list").stdout)
    local = next(h for h in listed["hosts"] if h["name"] == "local")
    [row] = [i for i in local["instances"] if i["instance"] == team.instance]
    assert (row["team"], row["state"], row["url"], row["people"]) == (True, "running", team.url, 2)
    assert 1 <= row["people_running"] <= 2
    assert "team: 2 people" in run(team.env, "list").stdout

    asked = tmp_path / "asked"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {asked}\n')
    browser.chmod(0o755)
    opened = run({**team.env, "BROWSER": str(browser)}, "open")
    assert asked.read_text().split() == [team.url]  # the door's sign-in page
    assert "User:" not in opened.stdout  # each person signs in with their own name


def test_disable_signs_the_person_out_at_once(browser: Any, team: Team) -> None:
    context, page = sign_in(browser, team, "bob")
    try:
        page.evaluate(
            """() => { window.streamEnded = null;
                        const source = new EventSource('/event');
                        source.onerror = () => { if (window.streamEnded === null)
                                                   window.streamEnded = Date.now(); }; }"""
        )
        assert page_fetch(page, "GET", "/session")["status"] == 200
        run(team.env, "user", "disable", "bob")
        returned = page.evaluate("() => Date.now()")
        # Signed out by the time the command returns; the open event stream ends within a second.
        assert page_fetch(page, "GET", "/session")["status"] in (302, 401, 403)
        page.wait_for_function("() => window.streamEnded !== null", timeout=5_000)
        ended = page.evaluate("() => window.streamEnded")
        assert ended - returned < 1_000, ended - returned
        status, _ = request(team.url, "/session", basic=("bob", team.passwords["bob"]))
        assert status == 401
        state = docker("inspect", "-f", "{{.State.Running}}", team.container("bob")).strip()
        assert state == "false"
    finally:
        context.close()
    run(team.env, "user", "enable", "bob")
    assert "bob-only" in titles(team.url, ("bob", team.passwords["bob"]))


def test_a_revoked_browser_is_refused_at_once_and_its_open_stream_ends(
    browser: Any, team: Team
) -> None:
    laptop, laptop_page = sign_in(browser, team, "bob")
    phone, phone_page = sign_in(browser, team, "bob")
    try:
        listed = json.loads(run(team.env, "--json", "user", "sessions", "bob").stdout)
        sessions = listed["sessions"]
        assert len(sessions) == 2 and all("HeadlessChrome" in s["agent"] for s in sessions)
        phone_page.evaluate(
            """() => { window.streamEnded = null;
                        const source = new EventSource('/event');
                        source.onerror = () => { if (window.streamEnded === null)
                                                   window.streamEnded = Date.now(); }; }"""
        )
        assert page_fetch(phone_page, "GET", "/session")["status"] == 200
        run(team.env, "user", "sessions", "bob", "--revoke", sessions[0]["id"])  # the newest
        returned = phone_page.evaluate("() => Date.now()")
        assert page_fetch(phone_page, "GET", "/session")["status"] in (302, 401, 403)
        phone_page.wait_for_function("() => window.streamEnded !== null", timeout=5_000)
        assert phone_page.evaluate("() => window.streamEnded") - returned < 1_000
        # The laptop is still signed in, and gets its sessions once bob's opencode is back.
        deadline = time.monotonic() + 60
        while (status := page_fetch(laptop_page, "GET", "/session")["status"]) != 200:
            assert status == 503 and time.monotonic() < deadline, status
            time.sleep(0.5)
        left = json.loads(run(team.env, "--json", "user", "sessions", "bob").stdout)
        assert [s["id"] for s in left["sessions"]] == [sessions[1]["id"]]
        run(team.env, "user", "sessions", "bob", "--revoke", "all")
        assert page_fetch(laptop_page, "GET", "/session")["status"] in (302, 401, 403)
        log = run(team.env, "--json", "team", "log", "--user", "bob").stdout
        events = [line["event"] for line in json.loads(log)["log"]]
        assert events[-2:] == ["revoked", "revoked-all"] and "signed-in" in events
        assert team.passwords["bob"] not in log and "$2b$" not in log
    finally:
        laptop.close()
        phone.close()


def test_remove_leaves_the_other_person_untouched(team: Team) -> None:
    added = json.loads(run(team.env, "--json", "user", "add", "carol").stdout)
    carol = ("carol", added["password"])
    titles(team.url, carol)
    before = titles(team.url, ("ada", team.passwords["ada"]))

    removed = json.loads(run(team.env, "--json", "user", "remove", "carol", "--yes").stdout)

    assert removed["backup"] and Path(removed["backup"]).is_file()
    assert docker("ps", "-aq", "--filter", f"name={team.container('carol')}$").strip() == ""
    volumes = docker("volume", "ls", "-q", "--filter", f"name={team.container('carol')}-").split()
    assert len(volumes) == 5, volumes  # kept without --volumes
    assert request(team.url, "/session", basic=carol)[0] == 401
    assert titles(team.url, ("ada", team.passwords["ada"])) == before
    people = json.loads(run(team.env, "--json", "user", "list").stdout)["people"]
    assert [p["name"] for p in people] == ["ada", "bob"]


def test_a_persons_backup_restores_onto_them_alone(team: Team, tmp_path: Path) -> None:
    bob = ("bob", team.passwords["bob"])
    ada = ("ada", team.passwords["ada"])
    saved = titles(team.url, bob)
    ada_before = titles(team.url, ada)
    auth_before = run(team.env, "--json", "auth", "show").stdout
    written = json.loads(run(team.env, "--json", "backup", "--user", "bob", str(tmp_path)).stdout)
    status, _ = request(team.url, "/session", method="POST", basic=bob, body={"title": "later"})
    assert status == 200 and "later" in titles(team.url, bob)

    run(team.env, "restore", written["path"], "--user", "bob", "--yes")

    assert titles(team.url, bob) == saved  # "later" is gone: the backup's data is back
    assert titles(team.url, ada) == ada_before
    assert run(team.env, "--json", "auth", "show").stdout == auth_before
    running = docker("inspect", "-f", "{{.State.Running}}", team.container("bob")).strip()
    assert running == "true"


def test_team_off_and_on_keeps_the_first_persons_sessions(team: Team) -> None:
    ada = ("ada", team.passwords["ada"])
    assert "ada-only" in titles(team.url, ada)

    run(team.env, "team", "disable")
    creds = json.loads(run(team.env, "--json", "auth", "show").stdout)
    status, sessions = request(
        creds["url"], "/session", basic=(creds["username"], creds["password"])
    )
    assert status == 200
    assert {"before-team", "ada-only"} <= {s["title"] for s in sessions}
    assert "bob-only" not in {s["title"] for s in sessions}

    run(team.env, "team", "enable", "--name", "ada")
    assert {"before-team", "ada-only"} <= titles(team.url, ada)
    assert "bob-only" in titles(team.url, ("bob", team.passwords["bob"]))


def test_each_person_has_provider_keys_of_their_own(team: Team, tmp_path: Path) -> None:
    key_file = tmp_path / "bob.key"
    key = f"sk-bob-{secrets.token_hex(8)}"
    key_file.write_text(key + "\n")
    run(team.env, "provider", "add", "anthropic", "--user", "bob", "--key-file", str(key_file))
    listed = json.loads(run(team.env, "--json", "provider", "list", "--user", "bob").stdout)
    assert [entry["id"] for entry in listed] == ["anthropic"]
    ada = json.loads(run(team.env, "--json", "provider", "list", "--user", "ada").stdout)
    assert "anthropic" not in [entry["id"] for entry in ada]
    stored = docker("exec", team.container("bob"), "cat",
                    "/home/opencode/.local/share/opencode/auth.json")  # fmt: skip
    assert json.loads(stored)["anthropic"] == {"type": "api", "key": key}
    assert key not in docker("inspect", team.container("bob"))
    # Whose keys: in team mode a person must be named.
    unnamed = run(team.env, "provider", "list", check=False)
    assert unnamed.returncode == 2 and "--user NAME" in unnamed.stderr
