"""The edge's authentication service (sandbox/edge.py), served for real on loopback.

Caddy is not here: the tests ask `/__occ/verify` the way Caddy's `forward_auth` does
(the original method and URI in `X-Forwarded-*` headers) and post the login form.
"""

from __future__ import annotations

import base64
import http.client
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import bcrypt
import pytest

EDGE_FILE = Path(__file__).resolve().parents[2] / "src/opencode_cloud/sandbox/edge.py"
PASSWORD = "correct horse battery staple"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("occ_edge", EDGE_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


edge = _load()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def write_hash(path: Path, password: str) -> None:
    path.write_bytes(bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)) + b"\n")


class Edge:
    def __init__(self, tmp: Path, clock: Clock) -> None:
        self.hash_file = tmp / "password.bcrypt"
        write_hash(self.hash_file, PASSWORD)
        self.state = tmp / "state"
        self.clock = clock
        self.start()

    def start(self) -> None:
        self.guard = edge.Guard(self.hash_file, "opencode", self.state, clock=self.clock)
        self.server = edge.serve(self.guard, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: str | None = None,
    ) -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        all_headers = {"Host": "127.0.0.1:3000", "X-Forwarded-For": "203.0.113.9"}
        all_headers.update(headers or {})
        if body is not None:
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=all_headers)
        answer = connection.getresponse()
        text = answer.read().decode()
        connection.close()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, text

    def verify(self, **headers: str) -> tuple[int, dict[str, str], str]:
        base = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/session"}
        base.update({k.replace("_", "-"): v for k, v in headers.items()})
        return self.request("GET", "/__occ/verify", base)

    def basic(self, password: str, user: str = "opencode") -> int:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return self.verify(Authorization=f"Basic {token}")[0]

    def login(self, password: str, **headers: str) -> tuple[int, dict[str, str], str]:
        from urllib.parse import urlencode

        form = urlencode({"username": "opencode", "password": password, "next": "/project/x"})
        return self.request("POST", "/__occ/login", headers, form)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Edge]:
    running = Edge(tmp_path, Clock())
    yield running
    running.stop()


def cookie_of(headers: dict[str, str]) -> str:
    return headers["set-cookie"].split(";")[0]


def test_without_credentials_scripts_get_a_basic_challenge_and_browsers_the_login_page(
    served: Edge,
) -> None:
    status, headers, _ = served.verify()
    assert status == 401 and headers["www-authenticate"].startswith("Basic ")
    # The web UI's own requests: no challenge (the browser would pop up its dialog).
    status, headers, _ = served.verify(Sec_Fetch_Mode="cors")
    assert status == 401 and "www-authenticate" not in headers
    status, headers, _ = served.verify(Accept="text/html", X_Forwarded_Uri="/p?a=1")
    assert status == 303 and headers["location"] == "/__occ/login?next=/p%3Fa%3D1"
    status, _, page = served.request("GET", "/__occ/login?next=/p")
    assert status == 200
    assert 'autocomplete="current-password"' in page and 'name="next" value="/p"' in page


def test_basic_credentials_are_checked_against_the_hash(served: Edge) -> None:
    assert served.basic(PASSWORD) == 200
    assert served.basic(PASSWORD) == 200  # remembered: no second bcrypt
    assert served.basic("wrong") == 401
    assert served.basic(PASSWORD, user="root") == 401


def test_the_login_form_sets_a_private_cookie_and_logout_voids_it(served: Edge) -> None:
    status, headers, _ = served.login(PASSWORD, X_Forwarded_Proto="https")
    assert status == 303 and headers["location"] == "/project/x"
    attributes = [a.strip() for a in headers["set-cookie"].split(";")]
    assert attributes[0].startswith("occ_session_3000=")
    assert {"HttpOnly", "Secure", "SameSite=Lax", "Path=/"} <= set(attributes)
    cookie = cookie_of(headers)
    assert served.verify(Cookie=cookie)[0] == 200
    status, headers, _ = served.request("POST", "/__occ/logout", {"Cookie": cookie}, "")
    assert status == 303 and "Max-Age=0" in headers["set-cookie"]
    assert served.verify(Cookie=cookie)[0] == 401  # even a copy kept elsewhere


def test_a_wrong_password_shows_the_form_again(served: Edge) -> None:
    status, headers, page = served.login("nope")
    assert status == 401 and "set-cookie" not in headers
    assert "Wrong user name or password" in page


def test_the_cookie_is_not_secure_over_plain_http_beyond_loopback(served: Edge) -> None:
    _, headers, _ = served.login(PASSWORD, Host="192.0.2.4:3000")
    assert "Secure" not in headers["set-cookie"]  # a browser would drop it
    _, headers, _ = served.login(PASSWORD, Host="127.0.0.1:3000")
    assert "Secure" in headers["set-cookie"]  # loopback counts as secure


def test_only_paths_of_this_site_are_followed_after_login() -> None:
    assert edge.safe_next("/session/1?x=2") == "/session/1?x=2"
    for target in ("//evil.example", "https://evil.example", "/\\evil", "", None, "/__occ/x"):
        assert edge.safe_next(target) == "/"


def test_ten_failures_a_minute_lock_the_address_until_the_window_passes(served: Edge) -> None:
    assert served.basic(PASSWORD) == 200  # proven right once: no exception for it later
    for _ in range(10):
        assert served.basic("guess") == 401
    status, headers, _ = served.verify(
        Authorization="Basic " + base64.b64encode(b"opencode:guess").decode()
    )
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 60
    assert served.basic(PASSWORD) == 429  # not even checked
    assert served.login(PASSWORD)[0] == 429
    # Another address is not locked.
    token = base64.b64encode(f"opencode:{PASSWORD}".encode()).decode()
    other = {"Authorization": f"Basic {token}", "X-Forwarded-For": "198.51.100.7"}
    assert served.request("GET", "/__occ/verify", other)[0] == 200
    served.clock.now += 61
    assert served.basic(PASSWORD) == 200


def test_a_session_keeps_working_during_a_lockout(served: Edge) -> None:
    cookie = cookie_of(served.login(PASSWORD)[1])
    for _ in range(12):
        served.basic("guess")
    assert served.verify(Cookie=cookie)[0] == 200


def test_a_new_hash_voids_every_session_and_the_old_password(served: Edge) -> None:
    cookie = cookie_of(served.login(PASSWORD)[1])
    assert served.basic(PASSWORD) == 200
    write_hash(served.hash_file, "new password")
    assert served.verify(Cookie=cookie)[0] == 401
    assert served.basic(PASSWORD) == 401
    assert served.basic("new password") == 200


def test_sessions_survive_a_restart_of_the_edge(served: Edge) -> None:
    cookie = cookie_of(served.login(PASSWORD)[1])
    served.stop()
    served.start()
    assert served.verify(Cookie=cookie)[0] == 200
    stored = (served.state / "sessions.json").read_text()
    assert cookie.split("=", 1)[1] not in stored  # kept as digests only
    assert (served.state / "sessions.json").stat().st_mode & 0o077 == 0


def test_sessions_expire(served: Edge) -> None:
    cookie = cookie_of(served.login(PASSWORD)[1])
    served.clock.now += edge.SESSION_SECONDS + 1
    assert served.verify(Cookie=cookie)[0] == 401


def test_cookies_of_two_instances_do_not_collide() -> None:
    assert edge.cookie_name("127.0.0.1:3000") != edge.cookie_name("127.0.0.1:3001")
    assert edge.cookie_name("box.lan") == "occ_session_default"
