"""The login service in team mode (sandbox/edge.py with a people database), served for
real on loopback and asked on raw sockets as Caddy would (see test_edge.py).

Each person's instance is a tiny HTTP server here answering `/global/health`; the
starter is a unix socket server that notes what it is asked.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socketserver
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import bcrypt
import pytest

from unit.test_edge import (
    ADDRESS,
    CSRF_COOKIE,
    EDGE_FILE,
    ORIGIN,
    TOKEN,
    Answer,
    Clock,
    basic_header,
    edge,
    exchange,
    raw,
)

ALICE_PASSWORD = "alice's long password"
BOB_PASSWORD = "bob's long password"
GUESSER = "198.51.100.66"
# Seconds a hanging instance holds a health check: far above the check's own timeout.
HANG = 6.0


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


class Instance:
    """A person's opencode as far as the edge sees it: `/global/health` answers 200 when
    `ready` and asked with the person's internal password."""

    def __init__(self, internal_password: str) -> None:
        self.ready = True
        self.asked: list[str] = []  # the Authorization of each health check
        expected = "Basic " + base64.b64encode(f"opencode:{internal_password}".encode()).decode()
        instance = self
        self.hang = False

        class Health(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                authorization = self.headers.get("Authorization", "")
                instance.asked.append(authorization)
                if instance.hang:  # opencode's port open a moment before it serves
                    time.sleep(HANG)
                    return
                right = self.path == "/global/health" and authorization == expected
                status = 200 if instance.ready and right else 503
                body = b'{"healthy": true}' if status == 200 else b"{}"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
        self.upstream = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeStarter:
    """The starter's socket: one JSON line in, one out; notes every request."""

    def __init__(self, path: Path) -> None:
        self.requests: list[dict[str, Any]] = []
        self.state = "starting"
        self.upstream = "opencode-cloud-user-carol:4096"  # what `create` answers
        self.create_error = ""  # when set, `create` answers this error
        starter = self

        class Line(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request = json.loads(self.rfile.readline())
                starter.requests.append(request)
                state = starter.state if request["op"] in ("start", "create") else "stopped"
                answer = {"state": state}
                if request["op"] == "create":
                    answer = (
                        {"error": starter.create_error}
                        if starter.create_error
                        else {**answer, "upstream": starter.upstream}
                    )
                self.wfile.write(json.dumps(answer).encode() + b"\n")

        self.path = path
        self.server = socketserver.ThreadingUnixStreamServer(str(path), Line)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Team:
    """The edge in team mode over a database in `tmp`, with alice and bob (each with an
    instance that answers). The tests change people through `admin`, a connection of its
    own, as the admin tool's process does."""

    def __init__(self, tmp: Path, starter: Path | None = None, **guard_options: Any) -> None:
        self.tmp = tmp
        self.db_path = tmp / "state" / "team.db"
        self.clock = Clock()
        self.starter_path = starter
        self.guard_options = guard_options
        self.admin_people = edge.People(self.db_path)
        self.instances = {
            "alice": Instance("alice-internal-password"),
            "bob": Instance("bob-internal-password"),
        }
        self.put("alice", ALICE_PASSWORD, "alice-internal-password")
        self.put("bob", BOB_PASSWORD, "bob-internal-password")
        self.start()

    def start(self) -> None:
        self.guard = edge.TeamGuard(
            edge.People(self.db_path),
            self.tmp / "state",
            starter=edge.Starter(str(self.starter_path) if self.starter_path else None),
            clock=self.clock,
            **self.guard_options,
        )
        self.server = edge.serve(self.guard, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.guard.people.close()

    def close(self) -> None:
        self.stop()
        self.admin_people.close()
        for instance in self.instances.values():
            instance.stop()

    def admin(self, **request: Any) -> dict[str, Any]:
        return edge.apply_admin(self.admin_people, request, self.clock())

    def put(self, name: str, password: str, internal: str, upstream: str = "") -> None:
        self.admin(
            op="put",
            name=name,
            hash=hashed(password),
            internal_password=internal,
            upstream=upstream or self.instances[name].upstream,
            admin=name == "alice",
            email=f"{name}@example.com",
        )

    def send(self, data: bytes) -> Answer:
        answer = exchange(self.port, data)
        assert answer is not None
        return answer

    def login(
        self,
        name: str,
        password: str,
        *,
        device: str = "",
        address: str = ADDRESS,
        next_path: str = "/project/x",
        agent: str = "",
    ) -> Answer:
        """The login form, sent from this site with its token (as a browser does)."""
        form = {"name": name, "password": password, "next": next_path, "csrf": TOKEN}
        headers = {"Origin": ORIGIN, "Content-Type": "application/x-www-form-urlencoded"}
        if agent:
            headers["User-Agent"] = agent
        cookies = (CSRF_COOKIE, device) if device else (CSRF_COOKIE,)
        return self.send(raw("POST", "/__occ/login", headers, urlencode(form), cookies, address))

    def session(self, name: str, password: str) -> str:
        answer = self.login(name, password)
        assert answer.status == 303, answer.body
        return cookie_in(answer)

    def verify(self, cookie: str = "", **headers: str) -> Answer:
        sent = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/session"}
        sent.update({k.replace("_", "-"): v for k, v in headers.items()})
        cookies = (cookie,) if cookie else ()
        return self.send(raw("GET", "/__occ/verify", sent, cookies=cookies))

    def basic(self, name: str, password: str, address: str = ADDRESS) -> Answer:
        authorization = basic_header(password, user=name)
        return self.send(
            raw("GET", "/__occ/verify", {"Authorization": authorization}, address=address)
        )

    def get(self, path: str, cookie: str = "", **headers: str) -> Answer:
        sent = {k.replace("_", "-"): v for k, v in headers.items()}
        return self.send(raw("GET", path, sent, cookies=(cookie,) if cookie else ()))


def cookie_in(answer: Answer, kind: str = "session") -> str:
    """`name=value` of the edge's cookie of that kind set by an answer, or ""."""
    for line in answer.all("set-cookie"):
        pair = line.split(";")[0]
        if pair.startswith(f"occ_{kind}_") and not pair.endswith("="):
            return pair
    return ""


def occ_headers(answer: Answer) -> dict[str, list[str]]:
    names = ("x-occ-person", "x-occ-upstream", "x-occ-upstream-auth")
    return {name: answer.all(name) for name in names if answer.all(name)}


def upstream_auth(internal: str) -> str:
    return "Basic " + base64.b64encode(f"opencode:{internal}".encode()).decode()


@pytest.fixture(autouse=True)
def keep_umask() -> Iterator[None]:
    """`edge.py admin` sets its umask (0077): the tests run it in pytest's process."""
    mask = os.umask(0o022)
    os.umask(mask)
    yield
    os.umask(mask)


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    running = Team(tmp_path)
    yield running
    running.close()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for unix sockets: a socket's path holds at most 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="occ-team-") as name:
        yield Path(name)


@pytest.fixture
def starter(socket_dir: Path) -> Iterator[FakeStarter]:
    running = FakeStarter(socket_dir / "starter.sock")
    yield running
    running.stop()


# --------------------------------------------------------------------------- people


def test_each_person_is_let_through_to_their_own_instance_only(team: Team) -> None:
    alice = team.session("alice", ALICE_PASSWORD)
    bob = team.session("bob", BOB_PASSWORD)
    assert alice != bob
    answer = team.verify(alice)
    assert answer.status == 200
    assert occ_headers(answer) == {
        "x-occ-person": ["alice"],
        "x-occ-upstream": [team.instances["alice"].upstream],
        "x-occ-upstream-auth": [upstream_auth("alice-internal-password")],
    }
    answer = team.verify(bob)
    assert answer.status == 200
    assert occ_headers(answer) == {
        "x-occ-person": ["bob"],
        "x-occ-upstream": [team.instances["bob"].upstream],
        "x-occ-upstream-auth": [upstream_auth("bob-internal-password")],
    }
    assert b"alice" not in b"".join(v.encode() for v in answer.all("x-occ-upstream-auth"))


def test_the_clients_own_occ_headers_change_nothing(team: Team) -> None:
    alice = team.session("alice", ALICE_PASSWORD)
    planted = {
        "X-Occ-Person": "bob",
        "X-Occ-Upstream": team.instances["bob"].upstream,
        "X-Occ-Upstream-Auth": upstream_auth("bob-internal-password"),
    }
    answer = team.verify(alice, **planted)
    assert answer.status == 200
    assert occ_headers(answer) == {
        "x-occ-person": ["alice"],
        "x-occ-upstream": [team.instances["alice"].upstream],
        "x-occ-upstream-auth": [upstream_auth("alice-internal-password")],
    }
    answer = team.verify(**planted)
    assert answer.status == 401 and not occ_headers(answer)


def test_the_login_page_asks_for_a_name(team: Team) -> None:
    answer = team.get("/__occ/login?next=/p")
    page = answer.body.decode()
    assert answer.status == 200
    assert '<label for="name">Name</label>' in page and 'name="name"' in page
    assert 'name="username"' not in page and 'name="password"' in page
    assert 'name="next" value="/p"' in page
    # A name typed with a capital (as phones do) is the same name.
    assert team.login("Alice", ALICE_PASSWORD).status == 303


def test_a_wrong_password_an_unknown_name_and_a_disabled_person_fail_alike(
    team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    team.put("carol", "carol's password", "carol-internal", upstream="127.0.0.1:9")
    team.admin(op="disable", name="carol")
    checked: list[bytes] = []
    checkpw = bcrypt.checkpw

    def counted(password: bytes, stored: bytes) -> bool:
        checked.append(stored)
        return checkpw(password, stored)

    monkeypatch.setattr(bcrypt, "checkpw", counted)
    failures = [
        ("alice", "not alice's password"),
        ("nobody", "a guess"),
        ("carol", "carol's password"),  # right, but carol is disabled
        ("Not A Name!", "a guess"),
    ]
    pages = []
    for name, password in failures:
        answer = team.login(name, password)
        assert answer.status == 401 and not cookie_in(answer) and not cookie_in(answer, "device")
        pages.append(answer.body.decode().replace(name.lower(), "NAME").replace(name, "NAME"))
        basic = team.basic(name, password)
        assert (basic.status, basic.body) == (401, b'{"error": "Wrong user name or password."}')
        assert basic.all("www-authenticate")
    assert len(set(pages)) == 1 and "Wrong user name or password" in pages[0]
    # Each attempt ran one bcrypt check, of the same cost as the people's hashes.
    assert len(checked) == 2 * len(failures)
    assert {stored[:7] for stored in checked} == {b"$2b$04$"}
    # All counted in the same buckets: the address is locked now, for everyone.
    for _ in range(10 - 2 * len(failures)):
        team.basic("nobody", "a guess")
    assert team.login("alice", ALICE_PASSWORD).status == 429


def test_disabling_ends_sessions_at_the_next_request_and_enabling_does_not_revive_them(
    team: Team,
) -> None:
    alice = team.session("alice", ALICE_PASSWORD)
    bob = team.session("bob", BOB_PASSWORD)
    assert team.basic("alice", ALICE_PASSWORD).status == 200  # remembered as proven
    assert team.admin(op="disable", name="alice") == {"ok": True, "name": "alice"}
    assert team.verify(alice).status == 401
    assert team.basic("alice", ALICE_PASSWORD).status == 401
    assert team.login("alice", ALICE_PASSWORD).status == 401
    assert team.verify(bob).status == 200  # others are not touched
    team.admin(op="enable", name="alice")
    assert team.verify(alice).status == 401
    assert team.verify(team.session("alice", ALICE_PASSWORD)).status == 200


def test_a_new_password_ends_sessions_and_the_old_password(team: Team) -> None:
    alice = team.session("alice", ALICE_PASSWORD)
    bob = team.session("bob", BOB_PASSWORD)
    assert team.basic("alice", ALICE_PASSWORD).status == 200
    team.admin(op="passwd", name="alice", hash=hashed("alice's new password"))
    assert team.verify(alice).status == 401
    assert team.basic("alice", ALICE_PASSWORD).status == 401
    assert team.login("alice", ALICE_PASSWORD).status == 401
    assert team.verify(bob).status == 200
    assert team.basic("alice", "alice's new password").status == 200
    assert team.verify(team.session("alice", "alice's new password")).status == 200


def test_put_with_a_new_hash_ends_sessions_and_with_the_same_keeps_them(team: Team) -> None:
    alice = team.session("alice", ALICE_PASSWORD)
    record = team.admin_people.get("alice")
    assert record is not None
    upstream = team.instances["alice"].upstream
    same = {"hash": record.hash, "internal_password": "a-new-one", "upstream": upstream}
    assert team.admin(op="put", name="alice", **same)["added"] is False
    answer = team.verify(alice)
    assert answer.status == 200 and answer.all("x-occ-upstream-auth") == [
        upstream_auth("a-new-one")
    ]
    team.admin(op="put", name="alice", **{**same, "hash": hashed(ALICE_PASSWORD)})
    assert team.verify(alice).status == 401


def test_a_session_belongs_to_one_generation_of_its_persons_password(team: Team) -> None:
    """Even a session left in the database (a tool that changed the record and forgot
    the sessions) ends with a new generation, and while its person is disabled."""
    alice = team.session("alice", ALICE_PASSWORD)
    team.admin_people._run("UPDATE people SET generation = 'another' WHERE name = 'alice'")
    assert team.verify(alice).status == 401
    bob = team.session("bob", BOB_PASSWORD)
    team.admin_people._run("UPDATE people SET disabled = 1 WHERE name = 'bob'")
    assert team.verify(bob).status == 401
    team.admin_people._run("UPDATE people SET disabled = 0 WHERE name = 'bob'")
    assert team.verify(bob).status == 200


def test_removing_a_person_ends_everything_of_theirs(team: Team) -> None:
    alice = team.session("alice", ALICE_PASSWORD)
    assert team.basic("alice", ALICE_PASSWORD).status == 200
    assert team.admin(op="remove", name="alice") == {"ok": True, "name": "alice"}
    assert team.verify(alice).status == 401
    assert team.basic("alice", ALICE_PASSWORD).status == 401
    assert team.login("alice", ALICE_PASSWORD).status == 401
    assert [p["name"] for p in team.admin(op="list")["people"]] == ["bob"]
    # A person of the same name added later does not inherit the old sessions.
    team.put("alice", ALICE_PASSWORD, "alice-internal-password")
    assert team.verify(alice).status == 401


def test_basic_credentials_are_each_persons_own(team: Team) -> None:
    answer = team.basic("alice", ALICE_PASSWORD)
    assert answer.status == 200 and answer.all("x-occ-person") == ["alice"]
    assert answer.all("x-occ-upstream-auth") == [upstream_auth("alice-internal-password")]
    answer = team.basic("bob", BOB_PASSWORD)
    assert answer.status == 200 and answer.all("x-occ-person") == ["bob"]
    assert team.basic("bob", ALICE_PASSWORD).status == 401
    assert team.basic("alice", BOB_PASSWORD).status == 401
    assert team.basic("opencode", ALICE_PASSWORD).status == 401


def test_a_session_ends_when_its_person_signs_out(team: Team) -> None:
    alice = team.session("alice", ALICE_PASSWORD)
    bob = team.session("bob", BOB_PASSWORD)
    answer = team.send(raw("POST", "/__occ/logout", {"Origin": ORIGIN}, "", (alice,)))
    assert answer.status == 303
    assert team.verify(alice).status == 401 and team.verify(bob).status == 200


def test_sessions_survive_a_restart_and_expire(team: Team) -> None:
    alice = team.session("alice", ALICE_PASSWORD)
    team.stop()
    team.start()
    assert team.verify(alice).status == 200
    assert alice.split("=", 1)[1] not in team.db_path.read_bytes().decode("latin-1")
    team.clock.now += edge.SESSION_SECONDS + 1
    assert team.verify(alice).status == 401


def test_the_rules_of_the_single_user_edge_hold_in_team_mode(team: Team) -> None:
    alice = team.session("alice", ALICE_PASSWORD)
    # Changes with the session cookie from another site.
    foreign = {"X_Forwarded_Method": "POST", "Origin": "http://127.0.0.1:3001"}
    assert team.verify(alice, **foreign).status == 403
    assert team.verify(alice, X_Forwarded_Method="POST", Origin=ORIGIN).status == 200
    # The login form from another site, or without its token: nothing checked.
    form = urlencode({"name": "alice", "password": ALICE_PASSWORD, "csrf": TOKEN})
    headers = {"Origin": "https://evil.example"}
    answer = team.send(raw("POST", "/__occ/login", headers, form, (CSRF_COOKIE,)))
    assert answer.status == 403 and not cookie_in(answer)
    answer = team.send(raw("POST", "/__occ/login", {"Origin": ORIGIN}, form))
    assert answer.status == 403 and not cookie_in(answer)
    # Signing out: a POST from this site only.
    assert team.get("/__occ/logout", alice).status == 200
    assert team.verify(alice).status == 200
    answer = team.send(raw("POST", "/__occ/logout", headers, "", (alice,)))
    assert answer.status == 403 and team.verify(alice).status == 200
    # Where to go after signing in: this site only.
    assert team.login("alice", ALICE_PASSWORD, next_path="//evil.example").all("location") == ["/"]


def test_a_password_replaced_while_it_is_checked_gets_no_session(
    team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = team.guard._check

    def replaced_meanwhile(*args: Any) -> bool:
        right = bool(check(*args))
        team.admin(op="passwd", name="alice", hash=hashed("alice's new password"))
        return right

    monkeypatch.setattr(team.guard, "_check", replaced_meanwhile)
    answer = team.login("alice", ALICE_PASSWORD)
    assert answer.status == 401 and not cookie_in(answer)


def test_basic_credentials_proven_just_before_a_new_password_let_nobody_through(
    team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempt = team.guard.attempt

    def then_replaced(*args: Any, **kwargs: Any) -> Any:
        outcome = attempt(*args, **kwargs)
        team.admin(op="passwd", name="alice", hash=hashed("alice's new password"))
        return outcome

    monkeypatch.setattr(team.guard, "attempt", then_replaced)
    answer = team.basic("alice", ALICE_PASSWORD)
    assert answer.status == 401 and not occ_headers(answer)


# --------------------------------------------------------------------------- guessing


def test_a_guesser_does_not_lock_people_out_of_the_browsers_they_signed_in_with(
    team: Team,
) -> None:
    alice_device = cookie_in(team.login("alice", ALICE_PASSWORD), "device")
    bob_device = cookie_in(team.login("bob", BOB_PASSWORD), "device")
    assert alice_device and bob_device
    # Someone guesses alice's password from the address everyone shares (Docker's proxy).
    for number in range(10):
        assert team.login("alice", f"guess {number}").status == 401
    assert team.login("alice", ALICE_PASSWORD).status == 429  # a browser without a device
    assert team.login("bob", BOB_PASSWORD).status == 429
    answer = team.login("alice", ALICE_PASSWORD, device=alice_device)
    assert answer.status == 303 and team.verify(cookie_in(answer)).status == 200
    answer = team.login("bob", BOB_PASSWORD, device=bob_device)
    assert answer.status == 303 and team.verify(cookie_in(answer)).status == 200
    # No bucket of alice's own that the guesser filled: from elsewhere she signs in.
    assert team.login("alice", ALICE_PASSWORD, address="192.0.2.20").status == 303


def test_a_device_cookie_gives_a_bucket_of_its_own_to_its_persons_attempts_only(
    team: Team,
) -> None:
    bob_device = cookie_in(team.login("bob", BOB_PASSWORD, address=GUESSER), "device")
    # bob guesses alice's password with his device cookie: counted by his address.
    for number in range(10):
        answer = team.login("alice", f"guess {number}", device=bob_device, address=GUESSER)
        assert answer.status == 401
    assert team.login("alice", ALICE_PASSWORD, device=bob_device, address=GUESSER).status == 429
    # His own sign-in from his browser still works; his address is locked without it.
    assert team.login("bob", BOB_PASSWORD, device=bob_device, address=GUESSER).status == 303
    assert team.login("bob", BOB_PASSWORD, address=GUESSER).status == 429


# --------------------------------------------------------------------------- instances


def test_a_person_whose_instance_is_down_waits_on_the_starting_page(
    team: Team, starter: FakeStarter
) -> None:
    team.stop()
    team.starter_path = starter.path
    team.start()
    team.instances["alice"].ready = False
    answer = team.login("alice", ALICE_PASSWORD)
    assert answer.status == 303
    assert answer.all("location") == ["/__occ/starting?next=/project/x"]
    assert starter.requests == [{"op": "start", "name": "alice"}]
    alice = cookie_in(answer)
    # The instance's health was asked with alice's internal password.
    assert team.instances["alice"].asked[-1] == upstream_auth("alice-internal-password")

    page = team.get("/__occ/starting?next=/project/x", alice)
    assert page.status == 200
    text = page.body.decode()
    assert "Your opencode is starting" in text and 'data-next="/project/x"' in text
    (policy,) = page.all("content-security-policy")
    script = re.search(r"<script>(.*)</script>", text, re.DOTALL)
    assert script
    digest = base64.b64encode(edge.hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy and "connect-src 'self'" in policy

    ready = team.get("/__occ/ready", alice)
    assert ready.status == 200 and json.loads(ready.body) == {"ready": False, "state": "starting"}
    team.instances["alice"].ready = True
    ready = team.get("/__occ/ready", alice)
    assert ready.status == 200 and json.loads(ready.body) == {"ready": True}
    # bob's instance answers: he goes straight on.
    answer = team.login("bob", BOB_PASSWORD)
    assert answer.all("location") == ["/project/x"]
    assert {"op": "start", "name": "bob"} not in starter.requests


def sso_person(team: Team, name: str) -> str:
    """A person as their first single sign-on makes them (no password, no instance), and
    a session of theirs (the cookie)."""
    team.admin_people._run(
        "INSERT INTO people (name, hash, generation, internal_password, upstream, admin, "
        "email, disabled, created) VALUES (?, ?, 'g1', '', '', 0, NULL, 0, 1)",
        name,
        edge.edge_oidc.NO_PASSWORD,
    )
    made = team.guard.sign_in("g1", name, ADDRESS, "")
    assert made is not None
    return f"{edge.cookie_name('127.0.0.1:3000')}={made[0]}"


def test_a_person_made_by_single_sign_on_gets_their_instance_made_by_the_starter(
    team: Team, starter: FakeStarter
) -> None:
    team.stop()
    team.starter_path = starter.path
    team.start()
    starter.create_error = "the engine answered 500"
    carol = sso_person(team, "carol")

    ready = team.get("/__occ/ready", carol)
    assert json.loads(ready.body) == {"ready": False, "state": "unavailable"}
    (first,) = starter.requests
    assert first["op"] == "create" and first["name"] == "carol"
    assert re.fullmatch(r"[0-9a-f]{48}", first["password"])
    kept = team.admin_people.get("carol")
    assert kept is not None and kept.internal_password == first["password"]
    assert kept.upstream == ""

    # Asked again: the same password (the starter may have made it with that one).
    starter.create_error = ""
    team.guard._started.clear()  # as START_REPEAT seconds later
    ready = team.get("/__occ/ready", carol)
    assert json.loads(ready.body) == {"ready": False, "state": "starting"}
    assert starter.requests[-1] == {**first}
    kept = team.admin_people.get("carol")
    assert kept is not None and kept.upstream == "opencode-cloud-user-carol:4096"
    assert ("carol", "sso-instance", "starter") in [e[1:] for e in team.admin_people.events()]
    answer = team.verify(carol)
    assert answer.status == 503  # on its way: the door waits for it, as for anyone's

    # From now on their instance is only started, like anyone's.
    team.guard._started.clear()
    team.get("/__occ/ready", carol)
    assert starter.requests[-1] == {"op": "start", "name": "carol"}


def test_a_script_signed_in_with_basic_credentials_gets_its_stopped_instance_started(
    team: Team, starter: FakeStarter
) -> None:
    team.stop()
    team.starter_path = starter.path
    team.start()
    assert team.basic("alice", ALICE_PASSWORD).status == 200
    deadline = time.monotonic() + 5
    while {"op": "start", "name": "alice"} not in starter.requests:
        assert time.monotonic() < deadline, starter.requests
        time.sleep(0.02)
    # Asked once, not on every request.
    for _ in range(5):
        assert team.basic("alice", ALICE_PASSWORD).status == 200
    time.sleep(0.2)
    assert starter.requests.count({"op": "start", "name": "alice"}) == 1
    assert not any(r["name"] == "bob" for r in starter.requests)


def test_requests_wait_for_an_instance_that_does_not_answer_yet(
    team: Team, starter: FakeStarter
) -> None:
    team.stop()
    team.starter_path = starter.path
    team.start()
    team.instances["alice"].hang = True  # accepts, never answers
    answer = team.login("alice", ALICE_PASSWORD)
    assert answer.all("location") == ["/__occ/starting?next=/project/x"]
    alice = cookie_in(answer)
    began = time.monotonic()
    api = team.verify(alice)
    # The health check's own timeout (1 s), not the hang: far apart, so that a busy
    # machine does not blur them.
    assert time.monotonic() - began < HANG / 2
    assert api.status == 503 and api.all("retry-after") == ["2"]
    assert not api.all("x-occ-upstream")
    page = team.verify(alice, Accept="text/html", X_Forwarded_Uri="/project/x?y=1")
    assert page.status == 302
    assert page.all("location") == ["/__occ/starting?next=/project/x%3Fy%3D1"]
    deadline = time.monotonic() + 5
    while {"op": "start", "name": "alice"} not in starter.requests:
        assert time.monotonic() < deadline, starter.requests
        time.sleep(0.02)
    # Once it answers, requests go through (once the check still hanging has given up:
    # one check of an instance at a time), and are not held up by a check each time.
    team.instances["alice"].hang = False
    deadline = time.monotonic() + 5
    while (status := team.verify(alice).status) != 200:
        assert status == 503 and time.monotonic() < deadline
        time.sleep(0.05)
    asked = len(team.instances["alice"].asked)
    for _ in range(5):
        assert team.verify(alice).status == 200
    assert len(team.instances["alice"].asked) == asked
    # bob was never held up by alice's instance.
    assert team.verify(team.session("bob", BOB_PASSWORD)).status == 200


def test_the_starting_page_and_ready_are_for_people_signed_in(team: Team) -> None:
    answer = team.get("/__occ/starting?next=/p")
    assert answer.status == 303 and answer.all("location") == ["/__occ/login?next=/p"]
    answer = team.get("/__occ/starting?next=//evil.example", "occ_session_3000=made-up")
    assert answer.status == 303 and answer.all("location") == ["/__occ/login?next=/"]
    assert team.get("/__occ/ready").status == 401
    alice = team.session("alice", ALICE_PASSWORD)
    assert team.get("/__occ/ready", alice, Origin="https://evil.example").status == 403
    page = team.get("/__occ/starting?next=//evil.example", alice)
    assert page.status == 200 and 'data-next="/"' in page.body.decode()


def test_without_the_starters_socket_an_instance_is_just_not_ready(
    team: Team, capsys: pytest.CaptureFixture[str]
) -> None:
    team.stop()
    team.starter_path = team.tmp / "no-starter.sock"
    team.start()
    team.instances["alice"].ready = False
    alice = team.session("alice", ALICE_PASSWORD)
    ready = team.get("/__occ/ready", alice)
    assert ready.status == 200
    assert json.loads(ready.body) == {"ready": False, "state": "unavailable"}
    assert "the starter did not answer start alice" in capsys.readouterr().err


def test_instances_unused_for_the_idle_time_are_asked_to_stop(
    tmp_path: Path, starter: FakeStarter
) -> None:
    team = Team(tmp_path, starter=starter.path, idle_stop=600)
    try:
        team.verify(team.session("alice", ALICE_PASSWORD))
        team.clock.now += 300
        team.verify(team.session("bob", BOB_PASSWORD))
        assert team.guard.stop_idle() == []
        team.clock.now += 301  # alice unseen for 601 s, bob for 301 s
        assert team.guard.stop_idle() == ["alice"]
        # (Each person's first request asked for their instance to be started, too.)
        stops = [r for r in starter.requests if r["op"] == "stop"]
        assert stops == [{"op": "stop", "name": "alice"}]
        assert team.guard.stop_idle() == []  # not asked twice
        team.clock.now += 600
        assert team.guard.stop_idle() == ["bob"]
    finally:
        team.close()


def test_last_seen_is_written_at_most_every_few_seconds(team: Team) -> None:
    alice = team.session("alice", ALICE_PASSWORD)

    def last_seen() -> int | None:
        person = team.admin_people.get("alice")
        assert person is not None
        return person.last_seen

    started = int(team.clock.now)
    assert team.verify(alice).status == 200
    assert last_seen() == started
    team.clock.now += edge.LAST_SEEN_EVERY - 1
    assert team.verify(alice).status == 200
    assert last_seen() == started
    team.clock.now += 1
    assert team.verify(alice).status == 200
    assert last_seen() == started + edge.LAST_SEEN_EVERY


def test_sign_ins_failures_and_sign_outs_are_logged(team: Team) -> None:
    team.login("alice", "a guess", address=GUESSER)
    alice = team.session("alice", ALICE_PASSWORD)
    team.send(raw("POST", "/__occ/logout", {"Origin": ORIGIN}, "", (alice,)))
    events = [row[1:] for row in team.admin_people.events() if row[3] != "admin"]
    assert events == [
        ("alice", "failed", GUESSER),
        ("alice", "signed-in", ADDRESS),
        ("alice", "signed-out", ""),
    ]
    person = team.admin_people.get("alice")
    assert person is not None and person.last_sign_in == int(team.clock.now)


# --------------------------------------------------------------------------- sessions


def test_a_browser_name_keeps_no_terminal_controls_for_the_admins_terminal(team: Team) -> None:
    # Header bytes are read as Latin-1: 0x9b is the one-byte CSI of a terminal, and
    # `occ user sessions` prints the browser's name as it was kept.
    team.login("alice", ALICE_PASSWORD, agent="Evil\x9b2J\x9b31mBrowser\x85/1")
    (session,) = team.admin(op="sessions", name="alice")["sessions"]
    assert session["agent"].isprintable() and "Browser" in session["agent"]


def test_an_admin_sees_where_a_person_is_signed_in_and_a_revoked_session_is_refused_at_once(
    team: Team,
) -> None:
    laptop = cookie_in(team.login("alice", ALICE_PASSWORD, agent="Firefox/140 (laptop)"))
    team.clock.now += 5
    phone = cookie_in(
        team.login("alice", ALICE_PASSWORD, address="192.0.2.77", agent="Phone\tSafari")
    )
    bob = team.session("bob", BOB_PASSWORD)
    answer = team.admin(op="sessions", name="alice")
    sessions = answer["sessions"]
    assert [(s["address"], s["agent"]) for s in sessions] == [
        ("192.0.2.77", "Phone Safari"),  # newest first; a tab made a space
        (ADDRESS, "Firefox/140 (laptop)"),
    ]
    assert all(re.fullmatch("[0-9a-f]{12}", s["id"]) for s in sessions)
    assert sessions[0]["created"] == sessions[0]["seen"] == int(team.clock.now)
    # What an admin reads names the sessions and holds none of their secrets.
    shown = json.dumps(answer)
    for token in (laptop, phone):
        value = token.partition("=")[2]
        assert value not in shown and edge._digest(value) not in shown
    # Used later, a session is seen later (at most every LAST_SEEN_EVERY seconds).
    team.clock.now += edge.LAST_SEEN_EVERY
    assert team.verify(laptop).status == 200
    seen = {s["agent"]: s["seen"] for s in team.admin(op="sessions", name="alice")["sessions"]}
    assert seen["Firefox/140 (laptop)"] == int(team.clock.now)
    # Revoked, the phone is refused from its next request on; nothing else is.
    assert team.verify(phone).status == 200
    revoked = team.admin(op="revoke", name="alice", session=sessions[0]["id"])
    assert revoked == {"ok": True, "name": "alice", "revoked": 1}
    assert team.verify(phone).status == 401
    assert team.verify(laptop).status == 200 and team.verify(bob).status == 200
    assert team.admin(op="revoke", name="alice", session="all")["revoked"] == 1
    assert team.verify(laptop).status == 401 and team.verify(bob).status == 200
    assert team.admin(op="sessions", name="alice")["sessions"] == []
    events = [(e["name"], e["event"]) for e in team.admin(op="log", name="alice")["log"]]
    assert events[-2:] == [("alice", "revoked"), ("alice", "revoked-all")]


def test_the_sign_in_log_is_read_newest_lines_last_and_holds_no_secret(team: Team) -> None:
    team.login("alice", "a guess", address=GUESSER)
    team.session("alice", ALICE_PASSWORD)
    team.session("bob", BOB_PASSWORD)
    log = team.admin(op="log")["log"]
    assert [(e["name"], e["event"]) for e in log][-3:] == [
        ("alice", "failed"),
        ("alice", "signed-in"),
        ("bob", "signed-in"),
    ]
    assert log[-3]["address"] == GUESSER and isinstance(log[-1]["time"], int)
    assert [e["event"] for e in team.admin(op="log", name="bob", limit=1)["log"]] == ["signed-in"]
    shown = json.dumps(log)
    for secret in ("alice-internal-password", "a guess", ALICE_PASSWORD, "$2b$"):
        assert secret not in shown


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"op": "sessions", "name": "nobody"}, "no such person: nobody"),
        ({"op": "sessions", "name": "Alice"}, "name: not a name"),
        ({"op": "revoke", "name": "alice"}, "session: a session's id, or all"),
        ({"op": "revoke", "name": "alice", "session": "ALL"}, "session: a session's id"),
        ({"op": "revoke", "name": "alice", "session": "abc"}, "session: a session's id"),
        ({"op": "revoke", "name": "alice", "session": "0" * 12}, "no such session of alice"),
        ({"op": "revoke", "name": "nobody", "session": "all"}, "no such person: nobody"),
        ({"op": "log", "limit": 0}, "limit: not a whole number"),
        ({"op": "log", "limit": True}, "limit: not a whole number"),
        ({"op": "log", "limit": "5"}, "limit: not a whole number"),
        ({"op": "log", "name": "../x"}, "name: not a name"),
    ],
)
def test_session_and_log_requests_with_bad_input_are_refused_and_change_nothing(
    team: Team, request_: dict[str, Any], error: str
) -> None:
    alice = team.session("alice", ALICE_PASSWORD)
    before = team.admin_people._all("SELECT * FROM sessions ORDER BY token")
    with pytest.raises(edge.AdminError, match=re.escape(error)):
        team.admin(**request_)
    assert team.admin_people._all("SELECT * FROM sessions ORDER BY token") == before
    assert team.verify(alice).status == 200


def test_a_session_of_another_person_cannot_be_revoked_through_ones_own_name(team: Team) -> None:
    bob = team.session("bob", BOB_PASSWORD)
    team.session("alice", ALICE_PASSWORD)
    bobs = team.admin(op="sessions", name="bob")["sessions"][0]["id"]
    with pytest.raises(edge.AdminError, match="no such session of alice"):
        team.admin(op="revoke", name="alice", session=bobs)
    assert team.verify(bob).status == 200


def test_a_database_of_an_older_edge_gains_the_columns_of_sessions(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "team.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE sessions (token TEXT PRIMARY KEY, name TEXT NOT NULL, "
        "generation TEXT NOT NULL, created INTEGER NOT NULL, expires INTEGER NOT NULL);"
        "INSERT INTO sessions VALUES ('d1', 'alice', 'g', 100, 9999999999);"
    )
    old.close()
    people = edge.People(path)
    try:
        columns = [row[1] for row in people._all("PRAGMA table_info(sessions)")]
        assert columns[-3:] == ["address", "agent", "seen"]
        assert people._all("SELECT address, agent, seen FROM sessions") == [("", "", None)]
    finally:
        people.close()


# --------------------------------------------------------------------------- admin


def write_request(directory: Path, request: Any) -> Path:
    path = directory / "admin-request.json"
    path.write_text(json.dumps(request))
    path.chmod(0o600)
    return path


def run_admin(
    directory: Path, request: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> tuple[int, dict[str, Any]]:
    monkeypatch.setenv("OCC_EDGE_TEAM_DB", str(directory / "team.db"))
    code = edge.admin_main([str(write_request(directory, request))])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    return code, json.loads(lines[0])


def test_admin_applies_a_request_file_and_deletes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    request = {
        "op": "put",
        "name": "alice",
        "hash": hashed(ALICE_PASSWORD),
        "internal_password": "alice-internal-password",
        "upstream": "opencode-cloud-user-alice:4096",
        "admin": True,
        "email": "alice@example.com",
    }
    assert run_admin(tmp_path, request, monkeypatch, capsys) == (
        0,
        {"ok": True, "name": "alice", "added": True},
    )
    assert not (tmp_path / "admin-request.json").exists()
    assert run_admin(tmp_path, {"op": "disable", "name": "alice"}, monkeypatch, capsys) == (
        0,
        {"ok": True, "name": "alice"},
    )
    code, answer = run_admin(tmp_path, {"op": "list"}, monkeypatch, capsys)
    assert code == 0 and answer["people"] == [
        {
            "name": "alice",
            "admin": True,
            "email": "alice@example.com",
            "disabled": True,
            "created": answer["people"][0]["created"],
            "last_sign_in": None,
            "last_seen": None,
            "totp": None,
        }
    ]
    assert isinstance(answer["people"][0]["created"], int)


def test_the_database_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "umask", lambda mask: 0)  # as if nobody had set one
    request = {"op": "put", "name": "alice", "hash": hashed("x"), "internal_password": "p"}
    request["upstream"] = "a:1"
    assert run_admin(tmp_path, request, monkeypatch, capsys)[0] == 0
    db = tmp_path / "team.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    for extra in (tmp_path / "team.db-wal", tmp_path / "team.db-shm"):
        if extra.exists():
            assert stat.S_IMODE(extra.stat().st_mode) == 0o600, extra
    people = edge.People(db)
    try:
        assert people._all("PRAGMA journal_mode")[0][0] == "wal"
    finally:
        people.close()
    # A file left too open is closed to others when opened.
    db.chmod(0o644)
    edge.People(db).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_admin_refuses_a_request_that_is_a_link_or_not_a_regular_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OCC_EDGE_TEAM_DB", str(tmp_path / "team.db"))
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"op": "list"}))
    link = tmp_path / "admin-link.json"
    link.symlink_to(target)
    fifo = tmp_path / "admin-fifo.json"
    os.mkfifo(fifo)
    for path in (link, fifo, tmp_path, tmp_path / "missing.json"):
        assert edge.admin_main([str(path)]) == 1, path
        answer = json.loads(capsys.readouterr().out)
        assert set(answer) == {"error"}, path
    assert link.is_symlink() and target.read_text() == json.dumps({"op": "list"})
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert edge.admin_main([]) == 1 and "usage" in capsys.readouterr().out


BAD_REQUESTS = [
    ({"op": "promote", "name": "alice"}, "unknown op"),
    ({"name": "alice"}, "unknown op"),
    ({"op": "disable", "name": "Alice"}, "name"),
    ({"op": "disable", "name": "1alice"}, "name"),
    ({"op": "disable", "name": "alice-"}, "name"),
    ({"op": "disable", "name": "a" * 31}, "name"),
    ({"op": "disable", "name": "al_ice"}, "name"),
    ({"op": "disable", "name": "alice\n"}, "name"),
    ({"op": "disable", "name": ""}, "name"),
    ({"op": "disable", "name": ["alice"]}, "name"),
    ({"op": "disable"}, "name"),
    ({"op": "passwd", "name": "alice", "hash": "plain password"}, "bcrypt"),
    ({"op": "passwd", "name": "alice", "hash": "$2b$04$short"}, "bcrypt"),
    ({"op": "passwd", "name": "alice", "hash": "a" * 64}, "bcrypt"),
    ({"op": "passwd", "name": "alice"}, "bcrypt"),
    ({"op": "put", "name": "carol", "internal_password": "p", "upstream": "a:1"}, "bcrypt"),
    ({"op": "passwd", "name": "nobody", "hash": "$2b$04$" + "a" * 53}, "no such person"),
    ({"op": "disable", "name": "nobody"}, "no such person"),
    ({"op": "enable", "name": "nobody"}, "no such person"),
    ({"op": "internal", "name": "nobody", "internal_password": "p"}, "no such person"),
    ({"op": "internal", "name": "alice", "internal_password": ""}, "internal_password"),
    ({"op": "internal", "name": "alice", "internal_password": "a b"}, "internal_password"),
    ({"op": "remove", "name": "nobody"}, "no such person"),
    ("not an object", "not a JSON object"),
]


@pytest.mark.parametrize(("request_", "error"), BAD_REQUESTS)
def test_admin_refuses_bad_requests_and_changes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request_: Any,
    error: str,
) -> None:
    put = {
        "op": "put",
        "name": "alice",
        "hash": hashed(ALICE_PASSWORD),
        "internal_password": "alice-internal-password",
        "upstream": "opencode-cloud-user-alice:4096",
    }
    assert run_admin(tmp_path, put, monkeypatch, capsys)[0] == 0
    before = run_admin(tmp_path, {"op": "list"}, monkeypatch, capsys)
    code, answer = run_admin(tmp_path, request_, monkeypatch, capsys)
    assert code == 1 and set(answer) == {"error"} and error in answer["error"]
    assert not (tmp_path / "admin-request.json").exists()
    assert run_admin(tmp_path, {"op": "list"}, monkeypatch, capsys) == before
    people = edge.People(tmp_path / "team.db")
    try:
        person = people.get("alice")
        assert person is not None and person.hash == put["hash"]
        assert person.internal_password == put["internal_password"]
    finally:
        people.close()


def test_admin_refuses_bad_upstreams_and_emails(team: Team) -> None:
    base = {"op": "put", "name": "carol", "hash": hashed("x"), "internal_password": "p"}
    for upstream in ("", "host", ":4096", "host:0", "host:65536", "a b:1", "h:1\r\nX: y"):
        with pytest.raises(edge.AdminError, match="upstream"):
            team.admin(**base, upstream=upstream)
    for email in (3, "a\nb", "x" * 255):
        with pytest.raises(edge.AdminError, match="email"):
            team.admin(**base, upstream="a:1", email=email)
    with pytest.raises(edge.AdminError, match="admin"):
        team.admin(**base, upstream="a:1", admin="yes")
    assert team.admin_people.get("carol") is None


def test_list_never_tells_hashes_or_internal_passwords(team: Team) -> None:
    team.session("alice", ALICE_PASSWORD)
    answer = team.admin(op="list")
    text = json.dumps(answer)
    for name in ("alice", "bob"):
        person = team.admin_people.get(name)
        assert person is not None
        assert person.hash not in text and person.internal_password not in text
        assert person.generation not in text
        assert person.hash not in repr(person) and person.internal_password not in repr(person)
    fields = {"name", "admin", "email", "disabled", "created", "last_sign_in", "last_seen", "totp"}
    assert [set(p) for p in answer["people"]] == [fields, fields]
    assert [p["name"] for p in answer["people"]] == ["alice", "bob"]
    assert answer["people"][0]["last_sign_in"] == int(team.clock.now)
    assert answer["people"][1]["last_sign_in"] is None


def test_the_admin_command_runs_as_the_door_runs_it(tmp_path: Path) -> None:
    request = write_request(tmp_path, {"op": "list"})
    env = {"PATH": os.environ.get("PATH", ""), "OCC_EDGE_TEAM_DB": str(tmp_path / "team.db")}
    done = subprocess.run(
        [sys.executable, "-I", str(EDGE_FILE), "admin", str(request)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ok": True, "people": []}
    assert not request.exists()
    request = write_request(tmp_path, {"op": "nothing"})
    done = subprocess.run(
        [sys.executable, "-I", str(EDGE_FILE), "admin", str(request)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1 and "unknown op" in json.loads(done.stdout)["error"]


def test_the_single_user_edge_has_no_team_routes(tmp_path: Path) -> None:
    hash_file = tmp_path / "password.bcrypt"
    hash_file.write_text(hashed("x"))
    guard = edge.Guard(hash_file, "opencode", None)
    for path in ("/__occ/ready", "/__occ/starting"):
        request = edge.Request("GET", path, "HTTP/1.1", {"host": "127.0.0.1:3000"})
        assert edge.Handler(guard, request, "local").respond().status == 404


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/__occ/starting?next=/session?a=1&b=2", "/session?a=1&b=2"),  # Caddy's raw URI
        ("/__occ/starting?next=%2Fproject%3Fx%3D1", "/project?x=1"),  # the service's link
        ("/__occ/starting?next=//evil.example/x", "/"),
        ("/__occ/starting?next=%2F%2Fevil.example", "/"),
        ("/__occ/starting", "/"),
    ],
)
def test_the_starting_page_keeps_the_whole_next_and_only_this_site(
    target: str, expected: str
) -> None:
    assert edge.safe_next(edge.starting_next(target)) == expected


# --------------------------------------------------------------------------- attacks by a member


class DrippingInstance:
    """A person's own port held by their agent: it accepts, then sends a byte now and then,
    forever (what a member can do to their own instance)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.upstream = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        instance = self

        class Drip(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                instance.connections += 1
                try:
                    for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                        self.request.sendall(bytes([byte]))
                        time.sleep(0.3)
                except OSError:
                    pass

        return Drip

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_member_whose_instance_drips_cannot_hold_the_login_service(team: Team) -> None:
    dripping = DrippingInstance()
    try:
        team.put("mallory", "mallory's password", "mallory-internal", dripping.upstream)
        mallory = cookie_in(team.login("mallory", "mallory's password"))
        alice = team.session("alice", ALICE_PASSWORD)
        answers: list[int] = []

        def ask() -> None:
            answers.append(team.get("/__occ/ready", mallory).status)

        began = time.monotonic()
        askers = [threading.Thread(target=ask) for _ in range(40)]
        for asker in askers:
            asker.start()
        # Meanwhile everyone else is served at once.
        assert team.verify(alice).status == 200
        assert time.monotonic() - began < 1.5
        for asker in askers:
            asker.join(timeout=10)
        # Each question was answered within the health check's deadline, one check at a
        # time (not one per question), and none of them is "ready".
        assert len(answers) == 40 and set(answers) == {200}
        assert time.monotonic() - began < 4
        assert dripping.connections <= 5, dripping.connections
        assert json.loads(team.get("/__occ/ready", mallory).body)["ready"] is False
    finally:
        dripping.stop()


def test_others_keeping_bcrypt_busy_never_lock_a_person_out_of_their_own_browser(
    tmp_path: Path,
) -> None:
    team = Team(tmp_path, bcrypt_workers=1, bcrypt_queue=0)
    try:
        device = cookie_in(team.login("alice", ALICE_PASSWORD), "device")
        team.stop()
        team.start()  # the memory of proven passwords is gone: bcrypt is needed again
        # Every check is busy (others keep bcrypt's one place taken).
        assert team.guard._places.acquire(blocking=False)
        try:
            for _ in range(15):
                assert team.login("alice", ALICE_PASSWORD, device=device).status == 503
        finally:
            team.guard._places.release()
        assert team.login("alice", ALICE_PASSWORD, device=device).status == 303
    finally:
        team.close()


def test_a_member_minting_device_cookies_gets_few_failures_in_all(team: Team) -> None:
    team.put("mallory", "mallory's password", "mallory-internal", team.instances["bob"].upstream)
    devices = [
        cookie_in(team.login("mallory", "mallory's password", address=GUESSER), "device")
        for _ in range(8)
    ]
    failures = 0
    for attempt in range(80):
        answer = team.login("mallory", f"wrong {attempt}", device=devices[attempt % 8])
        if answer.status == 429:
            break
        assert answer.status == 401
        failures += 1
    assert failures == 10 * edge.PERSON_DEVICE_BUCKETS
    # alice's own browser is not held up by it.
    alice_device = cookie_in(team.login("alice", ALICE_PASSWORD), "device")
    assert team.login("alice", ALICE_PASSWORD, device=alice_device).status == 303


def test_signing_in_again_and_again_does_not_push_failures_out_of_the_log(team: Team) -> None:
    team.put("mallory", "mallory's password", "mallory-internal", team.instances["bob"].upstream)
    assert team.login("alice", "a guess", address=GUESSER).status == 401
    for _ in range(edge.MAX_LOG_SIGN_INS + 30):
        assert team.login("mallory", "mallory's password").status == 303
    events = team.admin_people.events()
    assert any(name == "alice" and event == "failed" for _, name, event, _ in events)
    mallory_sign_ins = [e for e in events if e[1] == "mallory" and e[2] == "signed-in"]
    assert len(mallory_sign_ins) == edge.MAX_LOG_SIGN_INS


def test_a_busy_instance_that_answered_is_never_turned_away_by_a_slow_check(
    team: Team,
) -> None:
    alice = team.session("alice", ALICE_PASSWORD)
    assert team.verify(alice).status == 200  # it answered
    team.instances["alice"].hang = True  # now slow to answer its health check (busy)
    team.clock.now += 3600
    began = time.monotonic()
    for _ in range(5):
        assert team.verify(alice).status == 200
    assert time.monotonic() - began < 1.0  # and nobody waited for a check
