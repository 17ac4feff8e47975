"""A first run on the real engine: `occ build` from nothing (every step run again) to a
signed-in answer, under a name of this test's own, so the shared sandbox image stays as
it is. The build leaves no unnamed image behind, and the whole takes under two minutes
(the base image present, as `scripts/base-image.sh` leaves it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from occ_helpers import api, docker, free_port, remove_images, run
from opencode_cloud.defaults import DEFAULT_OPENCODE_VERSION
from opencode_cloud.instance import Instance

pytestmark = pytest.mark.e2e

BASE_IMAGE = "debian:bookworm-slim"
FIRST_RUN_TARGET = 120.0


def host_ca_files() -> list[str]:
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return [candidate]
    return []


def unnamed_images() -> set[str]:
    """The engine's dangling images that carry this project's opencode version label."""
    found = docker(
        *("images", "-q", "--no-trunc", "-f", "dangling=true"),
        *("-f", "label=io.opencode-cloud.opencode-version"),
    )
    return set(found.split())


@pytest.fixture
def own_image(tmp_path: Path, instance: Instance) -> Iterator[tuple[dict[str, str], str]]:
    """A user's environment whose sandbox image has a name of its own; the image goes after."""
    if not docker("image", "inspect", BASE_IMAGE):
        pytest.skip(f"{BASE_IMAGE} is missing: scripts/base-image.sh makes it")
    env = {
        **os.environ,
        "OCC_CONFIG_DIR": str(tmp_path / "config"),
        "OCC_INSTANCE": instance.name,
        "NO_COLOR": "1",
    }
    image = f"opencode-cloud-test/sandbox:{instance.name}"
    run(env, "config", "set", "port", str(free_port()))
    run(env, "config", "set", "image", image)
    run(env, "config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
    for ca_file in host_ca_files():
        run(env, "config", "set", "ca_certificates", ca_file)
    yield env, image
    run(env, "uninstall", "--volumes", "--no-backup", "--yes", check=False)
    remove_images(image)


@pytest.mark.timeout(600)
def test_a_first_build_leaves_no_unnamed_image_and_answers_within_two_minutes(
    own_image: tuple[dict[str, str], str],
) -> None:
    env, image = own_image
    before = unnamed_images()
    began = time.monotonic()
    built = run(env, "--json", "build", "--no-cache")
    build_seconds = time.monotonic() - began
    run(env, "start")
    sessions = api(env, "GET", "/session")  # signed in: opencode reads its database
    first_run = time.monotonic() - began
    print(f"first run: build {build_seconds:.1f} s, to a signed-in answer {first_run:.1f} s")

    assert json.loads(built.stdout)["image"] == image
    assert isinstance(sessions, list)
    assert unnamed_images() - before == set()
    labels = json.loads(docker("image", "inspect", image))[0]["Config"]["Labels"]
    assert labels["io.opencode-cloud.opencode-version"] == DEFAULT_OPENCODE_VERSION
    assert "io.opencode-cloud.stage" not in labels
    assert first_run < FIRST_RUN_TARGET
