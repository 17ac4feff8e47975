"""Health polling against opencode served by a small local HTTP server; the engine is a fake
whose container goes through scripted states."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from fake_opencode import FakeOpencode
from fakes import FakeEngine
from opencode_cloud.docker.errors import ContainerExited, HealthTimeout
from opencode_cloud.docker.health import wait_until_healthy
from opencode_cloud.docker.models import ContainerInfo, parse_container
from opencode_cloud.opencode import Server, basic_auth_header, probe

USER, PASSWORD = "opencode", "pa:ss w/ord"


@pytest.fixture
def opencode() -> Iterator[FakeOpencode]:
    """opencode answering for the credentials USER and PASSWORD, no container needed."""
    server = FakeOpencode(username=USER, password=PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture
def server(opencode: FakeOpencode) -> str:
    """The health URL of `opencode`."""
    return opencode.health_url


class ScriptedEngine(FakeEngine):
    """An engine whose container goes through scripted states (the engine's own inspect
    JSON of its `State`), one per inspection, the last one for good; the calls health
    polling makes are answered from the script."""

    def __init__(self, states: list[dict[str, Any]], logs: bytes = b"") -> None:
        super().__init__()
        self.states = states
        self.output = logs
        self.inspections = 0
        self.log_calls: list[tuple[str, int | None]] = []
        self.died_with: int | None = None

    def inspect_container(self, name: str) -> ContainerInfo:
        state = self.states[min(self.inspections, len(self.states) - 1)]
        self.inspections += 1
        raw = {"Name": f"/{name}", "State": state, "RestartCount": state.get("_restarts", 0)}
        return parse_container(raw)

    def container_logs(
        self,
        name: str,
        *,
        tail: int | None = None,
        follow: bool = False,
        since: int | None = None,
        timestamps: bool = False,
    ) -> Iterator[bytes]:
        self.log_calls.append((name, tail))
        yield self.output

    def last_exit_code(self, name: str, since: float) -> int | None:
        """The engine's record of the last exit (its "die" event): the scripted one."""
        return self.died_with


RUNNING = {"Status": "running", "Running": True, "Restarting": False, "ExitCode": 0}


def test_basic_auth_header() -> None:
    assert basic_auth_header("a", "b") == "Basic YTpi"


def test_the_server_asks_for_sessions_with_the_credentials(opencode: FakeOpencode) -> None:
    server = Server(opencode.health_url.removesuffix("/global/health"), USER, PASSWORD)
    assert server.health_url == opencode.health_url
    assert server.health().healthy
    sessions, problem = server.sessions()
    assert problem is None and sessions
    assert server.session_problem() is None
    assert server.read_session(str(sessions[0]["id"])) is None
    refused = Server(server.base_url, USER, "wrong")
    assert refused.sessions() == ([], "HTTP 401")
    assert refused.read_session("x") == "HTTP 401"


def test_probe_health(server: str) -> None:
    answer = probe(server, USER, PASSWORD)
    assert answer.body == {"healthy": True, "version": "1.18.33"}
    assert answer.version == "1.18.33"
    assert not probe(server, USER, "wrong").healthy
    assert probe(server, USER, "wrong").version is None
    assert not probe(server, None, None).healthy
    result = probe(server, None, None)
    assert (result.status, result.state) == (401, "unauthorized")
    assert probe(server, USER, PASSWORD).state == "healthy"


def test_probe_of_nothing_listening(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}/global/health"
    result = probe(url, USER, PASSWORD)
    assert not result.healthy
    assert result.status is None
    assert result.state == "unreachable"
    assert result.error


def test_wait_returns_once_healthy(server: str, opencode: FakeOpencode) -> None:
    opencode.ready_at = time.monotonic() + 0.3
    engine = ScriptedEngine([RUNNING])
    took = wait_until_healthy(engine, "c", server, USER, PASSWORD, timeout=5, interval=0.02)
    assert 0.25 <= took < 2.0
    # It polled at its interval rather than once a second.
    assert opencode.requests >= 5


def test_wait_times_out_and_names_the_refused_password(server: str) -> None:
    engine = ScriptedEngine([RUNNING])
    started = time.monotonic()
    with pytest.raises(HealthTimeout) as info:
        wait_until_healthy(engine, "c", server, USER, "wrong", timeout=0.5, interval=0.02)
    assert time.monotonic() - started < 2.0
    assert "401" in info.value.message
    # The service holds another password: the CLI's hint then says `occ auth rotate`.
    assert info.value.refused is True
    assert info.value.name == "c"


def test_wait_fails_fast_when_the_container_exits(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}/global/health"
    exited = {"Status": "exited", "Running": False, "Restarting": False, "ExitCode": 78}
    engine = ScriptedEngine([RUNNING, exited], logs=b"opencode-cloud: no password file\n")
    started = time.monotonic()
    with pytest.raises(ContainerExited) as info:
        wait_until_healthy(engine, "c", url, USER, PASSWORD, timeout=30)
    assert time.monotonic() - started < 2.0
    assert "exit code 78" in info.value.message
    # The container's last output lines travel with the error (the CLI prints them).
    assert info.value.log_tail == ["opencode-cloud: no password file"]
    assert (info.value.exit_code, info.value.restarting) == (78, False)
    assert engine.log_calls and engine.log_calls[0][0] == "c"


def test_wait_fails_fast_on_a_restart(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}/global/health"
    restarted = {**RUNNING, "_restarts": 1}
    engine = ScriptedEngine([RUNNING, restarted], logs=b"EACCES: permission denied\n")
    engine.died_with = 1  # running again, so only the engine's events know the exit code
    with pytest.raises(ContainerExited) as info:
        wait_until_healthy(engine, "c", url, USER, PASSWORD, timeout=30)
    assert info.value.log_tail == ["EACCES: permission denied"]
    assert info.value.exit_code == 1 and info.value.restarting
