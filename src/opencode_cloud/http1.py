"""HTTP/1.1, one request per connection, over a socket the caller connected.

What the tool's own short exchanges need (the engine's unix socket; opencode's health
and session list over plain HTTP), in a few lines instead of `http.client`, whose import
(with `email` and `ssl`) costs more than the exchange: `occ status` makes both kinds.
`Connection: close` lets an answer end at EOF; a chunked body is decoded, anything else
is taken as it comes.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator


class AnswerCut(ConnectionError):
    """The connection closed before the end of a chunked answer (its zero-size chunk):
    what came is not all of it."""


def request_bytes(
    method: str, url: str, headers: dict[str, str], body: bytes | None, host: str
) -> bytes:
    """One HTTP/1.1 request; `Connection: close` lets the answer end at EOF."""
    lines = [f"{method} {url} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"Content-Length: {len(body or b'')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def exchange(
    sock: socket.socket, request: bytes, peer: str, where: str
) -> tuple[int, dict[str, str], bytes]:
    """Send `request` on the connected `sock` and read the whole answer; returns (status,
    header fields with lower-case names, body). `peer` and `where` name the other end in
    errors ("the engine", its socket path).

    Raises:
        ConnectionError: no answer, not an HTTP answer, or a chunked body cut short.
        OSError: the socket failed.
    """
    sock.sendall(request)
    received = []
    while chunk := sock.recv(65536):
        received.append(chunk)
    status, header, payload = split_answer(b"".join(received), peer, where)
    if header.get("transfer-encoding", "").lower() == "chunked":
        payload = dechunk(payload, peer)
    return status, header, payload


def split_answer(received: bytes, peer: str, where: str) -> tuple[int, dict[str, str], bytes]:
    """The status, the header fields (lower-case names) and what came of the body, of an
    HTTP answer as received so far: a connection closed before the head ended gave none."""
    head, ended, body = received.partition(b"\r\n\r\n")
    if not ended:
        raise ConnectionError(f"{peer} closed the connection without an answer")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        raise ConnectionError(f"not an HTTP answer from {where}: {status_line!r}") from None
    header = {
        name.strip().lower(): value.strip()
        for name, _, value in (field.partition(":") for field in fields)
    }
    return status, header, body


def dechunked(pieces: Iterator[bytes], peer: str) -> Iterator[bytes]:
    """The payload of a `Transfer-Encoding: chunked` body that arrives in pieces.

    Raises:
        AnswerCut: the pieces ended before the zero-size chunk that ends the body.
        ConnectionError: a chunk's size line is not a number.
    """
    pending = b""
    for piece in pieces:
        pending += piece
        while True:
            line_end = pending.find(b"\r\n")
            if line_end < 0:
                break
            try:
                size = int(pending[:line_end].split(b";")[0] or b"0", 16)
            except ValueError:
                raise ConnectionError(f"{peer}'s answer has a broken chunk") from None
            if size == 0:
                return
            end = line_end + 2 + size
            if len(pending) < end + 2:
                break
            yield pending[line_end + 2 : end]
            pending = pending[end + 2 :]
    raise AnswerCut(f"{peer}'s answer ended before its last chunk")


def dechunk(data: bytes, peer: str) -> bytes:
    """The body of a whole `Transfer-Encoding: chunked` payload."""
    return b"".join(dechunked(iter((data,)), peer))
