"""Single-user mode's sessions, sign-in log and second factor (sandbox/edge_single.py),
served for real on loopback and asked on raw sockets as Caddy would; the host's requests
run `edge.py single-admin FILE` in a process of its own, as `docker exec` does."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pyotp
import pytest

from unit.test_edge import (
    ADDRESS,
    CSRF_COOKIE,
    EDGE_FILE,
    ORIGIN,
    PASSWORD,
    TOKEN,
    Answer,
    Clock,
    Edge,
    exchange,
    raw,
    write_hash,
)
from unit.test_edge_team import cookie_in

FORM = {"Origin": ORIGIN, "Content-Type": "application/x-www-form-urlencoded"}
AGENT = "Mozilla/5.0 (X11) Firefox/140.0"


class Single(Edge):
    """A single-user edge on a clock of today (the host's requests use the real time)."""

    def send(self, data: bytes) -> Answer:
        answer = exchange(self.port, data)
        assert answer is not None
        return answer

    def admin(self, **request: Any) -> dict[str, Any]:
        """One request of the host, applied by `edge.py single-admin` in its own process."""
        path = self.state.parent / f"request-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(request))
        env = {
            "PATH": os.environ.get("PATH", ""),
            "OCC_EDGE_HASH_FILE": str(self.hash_file),
            "OCC_EDGE_STATE_DIR": str(self.state),
        }
        done = subprocess.run(
            [sys.executable, "-I", str(EDGE_FILE), "single-admin", str(path)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=30,
        )
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        assert isinstance(answer, dict)
        assert (done.returncode == 0) == ("error" not in answer), done
        assert not path.exists()  # it held a request of the host's: read once, then gone
        return answer

    def sign_in(
        self, password: str = PASSWORD, *, agent: str = AGENT, address: str = ADDRESS
    ) -> Answer:
        form = {"username": "opencode", "password": password, "next": "/p", "csrf": TOKEN}
        headers = {**FORM, "User-Agent": agent}
        return self.send(
            raw("POST", "/__occ/login", headers, urlencode(form), (CSRF_COOKIE,), address)
        )

    def session(self, **options: Any) -> str:
        answer = self.sign_in(**options)
        assert answer.status == 303, answer.body
        cookie = cookie_in(answer)
        assert cookie
        return cookie

    def allowed(self, cookie: str) -> int:
        headers = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/session"}
        return self.send(raw("GET", "/__occ/verify", headers, cookies=(cookie,))).status

    def prove(self, pending: str, code: str, factor: str = "totp") -> Answer:
        form = {"factor": factor, "code": code, "csrf": TOKEN, "next": "/p"}
        cookies = (CSRF_COOKIE, pending)
        return self.send(raw("POST", "/__occ/second", FORM, urlencode(form), cookies))

    def pending(self) -> str:
        answer = self.sign_in()
        assert answer.status == 303, answer.body
        assert answer.all("location") == ["/__occ/second?next=/p"]
        assert cookie_in(answer) == ""
        pending = cookie_in(answer, "second")
        assert pending
        return pending

    def code(self, secret: str, offset: int = 0) -> str:
        return str(pyotp.TOTP(secret).at(int(self.clock()), offset))

    def events(self) -> list[str]:
        return [line["event"] for line in self.admin(op="log", limit=100)["log"]]


@pytest.fixture
def single(tmp_path: Path) -> Iterator[Single]:
    clock = Clock()
    clock.now = time.time()
    running = Single(tmp_path, clock)
    yield running
    running.stop()


def test_sessions_are_listed_with_their_address_browser_and_last_use(single: Single) -> None:
    # Header bytes are read as Latin-1: 0x9b is the one-byte CSI of a terminal, and
    # `occ auth sessions` prints the browser's name as it was kept.
    evil = "Evil\x9b2J\x9b31mBrowser\x85/1\tx"
    first = single.session(agent=evil, address="198.51.100.7")
    second = single.session()
    listed = single.admin(op="sessions")["sessions"]
    assert len(listed) == 2
    by_address = {s["address"]: s for s in listed}
    kept = by_address["198.51.100.7"]["agent"]
    assert kept.isprintable() and "Browser" in kept and kept.endswith(" x")
    assert by_address[ADDRESS]["agent"] == AGENT
    digests = {
        single.guard._sessions.entries[k]["address"]: k for k in single.guard._sessions.entries
    }
    for entry in listed:
        assert entry["id"] == digests[entry["address"]][:12]
        assert entry["created"] == int(single.clock.now)
        assert entry["seen"] == int(single.clock.now)
    # A request a while later notes the session seen.
    single.clock.now += 60
    assert single.allowed(first) == 200 and single.allowed(second) == 200
    seen = {s["seen"] for s in single.admin(op="sessions")["sessions"]}
    assert seen == {int(single.clock.now)}


def test_a_revoked_session_is_refused_from_its_next_request_on(single: Single) -> None:
    keep, end = single.session(), single.session(address="198.51.100.7")
    assert single.allowed(end) == 200  # read before the host's change
    listed = single.admin(op="sessions")["sessions"]
    which = next(s["id"] for s in listed if s["address"] == "198.51.100.7")
    assert single.admin(op="revoke", session=which) == {"ok": True, "revoked": 1}
    assert single.allowed(end) == 401
    assert single.allowed(keep) == 200
    # A sign-in after the revocation keeps it revoked (the edge wrote the file anew).
    third = single.session()
    assert single.allowed(end) == 401
    assert single.admin(op="revoke", session="all") == {"ok": True, "revoked": 2}
    assert single.allowed(keep) == 401 and single.allowed(third) == 401
    assert single.admin(op="sessions")["sessions"] == []
    events = single.events()
    assert "revoked" in events and "revoked-all" in events


def test_a_revocation_outlasts_a_restart_of_the_edge(single: Single) -> None:
    cookie = single.session()
    single.admin(op="revoke", session="all")
    single.stop()
    single.start()
    assert single.allowed(cookie) == 401


def test_bad_requests_of_the_host_change_nothing(single: Single) -> None:
    cookie = single.session()
    for which in ("", "ALL", "abc", "0" * 12, "../x", 12):
        answer = single.admin(op="revoke", session=which)
        assert "error" in answer
    assert "error" in single.admin(op="log", limit=0)
    assert "error" in single.admin(op="nothing")
    assert "error" in single.admin(op="totp", label="a\nb")
    assert "error" in single.admin(op="totp-off")
    assert single.allowed(cookie) == 200


def test_sessions_of_an_older_edge_stay_valid(tmp_path: Path) -> None:
    clock = Clock()
    clock.now = time.time()
    write_hash(tmp_path / "password.bcrypt", PASSWORD)
    running = Single(tmp_path, clock)
    try:
        cookie = running.session()
        running.stop()
        path = running.state / "sessions.json"
        # What an edge before this version wrote: expires and generation only.
        data = json.loads(path.read_text())
        old = {
            key: {"expires": e["expires"], "generation": e["generation"]} for key, e in data.items()
        }
        path.write_text(json.dumps(old))
        running.start()
        assert running.allowed(cookie) == 200
        listed = running.admin(op="sessions")["sessions"]
        assert [(s["address"], s["agent"], s["created"]) for s in listed] == [("", "", None)]
        # A newer field of the wrong kind is dropped, not the entry.
        key = next(iter(old))
        path.write_text(json.dumps({key: {**old[key], "created": "x", "agent": 5}}))
        assert running.allowed(cookie) == 200
    finally:
        running.stop()


def test_the_log_has_sign_ins_failures_and_sign_outs_and_no_secret(single: Single) -> None:
    cookie = single.session()
    assert single.sign_in("wrong password!").status == 401
    answer = single.send(
        raw("POST", "/__occ/logout", {"Origin": ORIGIN}, "", (cookie, CSRF_COOKIE))
    )
    assert answer.status == 303
    log = single.admin(op="log", limit=100)["log"]
    assert [line["event"] for line in log] == ["signed-in", "failed", "signed-out"]
    assert {line["name"] for line in log} == {"owner"}
    assert log[0]["address"] == ADDRESS
    assert len(single.admin(op="log", limit=1)["log"]) == 1
    stored = b"".join(p.read_bytes() for p in single.state.iterdir())
    assert b"wrong password!" not in stored and PASSWORD.encode() not in stored


# --------------------------------------------------------------------------- TOTP


def test_with_totp_the_password_alone_signs_in_nobody_and_the_code_once(single: Single) -> None:
    before = single.session()
    enrolled = single.admin(op="totp", label="opencode", issuer="opencode-cloud test")
    assert enrolled["totp"] == "pending"
    assert pyotp.parse_uri(enrolled["uri"]).secret == enrolled["secret"]
    assert "opencode" in enrolled["uri"]
    assert single.allowed(before) == 401  # signed out: from now on a code is asked
    assert single.admin(op="totp-state")["totp"] == "pending"
    pending = single.pending()
    assert single.allowed(pending.replace("second", "session")) == 401
    assert (
        single.prove(
            pending, "000000" if single.code(enrolled["secret"]) != "000000" else "1" * 6
        ).status
        == 401
    )
    code = single.code(enrolled["secret"])
    answer = single.prove(pending, code)
    assert answer.status == 303, answer.body
    assert answer.all("location") == ["/p"]
    assert single.allowed(cookie_in(answer)) == 200
    assert single.admin(op="totp-state")["totp"] == "on"
    # The same code again, on a new pending sign-in: refused.
    single.clock.now += 5
    again = single.prove(single.pending(), code)
    assert again.status == 401 and b"Wrong code." in again.body and cookie_in(again) == ""
    events = single.events()
    assert "totp-on" in events and "failed-totp" in events


def test_a_recovery_code_works_once_and_basic_is_refused(single: Single) -> None:
    enrolled = single.admin(op="totp", label="opencode")
    recovery = enrolled["recovery_codes"][0]
    assert single.prove(single.pending(), recovery, "recovery").status == 303
    assert single.prove(single.pending(), recovery, "recovery").status == 401
    assert "recovery-code-used" in single.events()
    token = base64.b64encode(f"opencode:{PASSWORD}".encode()).decode()
    headers = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/session"}
    answer = single.send(
        raw("GET", "/__occ/verify", {**headers, "Authorization": f"Basic {token}"})
    )
    assert answer.status == 401 and b"second factor" in answer.body


def test_totp_survives_a_restart_and_a_new_password_voids_a_pending_sign_in(
    single: Single,
) -> None:
    enrolled = single.admin(op="totp", label="opencode")
    single.stop()
    single.start()
    pending = single.pending()
    assert single.prove(pending, single.code(enrolled["secret"])).status == 303
    pending = single.pending()
    write_hash(single.hash_file, "a new password")  # occ auth rotate
    single.clock.now += 30
    assert single.prove(pending, single.code(enrolled["secret"])).status == 401


def test_totp_off_lets_the_password_alone_sign_in_again(single: Single) -> None:
    single.admin(op="totp", label="opencode")
    assert single.admin(op="totp-off") == {"ok": True, "totp": None}
    assert single.admin(op="totp-state")["totp"] is None
    assert single.allowed(single.session()) == 200
    token = base64.b64encode(f"opencode:{PASSWORD}".encode()).decode()
    headers = {"X-Forwarded-Method": "GET", "Authorization": f"Basic {token}"}
    assert single.send(raw("GET", "/__occ/verify", headers)).status == 200
