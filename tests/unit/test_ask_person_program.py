"""The program `Cluster.ask_person` runs in the front door (`ASK_PERSON_SCRIPT`), for real
against HTTP servers on this machine's loopback, with the door's records in a database of
its own: what answers on a person's port may be their agent's, and the internal password
must go nowhere else."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from http_servers import Server
from opencode_cloud.defaults import EDGE_PROGRAM
from opencode_cloud.sandbox import edge
from opencode_cloud.team.cluster import ASK_PERSON_SCRIPT

SANDBOX = Path(edge.__file__).parent


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for server in made:
        server.close()


def ask(tmp_path: Path, upstream: str, path: str) -> subprocess.CompletedProcess[bytes]:
    """Run the program for person `ann` whose instance is at `upstream`, as the door would."""
    db = tmp_path / "team.db"
    people = edge.People(db)
    people.put("ann", "x", "internal-secret", upstream, False, None, 0.0)
    people.close()
    script = ASK_PERSON_SCRIPT.replace(repr(EDGE_PROGRAM), repr(str(SANDBOX / "edge.py")))
    return subprocess.run(
        [sys.executable, "-I", "-c", script, "ann", path, "5"],
        capture_output=True,
        timeout=60,
        env={**os.environ, "OCC_EDGE_TEAM_DB": str(db)},
    )


def test_it_asks_the_persons_opencode_with_their_internal_password(
    tmp_path: Path, servers: list[Server]
) -> None:
    opencode = Server(lambda path: (200, [], b'{"healthy": true}'))
    servers.append(opencode)
    done = ask(tmp_path, opencode.address, "/global/health")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b'{"healthy": true}'
    assert opencode.got[0][0] == "/global/health"
    ann = edge.People(tmp_path / "team.db").get("ann")
    assert ann is not None and opencode.got[0][1] == ann.upstream_auth()


def test_a_redirect_does_not_take_the_internal_password_elsewhere(
    tmp_path: Path, servers: list[Server]
) -> None:
    elsewhere = Server(lambda path: (200, [], b"[]"))
    servers.append(elsewhere)
    location = f"http://{elsewhere.address}/session"
    opencode = Server(lambda path: (302, [("Location", location)], b""))
    servers.append(opencode)
    done = ask(tmp_path, opencode.address, "/session")
    assert done.returncode != 0
    assert elsewhere.got == []
