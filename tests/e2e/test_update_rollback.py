"""A version change that breaks the data is undone by itself.

opencode 1.15.13 answers its health check on data written by 1.18.33, but every session
call fails (UnknownError): the failure users meet when they go back a release. `occ
update` must notice, restore the old version and the data, and fail.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from occ_helpers import api, remove_release, run, session_titles

pytestmark = pytest.mark.e2e

BREAKING_OPENCODE = "1.15.13"


@pytest.fixture
def breaking_release(instance) -> Iterator[str]:
    """The older release, removed afterwards with its build stage (a run keeps only the
    default image)."""
    yield BREAKING_OPENCODE
    remove_release(instance, BREAKING_OPENCODE)


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
