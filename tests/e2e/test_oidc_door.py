"""Single sign-on at the real front door (its container, Caddy, the login service, the
starter, a real opencode per person) against a real OpenID Connect provider
(oidc-provider under node, oidc_helpers.py) on the address of the door's network gateway,
which both Chromium on this machine and the door reach.

One team serves the module, on the suite's sandbox image (`sandbox_image`).
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from occ_helpers import docker, free_port, instance_env, remove_everything_of, run
from oidc_helpers import CLIENT_ID, Browser, OidcProvider

pytestmark = pytest.mark.e2e

START_PATH = "/__occ/oidc/start"
CALLBACK_PATH = "/__occ/oidc/callback"


@dataclass
class SsoTeam:
    env: dict[str, str]
    url: str
    prefix: str
    provider: OidcProvider

    @property
    def callback(self) -> str:
        return self.url + CALLBACK_PATH

    def reached_callback(self, url: str) -> bool:
        return url.startswith(self.callback)

    def log(self) -> list[dict[str, Any]]:
        return list(json.loads(run(self.env, "--json", "team", "log").stdout)["log"])

    def people(self) -> list[str]:
        listed = json.loads(run(self.env, "--json", "user", "list").stdout)["people"]
        return sorted(p["name"] for p in listed)


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, sandbox_image: str) -> Iterator[SsoTeam]:
    instance = f"e2e-oidc-{secrets.token_hex(3)}"
    folder = tmp_path_factory.mktemp("oidc-door")
    prefix = f"opencode-cloud-{instance}"
    provider: OidcProvider | None = None
    try:
        env = instance_env(folder / "config", instance, free_port())
        run(env, "start")
        url = json.loads(run(env, "--json", "team", "enable", "--name", "ada").stdout)["url"]
        run(env, "user", "add", "bob", "--email", "bob@example.com")
        gateway = docker(
            "network", "inspect", f"{prefix}-door-net", "-f", "{{(index .IPAM.Config 0).Gateway}}"
        ).strip()
        assert gateway, "the door's network has no gateway"
        (folder / "provider").mkdir()
        provider = OidcProvider(folder / "provider", gateway, [url + CALLBACK_PATH])
        provider.accounts = {
            "bob-at-idp": {"email": "bob@example.com", "email_verified": True},
            "carol": {"email": "carol@example.com", "email_verified": True},
            "dave": {"email": "dave@example.com", "email_verified": True},
            "mallory": {"email": "mallory@evil.test", "email_verified": True},
        }
        provider.start()
        secret_file = folder / "client-secret"
        secret_file.write_text(provider.secret + "\n")
        run(
            env,
            "team", "sso", "set",
            "--issuer", provider.issuer,
            "--client-id", CLIENT_ID,
            "--client-secret-file", str(secret_file),
            "--name", "Test ID",
            "--allow-domain", "example.com",
            "--create-people",
            "--allow-http",
        )  # fmt: skip
        yield SsoTeam(env, url, prefix, provider)
    finally:
        if provider is not None:
            provider.close()
        remove_everything_of(instance)


@pytest.mark.timeout(600)
def test_a_person_signs_in_with_the_provider_in_chromium_and_gets_their_opencode(
    browser: Any, team: SsoTeam
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(team.url + "/", wait_until="load", timeout=30_000)
        assert "/__occ/login" in page.url, page.url
        page.click("text=Sign in with Test ID")
        page.wait_for_selector("input[name=login]", timeout=30_000)  # the provider's form
        assert page.url.startswith(team.provider.issuer), page.url
        page.fill("input[name=login]", "bob-at-idp")
        page.fill("input[name=password]", "any")
        page.click("button[type=submit]")
        page.get_by_text("Projects", exact=True).wait_for(timeout=120_000)  # bob's opencode
        assert page.url.startswith(team.url)
    finally:
        context.close()
    events = [(line["name"], line["event"]) for line in team.log()]
    assert ("bob", "sso-linked") in events and ("bob", "signed-in") in events


def test_the_client_secret_is_in_no_environment_inspect_or_log(team: SsoTeam) -> None:
    secret = team.provider.secret
    door = f"{team.prefix}-door"
    assert secret not in docker("inspect", door)
    assert secret not in docker("logs", door)
    assert secret not in json.dumps(team.log())
    shown = run(team.env, "--json", "team", "sso", "show").stdout
    assert secret not in shown and json.loads(shown)["settings"]["issuer"] == team.provider.issuer


def test_a_replayed_or_unknown_state_at_the_door_gets_a_page_and_a_log_line(
    team: SsoTeam,
) -> None:
    client = Browser()
    start = f"{team.url}{START_PATH}?next=/"
    last = client.provider_login(start, "bob-at-idp", stop=team.reached_callback)
    assert team.reached_callback(last.location), last
    kept = [c for c in client.jar if c.name.startswith("occ_oidc_")]
    assert client.open(last.location).status == 303
    people = team.people()
    client.jar.set_cookie(kept[0])
    replayed = client.open(last.location)
    assert replayed.status == 400 and "used already" in replayed.body
    query = urllib.parse.urlencode({"code": "x", "state": secrets.token_urlsafe(32)})
    unknown = client.open(f"{team.callback}?{query}")
    assert unknown.status == 400
    malformed = client.open(f"{team.callback}?state=x&state=y&code=%ff")
    assert malformed.status == 400 and "Sign in" in malformed.body
    oversized = client.open(f"{team.callback}?state={'A' * 43}&code={'c' * 8000}")
    assert oversized.status == 400
    events = [line["event"] for line in team.log()][-4:]
    assert events == ["sso-bad-state", "sso-bad-state", "sso-bad-callback", "sso-bad-state"]
    assert team.people() == people


def test_a_refused_email_is_refused_at_the_door(team: SsoTeam) -> None:
    people = team.people()
    client = Browser()
    start = f"{team.url}{START_PATH}?next=/"
    last = client.provider_login(start, "mallory", stop=team.reached_callback)
    answer = client.open(last.location)
    assert answer.status == 403 and "not allowed" in answer.body
    assert team.log()[-1]["event"] == "sso-refused"
    assert team.people() == people


@pytest.mark.timeout(600)
def test_a_first_sign_in_in_chromium_lands_in_the_new_persons_own_opencode(
    browser: Any, team: SsoTeam
) -> None:
    """No `occ` command between carol's first sign-in and her opencode: the starter makes
    her instance from the tool's template when the door asks."""
    container = f"{team.prefix}-user-carol"
    assert "carol" not in team.people()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(team.url + "/", wait_until="load", timeout=30_000)
        page.click("text=Sign in with Test ID")
        page.wait_for_selector("input[name=login]", timeout=30_000)
        page.fill("input[name=login]", "carol")
        page.fill("input[name=password]", "any")
        page.click("button[type=submit]")
        page.get_by_text("Projects", exact=True).wait_for(timeout=180_000)  # her opencode
        assert page.url.startswith(team.url)
    finally:
        context.close()
    events = [(line["name"], line["event"]) for line in team.log()]
    assert ("carol", "sso-created") in events and ("carol", "sso-instance") in events
    labels = json.loads(docker("inspect", container, "-f", "{{json .Config.Labels}}"))
    assert labels["io.opencode-cloud.person"] == "carol"
    assert docker("inspect", container, "-f", "{{.State.Running}}").strip() == "true"
    # Her own: her volumes and network, and only the door beside her on it.
    mounts = docker("inspect", container, "-f", "{{range .Mounts}}{{.Name}} {{end}}").split()
    assert mounts and all(m.startswith(f"{container}-") for m in mounts)
    on_network = docker(
        "network", "inspect", f"{container}-net", "-f", "{{range .Containers}}{{.Name}} {{end}}"
    ).split()
    assert sorted(on_network) == sorted([container, f"{team.prefix}-door"])
    # Her internal password is a root's file in her container, in no inspect or log.
    inside = docker("exec", container, "cat", "/run/opencode-cloud/internal.password").strip()
    assert len(inside) == 48
    assert inside not in docker("inspect", container) and inside not in docker("logs", container)
    listed = json.loads(run(team.env, "--json", "user", "list").stdout)["people"]
    assert {p["name"]: p["state"] for p in listed}["carol"] == "running"
    assert json.loads(run(team.env, "--json", "team", "sso", "sync").stdout)["made"] == []


@pytest.mark.timeout(600)
def test_volumes_left_from_before_get_no_instance_until_the_admin_removes_them(
    team: SsoTeam,
) -> None:
    """A new person whose name has volumes already (a removed person's) gets no instance
    at sign-in, nor from `occ team sso sync`; once the admin removes the person with
    those volumes, their next sign-in lands in a new opencode of their own."""
    volume = f"{team.prefix}-user-dave-projects"
    instance = team.env["OCC_INSTANCE"]
    docker("volume", "create", "--label", f"io.opencode-cloud.instance={instance}", volume)

    def sign_in() -> Browser:
        client = Browser()
        start = f"{team.url}{START_PATH}?next=/"
        last = client.provider_login(start, "dave", stop=team.reached_callback)
        answer = client.open(last.location)
        assert answer.status == 303 and "/__occ/starting" in answer.headers["location"]
        return client

    client = sign_in()
    assert "dave" in team.people()
    ready = client.open(team.url + "/__occ/ready")
    assert ready.status == 200 and json.loads(ready.body)["ready"] is False
    assert docker("ps", "-aq", "--filter", f"name=^{team.prefix}-user-dave$").strip() == ""
    synced = json.loads(run(team.env, "--json", "team", "sso", "sync").stdout)
    assert synced["made"] == [] and synced["refused"] == ["dave"]
    assert docker("ps", "-aq", "--filter", f"name=^{team.prefix}-user-dave$").strip() == ""

    run(team.env, "user", "remove", "dave", "--volumes", "--no-backup", "--yes")
    assert "dave" not in team.people()
    assert volume not in docker("volume", "ls", "-q").split()
    client = sign_in()
    deadline = time.monotonic() + 120
    while True:  # the starting page's question, until dave's new opencode answers
        ready = client.open(team.url + "/__occ/ready")
        if ready.status == 200 and json.loads(ready.body).get("ready"):
            break
        assert time.monotonic() < deadline, ready
        time.sleep(1)


def test_the_provider_rotating_its_keys_between_two_sign_ins(team: SsoTeam) -> None:
    def sign_in() -> int:
        client = Browser()
        start = f"{team.url}{START_PATH}?next=/"
        last = client.provider_login(start, "bob-at-idp", stop=team.reached_callback)
        return client.open(last.location).status

    assert sign_in() == 303
    team.provider.rotate()
    time.sleep(5.5)  # the door fetches the provider's keys at most every 5 s
    assert sign_in() == 303
    assert team.log()[-1]["event"] == "signed-in"


@pytest.mark.timeout(600)
def test_a_first_sign_in_named_after_a_removed_person_gets_none_of_their_files(
    team: SsoTeam,
) -> None:
    run(team.env, "user", "add", "dora", "--email", "dora@example.com")
    run(team.env, "user", "remove", "dora", "--no-backup", "--yes")  # her volumes stay
    volumes = docker("volume", "ls", "-q", "--filter", f"name={team.prefix}-user-dora-")
    assert volumes.split()
    # Someone else at the provider whose user name is dora.
    team.provider.accounts["eve"] = {
        "email": "eve@example.com",
        "email_verified": True,
        "preferred_username": "dora",
    }
    team.provider.write_accounts()
    client = Browser()
    start = f"{team.url}{START_PATH}?next=/"
    last = client.provider_login(start, "eve", stop=team.reached_callback)
    assert client.open(last.location).status == 303
    assert "dora" in team.people()

    answer = json.loads(run(team.env, "--json", "team", "sso", "sync").stdout)

    assert answer["made"] == [] and answer["refused"] == ["dora"]
    containers = docker("ps", "-aq", "--filter", f"name=^/{team.prefix}-user-dora$")
    assert containers.strip() == ""  # nothing mounts dora's volumes for eve
    assert docker("volume", "ls", "-q", "--filter", f"name={team.prefix}-user-dora-") == volumes
