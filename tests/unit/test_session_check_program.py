"""The program of a drain's session check (`team/drain.py`), for real against HTTP
servers on this machine's loopback: the person's opencode answers it (and may be anything
its agent put on that port), and it never takes the internal password anywhere else."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from http_servers import Server
from opencode_cloud.team.drain import CHECK_PROGRAM


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for server in made:
        server.close()


def check(tmp_path: Path, upstream: str, session: str = "-") -> dict[str, object]:
    password = tmp_path / "password"
    password.write_text("internal-secret\n")
    done = subprocess.run(
        [sys.executable, "-I", "-c", CHECK_PROGRAM, str(password), upstream, session, "0"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(answer, dict)
    return answer


def test_the_check_lists_the_sessions_with_the_internal_password(
    tmp_path: Path, servers: list[Server]
) -> None:
    opencode = Server(lambda path: (200, [], json.dumps([{"id": "s-1"}, {"id": "s-2"}]).encode()))
    servers.append(opencode)
    assert check(tmp_path, opencode.address) == {"sessions": ["s-1", "s-2"], "problem": None}
    assert opencode.got[0][0] == "/session"
    assert opencode.got[0][1].startswith("Basic ")


def test_a_redirect_from_the_persons_opencode_is_not_followed(
    tmp_path: Path, servers: list[Server]
) -> None:
    """The agent answers on its opencode's port with a redirect elsewhere: the check does
    not go there (with the internal password, from the manager's side of the overlay)."""
    elsewhere = Server(lambda path: (200, [], json.dumps([{"id": "inside"}]).encode()))
    servers.append(elsewhere)
    to = f"http://{elsewhere.address}/private"
    opencode = Server(lambda path: (302, [("Location", to)], b""))
    servers.append(opencode)
    answer = check(tmp_path, opencode.address)
    assert elsewhere.got == []
    assert "listing sessions failed" in str(answer["problem"])
