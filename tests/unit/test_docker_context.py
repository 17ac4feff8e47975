"""Which engine the tool talks to, as the docker CLI would choose it: DOCKER_HOST, the
current Docker context, the default socket; and what a user reads when that choice is
wrong (an unknown context, a dead socket named by DOCKER_HOST)."""

from __future__ import annotations

import hashlib
import json
import shutil
import socketserver
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import runner
from opencode_cloud.cli.output import ExitCode
from opencode_cloud.docker.client import DockerClient
from opencode_cloud.docker.errors import DaemonNotRunning, UnknownContext


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: a unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="occ-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The docker CLI's folder, empty: no contexts, no current one."""
    folder = tmp_path / "docker-config"
    folder.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "cfg"))
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "OCC_HOST", "OCC_INSTANCE"):
        monkeypatch.delenv(name, raising=False)
    return folder


def add_context(docker_config: Path, name: str, host: str) -> None:
    """A context as `docker context create NAME --docker host=HOST` writes it."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = docker_config / "contexts" / "meta" / digest / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(
        json.dumps(
            {
                "Name": name,
                "Metadata": {},
                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}},
            }
        )
    )


def use_context(docker_config: Path, name: str) -> None:
    """`docker context use NAME`."""
    (docker_config / "config.json").write_text(json.dumps({"currentContext": name}))


@pytest.fixture
def engine_socket(short_dir: Path) -> Iterator[str]:
    """A unix socket answering the engine's version call, like a rootless engine's."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            body = json.dumps({"ApiVersion": "1.41"}).encode()
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )

    path = str(short_dir / "docker.sock")
    server = socketserver.ThreadingUnixStreamServer(path, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield path
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- unknown


def test_an_unknown_docker_context_is_refused(
    docker_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONTEXT", "nope")
    with pytest.raises(UnknownContext) as caught:
        DockerClient(timeout=2)
    assert (caught.value.name, caught.value.chosen_by) == ("nope", "DOCKER_CONTEXT")


def test_an_unknown_current_context_is_refused(docker_config: Path) -> None:
    use_context(docker_config, "gone")
    with pytest.raises(UnknownContext) as caught:
        DockerClient(timeout=2)
    assert (caught.value.name, caught.value.chosen_by) == ("gone", "docker context use")


def test_occ_says_which_context_is_unknown(
    docker_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_CONTEXT", "nope")
    result = runner(capsys)("status")
    assert result.code == ExitCode.DOCKER_UNAVAILABLE
    lines = result.err.strip().splitlines()
    assert lines == [
        "Error: There is no Docker context 'nope' (named by DOCKER_CONTEXT).",
        "Hint: Set DOCKER_CONTEXT to one of `docker context ls`, or `unset DOCKER_CONTEXT` "
        "to use the default engine.",
    ]


def test_the_default_context_is_the_default_socket(
    docker_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opencode_cloud.docker.transport import DEFAULT_SOCKET, engine_address

    monkeypatch.setenv("DOCKER_CONTEXT", "default")
    assert engine_address().socket_path == DEFAULT_SOCKET


def test_docker_host_wins_over_a_context(
    docker_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opencode_cloud.docker.transport import engine_address

    monkeypatch.setenv("DOCKER_CONTEXT", "nope")  # not even read, as with the docker CLI
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/x.sock")
    address = engine_address()
    assert (address.socket_path, address.chosen_by) == ("/run/x.sock", "DOCKER_HOST")


# --------------------------------------------------------------------------- unix contexts


@pytest.mark.parametrize("chosen", ["DOCKER_CONTEXT", "docker context use"])
def test_a_context_on_a_unix_socket_is_local_and_spoken_to_directly(
    docker_config: Path, engine_socket: str, monkeypatch: pytest.MonkeyPatch, chosen: str
) -> None:
    """Rootless Docker, Docker Desktop and colima: the engine is on this machine, so a
    backup copies beside the volumes and pauses only for the databases."""
    add_context(docker_config, "rootless", f"unix://{engine_socket}")
    if chosen == "DOCKER_CONTEXT":
        monkeypatch.setenv("DOCKER_CONTEXT", "rootless")
    else:
        use_context(docker_config, "rootless")
    client = DockerClient(timeout=5)
    assert client.is_local is True
    assert client.host == f"unix://{engine_socket}"
    assert client._socket is not None  # no docker-py on the everyday path
    client.close()


def test_a_context_on_tcp_is_not_local(docker_config: Path) -> None:
    from opencode_cloud.docker.transport import engine_address

    add_context(docker_config, "far", "tcp://192.0.2.1:2376")
    use_context(docker_config, "far")
    address = engine_address()
    assert (address.url, address.socket_path, address.context) == (
        "tcp://192.0.2.1:2376",
        None,
        "far",
    )


# --------------------------------------------------------------------------- dead engines


def test_a_dead_socket_named_by_docker_host_names_it_in_the_hint(
    docker_config: Path,
    short_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    dead = f"unix://{short_dir}/dead.sock"
    monkeypatch.setenv("DOCKER_HOST", dead)
    result = runner(capsys)("status")
    assert result.code == ExitCode.DOCKER_UNAVAILABLE
    hint = result.err.split("Hint:", 1)[1]
    assert dead in hint and "DOCKER_HOST" in hint
    assert "`unset DOCKER_HOST`" in hint
    assert "systemctl" not in hint


def test_a_dead_socket_named_by_a_context_names_the_context(
    docker_config: Path, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opencode_cloud.cli.hints import hint_for

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    add_context(docker_config, "colima", f"unix://{short_dir}/colima.sock")
    use_context(docker_config, "colima")
    with pytest.raises(DaemonNotRunning) as caught:
        DockerClient(timeout=2)
    hint = hint_for(caught.value)
    assert "'colima'" in hint and f"{short_dir}/colima.sock" in hint
    assert "docker context use default" in hint
    assert "systemctl" not in hint


def test_the_default_socket_dead_says_how_to_start_the_engine() -> None:
    from opencode_cloud.cli.hints import hint_for

    assert "systemctl start docker" in hint_for(DaemonNotRunning("unix:///var/run/docker.sock"))
