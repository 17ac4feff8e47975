"""The engine's error answers as typed errors, and failures to reach it told apart.

A fake engine serves canned answers over a unix socket (the messages are Docker 20.10's),
so the real client, its socket transport and `_check` run as they do against an engine;
docker-py's streaming path gets a fake API object. The real cases are in
tests/integration/test_client.py.
"""

from __future__ import annotations

import json
import shutil
import socketserver
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from opencode_cloud.docker.client import MIN_API_VERSION, DockerClient, _check
from opencode_cloud.docker.errors import (
    ContainerAlreadyExists,
    ContainerNotFound,
    ContainerRunning,
    DaemonNotRunning,
    DockerError,
    DockerNotInstalled,
    DockerPermissionDenied,
    EngineTooOld,
    ImageNotFound,
    MissingPath,
    PortInUse,
    VolumeInUse,
)
from opencode_cloud.docker.transport import (
    DockerPyTransport,
    Refused,
    Response,
    SocketTransport,
    connection_error,
    dechunk,
)

# Docker 20.10's answers, as the engine wrote them.
PORT_ALLOCATED = (
    "driver failed programming external connectivity on endpoint opencode-cloud "
    "(a6ec4540cff7): Bind for 127.0.0.1:39123 failed: port is already allocated"
)
ADDRESS_IN_USE = (
    "driver failed programming external connectivity on endpoint opencode-cloud "
    "(a6ec4540cff7): Error starting userland proxy: listen tcp4 127.0.0.1:3000: bind: "
    "address already in use"
)
NAME_IN_USE = (
    'Conflict. The container name "/opencode-cloud" is already in use by container '
    '"6ab3bc7cffd9". You have to remove (or rename) that container to be able to reuse '
    "that name."
)
REMOVE_RUNNING = (
    "You cannot remove a running container 6ab3bc7cffd9. Stop the container before "
    "attempting removal or force remove"
)
VOLUME_USED = "remove opencode-cloud-home: volume is in use - [ca3115a16e8a]"


def answer(status: int, message: str) -> Response:
    return Response(status, {"message": message})


# --------------------------------------------------------------------------- _check


def test_a_success_is_returned_as_it_is() -> None:
    ok = Response(204, None)
    assert _check(ok, container="x") is ok
    assert _check(Response(304, None), container="x").status == 304  # already started


def test_no_such_container() -> None:
    with pytest.raises(ContainerNotFound) as caught:
        _check(answer(404, "No such container: opencode-cloud"), container="opencode-cloud")
    assert caught.value.name == "opencode-cloud"


def test_no_such_image() -> None:
    with pytest.raises(ImageNotFound) as caught:
        _check(answer(404, "No such image: nope/none:1"), image="nope/none:1")
    assert caught.value.image == "nope/none:1"
    with pytest.raises(ImageNotFound):
        _check(answer(404, "No such image: nope/none:1"))


@pytest.mark.parametrize(
    ("message", "port"),
    [
        (PORT_ALLOCATED, 39123),
        (ADDRESS_IN_USE, 3000),
        ("Bind for [::1]:8080 failed: port is already allocated", 8080),
        ("listen tcp6 [::1]:8443: bind: address already in use", 8443),
        ("port is already allocated", None),
    ],
)
def test_a_taken_port_is_parsed_from_the_message(message: str, port: int | None) -> None:
    with pytest.raises(PortInUse) as caught:
        _check(answer(500, message), container="opencode-cloud")
    assert caught.value.port == port
    assert caught.value.message == (f"Port {port}" if port else "The port") + " is already in use."


def test_a_name_in_use() -> None:
    with pytest.raises(ContainerAlreadyExists) as caught:
        _check(answer(409, NAME_IN_USE), container="opencode-cloud")
    assert caught.value.name == "opencode-cloud"


def test_a_volume_in_use() -> None:
    with pytest.raises(VolumeInUse) as caught:
        _check(answer(409, VOLUME_USED), volume="opencode-cloud-home")
    assert (caught.value.volume, caught.value.users) == ("opencode-cloud-home", [])


def test_removing_a_running_container() -> None:
    with pytest.raises(ContainerRunning) as caught:
        _check(answer(409, REMOVE_RUNNING), container="opencode-cloud")
    assert caught.value.name == "opencode-cloud"


@pytest.mark.parametrize(
    "response",
    [
        answer(500, "disk full"),
        answer(409, "some other conflict"),
        answer(404, "page not found"),
        Response(500, "disk full"),  # a plain-text answer
    ],
)
def test_other_answers_keep_the_engines_words(response: Response) -> None:
    with pytest.raises(DockerError) as caught:
        _check(response, container="opencode-cloud")
    assert type(caught.value) is DockerError
    assert caught.value.message == f"Docker engine error: {response.message}"
    assert response.message in ("disk full", "some other conflict", "page not found")


def test_an_empty_error_answer_names_its_status() -> None:
    with pytest.raises(DockerError) as caught:
        _check(Response(503, None))
    assert caught.value.message == "Docker engine error: HTTP 503"


# --------------------------------------------------------------------------- docker-py


def _api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("boom", response=response, explanation=explanation)


def test_docker_py_errors_become_engine_answers() -> None:
    transport = DockerPyTransport(
        socket_path="/nonexistent", base_url=None, version="1.41", timeout=1
    )
    with pytest.raises(Refused) as caught, transport.translated():
        raise _api_error(500, PORT_ALLOCATED)
    assert caught.value.response == Response(500, {"message": PORT_ALLOCATED})
    with pytest.raises(PortInUse) as taken:
        _check(caught.value.response)
    assert taken.value.port == 39123


def test_docker_py_losing_the_engine_is_daemon_not_running(monkeypatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    transport = DockerPyTransport(
        socket_path="/nonexistent", base_url=None, version="1.41", timeout=1
    )
    with pytest.raises(DaemonNotRunning), transport.translated():
        raise requests.exceptions.ConnectionError(ConnectionRefusedError(111, "refused"))


# --------------------------------------------------------------------------- reaching it


def _wrapped(cause: BaseException) -> docker.errors.DockerException:
    """What docker-py raises when its version probe fails: the cause is chained."""
    try:
        try:
            raise requests.exceptions.ConnectionError(cause)
        except requests.exceptions.ConnectionError as exc:
            raise docker.errors.DockerException(
                f"Error while fetching server API version: {exc}"
            ) from exc
    except docker.errors.DockerException as outer:
        return outer


def test_permission_denied_on_the_socket() -> None:
    error = connection_error(_wrapped(PermissionError(13, "Permission denied")), "unix:///s")
    assert isinstance(error, DockerPermissionDenied)
    assert error.host == "unix:///s"


def test_not_installed_when_there_are_no_docker_binaries(monkeypatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    error = connection_error(_wrapped(FileNotFoundError(2, "No such file or directory")))
    assert isinstance(error, DockerNotInstalled)


def test_not_running_when_installed(monkeypatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    error = connection_error(_wrapped(ConnectionRefusedError(111, "Connection refused")))
    assert isinstance(error, DaemonNotRunning)
    assert error.host == "unix:///var/run/docker.sock"
    assert "/var/run/docker.sock" in error.message


def test_a_remote_engine_needs_no_local_binaries(monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.5:2375")
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    error = connection_error(_wrapped(ConnectionRefusedError(111, "Connection refused")))
    assert isinstance(error, DaemonNotRunning)
    assert error.host == "tcp://10.0.0.5:2375"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: a unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="occ-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_missing_socket_is_daemon_not_running(monkeypatch, short_dir: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(DaemonNotRunning) as caught:
        DockerClient(base_url=f"unix://{short_dir}/missing.sock")
    assert caught.value.host == f"unix://{short_dir}/missing.sock"


@pytest.mark.parametrize("sent", [b"", b"HTTP/1.1 200 OK\r\nContent-Type: text"])
def test_an_engine_that_hangs_up_is_said_to_have_given_no_answer(
    short_dir: Path, sent: bytes
) -> None:
    """Both ways of asking (one answer, a followed stream) word a connection closed before
    an answer's head ended the same way: the remote errors quote it."""
    path = str(short_dir / "hangs-up.sock")

    class HangUp(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.rfile.readline()
            self.wfile.write(sent)

    server = socketserver.ThreadingUnixStreamServer(path, HangUp)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    causes: list[BaseException] = []

    def explain(exc: BaseException) -> DockerError:
        causes.append(exc)
        return DaemonNotRunning(path)

    transport = SocketTransport(path, explain)
    try:
        with pytest.raises(DaemonNotRunning):
            transport.request("GET", "/version", None, {}, 5)
        with pytest.raises(DaemonNotRunning):
            b"".join(transport.stream("GET", "/containers/x/logs", {}, 5))
    finally:
        server.shutdown()
        server.server_close()
    assert [str(c) for c in causes] == ["the engine closed the connection without an answer"] * 2


# --------------------------------------------------------------------------- a fake engine

Route = tuple[int, Any]


@pytest.fixture
def serve_engine(short_dir: Path) -> Iterator[Callable[..., tuple[str, list[str]]]]:
    """Serve canned answers, by "METHOD /path" without the version prefix and query, on a
    unix socket; returns its path and the request lines it received."""
    servers: list[socketserver.UnixStreamServer] = []

    def serve(
        routes: dict[str, Route], api_version: str = "1.41", chunked: bool = False
    ) -> tuple[str, list[str]]:
        seen: list[str] = []
        routes = {"GET /version": (200, {"ApiVersion": api_version}), **routes}

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request = self.rfile.readline().decode().strip()
                length = 0
                while (line := self.rfile.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                self.rfile.read(length)
                method, url = request.split()[:2]
                seen.append(f"{method} {url}")
                path = "/" + url.split("?")[0].split("/", 2)[-1] if url.startswith("/v1") else url
                status, body = routes.get(f"{method} {path}", (404, {"message": "page not found"}))
                payload = b"" if body is None else json.dumps(body).encode()
                head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                if chunked:
                    self.wfile.write(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
                    for start in range(0, len(payload), 4096):
                        part = payload[start : start + 4096]
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.wfile.write(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode())
                    self.wfile.write(payload)

        path = str(short_dir / f"engine{len(servers)}.sock")
        server = socketserver.ThreadingUnixStreamServer(path, Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return path, seen

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_engine_too_old_over_the_socket(serve_engine) -> None:
    path, _ = serve_engine({}, api_version="1.26")
    with pytest.raises(EngineTooOld) as caught:
        DockerClient(base_url=f"unix://{path}")
    error = caught.value
    assert (error.api_version, error.minimum, error.host) == (
        "1.26",
        MIN_API_VERSION,
        f"unix://{path}",
    )


class _OldApiClient:
    api_version = "1.30"

    def __init__(self, **_kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def test_engine_too_old_through_docker_py(monkeypatch) -> None:
    monkeypatch.setattr(docker, "APIClient", _OldApiClient)
    with pytest.raises(EngineTooOld) as caught:
        DockerClient(base_url="tcp://10.0.0.5:2375", direct=False)
    assert (caught.value.api_version, caught.value.host) == ("1.30", "tcp://10.0.0.5:2375")


def test_the_clients_calls_raise_typed_errors(serve_engine) -> None:
    path, seen = serve_engine(
        {
            "POST /containers/opencode-cloud/start": (500, {"message": PORT_ALLOCATED}),
            "GET /containers/gone/json": (404, {"message": "No such container: gone"}),
            "POST /containers/create": (409, {"message": NAME_IN_USE}),
            "DELETE /containers/opencode-cloud": (409, {"message": REMOVE_RUNNING}),
            "DELETE /volumes/opencode-cloud-home": (409, {"message": VOLUME_USED}),
            "DELETE /volumes/gone": (404, {"message": "get gone: no such volume"}),
            "PUT /containers/opencode-cloud/archive": (
                404,
                {"message": "Could not find the file /run/x in container opencode-cloud"},
            ),
            "POST /containers/opencode-cloud/stop": (304, None),
        }
    )
    client = DockerClient(base_url=f"unix://{path}")
    assert client.api_version == "1.41"
    with pytest.raises(PortInUse) as taken:
        client.start_container("opencode-cloud")
    assert taken.value.port == 39123
    with pytest.raises(ContainerNotFound):
        client.inspect_container("gone")
    assert client.find_container("gone") is None
    with pytest.raises(ContainerAlreadyExists):
        client.create_container("opencode-cloud", {"Image": "x"})
    with pytest.raises(ContainerRunning):
        client.remove_container("opencode-cloud")
    with pytest.raises(VolumeInUse):
        client.remove_volume("opencode-cloud-home")
    client.remove_volume("gone")  # a volume that does not exist is no error
    with pytest.raises(MissingPath):
        client.put_archive("opencode-cloud", "/run/x", b"")
    client.stop_container("opencode-cloud", 7)  # stopped already: 304 is fine
    assert client.inspect_image("nope:1") is None
    assert "POST /v1.41/containers/opencode-cloud/stop?t=7" in seen
    assert "DELETE /v1.41/containers/opencode-cloud?force=false&v=false" in seen


def test_a_missing_image_on_create(serve_engine) -> None:
    path, _ = serve_engine({"POST /containers/create": (404, {"message": "No such image: nope:1"})})
    with pytest.raises(ImageNotFound) as caught:
        DockerClient(base_url=f"unix://{path}").create_container("c", {"Image": "nope:1"})
    assert caught.value.image == "nope:1"


class _StreamingApi:
    """docker-py's API object, for the calls that stream; each one fails as scripted."""

    base_url = "http+docker://localhost"

    def __init__(self, error: docker.errors.APIError) -> None:
        self.error = error

    def logs(self, *_args: Any, **_kwargs: Any) -> Iterator[bytes]:
        raise self.error

    def pull(self, *_args: Any, **_kwargs: Any) -> Iterator[dict[str, Any]]:
        raise self.error

    def close(self) -> None:
        pass


def test_streams_through_docker_py_raise_typed_errors(serve_engine) -> None:
    path, _ = serve_engine({})
    client = DockerClient(base_url=f"unix://{path}")
    client._sdk._api = _StreamingApi(_api_error(404, "No such container: gone"))
    with pytest.raises(ContainerNotFound) as caught:
        b"".join(client.container_logs("gone", tail=5))
    assert caught.value.name == "gone"
    client._sdk._api = _StreamingApi(
        _api_error(404, "manifest for r/x:1 not found: manifest unknown")
    )
    with pytest.raises(ImageNotFound) as missing:
        list(client.pull("r/x", "1"))
    assert missing.value.image == "r/x:1"


# --------------------------------------------------------------------------- chunked


def test_dechunk_joins_chunks_and_ignores_extensions() -> None:
    payload = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n"
    assert dechunk(payload) == b"Wikipedia in \r\n\r\nchunks."


def test_large_chunked_answers_are_read_whole(serve_engine) -> None:
    volumes = [{"Name": f"v{i}", "Driver": "local", "Labels": {"n": str(i)}} for i in range(2000)]
    path, _ = serve_engine({"GET /volumes": (200, {"Volumes": volumes})}, chunked=True)
    listed = DockerClient(base_url=f"unix://{path}").list_volumes()
    assert [v.name for v in listed] == [f"v{i}" for i in range(2000)]
    assert listed[1999].labels == {"n": "1999"}


def test_a_followed_answer_is_dechunked_whatever_its_pieces() -> None:
    from opencode_cloud.docker.transport import _dechunked

    payload = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n"
    for size in (1, 2, 3, 7, len(payload)):
        pieces = (payload[i : i + size] for i in range(0, len(payload), size))
        assert b"".join(_dechunked(pieces)) == b"Wikipedia in \r\n\r\nchunks."


def test_a_containers_output_frames_are_unwrapped_whatever_their_pieces() -> None:
    from opencode_cloud.docker.client import _frames

    def frame(stream: int, data: bytes) -> bytes:
        return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data

    raw = frame(1, b"@ready\n") + frame(2, b"oops\n") + frame(1, b"@done {}\n")
    for size in (1, 5, 8, 9, len(raw)):
        pieces = (raw[i : i + size] for i in range(0, len(raw), size))
        assert b"".join(_frames(pieces)) == b"@ready\noops\n@done {}\n"


def test_an_engine_on_a_unix_socket_is_local_unless_said_otherwise(serve_engine) -> None:
    path, _ = serve_engine({})
    assert DockerClient(base_url=f"unix://{path}").is_local is True
    # A socket forwarded from another machine looks just the same: its caller says so.
    assert DockerClient(base_url=f"unix://{path}", local=False).is_local is False
