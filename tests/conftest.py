"""Shared fixtures: a real engine, a unique instance per test, and cleanup by label.

Everything a test creates carries `io.opencode-cloud.test-session=<id>`; finalizers remove
it per test, and a session-end sweep removes whatever a crashed test left behind: this
session's containers, volumes and images, and images of sessions that died hours ago.
The only images a run keeps are the default sandbox image (with its build cache) and the
base image.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from opencode_cloud.instance import Instance

if TYPE_CHECKING:
    from opencode_cloud.docker.client import DockerClient

TEST_LABEL = "io.opencode-cloud.test-session"
SESSION_ID = uuid.uuid4().hex[:8]
# Per session, so a concurrent session's sweep never removes an image still in use here.
BUSYBOX_IMAGE = f"opencode-cloud-test/busybox:{SESSION_ID}"
# Test images older than this come from a session that died before its sweep.
STALE_TEST_IMAGE_SECONDS = 3 * 3600
BUSYBOX_BINARY = "/bin/busybox"
# `import_busybox(tag, command)`: an image of busybox with that default command; its tag.
ImportBusybox = Callable[[str, str], str]


# Tests stop commands with Ctrl-C (SIGINT), as a user does in a terminal. A suite started
# in the background by a shell runs with SIGINT ignored, and commands it starts would
# inherit that: the handler set here is reset to the default in them instead.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _engine_available() -> bool:
    try:
        from opencode_cloud.docker.client import DockerClient

        DockerClient(timeout=5).close()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def docker_client() -> Iterator[DockerClient]:
    """A connected engine. Integration tests fail (not skip) without one: CI starts it."""
    from opencode_cloud.docker.client import DockerClient

    if not _engine_available() and os.environ.get("OCC_ALLOW_NO_ENGINE"):
        pytest.skip("no Docker engine (OCC_ALLOW_NO_ENGINE is set)")
    client = DockerClient(timeout=60)
    yield client
    _sweep(client, f"{TEST_LABEL}={SESSION_ID}")
    client.close()


@pytest.fixture(scope="session")
def docker_sdk(docker_client: DockerClient) -> Any:
    """docker-py, for what tests do around the tool: exec, run, push, kill, clean up.

    The tool itself reaches the engine only through `DockerClient`.
    """
    return _sdk()


@functools.cache
def _sdk() -> Any:
    import docker

    return docker.from_env(timeout=120)


def _sweep(client: object, label: str) -> None:
    raw = _sdk()
    for container in raw.containers.list(all=True, filters={"label": label}):
        container.remove(force=True, v=True)
    for volume in raw.volumes.list(filters={"label": label}):
        volume.remove(force=True)
    # Volumes an engine made on its own (unlabelled) still carry the session in their name.
    for volume in raw.volumes.list(filters={"name": f"opencode-cloud-t-{SESSION_ID}-"}):
        volume.remove(force=True)
    _sweep_images(label)


def _sweep_images(label: str) -> None:
    """Remove the images carrying `label`, and test images left by dead sessions.

    Removing an image also drops its unnamed parents (the intermediate images of its
    build) unless another image still builds on them.
    """
    from docker.errors import APIError

    api = _sdk().api
    session = label.partition("=")[2]
    stale = time.time() - STALE_TEST_IMAGE_SECONDS
    for _ in range(3):  # a parent becomes removable once its children are gone
        doomed = [
            image["Id"]
            for image in api.images(all=True, filters={"label": TEST_LABEL})
            if (image.get("Labels") or {}).get(TEST_LABEL) == session
            or int(image.get("Created") or 0) < stale
        ]
        if not doomed:
            break
        for image_id in doomed:
            try:
                api.remove_image(image_id, force=True)
            except APIError:
                continue  # already gone with a child, or still a parent: next round


@pytest.fixture
def instance(request: pytest.FixtureRequest, docker_client: DockerClient) -> Iterator[Instance]:
    """A fresh instance name for one test; its containers, volumes and networks are
    removed after."""
    suffix = uuid.uuid4().hex[:6]
    inst = Instance(name=f"t-{SESSION_ID}-{suffix}", extra_labels={TEST_LABEL: SESSION_ID})
    yield inst
    raw = _sdk()
    for container in raw.containers.list(
        all=True, filters={"label": f"io.opencode-cloud.instance={inst.name}"}
    ):
        container.remove(force=True, v=True)
    for volume in raw.volumes.list(filters={"label": f"io.opencode-cloud.instance={inst.name}"}):
        volume.remove(force=True)
    for network in raw.networks.list(filters={"label": f"io.opencode-cloud.instance={inst.name}"}):
        network.remove()  # team mode's


def _busybox_tar() -> bytes:
    """A root filesystem holding a static busybox and its applet links."""
    binary = shutil.which("busybox") or BUSYBOX_BINARY
    if not Path(binary).exists():
        pytest.fail("busybox is missing: apt-get install busybox-static (scripts/test.sh does)")
    data = Path(binary).read_bytes()
    applets = subprocess.run([binary, "--list"], capture_output=True, text=True, check=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        # /run/opencode-cloud: where the tool writes the password file, as in the real image.
        for directory in (
            "bin",
            "tmp",
            "workspace",
            "home",
            "home/opencode",
            "etc",
            "run",
            "run/opencode-cloud",
        ):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in applets.stdout.split():
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def import_busybox(docker_client: DockerClient) -> ImportBusybox:
    """Make an image from busybox with the given default command (`docker import`).

    It carries the session label, so the session-end sweep removes it.
    """
    raw = _sdk()

    def make(tag: str, command: str) -> str:
        repository, version = tag.rsplit(":", 1)
        raw.api.import_image_from_data(
            _busybox_tar(),
            repository=repository,
            tag=version,
            changes=[
                "ENV PATH=/bin",
                f'CMD ["/bin/sh", "-c", {json.dumps(command)}]',
                f"LABEL {TEST_LABEL}={SESSION_ID}",
            ],
        )
        return tag

    return make


@pytest.fixture(scope="session")
def busybox_image(import_busybox: ImportBusybox) -> str:
    """A tiny image made here (no registry is reachable).

    Its default command stays up and answers TERM at once, like a real service.
    """
    return import_busybox(BUSYBOX_IMAGE, "trap 'exit 0' TERM; while true; do sleep 0.1; done")


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
