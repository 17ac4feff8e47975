"""Attacks on the edge through a running instance's published port, with raw sockets.

Caddy keeps its connections to the login service open and reuses them for other
clients: a login service that leaves a body unread on such a connection turns its bytes
into the next request, and its answer into someone else's answer. Each attack here was
seen to work on an earlier release; HTTP client libraries would normalise most of them
away, so requests are written byte by byte.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from occ_helpers import run
from raw_http import SESSION_COOKIE, exchange, session_cookie, sign_in, statuses

pytestmark = pytest.mark.e2e

Service = Any  # the e2e conftest's Service; not importable by name across conftests


def authorized(port: int, cookie_pair: str) -> int:
    answer = exchange(
        port,
        f"GET /global/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie_pair}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    return statuses(answer)[0]


def test_a_body_smuggled_into_the_login_service_never_hands_out_a_session(
    service: Service,
) -> None:
    """The attacker hides a second request in a GET's body, over and over, while a user
    signs in: on the earlier edge the user's Set-Cookie came back to the attacker."""
    port, host = service.port, f"127.0.0.1:{service.port}"
    inner = f"GET /__occ/login HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\n\r\n".encode()
    smuggle = (
        f"GET /__occ/login HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(inner)}\r\n"
        "Accept: text/html\r\n\r\n".encode()
        + inner
    )
    stop = time.monotonic() + 15
    stolen: list[bytes] = []
    signed_in: list[bytes] = []

    def attacker() -> None:
        while time.monotonic() < stop:
            answer = exchange(port, smuggle + smuggle, answers=2, timeout=3)
            if SESSION_COOKIE.search(answer):
                stolen.append(answer)

    def user() -> None:
        while time.monotonic() < stop:
            signed_in.append(sign_in(port, service.username, service.password))

    threads = [threading.Thread(target=attacker) for _ in range(4)]
    threads.append(threading.Thread(target=user))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stolen == [], stolen[0][:800]
    # The user signed in all along (the attack could have found cookies to steal).
    assert len(signed_in) > 10
    assert all(statuses(answer)[:1] == [303] for answer in signed_in), signed_in[0][:400]
    assert authorized(port, f"occ_session_{port}={session_cookie(signed_in[-1])}") == 200


def test_pipelined_requests_each_get_their_own_answer(service: Service) -> None:
    host = f"127.0.0.1:{service.port}"
    cases = [
        # a GET with a body, a 404 with a body, a logout with a body, then a plain GET
        f"GET /__occ/login HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello",
        f"POST /__occ/nothing HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc",
        f"GET /__occ/login HTTP/1.1\r\nHost: {host}\r\n\r\n",
    ]
    answer = exchange(service.port, "".join(cases).encode(), answers=3)
    codes = statuses(answer)
    assert len(codes) == 3 and codes[1] == 404, answer[:1200]
    assert b"501" not in answer and b"Unsupported method" not in answer


def test_a_large_or_chunked_login_body_harms_no_one_else(service: Service) -> None:
    host = f"127.0.0.1:{service.port}"
    big = b"username=x&password=" + b"a" * 20_000
    answer = exchange(
        service.port,
        f"POST /__occ/login HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(big)}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
        + big,
    )
    assert statuses(answer)[0] == 413, answer[:300]
    chunked = exchange(
        service.port,
        f"POST /__occ/login HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
        "5\r\nPOST \r\n0\r\n\r\n".encode(),
    )
    assert statuses(chunked)[0] in (400, 411), chunked[:300]
    # Whoever comes next gets their own answer, many times over (every pooled connection).
    for _ in range(20):
        page = exchange(
            service.port,
            f"GET /__occ/login HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(),
        )
        assert statuses(page) == [200], page[:300]
        assert b"<form" in page


@pytest.mark.parametrize(
    "target",
    [
        "/%0d%0aSet-Cookie:%20planted=1",
        "/%0aSet-Cookie:%20planted=1",
        "/%09/evil.example",
        "//evil.example",
        "/\\evil.example",
        "/%5cevil.example",
        "https://evil.example/",
        "/%E2%80%A8/evil.example",
    ],
)
def test_next_goes_nowhere_but_this_site(service: Service, target: str) -> None:
    answer = sign_in(service.port, service.username, service.password, next_path="")
    assert statuses(answer) == [303]
    # The target as a browser would send it in the form (already decoded once).
    from urllib.parse import unquote

    answer = sign_in(service.port, service.username, service.password, unquote(target))
    head = answer.split(b"\r\n\r\n", 1)[0]
    assert b"planted" not in head, head
    location = re.search(rb"(?im)^location:\s*(.*)$", head)
    assert location, head
    value = location.group(1).rstrip(b"\r")
    assert value.startswith(b"/") and not value.startswith((b"//", b"/\\")), value
    assert not re.search(rb"[\x00-\x20\x7f]", value), value
    # And the login page's GET form of it.
    page = exchange(
        service.port,
        f"GET /__occ/login?next={quote(unquote(target), safe='')} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{service.port}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert b"planted" not in page.split(b"\r\n\r\n", 1)[0]


def test_logout_from_another_site_does_nothing(service: Service) -> None:
    port, host = service.port, f"127.0.0.1:{service.port}"
    pair = f"occ_session_{port}={session_cookie(sign_in(port, service.username, service.password))}"
    # A link or an image on another site (GET), and a form posted from there.
    exchange(
        port,
        f"GET /__occ/logout HTTP/1.1\r\nHost: {host}\r\nCookie: {pair}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    exchange(
        port,
        f"POST /__occ/logout HTTP/1.1\r\nHost: {host}\r\nCookie: {pair}\r\n"
        "Origin: https://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode(),
    )
    assert authorized(port, pair) == 200
    # A login posted from another site is refused, even with the right password.
    body = urlencode({"username": service.username, "password": service.password}).encode()
    answer = exchange(
        port,
        f"POST /__occ/login HTTP/1.1\r\nHost: {host}\r\nOrigin: https://evil.example\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body,
    )
    assert statuses(answer)[0] == 403 and not SESSION_COOKIE.search(answer), answer[:400]


def test_concurrent_guesses_count_every_one(service: Service) -> None:
    """200 different wrong passwords at once: at most the limit of them are even checked,
    and then the address is locked, the right password included (no oracle)."""
    host = f"127.0.0.1:{service.port}"

    def basic(password: str) -> bytes:
        token = base64.b64encode(f"{service.username}:{password}".encode()).decode()
        return (
            f"GET /global/health HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {token}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()

    results: list[int] = []
    barrier = threading.Barrier(200)

    def guess(number: int) -> None:
        barrier.wait()
        answer = exchange(service.port, basic(f"wrong-{number}"), timeout=30)
        results.extend(statuses(answer)[:1])

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 200
    assert results.count(200) == 0
    assert results.count(401) <= 10, sorted(results)
    assert statuses(exchange(service.port, basic(service.password)))[0] == 429


def test_slow_bodies_do_not_starve_the_login(service: Service) -> None:
    host = f"127.0.0.1:{service.port}"
    slow: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", service.port), timeout=5)
            sock.sendall(
                f"POST /__occ/login HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n\r\nuser".encode()
            )
            slow.append(sock)
        began = time.monotonic()
        answer = sign_in(service.port, service.username, service.password)
        assert statuses(answer) == [303], answer[:300]
        assert time.monotonic() - began < 5
    finally:
        for sock in slow:
            sock.close()


# -- long-lived connections, HTTP/2, and what reaches opencode ---------------------------


def test_https_speaks_http_1_1_only(occ_env: dict[str, str]) -> None:
    """Debian's Caddy is built with a Go whose HTTP/2 grows without bound under streams
    opened and reset at once (one client took it to 3 GB and the kernel's OOM killer):
    the edge offers neither HTTP/2 nor HTTP/3."""
    run(occ_env, "config", "set", "tls", "self-signed")
    run(occ_env, "start")
    port = int(json.loads(run(occ_env, "--json", "auth", "show").stdout)["url"].rsplit(":", 1)[1])
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as plain,
        context.wrap_socket(plain, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.selected_alpn_protocol() in (None, "http/1.1")
    answer = exchange(
        port,
        f"GET /__occ/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Connection: close\r\n\r\n".encode(),
        context=context,
    )
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert statuses(answer) == [200] and b"alt-svc" not in head, head


def test_a_new_password_closes_connections_opened_before(occ_env: dict[str, str]) -> None:
    """The event stream (like a terminal) is authorised once, when it opens: a rotation
    must end it, not only refuse the next request."""
    run(occ_env, "start")
    info = json.loads(run(occ_env, "--json", "auth", "show").stdout)
    port = int(info["url"].rsplit(":", 1)[1])
    cookie = (
        f"occ_session_{port}={session_cookie(sign_in(port, info['username'], info['password']))}"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=15) as stream:
        stream.sendall(
            f"GET /event HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        first = b""
        while b"server.connected" not in first:
            first += stream.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        run(occ_env, "auth", "rotate")
        deadline = time.monotonic() + 10
        closed = False
        while time.monotonic() < deadline:
            try:
                if stream.recv(65536) == b"":
                    closed = True
                    break
            except (ConnectionResetError, TimeoutError):
                closed = True
                break
        assert closed, "the event stream opened before the rotation is still open"
    # And the service is back for the new password at once.
    rotated = json.loads(run(occ_env, "--json", "auth", "show").stdout)
    answer = sign_in(port, rotated["username"], rotated["password"])
    assert statuses(answer) == [303]


FIND_IN_OPENCODE = """
import os, sys
token = sys.argv[1].encode()
pid = next(p for p in os.listdir("/proc") if p.isdigit()
           and open(f"/proc/{p}/cmdline", "rb").read().startswith(b"/usr/local/bin/opencode"))
found, chunk = 0, 4 << 20
with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
    for line in maps:
        span, perms = line.split()[:2]
        start, end = (int(x, 16) for x in span.split("-"))
        if "r" not in perms or end - start > 8 << 30:
            continue
        tail = b""
        for at in range(start, end, chunk):
            try:
                mem.seek(at)
                data = tail + mem.read(min(chunk, end - at))
            except (OSError, ValueError, OverflowError):
                tail = b""
                continue
            found += data.count(token)
            tail = data[-(len(token) - 1):]
print(found)
"""


def test_opencode_never_sees_the_browsers_cookies(service: Service) -> None:
    """The agent runs as opencode's user and can read its memory: a session cookie that
    reached opencode would be the agent's to use (here and on other instances)."""
    port = service.port
    token = session_cookie(sign_in(port, service.username, service.password))
    for path in ("/session", "/global/health", "/config"):
        exchange(
            port,
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Cookie: occ_session_{port}={token}; other=1\r\nConnection: close\r\n\r\n".encode(),
        )
    code, found = service.exec("python3", "-I", "-c", FIND_IN_OPENCODE, token)
    assert code == 0, found
    assert found.strip() == "0", f"the session token is in opencode's memory {found.strip()} times"
    # The scan can find what is there: the instance's own password is in opencode's
    # environment (its internal one is; the token of a request it saw would be too).
    code, count = service.exec("python3", "-I", "-c", FIND_IN_OPENCODE, "OPENCODE_SERVER_PASSWORD")
    assert code == 0 and int(count) > 0, count
