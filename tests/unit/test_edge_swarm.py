"""The login service of a door on a swarm (`OCC_EDGE_SWARM=1`): the swarm runs the
people's instances, nothing is started, and a person whose instance does not answer (its
node is down or cut off) is told it is unreachable, while everyone else goes on. Served
for real on loopback and asked on raw sockets as Caddy would (see test_edge_team.py)."""

from __future__ import annotations

import json
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from unit.test_edge_team import (
    ALICE_PASSWORD,
    BOB_PASSWORD,
    HANG,
    FakeStarter,
    Instance,
    Team,
    cookie_in,
    keep_umask,  # noqa: F401  (autouse)
    occ_headers,
)


@pytest.fixture
def starter() -> Iterator[FakeStarter]:
    """A starter's socket (a short path: at most 107 bytes), which must never be asked."""
    with tempfile.TemporaryDirectory(prefix="occ-swarm-") as name:
        running = FakeStarter(Path(name) / "starter.sock")
        yield running
        running.stop()


@pytest.fixture
def swarm_team(tmp_path: Path, starter: FakeStarter) -> Iterator[Team]:
    """alice and bob on a swarm, the starter's socket there all the same."""
    running = Team(tmp_path, starter=starter.path, swarm=True)
    yield running
    running.close()


def _lose(team: Team, name: str) -> str:
    """Take `name`'s instance away as a lost node does (nothing listens there any more);
    where it was."""
    instance = team.instances[name]
    instance.stop()
    return instance.upstream


def test_a_person_whose_instance_is_lost_is_told_so_and_the_page_goes_on_once_it_is_back(
    swarm_team: Team, starter: FakeStarter
) -> None:
    alice = swarm_team.session("alice", ALICE_PASSWORD)
    assert swarm_team.verify(alice).status == 200
    _lose(swarm_team, "alice")
    # The proxy's 502 sends a page load to the starting page: it says unreachable.
    page = swarm_team.get("/__occ/starting?next=/project/x", alice, Accept="text/html")
    assert page.status == 503 and page.all("retry-after") == ["10"]
    text = page.body.decode()
    assert "Your opencode is unreachable" in text and "alice's status" in text
    assert 'data-next="/project/x"' in text
    # The starting page's script (by its digest), which goes on once it answers again.
    (policy,) = page.all("content-security-policy")
    assert "script-src 'sha256-" in policy and re.search(r"<script>.+</script>", text, re.S)
    # From now on verify answers so itself: a page load, a script, the page's poll.
    answer = swarm_team.verify(alice, Accept="text/html", X_Forwarded_Uri="/project/x")
    assert answer.status == 503 and "Your opencode is unreachable" in answer.body.decode()
    assert 'data-next="/project/x"' in answer.body.decode() and not occ_headers(answer)
    api = swarm_team.verify(alice)
    assert api.status == 503 and api.all("retry-after") == ["10"]
    assert "unreachable" in json.loads(api.body)["error"]
    ready = swarm_team.get("/__occ/ready", alice)
    assert json.loads(ready.body) == {"ready": False, "state": "unreachable"}
    # bob goes on; nothing was asked to start anything.
    assert swarm_team.verify(swarm_team.session("bob", BOB_PASSWORD)).status == 200
    assert starter.requests == []

    # Back (the swarm ran it again, at the same name): the poll says ready, and through.
    back = Instance("alice-internal-password")
    swarm_team.instances["alice"] = back
    swarm_team.put("alice", ALICE_PASSWORD, "alice-internal-password", back.upstream)
    alice = swarm_team.session("alice", ALICE_PASSWORD)
    assert json.loads(swarm_team.get("/__occ/ready", alice).body) == {"ready": True}
    assert swarm_team.verify(alice).status == 200
    assert starter.requests == []


def test_signing_in_to_a_lost_instance_lands_on_the_unreachable_page(swarm_team: Team) -> None:
    _lose(swarm_team, "alice")
    answer = swarm_team.login("alice", ALICE_PASSWORD)
    assert answer.status == 303
    assert answer.all("location") == ["/__occ/starting?next=/project/x"]
    page = swarm_team.get("/__occ/starting?next=/project/x", cookie_in(answer))
    assert page.status == 503 and "unreachable" in page.body.decode()


def test_an_instance_that_hangs_holds_up_nobody_else(swarm_team: Team) -> None:
    """A node cut off swallows packets: its person's checks wait out their timeout, each
    in a thread of its own, while everyone else's requests pass at once."""
    alice = swarm_team.session("alice", ALICE_PASSWORD)
    bob = swarm_team.session("bob", BOB_PASSWORD)
    swarm_team.instances["alice"].hang = True  # accepts, never answers
    swarm_team.stop()  # what the door knew of alice's instance goes: it must answer anew
    swarm_team.start()
    answers: list[tuple[int, float]] = []

    def alice_asks() -> None:
        began = time.monotonic()
        answers.append((swarm_team.verify(alice).status, time.monotonic() - began))

    askers = [threading.Thread(target=alice_asks) for _ in range(4)]
    for asker in askers:
        asker.start()
    time.sleep(0.2)  # alice's check under way
    for _ in range(5):
        began = time.monotonic()
        assert swarm_team.verify(bob).status == 200
        assert time.monotonic() - began < 0.5
    for asker in askers:
        asker.join()
    # Each of alice's requests is answered by the check's own timeout (1 s), not the hang.
    assert [status for status, _ in answers] == [503] * 4
    assert max(seconds for _, seconds in answers) < HANG / 2


def test_a_name_the_swarms_dns_no_longer_answers_for_holds_nobody(
    swarm_team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost node's instance: the swarm's DNS asks servers it cannot reach about its name,
    each for seconds. The check gives up within its own timeout all the same."""
    from unit.test_edge import edge

    lost = "opencode-cloud-user-alice"
    looked_up = socket.getaddrinfo

    def slow_dns(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == lost:
            time.sleep(HANG)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return looked_up(host, *args, **kwargs)

    monkeypatch.setattr(edge.socket, "getaddrinfo", slow_dns)
    swarm_team.put("alice", ALICE_PASSWORD, "alice-internal-password", f"{lost}:4096")
    alice = swarm_team.session("alice", ALICE_PASSWORD)
    began = time.monotonic()
    answer = swarm_team.verify(alice)
    assert answer.status == 503 and "unreachable" in answer.body.decode()
    assert time.monotonic() - began < HANG / 2
