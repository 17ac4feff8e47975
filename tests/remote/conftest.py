"""The remote test host: a machine reached over SSH, with a Docker engine of its own.

`scripts/remote-host.sh up` builds it on this machine (root only) out of network
namespaces; docs/architecture.md ("The remote test host") describes it. The `remote_host`
fixture starts it once per session and stops it afterwards, unless it was already up or
another session still uses it (start it by hand to keep it between runs).

Every client goes through `ssh -F <state>/ssh_config ALIAS`; the aliases:

- `occ-remote`: root at 10.203.0.2:2222, which can use the remote engine.
- `occ-remote-nodock`: the same host as `occ-nodock`, who cannot (the engine's socket is
  root:root 0660).
- `occ-remote-badauth`: a key the host does not accept ("Permission denied (publickey)").
- `occ-remote-changedkey`: known_hosts holds another key for the host ("REMOTE HOST
  IDENTIFICATION HAS CHANGED").
- `occ-remote-unknownkey`: an empty known_hosts, strict checking ("No ED25519 host key is
  known for [10.203.0.2]:2222").
- `occ-remote-refused`: the host is up, nothing listens on the port ("Connection refused").
- `occ-remote-down`: nobody answers at 10.203.0.9, ConnectTimeout 3 ("Connection timed out").
- `occ-remote2`: root at 10.203.1.2:22, a host without Docker.

Sockets: the engine listens on `docker_socket`, a path that is the same on the remote and
here (the fixture's `remote_docker` uses it directly). On `occ-remote` the usual
/var/run/docker.sock also leads to the remote engine; on `occ-remote2` it does not exist.
Both hosts have a /run of their own, so this machine's engine is never reachable through
them. `missing_socket` is a path with nothing behind it, on either host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from remote_helpers import REMOTE_BUSYBOX_IMAGE, SCRIPT, STATE_DIR, RemoteHost, busybox_tar


def _status() -> bool:
    return subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode == 0


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the remote test host needs root (network namespaces, a second dockerd)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) for network namespaces"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="session")
def remote_host() -> Iterator[RemoteHost]:
    """The remote test host, up for the session (`scripts/remote-host.sh up`).

    Stopped at the end only if this session started it and no other session on this
    machine still uses it.
    """
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    was_up = _status()
    holder = str(os.getpid())
    started = subprocess.run(
        [str(SCRIPT), "up", "--holder", holder], capture_output=True, text=True, timeout=600
    )
    if started.returncode != 0:
        pytest.fail(
            f"scripts/remote-host.sh up failed (exit {started.returncode}):\n"
            f"{started.stdout}{started.stderr}",
            pytrace=False,
        )
    yield RemoteHost(state_dir=STATE_DIR)
    release = [str(SCRIPT), "release", holder] + ([] if was_up else ["--down"])
    subprocess.run(release, capture_output=True, timeout=300)


@pytest.fixture(scope="session")
def remote_busybox_image(remote_host: RemoteHost) -> str:
    """A tiny image in the remote engine (imported once; the engine keeps it)."""
    found = remote_host.remote_docker("image", "inspect", REMOTE_BUSYBOX_IMAGE, check=False)
    if found.returncode != 0:
        remote_host.remote_docker(
            "import", "--change", "ENV PATH=/bin", "-", REMOTE_BUSYBOX_IMAGE, input=busybox_tar()
        )
    return REMOTE_BUSYBOX_IMAGE
