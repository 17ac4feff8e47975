"""The test swarm, up for the session (`scripts/swarm.sh up`), and down afterwards unless
it was already up (start it by hand to keep it between runs). docs/cluster.md describes
it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from swarm_helpers import SCRIPT, Swarm


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
