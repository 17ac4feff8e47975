"""TOTP in team mode end to end: the real front door and a real opencode, `occ user totp`,
the sign-in pages over HTTP, and Chromium through them.

One team serves the module: a service turned into a team whose first person is `ada`,
enrolled with `occ user totp ada --json`. The door runs the sandbox image of this source
tree (`sandbox_image`)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import pyotp
import pytest

from occ_helpers import docker, free_port, remove_everything_of, run

pytestmark = pytest.mark.e2e


@dataclass
class Team:
    env: dict[str, str]
    url: str
    password: str
    secret: str
    recovery_codes: list[str]
    last_step: int = 0  # the latest time step whose code was used


def code_after(team: Team) -> str:
    """A code of a step later than any used (a step ahead, within the clock skew the door
    allows, waiting for the next step when that one was used already); noted used."""
    while (step := int(time.time() // 30) + 1) <= team.last_step:
        time.sleep(0.5)
    team.last_step = step
    return str(pyotp.TOTP(team.secret).generate_otp(step))


class Browserless:
    """A client of the door's pages that keeps its cookies, as a browser would."""

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.cookies: dict[str, str] = {}

    def send(
        self, method: str, path: str, form: dict[str, str] | None = None, **headers: str
    ) -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        sent = dict(headers)
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
            sent["Origin"] = self.url
        connection.request(method, path, body=body, headers=sent)
        answer = connection.getresponse()
        text = answer.read().decode(errors="replace")
        connection.close()
        for name, value in answer.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                cookie_value = rest.split(";")[0]
                if "Max-Age=0" in value:
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = cookie_value
        found = {name.lower(): value for name, value in answer.getheaders()}
        return answer.status, found, text

    def csrf(self) -> str:
        _, _, page = self.send("GET", "/__occ/login", Accept="text/html")
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match, page
        return match.group(1)

    def password(self, name: str, password: str) -> tuple[int, dict[str, str], str]:
        form = {"name": name, "password": password, "next": "/", "csrf": self.csrf()}
        return self.send("POST", "/__occ/login", form)

    def second(self, code: str, factor: str = "totp") -> tuple[int, dict[str, str], str]:
        form = {"factor": factor, "code": code, "next": "/", "csrf": self.csrf()}
        return self.send("POST", "/__occ/second", form)

    def session_list(self) -> int:
        """The status of opencode's session list with this client's cookies, once the
        person's instance answers."""
        deadline = time.monotonic() + 120
        while True:
            status, _, _ = self.send("GET", "/session", Accept="application/json")
            if status not in (502, 503) or time.monotonic() > deadline:
                return status
            time.sleep(0.5)


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, sandbox_image: str) -> Iterator[Team]:
    instance = f"e2e-totp-{secrets.token_hex(3)}"
    env = {
        **os.environ,
        "OCC_CONFIG_DIR": str(tmp_path_factory.mktemp("totp") / "config"),
        "OCC_INSTANCE": instance,
        "NO_COLOR": "1",
    }
    run(env, "config", "set", "port", str(free_port()))
    run(env, "config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
    try:
        run(env, "start")
        password = json.loads(run(env, "--json", "auth", "show").stdout)["password"]
        url = json.loads(run(env, "--json", "team", "enable", "--name", "ada").stdout)["url"]
        enrolled = json.loads(run(env, "user", "totp", "ada", "--json").stdout)
        uri = pyotp.parse_uri(enrolled["uri"])
        assert uri.secret == enrolled["secret"]
        yield Team(env, url, password, enrolled["secret"], enrolled["recovery_codes"])
    finally:
        remove_everything_of(instance)


def test_enrolment_is_shown_and_listed_without_the_seed_in_the_doors_settings(
    team: Team,
) -> None:
    listed = json.loads(run(team.env, "--json", "user", "list").stdout)["people"]
    assert [(p["name"], p["totp"]) for p in listed] == [("ada", "pending")]
    human = run(team.env, "user", "list").stdout
    assert "totp (pending)" in human
    door = f"opencode-cloud-{team.env['OCC_INSTANCE']}-door"
    inspected = docker("inspect", door)
    assert inspected and team.secret not in inspected
    assert team.secret not in docker("logs", door)
    log = run(team.env, "--json", "team", "log").stdout
    assert "totp-on" in log and team.secret not in log


def test_the_password_alone_signs_in_nobody(team: Team) -> None:
    client = Browserless(team.url)
    status, headers, _ = client.password("ada", team.password)
    assert status == 303 and headers["location"].startswith("/__occ/second")
    assert not any(k.startswith("occ_session_") for k in client.cookies)
    assert client.session_list() == 401
    now = pyotp.TOTP(team.secret).now()
    status, _, page = client.second("000000" if now != "000000" else "111111")
    assert status == 401 and "Wrong code." in page
    assert client.session_list() == 401
    # Basic credentials of a person with a second factor are refused outright.
    basic = Browserless(team.url)
    token = base64.b64encode(f"ada:{team.password}".encode()).decode()
    status, _, body = basic.send("GET", "/session", Authorization=f"Basic {token}")
    assert status == 401 and "second factor" in body


def test_the_code_signs_in_once_and_a_recovery_code_once(team: Team) -> None:
    used = code_after(team)
    first = Browserless(team.url)
    assert first.password("ada", team.password)[0] == 303
    status, headers, _ = first.second(used)
    assert status == 303, headers
    assert any(k.startswith("occ_session_") for k in first.cookies)
    assert first.session_list() == 200

    again = Browserless(team.url)
    assert again.password("ada", team.password)[0] == 303
    status, _, page = again.second(used)
    assert status == 401 and "Wrong code." in page
    assert not any(k.startswith("occ_session_") for k in again.cookies)

    recovery = team.recovery_codes[0]
    assert again.second(recovery, "recovery")[0] == 303
    assert again.session_list() == 200
    third = Browserless(team.url)
    assert third.password("ada", team.password)[0] == 303
    assert third.second(recovery, "recovery")[0] == 401
    events = [
        line["event"] for line in json.loads(run(team.env, "--json", "team", "log").stdout)["log"]
    ]
    assert "recovery-code-used" in events and "failed-totp" in events
    listed = json.loads(run(team.env, "--json", "user", "list").stdout)["people"]
    assert [(p["name"], p["totp"]) for p in listed] == [("ada", "on")]


def test_a_browser_signs_in_through_the_code_page(team: Team, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(team.url + "/", wait_until="load", timeout=30_000)
        assert "/__occ/login" in page.url, page.url
        page.fill("#name", "ada")
        page.fill("#password", team.password)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/__occ/second.*"), timeout=30_000)
        page.fill("#code", code_after(team))
        page.click("form:has(#code) button[type=submit]")
        page.get_by_text("Projects", exact=True).wait_for(timeout=120_000)
        assert "/__occ/" not in page.url
    finally:
        context.close()


def test_turning_totp_off_needs_a_yes_then_the_password_alone_works(team: Team) -> None:
    refused = run(team.env, "user", "totp", "ada", "--off", check=False)
    assert refused.returncode == 2 and "TOTP stays on for ada" in refused.stderr
    run(team.env, "user", "totp", "ada", "--off", "--yes")
    client = Browserless(team.url)
    status, headers, _ = client.password("ada", team.password)
    assert status == 303 and not headers["location"].startswith("/__occ/second")
    assert client.session_list() == 200
