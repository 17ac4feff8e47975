"""Single-user mode's sessions, sign-in log and TOTP end to end: a real service on the
sandbox image of this source tree (`sandbox_image`), `occ auth sessions|log|totp`, and the
edge's pages over HTTP as a browser sends them.

One service serves the module; its tests run in order (sessions, then TOTP on, then
restart and re-creation with TOTP on, then off)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyotp
import pytest

from e2e.test_team_totp import Browserless
from occ_helpers import free_port, remove_everything_of, run

pytestmark = pytest.mark.e2e

AGENT = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0 e2e-laptop"


@dataclass
class Single:
    env: dict[str, str]
    url: str
    username: str
    password: str
    secret: str = ""
    recovery_codes: list[str] = field(default_factory=list)
    last_step: int = 0  # the latest time step whose code was used

    def occ_json(self, *args: str) -> Any:
        return json.loads(run(self.env, "--json", *args).stdout)

    def sessions(self) -> list[dict[str, Any]]:
        listed = self.occ_json("auth", "sessions")["sessions"]
        assert isinstance(listed, list)
        return listed

    def events(self) -> list[str]:
        return [line["event"] for line in self.occ_json("auth", "log")["log"]]

    def code(self) -> str:
        """A code of a step later than any used (see test_team_totp.code_after)."""
        while (step := int(time.time() // 30) + 1) <= self.last_step:
            time.sleep(0.5)
        self.last_step = step
        return str(pyotp.TOTP(self.secret).generate_otp(step))


class Browser(Browserless):
    """A client of the single-user sign-in page (its field is `username`)."""

    def password(self, name: str, password: str) -> tuple[int, dict[str, str], str]:
        form = {"username": name, "password": password, "next": "/", "csrf": self.csrf()}
        return self.send("POST", "/__occ/login", form, **{"User-Agent": AGENT})

    def signed_in(self) -> bool:
        return any(k.startswith("occ_session_") for k in self.cookies)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, sandbox_image: str) -> Iterator[Single]:
    instance = f"e2e-single-{secrets.token_hex(3)}"
    env = {
        **os.environ,
        "OCC_CONFIG_DIR": str(tmp_path_factory.mktemp("single") / "config"),
        "OCC_INSTANCE": instance,
        "NO_COLOR": "1",
    }
    run(env, "config", "set", "port", str(free_port()))
    run(env, "config", "set", "image", sandbox_image)
    run(env, "config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
    try:
        run(env, "start")
        shown = json.loads(run(env, "--json", "auth", "show").stdout)
        yield Single(env, shown["url"], shown["username"], shown["password"])
    finally:
        remove_everything_of(instance)


def refused_within_a_second(client: Browser) -> bool:
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if client.send("GET", "/session", Accept="application/json")[0] == 401:
            return True
        time.sleep(0.05)
    return False


def test_sessions_are_listed_and_a_revoked_browser_is_refused_within_a_second(
    single: Single,
) -> None:
    laptop, phone = Browser(single.url), Browser(single.url)
    assert laptop.password(single.username, single.password)[0] == 303
    assert phone.password(single.username, single.password)[0] == 303
    assert laptop.session_list() == 200 and phone.session_list() == 200
    listed = single.sessions()
    assert len(listed) == 2
    assert {s["agent"] for s in listed} == {AGENT}
    assert all(s["address"] and len(s["id"]) == 12 for s in listed)
    human = run(single.env, "auth", "sessions").stdout
    assert "e2e-laptop" in human and listed[0]["id"] in human

    # A bad ID is refused with one line and a non-zero exit, and ends nothing.
    bad = run(single.env, "auth", "sessions", "--revoke", "0" * 12, check=False)
    assert bad.returncode != 0 and "no such session" in bad.stderr
    assert len(single.sessions()) == 2 and laptop.session_list() == 200

    # The laptop's session is the newest: the list is newest first.
    revoked = run(single.env, "auth", "sessions", "--revoke", listed[0]["id"]).stdout
    assert "Ended 1 session" in revoked
    # One of the two was ended; the other still works.
    states = [laptop.send("GET", "/session")[0], phone.send("GET", "/session")[0]]
    assert sorted(states) == [200, 401], states
    ended = laptop if states[0] == 401 else phone
    assert refused_within_a_second(ended)
    assert len(single.sessions()) == 1

    run(single.env, "auth", "sessions", "--revoke", "all")
    assert single.sessions() == []
    assert refused_within_a_second(laptop) and refused_within_a_second(phone)
    events = single.events()
    assert events.count("signed-in") >= 2 and "revoked" in events and "revoked-all" in events
    log = run(single.env, "auth", "log").stdout
    assert single.password not in log


def test_with_totp_the_password_alone_is_not_enough_and_each_code_works_once(
    single: Single,
) -> None:
    before = Browser(single.url)
    assert before.password(single.username, single.password)[0] == 303
    enrolled = single.occ_json("auth", "totp")
    assert pyotp.parse_uri(enrolled["uri"]).secret == enrolled["secret"]
    single.secret, single.recovery_codes = enrolled["secret"], enrolled["recovery_codes"]
    assert refused_within_a_second(before)  # every browser is signed out
    assert single.occ_json("auth", "totp", "--status")["totp"] == "pending"

    client = Browser(single.url)
    status, headers, _ = client.password(single.username, single.password)
    assert status == 303 and headers["location"].startswith("/__occ/second")
    assert not client.signed_in() and client.session_list() == 401
    status, _, page = client.second(
        "000000" if pyotp.TOTP(single.secret).now() != "000000" else "111111"
    )
    assert status == 401 and "Wrong code." in page

    used = single.code()
    assert client.second(used)[0] == 303 and client.signed_in()
    assert client.session_list() == 200
    again = Browser(single.url)
    assert again.password(single.username, single.password)[0] == 303
    assert again.second(used)[0] == 401 and not again.signed_in()

    recovery = single.recovery_codes[0]
    assert again.second(recovery, "recovery")[0] == 303 and again.session_list() == 200
    third = Browser(single.url)
    assert third.password(single.username, single.password)[0] == 303
    assert third.second(recovery, "recovery")[0] == 401

    # Basic credentials are refused while TOTP is on (but for the health check).
    token = base64.b64encode(f"{single.username}:{single.password}".encode()).decode()
    basic = Browser(single.url)
    status, _, body = basic.send("GET", "/session", Authorization=f"Basic {token}")
    assert status == 401 and "second factor" in body
    assert basic.send("GET", "/global/health", Authorization=f"Basic {token}")[0] == 200
    assert single.occ_json("auth", "totp", "--status")["totp"] == "on"
    events = single.events()
    assert "totp-on" in events and "failed-totp" in events and "recovery-code-used" in events
    assert single.secret not in json.dumps(single.occ_json("auth", "log"))
    # The tool's own checks read the sessions from inside the container.
    status_json = single.occ_json("status")
    assert status_json["session_api"] == "ok", status_json
    assert status_json["http_health"] == "healthy", status_json


def test_totp_and_sessions_survive_a_restart_and_a_re_creation(single: Single) -> None:
    client = Browser(single.url)
    assert client.password(single.username, single.password)[0] == 303
    assert client.second(single.code())[0] == 303
    assert client.session_list() == 200

    run(single.env, "restart")
    assert client.session_list() == 200
    fresh = Browser(single.url)
    assert fresh.password(single.username, single.password)[0] == 303
    assert not fresh.signed_in() and fresh.session_list() == 401

    # A changed setting re-creates the container: its sign-in records move with it.
    run(single.env, "config", "env", "set", "OCC_E2E_RECREATE=1")
    started = single.occ_json("start")
    assert started["recreated_because"], started
    assert client.session_list() == 200
    assert single.occ_json("auth", "totp", "--status")["totp"] == "on"
    other = Browser(single.url)
    assert other.password(single.username, single.password)[0] == 303
    assert other.second(single.recovery_codes[0], "recovery")[0] == 401  # used before
    assert other.second(single.code())[0] == 303


def test_totp_off_lets_the_password_alone_sign_in_again(single: Single) -> None:
    run(single.env, "auth", "totp", "--off", "--yes")
    assert single.occ_json("auth", "totp", "--status")["totp"] is None
    client = Browser(single.url)
    assert client.password(single.username, single.password)[0] == 303
    assert client.signed_in() and client.session_list() == 200
