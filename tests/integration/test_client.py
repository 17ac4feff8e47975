"""Connecting to the engine, and the errors when it cannot be reached."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from opencode_cloud.docker.client import DockerClient
from opencode_cloud.docker.errors import DaemonNotRunning

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
    # Named by DOCKER_HOST: the CLI's hint then names it, and how to start or unset it.
    assert caught.value.host == f"unix://{tmp_path}/nothing-here.sock"
    assert caught.value.chosen_by == "DOCKER_HOST"


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
    with pytest.raises(DaemonNotRunning) as caught:
        DockerClient(timeout=5)
    assert time.monotonic() - began < 5
    # A remote engine: the CLI's hint then names the address to check.
    assert caught.value.host == f"tcp://127.0.0.1:{port}"


def test_everyday_calls_do_not_import_docker_py(instance, busybox_image, free_port) -> None:
    """Create, start, inspect, stop, remove and volume calls speak to the socket directly,
    so commands such as `occ status` and `occ stop` start fast."""
    import os
    import subprocess
    import sys

    script = f"""
import sys
from opencode_cloud.docker.client import DockerClient
from opencode_cloud.docker.container import (container_state, remove_container,
    setup_and_start, stop_container)
from opencode_cloud.docker.spec import ContainerSpec, DefaultSettings
from opencode_cloud.docker.volume import remove_all_volumes, volume_sizes
from opencode_cloud.instance import Instance
instance = Instance({instance.name!r}, extra_labels={dict(instance.extra_labels)!r})
client = DockerClient()
image = client.inspect_image({busybox_image!r})
spec = ContainerSpec.from_config(DefaultSettings(port={free_port}), instance,
                                 image={busybox_image!r}, image_id=image.id)
setup_and_start(client, spec, instance, files={{"/tmp/f": b"x"}})
assert container_state(client, instance.container_name) == "running"
volume_sizes(client, instance)
stop_container(client, instance.container_name, timeout=2)
remove_container(client, instance.container_name)
remove_all_volumes(client, instance)
assert "docker" not in sys.modules and "requests" not in sys.modules, "docker-py imported"
"""
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr


def test_lifecycle_through_docker_py(instance, busybox_image, free_port, make_spec) -> None:
    """The same operations work when docker-py carries every call (remote engines)."""
    from opencode_cloud.docker.container import (
        container_state,
        remove_container,
        setup_and_start,
        stop_container,
    )
    from opencode_cloud.docker.volume import ensure_volumes_exist

    with DockerClient(direct=False) as client:
        assert client.ping()
        ensure_volumes_exist(client, instance)
        spec = make_spec(free_port)
        image = client.inspect_image(busybox_image)
        assert image is not None and image.id == spec.image_id
        setup_and_start(client, spec, instance)
        assert container_state(client, instance.container_name) == "running"
        stop_container(client, instance.container_name, timeout=2)
        assert container_state(client, instance.container_name) == "exited"
        remove_container(client, instance.container_name)
