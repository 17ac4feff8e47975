"""`occ` run as a subprocess, the way a user runs it, and the docker CLI for what the
end-to-end tests do around it (their fixtures are in `tests/e2e/conftest.py`)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opencode_cloud.defaults import IMAGE_NAME

OCC = [sys.executable, "-m", "opencode_cloud"]
# The release the upgrade tests start from; the default (1.18.33) is the one they end on.
OLDER_OPENCODE = "1.18.32"


def run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`occ ARGS...` with the environment of one user (`occ_env`)."""
    proc = subprocess.run([*OCC, *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"occ {' '.join(args)}: {proc.stderr}"
    return proc


def api(env: dict[str, str], method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One call of opencode's API through the service, with the credentials `occ` shows."""
    creds = json.loads(run(env, "--json", "auth", "show").stdout)
    request = urllib.request.Request(
        creds["url"] + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Authorization": "Basic "
            + base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode(),
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def session_titles(env: dict[str, str]) -> set[str]:
    sessions = api(env, "GET", "/session")
    assert isinstance(sessions, list)
    return {s["title"] for s in sessions}


def docker(*args: str) -> str:
    """The docker CLI: test cleanup stays independent of the library's names."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    return proc.stdout if proc.returncode == 0 else ""


def remove_images(*images: str) -> None:
    """Remove images (with their unshared layers), quietly skipping absent ones."""
    if images:
        docker("rmi", *images)


@contextlib.contextmanager
def image_kept(image: str) -> Iterator[None]:
    """While in it, a stopped container of `image` (of no instance) holds it: an `occ
    uninstall` in the block keeps the image every other test, and a test of the same
    session run alongside, still uses."""
    holder = docker("create", "--label", "io.opencode-cloud.test-holder=true", image).strip()
    assert holder, f"cannot make a container of {image}"
    try:
        yield
    finally:
        docker("rm", "-f", holder)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def instance_env(config_dir: Path, instance: str, port: int) -> dict[str, str]:
    """The environment of `occ` for a test's own instance: its configuration folder and
    port, and no fetch of the models list (the tests run offline)."""
    env = {
        **os.environ,
        "OCC_CONFIG_DIR": str(config_dir),
        "OCC_INSTANCE": instance,
        "NO_COLOR": "1",
    }
    run(env, "config", "set", "port", str(port))
    run(env, "config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
    return env


def remove_everything_of(instance: str) -> None:
    """Every container, volume and network labelled as `instance`'s (a team has all
    three); never an image."""
    label = f"label=io.opencode-cloud.instance={instance}"
    containers = docker("ps", "-aq", "--filter", label).split()
    if containers:
        docker("rm", "-f", "-v", *containers)
    volumes = docker("volume", "ls", "-q", "--filter", label).split()
    if volumes:
        docker("volume", "rm", "-f", *volumes)
    networks = docker("network", "ls", "-q", "--filter", label).split()
    if networks:
        docker("network", "rm", *networks)


def remove_containers(instance: Any) -> None:
    """Every container of `instance` (an `Instance`), with its anonymous volumes."""
    label = f"label=io.opencode-cloud.instance={instance.name}"
    containers = docker("ps", "-aq", "--filter", label).split()
    if containers:
        docker("rm", "-f", "-v", *containers)


def remove_release(instance: Any, version: str) -> None:
    """The image of an opencode release a test built, and the unnamed build stage the
    engine keeps as its cache: a run keeps only the default image. The containers made of
    it go first (they hold the image); `instance` None: whoever's they are."""
    if instance is not None:
        remove_containers(instance)
    holding = docker("ps", "-aq", "--filter", f"ancestor={IMAGE_NAME}:{version}").split()
    if holding:
        docker("rm", "-f", "-v", *holding)
    remove_images(f"{IMAGE_NAME}:{version}")
    stages = docker(
        "images", "-q", "--filter", "dangling=true",
        "--filter", "label=io.opencode-cloud.stage=build",
        "--filter", f"label=io.opencode-cloud.opencode-version={version}",
    ).split()  # fmt: skip
    remove_images(*stages)
