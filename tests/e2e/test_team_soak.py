"""The soak: ten people at once behind one front door, each with a session open and an
event stream, for ten minutes of scripted API use (`OCC_SOAK_SECONDS` shortens it when
run by hand). No answer may be a 5xx, nothing anyone made may be lost, and nobody's event
stream may carry anybody else's sessions."""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from occ_helpers import docker, free_port, remove_everything_of, run
from raw_http import session_cookie, sign_in, statuses

pytestmark = [pytest.mark.e2e, pytest.mark.alongside]

PEOPLE = 10
SECONDS = float(os.environ.get("OCC_SOAK_SECONDS", "600"))
# One request every this many seconds per person: 20 a second at the door in all.
PACE = 0.5


@dataclass
class Person:
    name: str
    password: str
    cookie: str = ""
    made: list[str] = field(default_factory=list)  # ids of the sessions they made
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    events: int = 0
    seen_in_stream: set[str] = field(default_factory=set)  # session ids its events named
    stream_ended: str | None = None


def _sign_in(port: int, person: Person) -> None:
    answer = sign_in(port, person.name, person.password)
    assert statuses(answer) == [303], answer[:400]
    person.cookie = f"occ_session_{port}={session_cookie(answer)}"


def _call(
    conn: http.client.HTTPConnection, person: Person, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    data = json.dumps(body) if body is not None else None
    headers = {"Cookie": person.cookie, "Content-Type": "application/json"}
    conn.request(method, path, body=data, headers=headers)
    answer = conn.getresponse()
    raw = answer.read()
    person.statuses[answer.status] = person.statuses.get(answer.status, 0) + 1
    try:
        return answer.status, json.loads(raw) if raw else None
    except ValueError:
        return answer.status, raw.decode(errors="replace")


def _wait_ready(port: int, person: Person, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", "/session", headers={"Cookie": person.cookie})
            answer = conn.getresponse()
            answer.read()
            if answer.status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        assert time.monotonic() < deadline, f"{person.name}'s instance did not start"
        time.sleep(0.5)


def _stream(port: int, person: Person, stop: threading.Event) -> None:
    """The person's event stream, open for the whole soak: counts its events and notes the
    sessions they name."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SECONDS + 120)
    try:
        conn.request(
            "GET", "/event", headers={"Cookie": person.cookie, "Accept": "text/event-stream"}
        )
        answer = conn.getresponse()
        if answer.status != 200:
            person.stream_ended = f"status {answer.status}"
            return
        while not stop.is_set():
            line = answer.fp.readline()
            if not line:
                person.stream_ended = "closed by the server"
                return
            if line.startswith(b"data:"):
                person.events += 1
                for found in re.findall(rb'"sessionID":"([^"]+)"', line):
                    person.seen_in_stream.add(found.decode())
    except OSError as error:
        if not stop.is_set():
            person.stream_ended = repr(error)
    finally:
        conn.close()


def _work(port: int, person: Person, others: dict[str, list[str]], stop: threading.Event) -> None:
    """Scripted use: list, make, rename and read sessions, read a file listing."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    step = 0
    while not stop.is_set():
        began = time.monotonic()
        try:
            if step % 10 == 0:
                status, made = _call(
                    conn, person, "POST", "/session", {"title": f"{person.name}-{step}"}
                )
                if status == 200:
                    person.made.append(made["id"])
            elif step % 10 == 3 and person.made:
                _call(
                    conn,
                    person,
                    "PATCH",
                    f"/session/{person.made[-1]}",
                    {"title": f"{person.name}-renamed-{step}"},
                )
            elif step % 10 == 5 and person.made:
                _call(conn, person, "GET", f"/session/{person.made[0]}")
            elif step % 10 == 7:
                _call(conn, person, "GET", "/file?path=.")
            else:
                status, listed = _call(conn, person, "GET", "/session")
                if status == 200:
                    theirs = {s["id"] for s in listed}
                    for other, ids in others.items():
                        if other != person.name and theirs & set(ids):
                            person.errors.append(f"sees {other}'s sessions")
        except (OSError, http.client.HTTPException) as error:
            person.errors.append(f"step {step}: {error!r}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        step += 1
        stop.wait(max(0.0, PACE - (time.monotonic() - began)))
    conn.close()


@pytest.fixture
def team_of_ten(
    tmp_path: Any, sandbox_image: str
) -> Iterator[tuple[int, dict[str, str], list[Person]]]:
    instance = f"e2e-soak-{secrets.token_hex(3)}"
    env = {**os.environ, "OCC_CONFIG_DIR": str(tmp_path / "config"), "OCC_INSTANCE": instance,
           "NO_COLOR": "1"}  # fmt: skip
    port = free_port()
    run(env, "config", "set", "port", str(port))
    run(env, "config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
    try:
        run(env, "team", "enable", "--name", "p0")
        people = [Person("p0", json.loads(run(env, "--json", "auth", "show").stdout)["password"])]
        for number in range(1, PEOPLE):
            added = json.loads(
                run(env, "--json", "user", "add", f"p{number}", "--memory", "768m").stdout
            )
            people.append(Person(f"p{number}", added["password"]))
        yield port, env, people
    finally:
        remove_everything_of(instance)


# Ten minutes of use, and the ten instances' start around it.
@pytest.mark.timeout(SECONDS + 600)
def test_ten_people_for_ten_minutes(team_of_ten: tuple[int, dict[str, str], list[Person]]) -> None:
    port, env, people = team_of_ten
    for person in people:
        _sign_in(port, person)
    for person in people:
        _wait_ready(port, person)
    made: dict[str, list[str]] = {p.name: p.made for p in people}
    stop = threading.Event()
    threads = [threading.Thread(target=_stream, args=(port, p, stop), daemon=True) for p in people]
    threads += [
        threading.Thread(target=_work, args=(port, p, made, stop), daemon=True) for p in people
    ]
    for thread in threads:
        thread.start()
    stop.wait(SECONDS)
    stop.set()
    for thread in threads[len(people) :]:
        thread.join(timeout=60)

    report = {
        p.name: {"statuses": p.statuses, "made": len(p.made), "events": p.events} for p in people
    }
    print(json.dumps(report, indent=1))
    for person in people:
        assert not person.errors, (person.name, person.errors[:5])
        assert not [s for s in person.statuses if s >= 500], (person.name, person.statuses)
        assert person.stream_ended is None, (person.name, person.stream_ended)
        assert person.made and person.events > 0, (person.name, report[person.name])
        assert sum(person.statuses.values()) >= SECONDS / PACE * 0.5, report[person.name]
    # Nothing lost: every session anyone made still reads, as theirs; none of anybody
    # else's does (the list is paged: each is read on its own).
    for person in people:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for made_id in person.made:
            status, read = _call(conn, person, "GET", f"/session/{made_id}")
            assert status == 200 and read["id"] == made_id, (person.name, made_id, status)
        for other in people:
            if other is not person:
                for foreign in other.made[:3]:
                    status, _ = _call(conn, person, "GET", f"/session/{foreign}")
                    assert status != 200, (person.name, other.name, foreign)
                assert not person.seen_in_stream & set(other.made), (person.name, other.name)
        conn.close()
    # Everyone's instance is still the one that started (no crash, no restart).
    for person in people:
        name = f"opencode-cloud-{env['OCC_INSTANCE']}-user-{person.name}"
        assert docker("inspect", "-f", "{{.RestartCount}} {{.State.Running}}", name).split() == [
            "0",
            "true",
        ]
