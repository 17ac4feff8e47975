"""A chunked answer cut before its end marker is an error, not a shorter answer: over a
fake engine socket that hangs up mid-body, for one-shot requests and followed streams."""

from __future__ import annotations

import shutil
import socketserver
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from opencode_cloud.docker.errors import IncompleteAnswer
from opencode_cloud.docker.transport import SocketTransport, _dechunked, dechunk
from opencode_cloud.http1 import AnswerCut

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
WHOLE = b"4\r\nWiki\r\n6\r\npedia \r\n0\r\n\r\n"


@pytest.fixture
def serve() -> Iterator[Callable[[bytes], str]]:
    """A unix socket that answers every request with the given bytes, then hangs up."""
    folder = Path(tempfile.mkdtemp(prefix="occ-"))
    servers: list[socketserver.UnixStreamServer] = []

    def serve(sent: bytes) -> str:
        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                self.wfile.write(sent)

        path = str(folder / f"engine{len(servers)}.sock")
        server = socketserver.ThreadingUnixStreamServer(path, Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return path

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize(
    "cut",
    [
        b"",  # right after the head
        b"4\r\nWiki\r\n",  # between chunks
        b"4\r\nWiki\r\n6\r\npe",  # inside a chunk
        b"4\r\nWiki\r\n6\r\npedia \r\n",  # before the zero-size chunk
    ],
)
def test_a_cut_body_raises_in_every_way_of_asking(serve, cut: bytes) -> None:
    path = serve(HEAD + cut)
    transport = SocketTransport(path)
    with pytest.raises(IncompleteAnswer) as one_shot:
        transport.request("GET", "/volumes", None, {}, 5)
    assert path in one_shot.value.message
    with pytest.raises(IncompleteAnswer):
        b"".join(transport.stream("GET", "/containers/x/logs", {}, 5))


def test_a_whole_body_still_reads(serve) -> None:
    path = serve(HEAD + WHOLE)
    transport = SocketTransport(path)
    assert transport.request("GET", "/x", None, {}, 5).body == "Wikipedia"
    assert b"".join(transport.stream("GET", "/x", {}, 5)) == b"Wikipedia "


def test_the_decoder_tells_a_cut_from_an_end() -> None:
    assert dechunk(WHOLE) == b"Wikipedia "
    with pytest.raises(AnswerCut):
        dechunk(WHOLE[: -len(b"0\r\n\r\n")])
    pieces = iter([b"4\r\nWi", b"ki\r\n"])
    decoded = _dechunked(pieces)
    assert next(decoded) == b"Wiki"  # what came is given as it comes...
    with pytest.raises(AnswerCut):
        next(decoded)  # ...and the end says it was not all


def test_a_cut_is_told_to_the_user_with_what_to_do() -> None:
    from opencode_cloud.cli.hints import hint_for

    assert "again" in hint_for(IncompleteAnswer("unix:///var/run/docker.sock"))
