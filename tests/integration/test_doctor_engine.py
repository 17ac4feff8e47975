"""`occ doctor` as a subprocess against the real engine: a dead DOCKER_HOST, a port this
test holds, a port another container publishes, and a service that never answers (the
busybox image in place of opencode). The healthy case, which needs the real opencode
image, is in tests/e2e/test_doctor_e2e.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from opencode_cloud.doctor.checks import CHECKS

pytestmark = pytest.mark.integration

OCC = [sys.executable, "-m", "opencode_cloud"]
NAMES = [name for name, _ in CHECKS]


@pytest.fixture
def occ_env(tmp_path: Path, instance) -> dict[str, str]:
    """One user of one instance: own configuration folder, no colour."""
    return {
        **os.environ,
        "OCC_CONFIG_DIR": str(tmp_path / "config"),
        "OCC_INSTANCE": instance.name,
        "NO_COLOR": "1",
    }


def occ(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OCC, *args], env=env, capture_output=True, text=True, timeout=120)


def configure(env: dict[str, str], **settings: Any) -> None:
    for key, value in settings.items():
        proc = occ(env, "config", "set", key, str(value))
        assert proc.returncode == 0, proc.stderr


def doctor(env: dict[str, str]) -> tuple[int, dict[str, dict[str, str]]]:
    """`occ doctor --json`: its exit code and findings by check name."""
    proc = occ(env, "doctor", "--json")
    data = json.loads(proc.stdout)
    assert [f["name"] for f in data["findings"]] == NAMES
    assert data["ok"] is (proc.returncode == 0), proc.stdout
    return proc.returncode, {f["name"]: f for f in data["findings"]}


def test_a_dead_docker_host_fails_and_still_lists_every_check(occ_env, free_port) -> None:
    configure(occ_env, port=free_port)
    dead = {**occ_env, "DOCKER_HOST": "unix:///nonexistent.sock"}

    table = occ(dead, "doctor")
    assert table.returncode == 1, table.stdout
    lines = table.stdout.splitlines()
    for name in NAMES:
        assert any(line.startswith(f"{name} ") for line in lines), name
    engine = next(line for line in lines if line.startswith("engine "))
    assert engine.split()[1] == "fail"
    assert "Not checked: the Docker engine is unreachable." in " ".join(table.stdout.split())

    code, found = doctor(dead)
    assert code == 1
    assert found["engine"]["status"] == "fail"
    assert "unix:///nonexistent.sock" in found["engine"]["detail"]
    assert "set by DOCKER_HOST" in found["engine"]["detail"]
    assert "unset DOCKER_HOST" in found["engine"]["fix"]
    for name in ("disk space", "image", "container", "HTTP API", "session API"):
        assert found[name]["status"] == "skip", name
        assert "the Docker engine is unreachable" in found[name]["detail"], name
    for name in ("configuration", "password file", "CA certificates", "port"):
        assert found[name]["status"] == "ok", name


def test_a_port_this_test_holds_fails_naming_this_process(occ_env, free_port) -> None:
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", free_port))
        holder.listen()
        configure(occ_env, port=free_port)
        code, found = doctor(occ_env)
    assert code == 1
    port = found["port"]
    assert port["status"] == "fail"
    assert f"127.0.0.1:{free_port} is taken by pid {os.getpid()} (" in port["detail"]
    assert "pytest" in port["detail"] or "python" in port["detail"]
    assert "config set port" in port["fix"]
    assert found["engine"]["status"] == "ok"
    assert found["container"]["status"] == "warn"  # never started


def test_a_port_another_container_publishes_is_named(
    occ_env, free_port, docker_sdk, busybox_image, instance
) -> None:
    name = f"{instance.name}-other"  # carries the session label: the sweep finds it too
    other = docker_sdk.containers.run(
        busybox_image,
        name=name,
        detach=True,
        ports={"80/tcp": ("127.0.0.1", free_port)},
        labels=dict(instance.extra_labels),
    )
    try:
        configure(occ_env, port=free_port)
        code, found = doctor(occ_env)
    finally:
        other.remove(force=True)
    assert code == 1
    assert found["port"]["detail"] == (
        f"127.0.0.1:{free_port} is published by Docker container {name}: this instance "
        "cannot start there."
    )
    assert f"`docker stop {name}`" in found["port"]["fix"]


def test_a_service_that_never_answers_fails_its_http_check(
    occ_env, free_port, busybox_image, instance
) -> None:
    """The busybox image runs but serves nothing: the container is fine, opencode is not."""
    configure(occ_env, port=free_port, image=busybox_image, start_timeout=1)
    started = occ(occ_env, "start", "--no-wait")
    assert started.returncode == 0, started.stderr
    time.sleep(1.5)  # past the start timeout: no longer "still starting"

    code, found = doctor(occ_env)
    assert code == 1
    assert (
        found["port"]["detail"]
        == f"127.0.0.1:{free_port} is published by this instance's container."
    )
    assert found["image"]["status"] == "ok"
    assert found["container"]["status"] == "ok"
    assert found["container"]["detail"].startswith(f"{instance.container_name} has been running")
    assert found["HTTP API"]["status"] == "fail"
    assert found["HTTP API"]["detail"].startswith(
        f"opencode does not answer at http://127.0.0.1:{free_port}"
    )
    assert found["session API"]["status"] == "skip"
    assert found["pending changes"]["status"] == "ok"
    assert found["password file"]["detail"].endswith("has mode 0600.")
