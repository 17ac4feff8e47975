"""A host reboot, as the engine sees it: the Docker daemon stops and starts again.

A service that was running comes back by itself; one the user stopped with `occ stop`
stays stopped. The daemon is restarted for real, so this runs only where the test run
started it (`scripts/engine.sh`, as CI and `scripts/test.sh` do), and after every other
test of the session (the `last` marker, `tests/run_last.py`), because every container on
the engine goes through the restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from occ_helpers import remove_everything_of, run

pytestmark = [pytest.mark.e2e, pytest.mark.last]

ROOT = Path(__file__).resolve().parents[2]
ENGINE_SCRIPT = ROOT / "scripts" / "engine.sh"
# Written by scripts/engine.sh when it started the daemon itself.
STARTED_BY_SCRIPT = Path("/var/run/opencode-cloud-dockerd.started")


# The local daemon's pid; another dockerd (the remote test host's) may run beside it.
DAEMON_PID_FILE = Path("/var/run/docker.pid")


def _daemon_pid() -> int | None:
    try:
        pid = int(DAEMON_PID_FILE.read_text())
        running = Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
    except (OSError, ValueError):
        return None
    return pid if running else None


def restart_engine() -> None:
    """Stop the daemon as a shutdown does (SIGTERM), then start it again."""
    pid = _daemon_pid()
    assert pid is not None, "no dockerd to restart"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _daemon_pid() == pid:
        assert time.monotonic() < deadline, "dockerd did not stop within 60 s"
        time.sleep(0.2)
    subprocess.run(["bash", str(ENGINE_SCRIPT), "start"], check=True, timeout=120)


def _status(env: dict[str, str]) -> dict[str, object]:
    return json.loads(run(env, "status", "--json", check=False).stdout)


@pytest.mark.skipif(
    not STARTED_BY_SCRIPT.exists() and not os.environ.get("OCC_TEST_RESTART_ENGINE"),
    reason="restarts the Docker daemon: only where scripts/engine.sh started it "
    "(or with OCC_TEST_RESTART_ENGINE=1)",
)
def test_running_comes_back_and_stopped_stays_stopped(occ_env, instance) -> None:
    import socket

    from opencode_cloud.instance import Instance

    with socket.socket() as sock:  # occ_env's instance has the `free_port` fixture's
        sock.bind(("127.0.0.1", 0))
        other_port = sock.getsockname()[1]
    # Two instances side by side: one left running, one stopped by the user.
    running_env = occ_env
    stopped = Instance(f"{instance.name}-b", extra_labels=instance.extra_labels)
    stopped_env = {**occ_env, "OCC_INSTANCE": stopped.name}
    try:
        run(running_env, "start")
        run(stopped_env, "start", "--port", str(other_port))
        run(stopped_env, "stop")
        assert _status(running_env)["state"] == "running"

        restart_engine()

        deadline = time.monotonic() + 90
        while (status := _status(running_env))["http_health"] != "healthy":
            assert time.monotonic() < deadline, f"the running service did not come back: {status}"
            time.sleep(0.5)
        assert status["state"] == "running" and status["session_api"] == "ok"
        time.sleep(3)  # time enough for a wrongly restarted one to show up
        assert _status(stopped_env)["state"] == "exited"
        # And the user's own start still works as before.
        run(stopped_env, "start")
        assert _status(stopped_env)["http_health"] == "healthy"
    finally:
        remove_everything_of(stopped.name)
