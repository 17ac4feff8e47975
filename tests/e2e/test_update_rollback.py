"""A version change that breaks the data is undone by itself.

opencode 1.15.13 answers its health check on data written by 1.18.33, but every session
call fails (UnknownError): the failure users meet when they go back a release. `occ
update` must notice, restore the old version and the data, and fail.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from occ_helpers import api, docker, remove_release, run, session_titles

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
