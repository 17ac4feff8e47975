"""The edge's authentication service (sandbox/edge.py), served for real on loopback.

Caddy is not here: the tests ask `/__occ/verify` the way Caddy's `forward_auth` does
(the original method and URI in `X-Forwarded-*` headers) and post the login form. What
is about the bytes of requests (where one ends, what a header may hold) is written by
hand on raw sockets: HTTP client libraries would tidy the attacks away.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import re
import select
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode

import bcrypt
import pytest

EDGE_FILE = Path(__file__).resolve().parents[2] / "src/opencode_cloud/sandbox/edge.py"
PASSWORD = "correct horse battery staple"
HOST = "127.0.0.1:3000"
ORIGIN = "http://127.0.0.1:3000"
ADDRESS = "203.0.113.9"
# Any value of the right shape works as the form token: it only has to match the cookie.
TOKEN = "A" * 32
CSRF_COOKIE = f"occ_csrf_3000={TOKEN}"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("occ_edge", EDGE_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


edge = _load()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def write_hash(path: Path, password: str, rounds: int = 4) -> None:
    path.write_bytes(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)) + b"\n")


def basic_header(password: str, user: str = "opencode") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Edge:
    def __init__(
        self,
        tmp: Path,
        clock: Clock,
        rounds: int = 4,
        guard_options: dict[str, Any] | None = None,
        **server_options: Any,
    ) -> None:
        self.hash_file = tmp / "password.bcrypt"
        if not self.hash_file.exists():
            write_hash(self.hash_file, PASSWORD, rounds)
        self.state = tmp / "state"
        self.clock = clock
        self.guard_options = guard_options or {}
        self.server_options = server_options
        self.start()

    def start(self) -> None:
        self.guard = edge.Guard(
            self.hash_file, "opencode", self.state, clock=self.clock, **self.guard_options
        )
        self.server = edge.serve(self.guard, "127.0.0.1", 0, **self.server_options)
        self.port = self.server.server_address[1]
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

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
        """Status, headers (lower-case names; several Set-Cookie one per line) and body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        all_headers = {"Host": HOST, "X-Forwarded-For": ADDRESS}
        all_headers.update(headers or {})
        if body is not None:
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=all_headers)
        answer = connection.getresponse()
        text = answer.read().decode()
        connection.close()
        found: dict[str, str] = {}
        for name, value in answer.getheaders():
            name = name.lower()
            found[name] = f"{found[name]}\n{value}" if name in found else value
        return answer.status, found, text

    def verify(self, **headers: str) -> tuple[int, dict[str, str], str]:
        base = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/session"}
        base.update({k.replace("_", "-"): v for k, v in headers.items()})
        return self.request("GET", "/__occ/verify", base)

    def basic(self, password: str, user: str = "opencode", **headers: str) -> int:
        return self.verify(Authorization=basic_header(password, user), **headers)[0]

    def form_token(self, headers: dict[str, str]) -> tuple[str, str]:
        """The login page's form token and the cookie that goes with it."""
        _, answer, page = self.request("GET", "/__occ/login", headers)
        found = re.search(r'name="csrf" value="([^"]*)"', page)
        return (found.group(1) if found else ""), cookie_of(answer, "csrf")

    def login(
        self, password: str, cookies: tuple[str, ...] = (), **headers: str
    ) -> tuple[int, dict[str, str], str]:
        """Sign in as a browser does: the page, then the form, from this very site."""
        named = {k.replace("_", "-"): v for k, v in headers.items()}
        token, csrf = self.form_token(named)
        scheme = named.get("X-Forwarded-Proto", "http")
        named.setdefault("Origin", f"{scheme}://{named.get('Host', HOST)}")
        named["Cookie"] = "; ".join(c for c in (*cookies, csrf) if c)
        form = {"username": "opencode", "password": password, "next": "/project/x"}
        return self.request("POST", "/__occ/login", named, urlencode({**form, "csrf": token}))

    def logout(self, cookie: str, **headers: str) -> tuple[int, dict[str, str], str]:
        named = {"Cookie": cookie, "Origin": ORIGIN}
        named.update({k.replace("_", "-"): v for k, v in headers.items()})
        return self.request("POST", "/__occ/logout", named, "")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Edge]:
    running = Edge(tmp_path, Clock())
    yield running
    running.stop()


def set_cookies(headers: dict[str, str]) -> dict[str, str]:
    """The cookies an answer sets: name to the whole header."""
    lines = headers.get("set-cookie", "").split("\n")
    return {line.split("=", 1)[0]: line for line in lines if line}


def cookie_of(headers: dict[str, str], kind: str = "session") -> str:
    """`name=value` of the edge's cookie of that kind in an answer, or ""."""
    for name, line in set_cookies(headers).items():
        if name.startswith(f"occ_{kind}_"):
            return line.split(";")[0]
    return ""


# --------------------------------------------------------------------------- raw HTTP


def raw(
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | str = b"",
    cookies: tuple[str, ...] = (),
    address: str | None = ADDRESS,
) -> bytes:
    """One request's bytes, as Caddy would send them on its connection to the edge
    (without X-Forwarded-For when `address` is None)."""
    data = body.encode() if isinstance(body, str) else body
    headers = headers or {}
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    if address is not None:
        lines.append(f"X-Forwarded-For: {address}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if cookies:
        lines.append("Cookie: " + "; ".join(cookies))
    if (data or method == "POST") and "Content-Length" not in headers:
        lines.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def raw_login(password: str, next_raw: str = "/", address: str | None = ADDRESS) -> bytes:
    """A complete, valid sign-in (form token, cookie and Origin), `next` as it is sent."""
    form = f"username=opencode&password={quote(password)}&next={next_raw}&csrf={TOKEN}"
    headers = {"Origin": ORIGIN, "Content-Type": "application/x-www-form-urlencoded"}
    return raw("POST", "/__occ/login", headers, form, (CSRF_COOKIE,), address)


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]  # lower-case names, in order
    body: bytes

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    @property
    def closes(self) -> bool:
        return any("close" in value.lower() for value in self.all("connection"))


def read_answer(stream: BinaryIO) -> Answer | None:
    """The next answer on a connection; None when it was closed instead."""
    try:
        line = stream.readline()
        if not line:
            return None
        status = int(line.split(b" ")[1])
        headers = []
        while (line := stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        lengths = [int(v) for k, v in headers if k == "content-length"]
        body = stream.read(lengths[0]) if lengths else b""
    except (OSError, ValueError, IndexError):
        return None
    return Answer(status, headers, body)


def connect(port: int, timeout: float = 5) -> tuple[socket.socket, BinaryIO]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock, sock.makefile("rb")


def exchange(port: int, data: bytes) -> Answer | None:
    sock, stream = connect(port)
    with sock, stream:
        sock.sendall(data)
        return read_answer(stream)


class Upstream:
    """Caddy's side of its connections to the edge: one is kept open and used for the
    next request, whoever sends it, until the edge says it closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.stream: BinaryIO | None = None

    def send(self, data: bytes) -> Answer | None:
        if self.sock is None:
            self.sock, self.stream = connect(self.port)
        assert self.stream
        try:
            self.sock.sendall(data)
            answer = read_answer(self.stream)
        except OSError:
            answer = None
        if answer is None or answer.closes:
            self.close()
        return answer

    def close(self) -> None:
        if self.sock:
            self.sock.close()
        if self.stream:
            self.stream.close()
        self.sock = self.stream = None


def trickle(sock: socket.socket, data: bytes, seconds: float = 3.0) -> None:
    """Send `data` a byte every 0.1 s, until the edge answers or `seconds` pass."""
    started = time.monotonic()
    for byte in data:
        if time.monotonic() - started > seconds:
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return
        if select.select([sock], [], [], 0.1)[0]:
            return


def closed(stream: BinaryIO) -> bool:
    """Whether the edge closed the connection (rather than waiting for more)."""
    try:
        return stream.read(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# --------------------------------------------------------------------------- sign-in


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


def test_the_login_form_sets_private_cookies_and_logout_voids_the_session(served: Edge) -> None:
    status, headers, _ = served.login(PASSWORD, X_Forwarded_Proto="https")
    assert status == 303 and headers["location"] == "/project/x"
    cookies = set_cookies(headers)
    session = [a.strip() for a in cookies["occ_session_3000"].split(";")]
    assert {"HttpOnly", "Secure", "SameSite=Lax", "Path=/"} <= set(session)
    # The device cookie: for the edge's own pages only, never sent along from elsewhere.
    device = [a.strip() for a in cookies["occ_device_3000"].split(";")]
    assert {"HttpOnly", "Secure", "SameSite=Strict", "Path=/__occ/"} <= set(device)
    cookie = cookie_of(headers)
    assert served.verify(Cookie=cookie)[0] == 200
    status, headers, _ = served.logout(cookie)
    assert status == 303 and headers["location"] == "/__occ/login?signed_out=1"
    assert "Max-Age=0" in set_cookies(headers)["occ_session_3000"]
    assert served.verify(Cookie=cookie)[0] == 401  # even a copy kept elsewhere


def test_a_wrong_password_shows_the_form_again(served: Edge) -> None:
    status, headers, page = served.login("nope")
    assert status == 401 and not cookie_of(headers) and not cookie_of(headers, "device")
    assert "Wrong user name or password" in page


def test_the_cookie_is_not_secure_over_plain_http_beyond_loopback(served: Edge) -> None:
    _, headers, _ = served.login(PASSWORD, Host="192.0.2.4:3000")
    assert "Secure" not in set_cookies(headers)["occ_session_3000"]  # a browser would drop it
    _, headers, _ = served.login(PASSWORD, Host="127.0.0.1:3000")
    assert "Secure" in set_cookies(headers)["occ_session_3000"]  # loopback counts as secure


def test_a_new_hash_voids_every_session_and_the_old_password(served: Edge) -> None:
    cookie = cookie_of(served.login(PASSWORD)[1])
    assert served.basic(PASSWORD) == 200
    write_hash(served.hash_file, "new password")
    assert served.verify(Cookie=cookie)[0] == 401
    assert served.basic(PASSWORD) == 401
    assert served.basic("new password") == 200


def test_a_sign_in_checked_against_a_replaced_password_gets_no_session(
    served: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempt = served.guard.attempt

    def then_rotated(*args: Any, **kwargs: Any) -> Any:
        outcome = attempt(*args, **kwargs)
        write_hash(served.hash_file, "new password")  # `occ auth rotate` lands here
        return outcome

    monkeypatch.setattr(served.guard, "attempt", then_rotated)
    status, headers, page = served.login(PASSWORD)
    cookie = cookie_of(headers)
    assert not cookie or served.verify(Cookie=cookie)[0] == 401, "a session for the old password"
    assert status == 401 and "Wrong user name or password" in page
    assert not cookie_of(headers, "device")


def test_a_password_replaced_while_it_is_checked_is_wrong(
    served: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = served.guard._check
    rotations: list[str] = []

    def rotated_meanwhile(*args: Any) -> bool:
        right = bool(check(*args))
        if not rotations:  # `occ auth rotate` lands during the first check only
            rotations.append("new password")
            write_hash(served.hash_file, "new password")
        return right

    monkeypatch.setattr(served.guard, "_check", rotated_meanwhile)
    status, headers, _ = served.login(PASSWORD)
    cookie = cookie_of(headers)
    assert not cookie or served.verify(Cookie=cookie)[0] == 401, "a session for the old password"
    assert status == 401
    assert served.login("new password")[0] == 303


def test_basic_credentials_checked_against_a_replaced_password_are_refused_and_forgotten(
    served: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = served.guard._check
    rotations: list[str] = []

    def rotated_meanwhile(*args: Any) -> bool:
        right = bool(check(*args))
        if not rotations:
            rotations.append("new password")
            write_hash(served.hash_file, "new password")
        return right

    monkeypatch.setattr(served.guard, "_check", rotated_meanwhile)
    assert served.basic(PASSWORD) == 401
    assert served.basic(PASSWORD) == 401
    assert served.basic("new password") == 200


def test_sessions_are_made_for_the_password_an_attempt_was_checked_against(
    tmp_path: Path,
) -> None:
    hash_file = tmp_path / "password.bcrypt"
    write_hash(hash_file, PASSWORD)
    guard = edge.Guard(hash_file, "opencode", None)
    outcome, generation = guard.attempt("192.0.2.1", "opencode", PASSWORD)
    assert outcome == "ok" and guard.new_session(generation)
    write_hash(hash_file, "new password")
    assert guard.new_session(generation) is None and guard.sign_in(generation) is None
    assert guard.attempt("192.0.2.1", "opencode", PASSWORD)[0] == "wrong"


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
    assert edge.cookie_name("box.lan:3000", "device") == "occ_device_3000"


# --------------------------------------------------------------------------- framing


def test_a_body_sent_with_a_get_is_read_and_never_answered_as_a_request(served: Edge) -> None:
    upstream = Upstream(served.port)
    hidden = raw_login(PASSWORD)  # a complete, valid sign-in
    for path in ("/__occ/login", "/__occ/verify", "/nowhere"):
        answer = upstream.send(raw("GET", path, body=hidden, cookies=(CSRF_COOKIE,)))
        assert answer and answer.status in (200, 401, 404), path
        assert not answer.all("set-cookie"), path
        # The next request on that connection gets its own answer, not the hidden one's.
        answer = upstream.send(raw("GET", "/__occ/verify"))
        assert answer and answer.status == 401 and not answer.all("set-cookie"), path
    upstream.close()


def test_after_a_body_too_large_the_next_request_gets_its_own_answer(served: Edge) -> None:
    upstream = Upstream(served.port)
    for path in ("/__occ/login", "/__occ/logout"):
        big = b"x" * (edge.MAX_BODY + 50)
        answer = upstream.send(raw("POST", path, {"Origin": ORIGIN}, big))
        assert answer and answer.status == 413 and answer.closes, path
        # Another client's request: Caddy sends it on a connection of its pool.
        answer = upstream.send(raw("GET", "/__occ/verify"))
        assert answer and answer.status == 401, path
    upstream.close()


def test_an_answer_meant_for_one_user_never_reaches_another(served: Edge) -> None:
    upstream = Upstream(served.port)
    attacker = "198.51.100.66"
    smuggled = raw("GET", "/__occ/verify", {"X-Forwarded-For": attacker})
    answer = upstream.send(raw("GET", "/nowhere", body=smuggled))
    assert answer and answer.status == 404
    # Someone signs in; Caddy happens to send that on the same connection.
    answer = upstream.send(raw_login(PASSWORD, address="192.0.2.10"))
    assert answer and answer.status == 303
    assert any(c.startswith("occ_session_3000=") for c in answer.all("set-cookie"))
    # The attacker's next request gets the attacker's answer, with no one's cookie.
    answer = upstream.send(raw("GET", "/__occ/verify"))
    assert answer and answer.status == 401 and not answer.all("set-cookie")
    upstream.close()


def test_a_chunked_body_is_refused_and_its_connection_closed(served: Edge) -> None:
    upstream = Upstream(served.port)
    smuggled = raw("GET", "/__occ/verify")
    chunked = (
        raw("POST", "/__occ/login", {"Transfer-Encoding": "chunked"}).replace(
            b"Content-Length: 0\r\n", b""
        )
        + f"{len(smuggled):x}\r\n".encode()
        + smuggled
        + b"\r\n0\r\n\r\n"
    )
    answer = upstream.send(chunked)
    assert answer and answer.status == 400 and answer.closes
    answer = upstream.send(raw_login(PASSWORD))
    assert answer and answer.status == 303
    assert any(c.startswith("occ_session_3000=") for c in answer.all("set-cookie"))
    upstream.close()


AMBIGUOUS = {
    "transfer-encoding": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    "both lengths": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nhello",
    "signed length": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
    "length list": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
    "length twice": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
    b"Content-Length: 5\r\n\r\nhello",
    "lengths differ": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
    b"Content-Length: 0\r\n\r\nhello",
    "hex length": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
    "wide digits": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \uff15\r\n\r\nhello".encode(),
    "folded line": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n Content-Length: 5\r\n\r\nhello",
    "no colon": b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length 5\r\n\r\nhello",
    "space before colon": b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello",
    "bare LF": b"GET / HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello",
    "bare CR": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rContent-Length: 5\r\n\r\nhello",
    "NUL in a value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
    "HTTP/2.0": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "HTTP/1.2": b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    "no version": b"GET /\r\nHost: a\r\n\r\n",
    "absolute form": b"GET http://evil.example/ HTTP/1.1\r\nHost: a\r\n\r\n",
    "two hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
}


@pytest.mark.parametrize("name", list(AMBIGUOUS))
def test_requests_two_readers_could_frame_differently_are_refused(served: Edge, name: str) -> None:
    sock, stream = connect(served.port)
    with sock, stream:
        # What follows is a request of its own only if the edge misread the first.
        sock.sendall(AMBIGUOUS[name] + raw("GET", "/__occ/verify"))
        answer = read_answer(stream)
        assert answer and answer.status in (400, 505) and answer.closes
        assert closed(stream)


def test_pipelined_requests_get_their_own_answers_in_order(served: Edge) -> None:
    sock, stream = connect(served.port)
    with sock, stream:
        sock.sendall(
            raw("GET", "/__occ/verify")
            + raw("GET", "/nowhere", body="a body where none belongs")
            + raw("POST", "/__occ/verify", body="x" * 1000)
            + raw("GET", "/__occ/login", cookies=(CSRF_COOKIE,))
            + raw("POST", "/__occ/login", {"Origin": ORIGIN}, "username=a&password=b")
        )
        answers = [read_answer(stream) for _ in range(5)]
        assert [answer.status if answer else None for answer in answers] == [
            401,
            404,
            405,
            200,
            403,
        ]
        assert not any(answer and answer.closes for answer in answers)
        sock.sendall(raw("GET", "/__occ/verify"))  # still open for more
        answer = read_answer(stream)
        assert answer and answer.status == 401


def test_no_header_the_edge_writes_can_hold_a_line_break() -> None:
    for value in ("/\r\nSet-Cookie: a=b", "/\nx", "/\rx", "/\x00", "/\u2028"):
        response = edge.Response(303, headers=[("Location", value)])
        with pytest.raises(ValueError):
            edge.encode_response(response, head_only=False, close=False)


# --------------------------------------------------------------------------- next


PLANTED = [
    "/%0d%0aSet-Cookie:%20occ_session_3000=planted",
    "/%0aSet-Cookie:%20planted=1",
    "/%09/evil.example",
    "/%5C/evil.example",
    "/%5Cevil.example",
    "%5C%5Cevil.example",
    "/%2F%2Fevil.example",
    "%2F%2Fevil.example",
    "//evil.example",
    "https://evil.example/",
    "/%E2%80%A8/evil.example",
    "/%C2%85/evil.example",
    "/%E2%80%AE/evil.example",
    "/%00/evil.example",
    "/%20/evil.example",
    "/%E3%80%80/evil.example",
    "/__occ/logout",
]


@pytest.mark.parametrize("planted", PLANTED)
def test_next_leads_to_this_site_only_and_never_into_the_headers(
    served: Edge, planted: str
) -> None:
    session = cookie_of(served.login(PASSWORD)[1])
    # Signed in already: the login page sends the browser on at once.
    page = exchange(served.port, raw("GET", f"/__occ/login?next={planted}", cookies=(session,)))
    assert page and page.status == 303
    assert page.all("location") == ["/"] and not page.all("set-cookie")
    # Signing in: the form's field.
    answer = exchange(served.port, raw_login(PASSWORD, next_raw=planted))
    assert answer and answer.status == 303 and answer.all("location") == ["/"]
    cookies = answer.all("set-cookie")
    names = sorted(c.split("=", 1)[0] for c in cookies)
    assert names == ["occ_device_3000", "occ_session_3000"]
    assert not any("planted" in c for c in cookies)


def test_only_paths_of_this_site_are_followed_after_login() -> None:
    assert edge.safe_next("/session/1?x=2") == "/session/1?x=2"
    assert edge.safe_next("/projekt/\u00fcber") == "/projekt/%C3%BCber"  # fits a header
    assert edge.safe_next("/a%20b") == "/a%20b"  # encoded already: left as it is
    for target in (
        "//evil.example",
        "https://evil.example",
        "/\\evil",
        "/\t/evil.example",
        "/\u2028/evil.example",
        "/\ufeff/x",
        "",
        None,
        "/__occ/x",
        "/__OCC/logout",
    ):
        assert edge.safe_next(target) == "/"


# --------------------------------------------------------------------------- guessing


def test_ten_failures_a_minute_lock_the_address_until_the_window_passes(served: Edge) -> None:
    assert served.basic(PASSWORD) == 200  # proven right once: no exception for it later
    for _ in range(10):
        assert served.basic("guess") == 401
    status, headers, _ = served.verify(Authorization=basic_header("guess"))
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 60
    assert served.basic(PASSWORD) == 429  # not even checked
    assert served.login(PASSWORD)[0] == 429
    # Another address is not locked.
    assert served.basic(PASSWORD, X_Forwarded_For="198.51.100.7") == 200
    served.clock.now += 61
    assert served.basic(PASSWORD) == 200


def test_a_session_keeps_working_during_a_lockout(served: Edge) -> None:
    cookie = cookie_of(served.login(PASSWORD)[1])
    for _ in range(12):
        served.basic("guess")
    assert served.verify(Cookie=cookie)[0] == 200


def test_concurrent_guesses_cannot_overtake_the_count(tmp_path: Path) -> None:
    running = Edge(tmp_path, Clock(), rounds=10, max_connections=256)
    # (time enough for 200 bcrypt checks, when each guess is checked)
    connections = [connect(running.port, timeout=60) for _ in range(200)]
    ready = threading.Barrier(len(connections))

    def guess(number: int) -> int | None:
        sock, stream = connections[number]
        ready.wait()
        authorization = basic_header(f"guess {number}")
        sock.sendall(raw("GET", "/__occ/verify", {"Authorization": authorization}))
        answer = read_answer(stream)
        return answer.status if answer else None

    try:
        with ThreadPoolExecutor(len(connections)) as pool:
            statuses = list(pool.map(guess, range(len(connections))))
    finally:
        for sock, stream in connections:
            stream.close()
            sock.close()
        running.stop()
    assert 1 <= statuses.count(401) <= 10, statuses
    assert set(statuses) <= {401, 429, 503}


def test_a_locked_client_gets_429_without_its_password_being_checked(
    served: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert served.basic(PASSWORD) == 200  # remembered as right
    for _ in range(10):
        served.basic("guess")
    checked: list[str] = []
    check = served.guard._check

    def counted(username: str, password: str, *rest: Any) -> bool:
        checked.append(password)
        return bool(check(username, password, *rest))

    monkeypatch.setattr(served.guard, "_check", counted)
    right = served.verify(Authorization=basic_header(PASSWORD))
    wrong = served.verify(Authorization=basic_header("another guess"))
    assert right[0] == wrong[0] == 429 and right[2] == wrong[2]
    assert served.login(PASSWORD)[0] == 429
    assert checked == []


def test_a_browser_that_signed_in_before_is_not_locked_out_by_others(served: Edge) -> None:
    device = cookie_of(served.login(PASSWORD)[1], "device")
    # Someone else guesses from the same address (behind Docker's proxy, everyone's).
    for _ in range(10):
        served.basic("guess")
    assert served.basic(PASSWORD) == 429
    assert served.login(PASSWORD)[0] == 429  # a browser without a device cookie
    status, headers, _ = served.login(PASSWORD, cookies=(device,))
    assert status == 303 and cookie_of(headers)
    assert served.verify(Cookie=cookie_of(headers))[0] == 200


def test_a_device_counts_its_own_failures_apart_from_its_address(served: Edge) -> None:
    device = cookie_of(served.login(PASSWORD)[1], "device")
    for _ in range(10):
        assert served.login("typo", cookies=(device,))[0] == 401
    status, headers, page = served.login(PASSWORD, cookies=(device,))
    assert status == 429 and "Try again in" in page and int(headers["retry-after"]) <= 60
    assert served.basic(PASSWORD) == 200  # the address was not counted
    served.clock.now += 61
    assert served.login(PASSWORD, cookies=(device,))[0] == 303


def test_device_cookies_are_signed(served: Edge) -> None:
    device = cookie_of(served.login(PASSWORD)[1], "device")
    for _ in range(10):
        served.basic("guess")
    name, value = device.split("=", 1)
    forged = f"{name}={value[:-1]}{'0' if value[-1] != '0' else '1'}"
    assert served.login(PASSWORD, cookies=(forged,))[0] == 429
    assert served.login(PASSWORD, cookies=(f"{name}=made-up.0123",))[0] == 429
    assert served.login(PASSWORD, cookies=(f"{name}={value.split('.')[0]}.\u00e9",))[0] == 429
    assert served.login(PASSWORD, cookies=(device,))[0] == 303


def test_after_a_rotation_a_browser_that_signed_in_before_can_sign_in_during_a_lockout(
    served: Edge,
) -> None:
    device = cookie_of(served.login(PASSWORD)[1], "device")
    # Someone guesses from the shared address (Docker's proxy); the owner rotates.
    for _ in range(10):
        served.basic("guess")
    write_hash(served.hash_file, "new password")
    assert served.login("new password")[0] == 429  # a browser without a device cookie
    status, headers, _ = served.login("new password", cookies=(device,))
    assert status == 303 and served.verify(Cookie=cookie_of(headers))[0] == 200
    # The device cookie lets nobody in by itself: the old password is wrong with it too.
    assert served.login(PASSWORD, cookies=(device,))[0] == 401


def test_device_cookies_are_void_without_the_key_that_signed_them(served: Edge) -> None:
    device = cookie_of(served.login(PASSWORD)[1], "device")
    served.stop()
    (served.state / "device.key").unlink()
    served.start()
    for _ in range(10):
        served.basic("guess")
    assert served.login(PASSWORD, cookies=(device,))[0] == 429


def test_device_cookies_survive_a_restart_of_the_edge(served: Edge) -> None:
    device = cookie_of(served.login(PASSWORD)[1], "device")
    served.stop()
    served.start()
    for _ in range(10):
        served.basic("guess")
    assert served.login(PASSWORD, cookies=(device,))[0] == 303
    assert (served.state / "device.key").stat().st_mode & 0o077 == 0


def test_guesses_from_many_addresses_are_capped_together(tmp_path: Path) -> None:
    clock = Clock()
    running = Edge(tmp_path, clock, guard_options={"max_untrusted_failures": 20})
    try:
        device = cookie_of(running.login(PASSWORD)[1], "device")
        for i in range(20):
            assert running.basic("guess", X_Forwarded_For=f"198.51.100.{i}") == 401
        assert running.basic(PASSWORD, X_Forwarded_For="192.0.2.200") == 429
        assert running.login(PASSWORD, X_Forwarded_For="192.0.2.201")[0] == 429
        assert running.login(PASSWORD, cookies=(device,))[0] == 303
        clock.now += 61
        assert running.basic(PASSWORD, X_Forwarded_For="192.0.2.200") == 200
    finally:
        running.stop()


def test_an_attempt_finding_no_place_among_the_checks_counts_as_a_failure(
    tmp_path: Path,
) -> None:
    hash_file = tmp_path / "password.bcrypt"
    write_hash(hash_file, PASSWORD)
    guard = edge.Guard(hash_file, "opencode", None, bcrypt_workers=1, bcrypt_queue=0)
    assert guard.attempt("192.0.2.1", "opencode", PASSWORD)[0] == "ok"  # remembered now
    entered, release = threading.Event(), threading.Event()
    check = guard._check

    def slow(*args: Any) -> bool:
        entered.set()
        release.wait(5)
        return bool(check(*args))

    guard._check = slow
    outcomes: list[str] = []
    worker = threading.Thread(
        target=lambda: outcomes.append(guard.attempt("192.0.2.2", "opencode", "guess")[0])
    )
    worker.start()
    assert entered.wait(5)
    # The only place is taken: a new guess is not checked, and costs like a wrong one
    # (else it would learn for free that it is not the remembered password).
    for number in range(3):
        assert guard.attempt("192.0.2.3", "opencode", f"guess {number}")[0] == "busy"
    assert guard.attempt("192.0.2.3", "opencode", PASSWORD)[0] == "ok"  # no bcrypt needed
    release.set()
    worker.join()
    assert outcomes == ["wrong"]
    assert guard.limiter.wait([("address 192.0.2.3", 3)]) > 0


def burst(port: int, authorization: str, count: int = 30) -> list[int | None]:
    """`count` requests with the same credentials, sent at the same moment."""
    connections = [connect(port) for _ in range(count)]
    ready = threading.Barrier(count)

    def send(number: int) -> int | None:
        sock, stream = connections[number]
        ready.wait()
        sock.sendall(raw("GET", "/__occ/verify", {"Authorization": authorization}))
        answer = read_answer(stream)
        return answer.status if answer else None

    try:
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(send, range(count)))
    finally:
        for sock, stream in connections:
            stream.close()
            sock.close()


def test_a_clients_first_burst_of_requests_shares_one_check(tmp_path: Path) -> None:
    running = Edge(tmp_path, Clock(), rounds=10, max_connections=256)
    checks: list[str] = []
    check = running.guard._check

    def counted(username: str, password: str, *rest: Any) -> bool:
        checks.append(password)
        return bool(check(username, password, *rest))

    running.guard._check = counted
    try:
        # opencode's client starting: many requests at once, none refused.
        assert burst(running.port, basic_header(PASSWORD)) == [200] * 30
        assert len(checks) < 5
        # The same wrong password many times at once is one guess, not thirty.
        assert burst(running.port, basic_header("one guess")) == [401] * 30
    finally:
        running.stop()


# --------------------------------------------------------------------------- connections


def test_a_slow_body_is_cut_at_its_deadline(tmp_path: Path) -> None:
    running = Edge(tmp_path, Clock(), body_timeout=1.0)
    try:
        sock, stream = connect(running.port)
        with sock, stream:
            sock.sendall(raw("POST", "/__occ/login", {"Content-Length": "100"}))
            started = time.monotonic()
            trickle(sock, b"a" * 100)  # 10 s at this pace
            answer = read_answer(stream)
            took = time.monotonic() - started
    finally:
        running.stop()
    assert answer and answer.status == 408 and answer.closes
    assert took < 2


def test_a_slow_head_is_cut_at_its_deadline(tmp_path: Path) -> None:
    running = Edge(tmp_path, Clock(), header_timeout=1.0)
    try:
        sock, stream = connect(running.port)
        with sock, stream:
            started = time.monotonic()
            trickle(sock, raw("GET", "/__occ/verify"))  # 10 s at this pace
            answer = read_answer(stream)
            took = time.monotonic() - started
    finally:
        running.stop()
    assert answer and answer.status == 408 and answer.closes
    assert took < 2


def test_an_idle_connection_is_closed(tmp_path: Path) -> None:
    running = Edge(tmp_path, Clock(), idle_timeout=0.5)
    try:
        sock, stream = connect(running.port)
        with sock, stream:
            sock.sendall(raw("GET", "/__occ/verify"))
            answer = read_answer(stream)
            assert answer and answer.status == 401 and not answer.closes
            started = time.monotonic()
            assert closed(stream)
            assert time.monotonic() - started < 2
    finally:
        running.stop()


def connection_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def test_slow_clients_neither_take_every_thread_nor_delay_a_sign_in(tmp_path: Path) -> None:
    running = Edge(tmp_path, Clock(), max_connections=8, body_timeout=30, header_timeout=30)
    before = connection_threads()
    slow: list[socket.socket] = []
    try:
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", running.port), timeout=5)
            sock.sendall(raw("POST", "/__occ/login", {"Content-Length": "100"}) + b"a")
            slow.append(sock)
        time.sleep(0.3)
        assert connection_threads() - before <= 8
        started = time.monotonic()
        answer = exchange(running.port, raw_login(PASSWORD))
        assert answer and answer.status == 303
        assert time.monotonic() - started < 2
    finally:
        for sock in slow:
            sock.close()
        running.stop()


def test_when_every_connection_is_being_answered_a_new_one_gets_503_at_once(
    tmp_path: Path,
) -> None:
    running = Edge(tmp_path, Clock(), max_connections=2)
    release = threading.Event()
    check = running.guard._check
    running.guard._check = lambda *args: release.wait(10) and check(*args)
    busy = [connect(running.port) for _ in range(2)]
    try:
        for sock, _ in busy:
            sock.sendall(raw("GET", "/__occ/verify", {"Authorization": basic_header("x")}))
        time.sleep(0.3)
        started = time.monotonic()
        answer = exchange(running.port, raw("GET", "/__occ/verify"))
        assert answer and answer.status == 503 and answer.closes
        assert time.monotonic() - started < 1
        release.set()
        for _, stream in busy:
            answer = read_answer(stream)
            assert answer and answer.status == 401
    finally:
        release.set()
        for sock, stream in busy:
            stream.close()
            sock.close()
        running.stop()


# --------------------------------------------------------------------------- unix socket


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short temporary directory: a unix socket's path holds at most 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="occ-edge-") as name:
        yield Path(name)


def exchange_unix(path: Path, data: bytes) -> Answer | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        with sock.makefile("rb") as stream:
            sock.sendall(data)
            return read_answer(stream)


@contextlib.contextmanager
def serving_unix(tmp: Path, path: Path) -> Iterator[Any]:
    write_hash(tmp / "password.bcrypt", PASSWORD)
    guard = edge.Guard(tmp / "password.bcrypt", "opencode", tmp / "state", clock=Clock())
    server = edge.serve_unix(guard, str(path))
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_the_edge_serves_on_a_unix_socket_of_its_user_only(
    tmp_path: Path, socket_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = socket_dir / "run" / "edge.sock"
    with serving_unix(tmp_path, path) as server:
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.lstat().st_mode) == 0o700
        answer = exchange_unix(path, raw_login(PASSWORD))
        assert answer and answer.status == 303
        session = next(c for c in answer.all("set-cookie") if c.startswith("occ_session_"))
        cookie = session.split(";")[0]
        answer = exchange_unix(path, raw("GET", "/__occ/verify", cookies=(cookie,)))
        assert answer and answer.status == 200
        # Caddy names the client in X-Forwarded-For; a request that names none is
        # counted under one fixed name (a unix socket's peer has no address).
        for _ in range(10):
            answer = exchange_unix(path, raw_login("guess", address=None))
            assert answer and answer.status == 401
        assert server.guard.retry_after(edge.UNIX_PEER) > 0
        assert server.guard.retry_after(ADDRESS) == 0
        assert f"failed login from {edge.UNIX_PEER}" in capsys.readouterr().err
    assert not path.exists()  # removed when the server closes


def test_a_stale_socket_is_replaced_and_nothing_else_is_touched(
    tmp_path: Path, socket_dir: Path
) -> None:
    path = socket_dir / "edge.sock"
    socket_dir.chmod(0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # left behind by an edge that was killed
    with serving_unix(tmp_path, path):
        answer = exchange_unix(path, raw("GET", "/__occ/verify"))
        assert answer and answer.status == 401
    target = tmp_path / "target"
    target.write_text("keep")
    target.chmod(0o644)
    path.symlink_to(target)
    with pytest.raises(OSError, match="not a socket"):
        edge.serve_unix(edge.Guard(target, "opencode"), str(path))
    assert path.is_symlink() and target.read_text() == "keep"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    path.unlink()
    path.write_text("a file")
    with pytest.raises(OSError, match="not a socket"):
        edge.serve_unix(edge.Guard(target, "opencode"), str(path))
    assert path.read_text() == "a file"


def test_a_unix_socket_is_not_made_in_a_directory_others_can_enter(
    tmp_path: Path, socket_dir: Path
) -> None:
    guard = edge.Guard(tmp_path / "password.bcrypt", "opencode")
    shared = socket_dir / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(OSError, match="0700"):
        edge.serve_unix(guard, str(shared / "edge.sock"))
    private = socket_dir / "private"
    private.mkdir(mode=0o700)
    (socket_dir / "link").symlink_to(private)
    with pytest.raises(OSError, match="0700"):
        edge.serve_unix(guard, str(socket_dir / "link" / "edge.sock"))
    assert list(shared.iterdir()) == [] and list(private.iterdir()) == []


def test_where_the_edge_listens() -> None:
    assert edge.listen_address("unix:/run/opencode-cloud/edge/login.sock") == (
        "/run/opencode-cloud/edge/login.sock"
    )
    assert edge.listen_address("127.0.0.1:4097") == ("127.0.0.1", 4097)
    with pytest.raises(ValueError):
        edge.listen_address("unix:relative.sock")


# --------------------------------------------------------------------------- forms


def test_another_site_cannot_sign_the_user_out(served: Edge) -> None:
    cookie = cookie_of(served.login(PASSWORD)[1])
    assert served.logout(cookie, Origin="https://evil.example")[0] == 403
    assert served.logout(cookie, Origin="null")[0] == 403
    assert served.logout(cookie, Origin="http://127.0.0.1:3001")[0] == 403  # another instance
    assert served.logout(cookie, Origin="", Referer="https://evil.example/page")[0] == 403
    assert served.logout(cookie, Sec_Fetch_Site="cross-site")[0] == 403
    # Without Origin or Referer, only with the form's token.
    assert served.logout(cookie, Origin="")[0] == 403
    # A link (GET) only shows the button.
    status, _, page = served.request("GET", "/__occ/logout", {"Cookie": cookie})
    assert status == 200 and 'method="post"' in page and "Sign out" in page
    assert served.verify(Cookie=cookie)[0] == 200


def test_signing_out_from_the_sites_own_page(served: Edge) -> None:
    cookie = cookie_of(served.login(PASSWORD)[1])
    _, headers, page = served.request("GET", "/__occ/logout", {"Cookie": cookie})
    token = re.search(r'name="csrf" value="([^"]*)"', page)
    assert token and cookie_of(headers, "csrf").endswith("=" + token.group(1))
    # The button's form, from a browser that sends no Origin: the token does.
    cookies = f"{cookie}; {cookie_of(headers, 'csrf')}"
    status, _, _ = served.request(
        "POST", "/__occ/logout", {"Cookie": cookies}, urlencode({"csrf": token.group(1)})
    )
    assert status == 303 and served.verify(Cookie=cookie)[0] == 401
    # With an Origin of this site.
    cookie = cookie_of(served.login(PASSWORD)[1])
    assert served.logout(cookie)[0] == 303
    assert served.verify(Cookie=cookie)[0] == 401


def test_the_login_form_must_come_from_this_site_with_its_token(served: Edge) -> None:
    form = {"username": "opencode", "password": PASSWORD, "next": "/"}
    headers = {"Origin": ORIGIN, "Cookie": CSRF_COOKIE}
    attempts = [
        (headers, form),  # no token in the form
        ({"Origin": ORIGIN}, {**form, "csrf": TOKEN}),  # no cookie
        (headers, {**form, "csrf": "B" * 32}),  # tokens differ
        (headers, {**form, "csrf": "\u00e9" * 32}),  # not even ASCII
        ({**headers, "Origin": "https://evil.example"}, {**form, "csrf": TOKEN}),
        ({**headers, "Origin": "http://127.0.0.1:3001"}, {**form, "csrf": TOKEN}),
        ({"Cookie": CSRF_COOKIE, "Sec-Fetch-Site": "cross-site"}, {**form, "csrf": TOKEN}),
    ]
    for sent, fields in attempts:
        status, answer, _ = served.request("POST", "/__occ/login", sent, urlencode(fields))
        assert status == 403 and not cookie_of(answer), (sent, fields)
    # None of them counted as a failed attempt.
    for _ in range(9):
        served.basic("guess")
    assert served.basic(PASSWORD) == 200


WEBSOCKET = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Key": "x" * 24}
OTHER_SITES: list[dict[str, str]] = [
    {"Origin": "http://127.0.0.1:3001"},  # another port of this host: the same site
    {"Origin": "http://localhost:3000"},
    {"Origin": "null"},
    {"Origin": "https://evil.example"},
    {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": ORIGIN, "Sec-Fetch-Site": "same-site"},
    {"Referer": "http://127.0.0.1:3001/page"},
]


def ask(served: Edge, cookie: str, method: str, sent: dict[str, str]) -> int:
    """Caddy's question about a request with the session cookie."""
    headers = {"X-Forwarded-Method": method, "X-Forwarded-Uri": "/session", "Cookie": cookie}
    return served.request("GET", "/__occ/verify", {**headers, **sent})[0]


def test_changes_with_the_session_cookie_come_from_this_site_only(served: Edge) -> None:
    cookie = cookie_of(served.login(PASSWORD)[1])
    for method in ("POST", "PUT", "PATCH", "DELETE", "post"):
        for sent in OTHER_SITES:
            assert ask(served, cookie, method, sent) == 403, (method, sent)
    # A sibling name of the same site.
    sibling = {"Host": "box.lan:3000", "Origin": "http://evil.box.lan:3000"}
    assert ask(served, cookie, "POST", sibling) == 403
    assert ask(served, cookie, "POST", {**sibling, "Origin": "http://box.lan:3000"}) == 200
    # Reading is not changing: links and images from elsewhere keep working.
    for method in ("GET", "HEAD", "OPTIONS"):
        for sent in OTHER_SITES:
            assert ask(served, cookie, method, sent) == 200, (method, sent)


def test_the_web_uis_own_changes_pass(served: Edge) -> None:
    cookie = cookie_of(served.login(PASSWORD)[1])
    for sent in (
        {"Origin": ORIGIN},
        {"Origin": ORIGIN, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"},
        {"Sec-Fetch-Site": "same-origin"},  # no Origin
        {"Sec-Fetch-Site": "none"},  # typed by the user
        {"Referer": f"{ORIGIN}/session/1"},
        {},  # no browser's word either way: an old client, a script
    ):
        assert ask(served, cookie, "POST", sent) == 200, sent
    # Over plain HTTP the scheme is not compared (behind a TLS proxy of the user's own,
    # the browser says https); over HTTPS it is.
    assert ask(served, cookie, "POST", {"Origin": "https://127.0.0.1:3000"}) == 200
    https = {"X-Forwarded-Proto": "https", "Origin": "https://127.0.0.1:3000"}
    assert ask(served, cookie, "POST", https) == 200
    assert ask(served, cookie, "POST", {**https, "Origin": ORIGIN}) == 403


def test_websockets_with_the_session_cookie_open_from_this_site_only(served: Edge) -> None:
    cookie = cookie_of(served.login(PASSWORD)[1])
    for sent in OTHER_SITES:
        assert ask(served, cookie, "GET", {**WEBSOCKET, **sent}) == 403, sent
    # Any sign of an upgrade is one.
    for name, value in (*WEBSOCKET.items(), ("Sec-Fetch-Mode", "websocket")):
        foreign = {name: value, "Origin": "http://127.0.0.1:3001"}
        assert ask(served, cookie, "GET", foreign) == 403, name
    # The terminal of the web UI.
    assert ask(served, cookie, "GET", {**WEBSOCKET, "Origin": ORIGIN}) == 200
    own = {**WEBSOCKET, "Sec-Fetch-Mode": "websocket", "Sec-Fetch-Site": "same-origin"}
    assert ask(served, cookie, "GET", {**own, "Origin": ORIGIN}) == 200


def test_basic_credentials_are_not_held_to_an_origin(served: Edge) -> None:
    """A script's credentials are its own, never sent along by a browser on its own."""
    for sent in ({"Origin": "http://127.0.0.1:3001"}, {"Sec-Fetch-Site": "same-site"}):
        assert served.basic(PASSWORD, X_Forwarded_Method="POST", **sent) == 200
        assert served.basic(PASSWORD, **WEBSOCKET, **sent) == 200


def test_the_edges_pages_carry_security_headers(served: Edge) -> None:
    answers = [
        served.request("GET", "/__occ/login"),
        served.request("GET", "/__occ/logout"),
        served.request("GET", "/nowhere"),
        served.verify(),
        served.login("wrong"),
    ]
    for _, headers, _ in answers:
        assert "frame-ancestors 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "SAMEORIGIN"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"


# --------------------------------------------------------------------------- state


def generation_of(hash_file: Path) -> str:
    return hashlib.sha256(hash_file.read_bytes().strip()).hexdigest()[:32]


def test_a_hostile_sessions_file_is_read_safely(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    write_hash(tmp_path / "password.bcrypt", PASSWORD)
    kept = "a" * 43
    entries: dict[str, Any] = {
        edge._digest(kept): {
            "expires": 2e9,
            "generation": generation_of(tmp_path / "password.bcrypt"),
        },
        edge._digest("s" * 43): "not a session",
        edge._digest("l" * 43): ["expires", 1],
        edge._digest("t" * 43): {"expires": "never", "generation": ""},
        edge._digest("u" * 43): {"expires": True, "generation": ""},
        edge._digest("v" * 43): {"expires": 2e9, "generation": 7},
        "not a digest": {"expires": 2e9, "generation": ""},
    }
    (state / "sessions.json").write_text(json.dumps(entries))
    running = Edge(tmp_path, Clock())
    try:
        for token in ("s", "l", "t", "u", "v"):
            assert running.verify(Cookie=f"occ_session_3000={token * 43}")[0] == 401
        assert running.verify(Cookie=f"occ_session_3000={kept}")[0] == 200
        # The edge still makes and keeps sessions.
        cookie = cookie_of(running.login(PASSWORD)[1])
        assert running.verify(Cookie=cookie)[0] == 200
    finally:
        running.stop()
    for content in ("[1, 2]", "{", "[" * 100000, "null"):
        (state / "sessions.json").write_text(content)
        assert edge.Guard(tmp_path / "password.bcrypt", "opencode", state)._sessions.entries == {}


def test_a_huge_sessions_file_is_not_read(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    hash_file = tmp_path / "password.bcrypt"
    write_hash(hash_file, PASSWORD)
    token = "h" * 43
    entries = {edge._digest(token): {"expires": 2e9, "generation": generation_of(hash_file)}}
    entries.update({f"{i:064x}": {"expires": 1, "generation": "x" * 64} for i in range(20000)})
    (state / "sessions.json").write_text(json.dumps(entries))
    assert (state / "sessions.json").stat().st_size > 2 << 20
    guard = edge.Guard(hash_file, "opencode", state, clock=Clock())
    assert not guard.session_valid(token)


def test_a_fifo_in_place_of_the_sessions_file_does_not_hang_the_edge(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.mkfifo(state / "sessions.json")
    made: list[Any] = []
    starting = threading.Thread(
        target=lambda: made.append(edge.Guard(tmp_path / "h", "opencode", state)), daemon=True
    )
    starting.start()
    starting.join(3)
    hung = starting.is_alive()
    if hung:  # let it go: a writer ends the wait
        with open(state / "sessions.json", "wb"):
            pass
        starting.join(3)
    assert not hung and made[0]._sessions.entries == {}


def test_the_state_directory_is_private_and_written_whole(served: Edge) -> None:
    served.state.mkdir(mode=0o755, exist_ok=True)
    served.state.chmod(0o755)
    served.login(PASSWORD)
    assert stat.S_IMODE(served.state.stat().st_mode) == 0o700
    for path in served.state.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    names = sorted(p.name for p in served.state.iterdir())
    records = ["single.db", "single.db-shm", "single.db-wal"]
    assert names == ["device.key", "sessions.json", "sessions.lock", *records]
