"""How failures to reach the engine are told apart (fakes only; the real cases are in
tests/integration/test_client.py)."""

from __future__ import annotations

import json
import shutil

import docker
import pytest
import requests

from opencode_cloud.docker.client import DockerClient, connection_error, translate_errors
from opencode_cloud.docker.errors import (
    DaemonNotRunning,
    DockerError,
    DockerNotInstalled,
    DockerPermissionDenied,
    EngineTooOld,
    PortInUse,
)


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


def test_permission_denied_on_socket() -> None:
    error = connection_error(_wrapped(PermissionError(13, "Permission denied")))
    assert isinstance(error, DockerPermissionDenied)
    assert "usermod -aG docker" in error.hint


def test_not_installed_when_no_docker_binaries(monkeypatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    error = connection_error(_wrapped(FileNotFoundError(2, "No such file or directory")))
    assert isinstance(error, DockerNotInstalled)
    assert "install" in error.hint.lower()


def test_not_running_when_installed(monkeypatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    error = connection_error(_wrapped(ConnectionRefusedError(111, "Connection refused")))
    assert isinstance(error, DaemonNotRunning)
    assert "/var/run/docker.sock" in error.message
    assert "start" in error.hint


class _FakeApi:
    api_version = "1.30"


class _FakeDocker:
    api = _FakeApi()

    def close(self) -> None:
        pass


def test_engine_too_old_through_docker_py(monkeypatch) -> None:
    monkeypatch.setattr(docker, "from_env", lambda **_kw: _FakeDocker())
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    with pytest.raises(EngineTooOld) as caught:
        DockerClient(direct=False)
    assert "1.30" in caught.value.message and "1.40" in caught.value.message


@pytest.fixture
def old_engine(tmp_path):
    """A unix socket answering like a Docker 1.13 engine (API 1.26)."""
    import socketserver
    import threading
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"ApiVersion": "1.26", "Version": "1.13.1"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:
            pass

        def address_string(self) -> str:
            return "unix"

    path = str(tmp_path / "old.sock")
    server = socketserver.UnixStreamServer(path, Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def test_engine_too_old_over_the_socket(old_engine) -> None:
    with pytest.raises(EngineTooOld) as caught:
        DockerClient(base_url=f"unix://{old_engine}")
    assert "1.26" in caught.value.message
    assert "Upgrade" in caught.value.hint


def _api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("boom", response=response, explanation=explanation)


def test_port_taken_becomes_port_in_use() -> None:
    explanation = (
        "driver failed programming external connectivity on endpoint x: "
        "Bind for 127.0.0.1:3000 failed: port is already allocated"
    )
    with pytest.raises(PortInUse) as caught, translate_errors(port=3000):
        raise _api_error(500, explanation)
    assert caught.value.message == "Port 3000 is already in use."


def test_other_api_errors_keep_the_engine_explanation() -> None:
    with pytest.raises(DockerError) as caught, translate_errors():
        raise _api_error(500, "disk full")
    assert "disk full" in caught.value.message


def test_dechunk_joins_chunks_and_ignores_extensions() -> None:
    from opencode_cloud.docker.client import _dechunk

    payload = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n"
    assert _dechunk(payload) == b"Wikipedia in \r\n\r\nchunks."


@pytest.fixture
def chunked_engine(tmp_path):
    """A unix socket answering every request with a large chunked JSON body."""
    import socketserver
    import threading

    items = [{"Name": f"v{i}", "Size": i} for i in range(2000)]
    body = json.dumps({"ApiVersion": "1.41", "Volumes": items}).encode()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for start in range(0, len(body), 4096):
                part = body[start : start + 4096]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

    path = str(tmp_path / "chunked.sock")
    server = socketserver.UnixStreamServer(path, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield path, items
    server.shutdown()
    server.server_close()


def test_large_chunked_answers_are_read_whole(chunked_engine) -> None:
    path, items = chunked_engine
    client = DockerClient(base_url=f"unix://{path}")
    answer = client.request("GET", "/system/df")
    assert answer.status == 200
    assert answer.body["Volumes"] == items
