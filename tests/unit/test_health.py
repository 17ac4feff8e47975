"""Health polling against a small local HTTP server; the engine is a fake over canned JSON."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from opencode_cloud.docker.errors import ContainerExited, HealthTimeout
from opencode_cloud.docker.health import (
    basic_auth_header,
    probe,
    probe_health,
    wait_until_healthy,
)
from opencode_cloud.docker.models import ContainerInfo, parse_container

USER, PASSWORD = "opencode", "pa:ss w/ord"


class Handler(BaseHTTPRequestHandler):
    """Answers like opencode: 401 without the right Basic credentials, then health JSON."""

    ready_at: ClassVar[float] = 0.0
    requests: ClassVar[int] = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._send(401, b"Unauthorized")
        elif time.monotonic() < self.ready_at:
            self._send(503, b"starting")
        elif self.path == "/global/health":
            self._send(200, json.dumps({"healthy": True, "version": "1.18.33"}).encode())
        else:
            self._send(404, b"no")

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def server() -> Iterator[str]:
    Handler.ready_at = 0.0
    Handler.requests = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/global/health"
    httpd.shutdown()
    httpd.server_close()


class FakeApi:
    """The two engine calls health polling makes, with a scripted container state (the
    engine's own inspect JSON)."""

    def __init__(self, states: list[dict[str, Any]], logs: bytes = b"") -> None:
        self.states = states
        self.logs_data = logs
        self.inspections = 0
        self.log_calls: list[tuple[str, int | None]] = []
        self.died_with: int | None = None

    def inspect_container(self, name: str) -> dict[str, Any]:
        state = self.states[min(self.inspections, len(self.states) - 1)]
        self.inspections += 1
        return {"Name": f"/{name}", "State": state, "RestartCount": state.get("_restarts", 0)}

    def logs(self, name: str, tail: int | None) -> Iterator[bytes]:
        self.log_calls.append((name, tail))
        yield self.logs_data


class FakeClient:
    """The `DockerClient` calls health polling makes, answered from a `FakeApi`."""

    timeout = 5.0

    def __init__(self, api: FakeApi) -> None:
        self.api = api

    def inspect_container(self, name: str) -> ContainerInfo:
        return parse_container(self.api.inspect_container(name))

    def container_logs(self, name: str, *, tail: int | None = None, **_: Any) -> Iterator[bytes]:
        return self.api.logs(name, tail)

    def last_exit_code(self, name: str, since: float) -> int | None:
        """The engine's record of the last exit (its "die" event): the scripted one."""
        return self.api.died_with


RUNNING = {"Status": "running", "Running": True, "Restarting": False, "ExitCode": 0}


def test_basic_auth_header() -> None:
    assert basic_auth_header("a", "b") == "Basic YTpi"


def test_probe_health(server: str) -> None:
    assert probe_health(server, USER, PASSWORD) == {"healthy": True, "version": "1.18.33"}
    assert probe_health(server, USER, "wrong") is None
    assert probe_health(server, None, None) is None
    result = probe(server, None, None)
    assert (result.status, result.state) == (401, "unauthorized")
    assert probe(server, USER, PASSWORD).state == "healthy"


def test_probe_of_nothing_listening(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}/global/health"
    assert probe_health(url, USER, PASSWORD) is None
    result = probe(url, USER, PASSWORD)
    assert result.status is None
    assert result.state == "unreachable"
    assert result.error


def test_wait_returns_once_healthy(server: str) -> None:
    Handler.ready_at = time.monotonic() + 0.3
    client = FakeClient(FakeApi([RUNNING]))
    took = wait_until_healthy(client, "c", server, USER, PASSWORD, timeout=5, interval=0.02)  # type: ignore[arg-type]
    assert 0.25 <= took < 2.0
    # It polled at its interval rather than once a second.
    assert Handler.requests >= 5


def test_wait_times_out_and_names_the_refused_password(server: str) -> None:
    client = FakeClient(FakeApi([RUNNING]))
    started = time.monotonic()
    with pytest.raises(HealthTimeout) as info:
        wait_until_healthy(client, "c", server, USER, "wrong", timeout=0.5, interval=0.02)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2.0
    assert "401" in info.value.message
    # The service holds another password: the CLI's hint then says `occ auth rotate`.
    assert info.value.refused is True
    assert info.value.name == "c"


def test_wait_fails_fast_when_the_container_exits(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}/global/health"
    exited = {"Status": "exited", "Running": False, "Restarting": False, "ExitCode": 78}
    api = FakeApi([RUNNING, exited], logs=b"opencode-cloud: no password file\n")
    started = time.monotonic()
    with pytest.raises(ContainerExited) as info:
        wait_until_healthy(FakeClient(api), "c", url, USER, PASSWORD, timeout=30)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2.0
    assert "exit code 78" in info.value.message
    # The container's last output lines travel with the error (the CLI prints them).
    assert info.value.log_tail == ["opencode-cloud: no password file"]
    assert (info.value.exit_code, info.value.restarting) == (78, False)
    assert api.log_calls and api.log_calls[0][0] == "c"


def test_wait_fails_fast_on_a_restart(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}/global/health"
    restarted = {**RUNNING, "_restarts": 1}
    api = FakeApi([RUNNING, restarted], logs=b"EACCES: permission denied\n")
    api.died_with = 1  # running again, so only the engine's events know the exit code
    with pytest.raises(ContainerExited) as info:
        wait_until_healthy(FakeClient(api), "c", url, USER, PASSWORD, timeout=30)  # type: ignore[arg-type]
    assert info.value.log_tail == ["EACCES: permission denied"]
    assert info.value.exit_code == 1 and info.value.restarting
