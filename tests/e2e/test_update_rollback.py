"""A version change that breaks the data is undone by itself.

opencode 1.15.13 answers its health check on data written by 1.18.33, but every session
call fails (UnknownError): the failure users meet when they go back a release. `occ
update` must notice, restore the old version and the data, and fail.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from occ_helpers import api, docker, remove_release, run, session_titles
from opencode_cloud.opencode import AUTH_FILE

pytestmark = pytest.mark.e2e

BREAKING_OPENCODE = "1.15.13"


@pytest.fixture(scope="module")
def breaking_release() -> Iterator[str]:
    """The older release (built once for the module's tests), removed afterwards with its
    build stage (a run keeps only the default image)."""
    yield BREAKING_OPENCODE
    remove_release(None, BREAKING_OPENCODE)


def test_an_update_the_data_breaks_is_rolled_back(occ_env, host_ca, breaking_release) -> None:
    for ca in host_ca:  # the build fetches opencode from npm, through the host's proxy
        run(occ_env, "config", "set", "ca_certificates", str(ca))
    run(occ_env, "start")
    made = api(occ_env, "POST", "/session", {"title": "made with 1.18.33"})
    assert isinstance(made, dict)
    config_before = run(occ_env, "config", "show", "--json").stdout

    failed = run(occ_env, "update", "--opencode-version", breaking_release, "--yes", check=False)
    assert failed.returncode == 7, failed.stderr
    error = failed.stderr.split("Error: ", 1)[1]
    assert "session API fails" in error and "are back" in error
    assert "Traceback" not in failed.stderr

    status = json.loads(run(occ_env, "status", "--json").stdout)
    assert status["opencode_version"] == "1.18.33"
    assert (status["http_health"], status["session_api"]) == ("healthy", "ok")
    assert status["snapshots"] == []  # the snapshot's data is the live data again
    assert "made with 1.18.33" in session_titles(occ_env)
    read = api(occ_env, "GET", f"/session/{made['id']}")
    assert isinstance(read, dict) and read["id"] == made["id"]
    assert run(occ_env, "config", "show", "--json").stdout == config_before


def test_provider_keys_survive_an_update_and_a_rollback(
    occ_env, host_ca, older_release, instance, tmp_path
) -> None:
    for ca in host_ca:
        run(occ_env, "config", "set", "ca_certificates", str(ca))
    run(occ_env, "config", "set", "opencode_version", older_release)
    run(occ_env, "start")
    kept, removed, added = (f"sk-{secrets.token_hex(16)}" for _ in range(3))
    for provider, key in (("anthropic", kept), ("openai", removed)):
        key_file = tmp_path / provider
        key_file.write_text(key + "\n")
        run(occ_env, "provider", "add", provider, "--key-file", str(key_file))

    run(occ_env, "config", "unset", "opencode_version")  # back to the default, 1.18.33
    run(occ_env, "update")
    assert json.loads(run(occ_env, "status", "--json").stdout)["opencode_version"] == "1.18.33"
    assert stored_keys(instance.container_name) == {"anthropic": kept, "openai": removed}
    assert listed(occ_env) == {"anthropic", "openai"}
    inspected = docker("inspect", instance.container_name)
    assert inspected and not any(key in inspected for key in (kept, removed))

    # Changed after the update: the rollback keeps the keys as they are now.
    run(occ_env, "provider", "remove", "openai")
    key_file = tmp_path / "groq"
    key_file.write_text(added)
    run(occ_env, "provider", "add", "groq", "--key-file", str(key_file))
    run(occ_env, "rollback", "--yes")
    assert json.loads(run(occ_env, "status", "--json").stdout)["opencode_version"] == "1.18.32"
    assert stored_keys(instance.container_name) == {"anthropic": kept, "groq": added}
    assert listed(occ_env) == {"anthropic", "groq"}
    inspected = docker("inspect", instance.container_name)
    assert inspected and not any(key in inspected for key in (kept, removed, added))


def listed(env: dict[str, str]) -> set[str]:
    return {entry["id"] for entry in json.loads(run(env, "--json", "provider", "list").stdout)}


def stored_keys(container: str) -> dict[str, str]:
    """opencode's key store (provider to key), read as root inside the container."""
    raw = docker("exec", "-u", "0", container, "cat", AUTH_FILE)
    return {pid: entry["key"] for pid, entry in json.loads(raw).items()}


def test_going_back_a_release_asks_first(occ_env) -> None:
    run(occ_env, "start")
    refused = run(occ_env, "update", "--opencode-version", "1.15.13", check=False)
    assert refused.returncode == 2
    assert "older than the running 1.18.33" in refused.stderr and "--yes" in refused.stderr
    running = subprocess.run(
        ["docker", "ps", "--filter", "label=io.opencode-cloud.opencode-version=1.15.13", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert running.stdout.strip() == ""  # nothing was built or started


def test_a_team_update_stops_at_the_first_person_it_breaks(
    occ_env, host_ca, breaking_release
) -> None:
    """Everyone moves one at a time; the first whose check fails is put back, and those
    after them are never touched."""
    for ca in host_ca:
        run(occ_env, "config", "set", "ca_certificates", str(ca))
    run(occ_env, "team", "enable", "--name", "ada")
    ada = ("ada", json.loads(run(occ_env, "--json", "auth", "show").stdout)["password"])
    bob = ("bob", json.loads(run(occ_env, "--json", "user", "add", "bob").stdout)["password"])
    url = json.loads(run(occ_env, "--json", "team", "status").stdout)["url"]
    made = team_call(url, ada, "POST", "/session", {"title": "ada before the update"})
    team_call(url, bob, "POST", "/session", {"title": "bob before the update"})
    instance = occ_env["OCC_INSTANCE"]
    image_of = {
        who: docker("inspect", "-f", "{{.Image}}", f"opencode-cloud-{instance}-user-{who}")
        for who in ("ada", "bob")
    }

    failed = run(occ_env, "update", "--opencode-version", breaking_release, "--yes", check=False)

    assert failed.returncode == 7, failed.stderr
    assert "does not work for ada" in failed.stderr and "(bob not updated)" in failed.stderr
    assert "Traceback" not in failed.stderr
    for who in ("ada", "bob"):
        name = f"opencode-cloud-{instance}-user-{who}"
        assert docker("inspect", "-f", "{{.Image}}", name) == image_of[who], who
    assert (
        json.loads(run(occ_env, "config", "show", "--json").stdout).get(
            "opencode_version", "1.18.33"
        )
        != breaking_release
    )
    sessions = team_call(url, ada, "GET", f"/session/{made['id']}")
    assert sessions["title"] == "ada before the update"
    titles = {s["title"] for s in team_call(url, bob, "GET", "/session")}
    assert titles == {"bob before the update"}


def team_call(url: str, who: tuple[str, str], method: str, path: str, body: Any = None) -> Any:
    """One API call through the front door as `who`, waiting for their instance to start."""
    import base64
    import time
    import urllib.error
    import urllib.request

    token = base64.b64encode(f"{who[0]}:{who[1]}".encode()).decode()
    deadline = time.monotonic() + 120
    while True:
        request = urllib.request.Request(
            url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=30) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:
            if error.code not in (502, 503) or time.monotonic() > deadline:
                raise
        time.sleep(0.5)
