"""`occ doctor` on a healthy setup: the real opencode image, started by `occ start`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from opencode_cloud.doctor.checks import CHECKS

pytestmark = pytest.mark.e2e

OCC = [sys.executable, "-m", "opencode_cloud"]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OCC, *args], env=env, capture_output=True, text=True, timeout=300)


def test_a_healthy_service_passes_every_check(
    tmp_path: Path, instance, free_port: int, sandbox_image: str
) -> None:
    env = {
        **os.environ,
        "OCC_CONFIG_DIR": str(tmp_path / "config"),
        "OCC_INSTANCE": instance.name,
        "NO_COLOR": "1",
    }
    for args in (
        ("config", "set", "port", str(free_port)),
        # Offline machine: don't let opencode spend start-up time on the model list.
        ("config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1"),
        ("start",),
    ):
        proc = run(env, *args)
        assert proc.returncode == 0, proc.stderr

    proc = run(env, "doctor", "--json")
    data = json.loads(proc.stdout)
    found = {f["name"]: f for f in data["findings"]}
    assert list(found) == [name for name, _ in CHECKS]
    assert proc.returncode == 0, proc.stdout
    assert data["ok"] is True
    # Disk space depends on the machine; everything else is fine on a healthy setup.
    assert {name: f["status"] for name, f in found.items() if name != "disk space"} == {
        name: "ok" for name, _ in CHECKS if name != "disk space"
    }
    assert found["disk space"]["status"] in ("ok", "warn")
    assert found["port"]["detail"] == (
        f"127.0.0.1:{free_port} is published by this instance's container."
    )
    assert found["image"]["detail"] == f"{sandbox_image} holds opencode 1.18.33, as configured."
    assert found["HTTP API"]["detail"] == (
        f"opencode 1.18.33 answers healthy at http://127.0.0.1:{free_port}."
    )
    assert found["session API"]["detail"] == "opencode lists its sessions."

    table = run(env, "doctor")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["CHECK", "RESULT", "DETAIL", "FIX"]
