"""HTTP written and read byte by byte, for tests at the edge: client libraries would
normalise the attacks away. Also a browser's sign-in done by hand (the login page's
cookies and hidden fields, then the form)."""

from __future__ import annotations

import re
import socket
import ssl
import time
from urllib.parse import urlencode

SESSION_COOKIE = re.compile(rb"(?im)^set-cookie:\s*occ_session_[^=]*=([^;\s]+)")


def exchange(
    port: int,
    data: bytes,
    *,
    timeout: float = 10.0,
    answers: int = 1,
    context: ssl.SSLContext | None = None,
) -> bytes:
    """Write raw bytes to the port (over TLS with `context`) and read until `answers`
    responses have ended (by their Content-Length) or the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as plain:
        sock = context.wrap_socket(plain, server_hostname="127.0.0.1") if context else plain
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _complete(received) >= answers:
                break
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
        return received


def responses(data: bytes) -> list[tuple[bytes, bytes]]:
    """The whole responses `data` holds, in order, as (head, body), each framed by its
    Content-Length: a body need not end with a line break before the next answer."""
    found: list[tuple[bytes, bytes]] = []
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            return found
        head = data[:head_end]
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        end = head_end + 4 + (int(length.group(1)) if length else 0)
        if len(data) < end:
            return found
        found.append((head, data[head_end + 4 : end]))
        data = data[end:]


def _complete(data: bytes) -> int:
    return len(responses(data))


def statuses(data: bytes) -> list[int]:
    """The status code of each whole response in `data`, in order."""
    codes = []
    for head, _body in responses(data):
        status = re.match(rb"HTTP/1\.[01] (\d{3})", head)
        assert status, head[:200]
        codes.append(int(status.group(1)))
    return codes


def form_fields(page: bytes) -> dict[str, str]:
    """The hidden inputs of the login form."""
    fields = {}
    for tag in re.findall(rb"<input[^>]*>", page):
        if b'type="hidden"' in tag:
            name = re.search(rb'name="([^"]*)"', tag)
            value = re.search(rb'value="([^"]*)"', tag)
            if name:
                fields[name.group(1).decode()] = value.group(1).decode() if value else ""
    return fields


def cookies(data: bytes) -> str:
    pairs = re.findall(rb"(?im)^set-cookie:\s*([^=;\s]+=[^;\s]*)", data)
    return "; ".join(pair.decode() for pair in pairs if not pair.endswith(b"="))


def sign_in(
    port: int,
    username: str,
    password: str,
    next_path: str = "/",
    *,
    context: ssl.SSLContext | None = None,
) -> bytes:
    """A browser's sign-in: the login page (its cookies and hidden fields), then the form
    (over TLS with `context`)."""
    host = f"127.0.0.1:{port}"
    scheme = "https" if context else "http"
    page = exchange(
        port,
        f"GET /__occ/login HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\n"
        "Connection: close\r\n\r\n".encode(),
        context=context,
    )
    fields = {**form_fields(page), "username": username, "password": password, "next": next_path}
    body = urlencode(fields).encode()
    jar = cookies(page)
    cookie_line = f"Cookie: {jar}\r\n" if jar else ""
    return exchange(
        port,
        f"POST /__occ/login HTTP/1.1\r\nHost: {host}\r\nOrigin: {scheme}://{host}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n{cookie_line}Connection: close\r\n\r\n".encode()
        + body,
        context=context,
    )


def session_cookie(answer: bytes) -> str:
    found = SESSION_COOKIE.search(answer)
    assert found, answer[:600]
    return found.group(1).decode()
