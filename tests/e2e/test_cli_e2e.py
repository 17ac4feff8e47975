"""`occ` as a real subprocess against the real engine and the real opencode image,
used the way a new user would: start, status, logs, restart, stop, start again, and a
container deleted behind the tool's back.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from occ_helpers import OCC, api, docker, remove_containers, remove_images, run, session_titles

pytestmark = pytest.mark.e2e


def test_start_status_logs(occ_env, instance) -> None:
    started = run(occ_env, "start")
    assert "opencode is running at http://127.0.0.1:" in started.stdout
    assert "Password:" in started.stdout  # first start shows it

    status = run(occ_env, "status", "--json")
    data = json.loads(status.stdout)
    assert data["running"] is True
    assert data["http_health"] == "healthy"
    assert data["opencode_version"] == "1.18.33"
    assert data["bind_address"] == "127.0.0.1"
    assert data["exposed"] is False
    assert {v["name"] for v in data["volumes"]} == {
        instance.volume_name(k) for k in ("home", "session", "state", "projects", "config")
    }
    assert all(v["exists"] for v in data["volumes"])

    logs = run(occ_env, "logs", "-n", "50")
    # opencode's own start-up banner, as it printed it inside the container: it listens
    # on the container's loopback only, behind the edge.
    assert "Web interface:" in logs.stdout
    assert "http://127.0.0.1:4096" in logs.stdout

    again = run(occ_env, "start")
    assert "already running" in again.stdout
    assert "Password:" not in again.stdout.replace("Password: run", "")


def test_restart_stop_start_keep_password_and_sessions(occ_env) -> None:
    run(occ_env, "start")
    password = json.loads(run(occ_env, "--json", "auth", "show").stdout)["password"]
    api(occ_env, "POST", "/session", {"title": "kept across restarts"})

    run(occ_env, "restart")
    assert "kept across restarts" in session_titles(occ_env)

    stopped = run(occ_env, "stop")
    assert "Stopped." in stopped.stdout
    assert "Already stopped." in run(occ_env, "stop").stdout
    status = run(occ_env, "status", "--json", check=False)
    assert status.returncode == 3
    assert json.loads(status.stdout)["running"] is False

    run(occ_env, "start")
    assert json.loads(run(occ_env, "--json", "auth", "show").stdout)["password"] == password
    assert "kept across restarts" in session_titles(occ_env)


def test_container_deleted_behind_the_tools_back(occ_env, instance) -> None:
    run(occ_env, "start")
    api(occ_env, "POST", "/session", {"title": "survives deletion"})
    subprocess.run(["docker", "rm", "-f", instance.container_name], check=True, capture_output=True)

    status = run(occ_env, "status", "--json", check=False)
    assert status.returncode == 3
    assert json.loads(status.stdout)["state"] == "missing"

    run(occ_env, "start")
    assert "survives deletion" in session_titles(occ_env)


def test_config_change_recreates_and_keeps_data(occ_env, instance) -> None:
    run(occ_env, "start")
    api(occ_env, "POST", "/session", {"title": "before env change"})
    run(occ_env, "config", "env", "set", "OCC_TEST_MARKER=1")
    status = json.loads(run(occ_env, "status", "--json").stdout)
    assert status["pending_restart"] == ["environment"]

    started = run(occ_env, "start")
    assert "because environment changed" in started.stderr
    inspect = subprocess.run(
        ["docker", "inspect", "-f", "{{json .Config.Env}}", instance.container_name],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "OCC_TEST_MARKER=1" in json.loads(inspect.stdout)
    assert "before env change" in session_titles(occ_env)
    assert json.loads(run(occ_env, "status", "--json").stdout)["pending_restart"] == []


def test_auth_rotate_applies_the_new_password(occ_env) -> None:
    run(occ_env, "start")
    old = json.loads(run(occ_env, "--json", "auth", "show").stdout)
    rotated = json.loads(run(occ_env, "--json", "auth", "rotate").stdout)
    assert rotated["password"] != old["password"]
    # The stored (new) password is accepted: `api` raises on a 401.
    assert isinstance(api(occ_env, "GET", "/session"), list)
    request = urllib.request.Request(
        old["url"] + "/global/health",
        headers={
            "Authorization": "Basic "
            + base64.b64encode(f"{old['username']}:{old['password']}".encode()).decode()
        },
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401


def test_logs_and_stop_of_a_never_created_instance(occ_env) -> None:
    for command in ("logs", "stop"):
        proc = run(occ_env, command, check=False)
        assert proc.returncode == 3
        assert proc.stderr.startswith("Error: ")
        assert "Hint: " in proc.stderr
        assert "Traceback" not in proc.stderr


def test_password_never_in_argv_inspect_or_logs(occ_env, instance) -> None:
    run(occ_env, "start")
    password = json.loads(run(occ_env, "--json", "auth", "show").stdout)["password"]
    inspect = subprocess.run(
        ["docker", "inspect", instance.container_name], check=True, capture_output=True, text=True
    ).stdout
    assert password not in inspect
    top = subprocess.run(
        ["docker", "top", instance.container_name, "-eo", "pid,args"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert password not in top
    assert password not in run(occ_env, "logs").stdout
    human_status = run(occ_env, "status").stdout
    assert password not in human_status


@pytest.fixture
def crashing_image(import_busybox, instance) -> Iterator[str]:
    """An image whose service prints a line and exits at once, like a broken opencode."""
    tag = f"opencode-cloud-test/crashing:{instance.name}"
    yield import_busybox(tag, "echo crash-marker-42; exit 3")
    remove_containers(instance)  # they hold the image; the instance fixture comes later
    remove_images(tag)


def test_failed_start_shows_last_logs_and_next_command(occ_env, crashing_image, instance) -> None:
    import time

    run(occ_env, "config", "set", "image", crashing_image)
    started = time.monotonic()
    proc = run(occ_env, "start", "--wait-timeout", "60", check=False)
    # It gives up as soon as the crash is clear, not at the timeout.
    assert time.monotonic() - started < 20
    assert proc.returncode == 7, proc.stderr
    before, error = proc.stderr.split("Error: ", 1)
    assert "Last log lines:" in before and "crash-marker-42" in before  # shown above it
    hint = error.split("Hint: ", 1)[1].strip()
    assert len(hint.splitlines()) == 1  # the one next command
    assert re.search(r"`occ( --instance \S+)? logs`", hint)
    assert "Traceback" not in proc.stderr
    # The crashing container is left stopped, not restarting forever.
    name = instance.container_name
    state = docker("inspect", "-f", "{{.State.Status}} {{.RestartCount}}", name).split()
    time.sleep(3)
    assert docker("inspect", "-f", "{{.State.Status}} {{.RestartCount}}", name).split() == state
    assert state[0] == "exited"
    # occ status calls it what it is and shows why.
    status = json.loads(run(occ_env, "status", "--json", check=False).stdout)
    # (exit code 3; or, when the stop caught it between two runs, how the stop ended it)
    assert status["last_exit"] in (
        "exit code 3",
        "stopped (exit code 137)",
        "stopped (exit code 143)",
    )
    assert any("crash-marker-42" in line for line in status["log_tail"])


def test_logs_follow_ends_cleanly_on_ctrl_c_and_kill(occ_env) -> None:
    import signal
    import time

    run(occ_env, "start")
    for stop in (signal.SIGINT, signal.SIGTERM):
        follower = subprocess.Popen(
            [*OCC, "logs", "-f"], env=occ_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        time.sleep(2)
        assert follower.poll() is None  # still following
        follower.send_signal(stop)
        out, err = follower.communicate(timeout=10)
        assert follower.returncode == 0, (stop, err)
        assert b"Traceback" not in err
        assert b"Web interface:" in out


STATUS_PROBE = """
import json, sys
from opencode_cloud.cli.app import run
code = run(["--json", "-q", "status"])
print(json.dumps({"code": int(code), "validated": "pydantic" in sys.modules}), file=sys.stderr)
"""


def _status_in_process(env: dict[str, str]) -> tuple[dict, dict]:
    proc = subprocess.run(
        [sys.executable, "-c", STATUS_PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    return json.loads(proc.stdout), json.loads(proc.stderr.strip().splitlines()[-1])


def test_unchanged_configuration_is_not_validated_again(occ_env) -> None:
    """status and start read a container made from the unchanged file without re-validating
    it; any edit of the file makes them load and validate it again."""
    run(occ_env, "start")
    status, probe = _status_in_process(occ_env)
    assert status["http_health"] == "healthy" and status["pending_restart"] == []
    assert probe == {"code": 0, "validated": False}

    run(occ_env, "config", "env", "set", "OCC_TEST_EDIT=1")
    status, probe = _status_in_process(occ_env)
    assert status["pending_restart"] == ["environment"]
    assert probe == {"code": 0, "validated": True}

    # A fast start after a stop still waits until healthy and reports the URL.
    run(occ_env, "restart")
    run(occ_env, "stop")
    started = json.loads(run(occ_env, "--json", "start").stdout)
    assert started["healthy"] is True and started["url"].startswith("http://127.0.0.1:")


def test_deleted_password_file_gets_a_new_password_applied(occ_env) -> None:
    run(occ_env, "start")
    old = json.loads(run(occ_env, "--json", "auth", "show").stdout)["password"]
    Path(occ_env["OCC_CONFIG_DIR"], "instances", occ_env["OCC_INSTANCE"], "password").unlink()
    run(occ_env, "stop")
    started = run(occ_env, "start")
    assert "because password changed" in started.stderr
    new = json.loads(run(occ_env, "--json", "auth", "show").stdout)["password"]
    assert new != old
    # The new password is the one in force: `api` raises on a 401.
    assert isinstance(api(occ_env, "GET", "/session"), list)


def test_update_to_a_newer_opencode_keeps_sessions_and_rollback_returns(
    occ_env, host_ca, older_release
) -> None:
    """1.18.32 -> 1.18.33 with `occ update`: a new image, the data kept; `occ rollback`
    goes back to 1.18.32 and the data as it was."""
    for ca in host_ca:  # the build fetches opencode from npm, through the host's proxy
        run(occ_env, "config", "set", "ca_certificates", str(ca))
    run(occ_env, "config", "set", "opencode_version", older_release)
    run(occ_env, "start")
    assert json.loads(run(occ_env, "status", "--json").stdout)["opencode_version"] == "1.18.32"
    api(occ_env, "POST", "/session", {"title": "made with 1.18.32"})

    # A version change through start is refused, with the way to do it.
    run(occ_env, "config", "unset", "opencode_version")  # back to the default, 1.18.33
    refused = run(occ_env, "start", check=False)
    assert refused.returncode == 2, refused.stderr
    assert "occ" in refused.stderr and " update`" in refused.stderr

    updated = run(occ_env, "--json", "update")
    result = json.loads(updated.stdout)
    assert (result["previous"], result["current"]) == ("opencode 1.18.32", "opencode 1.18.33")
    status = json.loads(run(occ_env, "status", "--sizes", "--json").stdout)
    assert status["opencode_version"] == "1.18.33" and status["session_api"] == "ok"
    assert "made with 1.18.32" in session_titles(occ_env)
    [snapshot] = status["snapshots"]
    assert snapshot["id"] == result["snapshot"] and snapshot["size_bytes"] > 0

    api(occ_env, "POST", "/session", {"title": "made with 1.18.33"})
    rolled = run(occ_env, "rollback", "--yes")
    assert "1.18.32" in rolled.stdout
    status = json.loads(run(occ_env, "status", "--json").stdout)
    assert status["opencode_version"] == "1.18.32" and status["snapshots"] == []
    titles = session_titles(occ_env)
    assert "made with 1.18.32" in titles and "made with 1.18.33" not in titles
    assert run(occ_env, "config", "get", "opencode_version").stdout.strip() == "1.18.32"
