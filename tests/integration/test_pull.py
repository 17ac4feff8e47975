"""Pulling the sandbox image from a real registry (Debian's docker-registry on loopback).

The engine trusts 127.0.0.1 registries without TLS, so no certificate set-up is needed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opencode_cloud.defaults import IMAGE_NAME
from opencode_cloud.docker.errors import PullFailed
from opencode_cloud.docker.image import (
    build_context,
    build_from_context,
    image_exists,
    pull_image,
    registry_ref,
)
from opencode_cloud.instance import Instance

pytestmark = pytest.mark.integration

REGISTRY_BINARY = "/usr/bin/docker-registry"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry on a free loopback port, stopped (and its storage dropped) afterwards."""
    binary = shutil.which("docker-registry") or REGISTRY_BINARY
    if not Path(binary).exists():
        pytest.fail("docker-registry is missing: apt-get install docker-registry")
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}/v2/", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"registry did not start: {(root / 'registry.log').read_text()}")
            time.sleep(0.05)
        yield address
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def pushed(
    docker_client: Any, docker_sdk: Any, busybox_image: str, registry: str, instance: Instance
) -> Iterator[str]:
    """A unique image in the registry and nowhere in the engine; yields its tag.

    Its top layer is 1.5 MB of random bytes, so the pull really transfers a layer.
    """
    raw = docker_sdk
    tag = instance.name
    remote = registry_ref(registry, tag)
    labels = " ".join(f"{key}={value}" for key, value in instance.extra_labels.items())
    dockerfile = f"FROM {busybox_image}\nLABEL {labels}\nRUN head -c 1500000 /dev/urandom > /blob\n"
    build_from_context(
        docker_client,
        build_context(files=[("Dockerfile", dockerfile.encode(), 0o644)]),
        tag=remote,
    )
    repository, _, version = remote.rpartition(":")
    for chunk in raw.api.push(repository, tag=version, stream=True, decode=True):
        assert "error" not in chunk, chunk
    raw.images.remove(remote, force=True)
    assert not image_exists(docker_client, remote)
    yield tag
    for name in (f"{IMAGE_NAME}:{tag}", remote):
        if image_exists(docker_client, name):
            raw.images.remove(name, force=True)


class Recorder:
    def __init__(self) -> None:
        self.layers: list[tuple[str, str, int | None, int | None]] = []
        self.statuses: list[str] = []

    def build_step(self, step: int, total: int, message: str) -> None:
        return None

    def build_output(self, line: str) -> None:
        return None

    def layer(self, layer_id: str, status: str, current: int | None, total: int | None) -> None:
        self.layers.append((layer_id, status, current, total))

    def status(self, message: str) -> None:
        self.statuses.append(message)

    def done(self, message: str = "") -> None:
        self.statuses.append(message)


def test_fails_over_to_the_live_registry_and_retags(
    docker_client: Any, registry: str, pushed: str
) -> None:
    dead = f"127.0.0.1:{_free_port()}"
    recorder = Recorder()
    waits: list[float] = []
    source = pull_image(
        docker_client,
        [dead, registry],
        tag=pushed,
        retries=3,
        backoff=0.01,
        reporter=recorder,
        sleep=waits.append,
    )
    assert source == registry_ref(registry, pushed)
    # The dead registry got every attempt, with exponential backoff between them.
    assert waits == [0.01, 0.02]
    assert any(dead in s and "Could not pull" in s for s in recorder.statuses)
    # Only the canonical local name remains.
    assert image_exists(docker_client, f"{IMAGE_NAME}:{pushed}")
    assert not image_exists(docker_client, source)
    # The random layer was downloaded, with byte counts.
    assert any(
        current and total and status == "Downloading"
        for _, status, current, total in recorder.layers
    )
    assert any(status == "Pull complete" for _, status, _, _ in recorder.layers)


def test_full_local_name_as_tag(docker_client: Any, registry: str, pushed: str) -> None:
    source = pull_image(docker_client, [registry], tag=f"{IMAGE_NAME}:{pushed}")
    assert source == registry_ref(registry, pushed)
    assert image_exists(docker_client, f"{IMAGE_NAME}:{pushed}")


def test_all_registries_dead(docker_client: Any) -> None:
    dead_one, dead_two = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    waits: list[float] = []
    with pytest.raises(PullFailed) as info:
        pull_image(
            docker_client, [dead_one, dead_two], tag="absent", retries=2, backoff=0.01,
            sleep=waits.append,
        )  # fmt: skip
    assert dead_one in info.value.message
    assert dead_two in info.value.message
    assert "refused" in info.value.message
    assert [f.split(": ", 1)[0] for f in info.value.failures] == [dead_one, dead_two]
    assert info.value.image == f"{IMAGE_NAME}:absent"
    assert waits == [0.01, 0.01]


def test_unknown_tag_is_not_retried(docker_client: Any, registry: str) -> None:
    waits: list[float] = []
    with pytest.raises(PullFailed) as info:
        pull_image(
            docker_client, [registry], tag=f"absent-{uuid.uuid4().hex[:6]}", retries=3,
            backoff=5, sleep=waits.append,
        )  # fmt: skip
    assert waits == []
    assert registry in info.value.message
    assert "not found" in info.value.message or "unknown" in info.value.message


def test_no_registries(docker_client: Any) -> None:
    with pytest.raises(PullFailed, match="No registry") as info:
        pull_image(docker_client, [])
    # No failures to report: the CLI then says how to add a registry.
    assert info.value.failures == []
