"""The test swarm, up for the session (`scripts/swarm.sh up`), and down afterwards unless
it was already up (start it by hand to keep it between runs). docs/cluster.md describes
it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencode_cloud.cli.progress import PlainProgress
from opencode_cloud.docker.client import DockerClient
from opencode_cloud.docker.image import build_image
from swarm_helpers import SCRIPT, SWARM_ID, Swarm

# An image of this checkout under a name of its own (the shared sandbox tag is left alone).
IMAGE = f"occsw-test/sandbox:swarm{SWARM_ID}"


def _status() -> bool:
    return subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode == 0


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the test swarm needs root (network namespaces, more dockerds)"
    if shutil.which("ip") is None or shutil.which("nsenter") is None:
        return "no `ip` (iproute2) or `nsenter` (util-linux) for network namespaces"
    return None


@pytest.fixture(scope="session")
def swarm() -> Iterator[Swarm]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    was_up = _status()
    began = time.monotonic()
    started = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        pytest.fail(
            f"scripts/swarm.sh up failed (exit {started.returncode}):\n"
            f"{started.stdout}{started.stderr}",
            pytrace=False,
        )
    print(f"test swarm up in {time.monotonic() - began:.1f} s")
    yield Swarm()
    if not was_up:
        subprocess.run([str(SCRIPT), "down"], capture_output=True, timeout=300)


def _ca_files() -> list[Path]:
    found = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    return [Path(found)] if Path(found).is_file() else []


@pytest.fixture(scope="session")
def image_on_manager(swarm: Swarm) -> Iterator[str]:
    """This checkout's image, built here (cached) and copied to the manager, as if built
    there: the swarm has no internet. Its tag here is removed afterwards."""
    with DockerClient() as local:
        build_image(local, tag=IMAGE, ca_files=_ca_files(), reporter=PlainProgress())
        image_id = local.inspect_image(IMAGE)
    assert image_id is not None
    on_manager = swarm.docker(1, "image", "inspect", IMAGE, "--format", "{{.Id}}", check=False)
    if on_manager.stdout.strip() != image_id.id:
        swarm.load_on_manager(IMAGE)
    yield IMAGE
    subprocess.run(["docker", "image", "rm", IMAGE], capture_output=True)
