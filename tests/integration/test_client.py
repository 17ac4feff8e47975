"""Connecting to the engine, and the errors when it cannot be reached."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from opencode_cloud.docker import DaemonNotRunning, DockerClient

pytestmark = pytest.mark.integration


def test_connects_to_the_running_engine(docker_client) -> None:
    assert docker_client.ping()
    assert tuple(int(p) for p in docker_client.api_version.split(".")) >= (1, 40)


def test_dead_socket_raises_daemon_not_running_quickly(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing-here.sock")
    began = time.monotonic()
    with pytest.raises(DaemonNotRunning) as caught:
        DockerClient(timeout=5)
    assert time.monotonic() - began < 5
    assert "nothing-here.sock" in caught.value.message
    assert "not running" in caught.value.message
    assert "start" in caught.value.hint


def test_socket_nobody_listens_on_raises_daemon_not_running(monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound but never listening: connections are refused
    try:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        with pytest.raises(DaemonNotRunning):
            DockerClient(timeout=5)
    finally:
        stale.close()


def test_closed_tcp_port_raises_daemon_not_running(monkeypatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
    began = time.monotonic()
    with pytest.raises(DaemonNotRunning):
        DockerClient(timeout=5)
    assert time.monotonic() - began < 5
