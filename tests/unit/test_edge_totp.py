"""TOTP as a second factor in team mode (sandbox/edge_totp.py, edge_second.py), served for
real on loopback and asked on raw sockets as Caddy would (see test_edge_team.py). The
clock is a fake one: codes are computed for its time."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pyotp
import pytest

from unit.test_edge import ADDRESS, CSRF_COOKIE, ORIGIN, TOKEN, Answer, edge, raw
from unit.test_edge_team import ALICE_PASSWORD, BOB_PASSWORD, Team, cookie_in

FORM = {"Origin": ORIGIN, "Content-Type": "application/x-www-form-urlencoded"}


class TotpTeam(Team):
    """The team of test_edge_team.py, with the second step's requests."""

    def enrol(self, name: str = "alice") -> dict[str, object]:
        return self.admin(op="totp", name=name, issuer="opencode-cloud test")

    def code(self, secret: str, offset: int = 0) -> str:
        return str(pyotp.TOTP(secret).at(int(self.clock()), offset))

    def pending(self, name: str = "alice", password: str = ALICE_PASSWORD) -> str:
        answer = self.login(name, password)
        assert answer.status == 303, answer.body
        assert answer.all("location") == ["/__occ/second?next=/project/x"]
        assert cookie_in(answer) == ""  # no session yet
        pending = cookie_in(answer, "second")
        assert pending
        return pending

    def prove(
        self,
        pending: str,
        code: str,
        factor: str = "totp",
        *,
        device: str = "",
        address: str = ADDRESS,
        **fields: str,
    ) -> Answer:
        form = {"factor": factor, "code": code, "csrf": TOKEN, "next": "/project/x", **fields}
        cookies = tuple(c for c in (CSRF_COOKIE, pending, device) if c)
        return self.send(raw("POST", "/__occ/second", FORM, urlencode(form), cookies, address))

    def log(self) -> list[tuple[str, str]]:
        return [(name, event) for _, name, event, _ in self.admin_people.events()]


@pytest.fixture
def team(tmp_path: Path) -> Iterator[TotpTeam]:
    running = TotpTeam(tmp_path)
    yield running
    running.close()


def secret_of(enrolled: dict[str, object]) -> str:
    secret = enrolled["secret"]
    assert isinstance(secret, str)
    return secret


def codes_of(enrolled: dict[str, object]) -> list[str]:
    codes = enrolled["recovery_codes"]
    assert isinstance(codes, list)
    return [str(c) for c in codes]


# --------------------------------------------------------------------------- the step


def test_a_person_with_totp_gets_no_session_from_the_password_alone(team: TotpTeam) -> None:
    team.enrol()
    pending = team.pending()
    # The pending sign-in's cookie lets nothing through.
    assert team.verify(pending).status == 401
    assert team.verify(pending.replace("second", "session")).status == 401
    # Without a code there is no way on: an empty one is wrong.
    assert team.prove(pending, "").status == 401
    # Bob, without TOTP, signs in with his password as before.
    assert team.session("bob", BOB_PASSWORD)


def test_the_right_code_signs_in_and_the_same_code_is_refused_the_second_time(
    team: TotpTeam,
) -> None:
    secret = secret_of(team.enrol())
    code = team.code(secret)
    answer = team.prove(team.pending(), code)
    assert answer.status == 303, answer.body
    assert answer.all("location") == ["/project/x"]
    session = cookie_in(answer)
    assert team.verify(session).status == 200
    # The same code, on a new pending sign-in, a moment later: refused.
    team.clock.now += 5
    again = team.prove(team.pending(), code)
    assert again.status == 401
    assert b"Wrong code." in again.body
    assert cookie_in(again) == ""
    # The next time step's code works.
    team.clock.now += 30
    assert team.prove(team.pending(), team.code(secret)).status == 303
    events = team.log()
    assert ("alice", "failed-totp") in events
    assert events.count(("alice", "signed-in")) == 2
    # Each right password is noted, code or not: a leaked password shows in the log.
    assert events.count(("alice", "second-step-asked")) == 3


def test_a_code_one_step_off_is_taken_and_two_steps_off_is_not(team: TotpTeam) -> None:
    secret = secret_of(team.enrol())
    assert team.prove(team.pending(), team.code(secret, -2)).status == 401
    assert team.prove(team.pending(), team.code(secret, 2)).status == 401
    assert team.prove(team.pending(), team.code(secret, -1)).status == 303
    # An earlier step than the one used last is refused, like the same step.
    team.clock.now += 30
    assert team.prove(team.pending(), team.code(secret, -2)).status == 401
    assert team.prove(team.pending(), team.code(secret, 1)).status == 303


def test_a_pending_sign_in_is_used_once(team: TotpTeam) -> None:
    secret = secret_of(team.enrol())
    pending = team.pending()
    assert team.prove(pending, team.code(secret)).status == 303
    team.clock.now += 30
    answer = team.prove(pending, team.code(secret))
    assert answer.status == 401
    assert b"expired" in answer.body
    assert cookie_in(answer) == ""


def test_a_pending_sign_in_expires_after_five_minutes(team: TotpTeam) -> None:
    secret = secret_of(team.enrol())
    pending = team.pending()
    assert team.get("/__occ/second", pending, Accept="text/html").status == 200
    team.clock.now += 301
    assert team.get("/__occ/second", pending).status == 303
    answer = team.prove(pending, team.code(secret))
    assert answer.status == 401
    assert b"expired" in answer.body
    assert ("", "second-step-refused") in team.log()


def test_a_new_password_or_disabling_voids_a_pending_sign_in(team: TotpTeam) -> None:
    secret = secret_of(team.enrol())
    pending = team.pending()
    team.admin(op="passwd", name="alice", hash=edge_hash("a new long password"))
    assert team.prove(pending, team.code(secret)).status == 401
    pending = team.pending("alice", "a new long password")
    team.admin(op="disable", name="alice")
    assert team.prove(pending, team.code(secret)).status == 401


def edge_hash(password: str) -> str:
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def test_five_wrong_codes_void_the_pending_sign_in(team: TotpTeam) -> None:
    secret = secret_of(team.enrol())
    pending = team.pending()
    for _ in range(4):
        assert team.prove(pending, "000000").status == 401
    last = team.prove(pending, "000001")
    assert last.status == 401
    assert b"Too many wrong codes" in last.body
    assert team.prove(pending, team.code(secret)).status == 401


def test_wrong_codes_count_in_the_guessing_limits_like_wrong_passwords(team: TotpTeam) -> None:
    secret = secret_of(team.enrol())
    # Nine wrong passwords and one wrong code fill the address's bucket (ten).
    for _ in range(9):
        assert team.login("alice", "wrong password").status == 401
    pending = team.pending()  # the right password: not a failure
    assert team.prove(pending, "123456").status == 401
    locked = team.prove(pending, team.code(secret))
    assert locked.status == 429
    assert locked.all("retry-after")
    # Once the window has passed, the same pending sign-in (still live) goes on.
    team.clock.now += 61
    team.clock.now += 30 - team.clock.now % 30  # a step of its own, within 5 minutes
    assert team.prove(pending, team.code(secret)).status == 303


def test_wrong_codes_for_a_person_are_bounded_however_slowly_they_come(team: TotpTeam) -> None:
    # The guessing limits forget a failure after a minute: a guesser who knows the
    # password and waits between tries would get ten codes a minute, for ever (a
    # six-digit code falls to that in weeks). Past `MAX_GUESSES` wrong codes in a row,
    # codes are refused until a recovery code or a new key.
    enrolled = team.enrol()
    secret = secret_of(enrolled)
    wrong = 0
    while wrong < edge.edge_second.MAX_GUESSES:
        pending = team.pending()
        for _ in range(5):
            guess = f"{(int(team.code(secret)) + 1) % 1_000_000:06d}"
            assert team.prove(pending, guess).status == 401
            wrong += 1
        team.clock.now += 31  # past the limits' window every other sign-in
    team.clock.now += 61
    refused = team.prove(team.pending(), team.code(secret))
    assert refused.status == 401
    assert b"recovery code" in refused.body
    assert ("alice", "totp-blocked") in team.log()
    # A recovery code signs her in and lets codes count again.
    assert team.prove(team.pending(), codes_of(enrolled)[0], "recovery").status == 303
    team.clock.now += 30
    assert team.prove(team.pending(), team.code(secret)).status == 303


def test_a_new_key_lets_codes_count_again(team: TotpTeam) -> None:
    team.enrol()
    pending = ""
    for wrong in range(edge.edge_second.MAX_GUESSES):
        if wrong % 5 == 0:
            team.clock.now += 31
            pending = team.pending()
        assert team.prove(pending, "000000").status == 401
    team.clock.now += 61
    secret = secret_of(team.enrol())
    assert team.prove(team.pending(), team.code(secret)).status == 303


def test_a_recovery_code_works_once(team: TotpTeam) -> None:
    enrolled = team.enrol()
    codes = codes_of(enrolled)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(re.fullmatch(r"[a-z2-7]{4}(-[a-z2-7]{4}){3}", c) for c in codes)
    answer = team.prove(team.pending(), codes[0].upper().replace("-", " "), "recovery")
    assert answer.status == 303, answer.body
    assert team.verify(cookie_in(answer)).status == 200
    assert team.prove(team.pending(), codes[0], "recovery").status == 401
    assert team.prove(team.pending(), codes[1], "recovery").status == 303
    # A recovery code is not a TOTP code, nor one of another person's.
    assert team.prove(team.pending(), codes[2], "totp").status == 401
    assert ("alice", "recovery-code-used") in team.log()


def test_re_enrolling_replaces_the_seed_and_codes_and_ends_sessions(team: TotpTeam) -> None:
    first = team.enrol()
    session = cookie_in(team.prove(team.pending(), team.code(secret_of(first))))
    assert team.verify(session).status == 200
    second = team.enrol()
    assert secret_of(second) != secret_of(first)
    assert team.verify(session).status == 401  # enrolling signs the person out
    team.clock.now += 30
    assert team.prove(team.pending(), team.code(secret_of(first))).status == 401
    assert team.prove(team.pending(), codes_of(first)[0], "recovery").status == 401
    assert team.prove(team.pending(), team.code(secret_of(second))).status == 303


def test_enrolling_ends_the_sessions_made_with_the_password_alone(team: TotpTeam) -> None:
    session = team.session("alice", ALICE_PASSWORD)
    assert team.verify(session).status == 200
    team.enrol()
    assert team.verify(session).status == 401


def test_turning_totp_off_brings_back_the_password_alone(team: TotpTeam) -> None:
    team.enrol()
    assert team.admin(op="totp-off", name="alice") == {"ok": True, "name": "alice", "totp": None}
    assert team.session("alice", ALICE_PASSWORD)
    with pytest.raises(edge.AdminError, match="alice has no TOTP"):
        team.admin(op="totp-off", name="alice")
    assert ("alice", "totp-off") in team.log()


def test_basic_credentials_of_a_person_with_totp_are_refused(team: TotpTeam) -> None:
    team.enrol()
    answer = team.basic("alice", ALICE_PASSWORD)
    assert answer.status == 401
    assert b"second factor" in answer.body
    assert team.basic("bob", BOB_PASSWORD).status == 200


def test_list_tells_pending_and_on(team: TotpTeam) -> None:
    def states() -> dict[str, object]:
        return {p["name"]: p["totp"] for p in team.admin(op="list")["people"]}

    assert states() == {"alice": None, "bob": None}
    secret = secret_of(team.enrol())
    assert states() == {"alice": "pending", "bob": None}
    team.prove(team.pending(), team.code(secret))
    assert states() == {"alice": "on", "bob": None}


def test_the_uri_holds_the_seed_for_an_authenticator_app(team: TotpTeam) -> None:
    enrolled = team.enrol()
    uri = enrolled["uri"]
    assert isinstance(uri, str)
    parsed = pyotp.parse_uri(uri)
    assert parsed.secret == secret_of(enrolled)
    assert parsed.issuer == "opencode-cloud test"
    assert len(secret_of(enrolled)) == 32  # 160 bits


def test_removing_a_person_removes_their_seed_and_codes(team: TotpTeam) -> None:
    team.enrol()
    team.prove(team.pending(), "000000")  # a wrong code counted, a pending sign-in kept
    team.admin(op="remove", name="alice")
    db = sqlite3.connect(team.db_path)
    try:
        for table in ("totp", "recovery_codes", "second_pending", "second_guesses"):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
    finally:
        db.close()
    team.put("alice", ALICE_PASSWORD, "alice-internal-password")
    assert team.session("alice", ALICE_PASSWORD)  # a new alice: no second factor


def test_no_seed_code_or_token_is_logged_or_kept_in_clear(team: TotpTeam) -> None:
    enrolled = team.enrol()
    secret, codes = secret_of(enrolled), codes_of(enrolled)
    pending = team.pending()
    code = team.code(secret)
    team.prove(pending, "999999")
    team.prove(pending, codes[0], "recovery")
    logged = repr(team.admin_people.events())
    token = pending.split("=", 1)[1]
    for value in (secret, code, codes[0], token):
        assert value not in logged
    dump = "\n".join(sqlite3.connect(team.db_path).iterdump())
    assert token not in dump
    assert all(c.replace("-", "") not in dump for c in codes)
    assert secret in dump  # the one secret kept as it is: codes are computed from it


# --------------------------------------------------------------------------- bad input


def test_the_second_page_is_for_a_live_pending_sign_in_only(team: TotpTeam) -> None:
    team.enrol()
    assert team.get("/__occ/second").status == 303
    assert team.get("/__occ/second", "occ_second_3000=" + "x" * 43).status == 303
    pending = team.pending()
    page = team.get("/__occ/second?next=/project/x", pending, Accept="text/html")
    assert page.status == 200
    assert b'name="factor" value="totp"' in page.body
    assert b'name="factor" value="recovery"' in page.body
    assert b'value="/project/x"' in page.body


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe",  # not UTF-8
        b"code=1&" * 30,  # more fields than a form has
    ],
)
def test_a_malformed_form_is_refused_and_counts_nothing(team: TotpTeam, body: bytes) -> None:
    secret = secret_of(team.enrol())
    pending = team.pending()
    answer = team.send(raw("POST", "/__occ/second", FORM, body, (CSRF_COOKIE, pending)))
    assert answer.status == 400
    assert team.prove(pending, team.code(secret)).status == 303


def test_an_oversized_form_is_refused_before_it_is_read(team: TotpTeam) -> None:
    secret = secret_of(team.enrol())
    pending = team.pending()
    body = "code=" + "1" * (edge.MAX_BODY + 1)
    answer = team.send(raw("POST", "/__occ/second", FORM, body, (CSRF_COOKIE, pending)))
    assert answer.status == 413
    assert team.prove(pending, team.code(secret)).status == 303


def test_a_form_of_another_site_or_without_its_token_is_refused(team: TotpTeam) -> None:
    secret = secret_of(team.enrol())
    pending = team.pending()
    form = urlencode({"factor": "totp", "code": team.code(secret), "csrf": TOKEN})
    foreign = {**FORM, "Origin": "http://evil.example"}
    assert (
        team.send(raw("POST", "/__occ/second", foreign, form, (CSRF_COOKIE, pending))).status == 403
    )
    assert team.send(raw("POST", "/__occ/second", FORM, form, (pending,))).status == 403
    # Neither used the code nor the pending sign-in.
    assert team.prove(pending, team.code(secret)).status == 303


@pytest.mark.parametrize(
    "fields",
    [
        {"factor": "nope"},
        {"factor": ""},
        {"factor": "totp", "code": "1" * 10000},
        {"factor": "recovery", "code": "x" * 300},
        {"factor": "totp", "code": "12345"},
        {"factor": "totp", "code": "1234567"},
        {"factor": "totp", "code": "１２３４５６"},  # noqa: RUF001 (full-width digits)
    ],
)
def test_bad_proofs_are_wrong_and_logged(team: TotpTeam, fields: dict[str, str]) -> None:
    secret = secret_of(team.enrol())
    pending = team.pending()
    form = {"csrf": TOKEN, "next": "/", **fields}
    answer = team.send(raw("POST", "/__occ/second", FORM, urlencode(form), (CSRF_COOKIE, pending)))
    assert answer.status in (401, 413)
    assert cookie_in(answer) == ""
    if answer.status == 401:
        assert any(event.startswith("failed-") for _, event in team.log())
    assert team.prove(pending, team.code(secret)).status == 303


def test_a_forged_or_replayed_pending_token_is_refused_and_counted(team: TotpTeam) -> None:
    secret = secret_of(team.enrol())
    code = team.code(secret)
    forged = "occ_second_3000=" + "A" * 43
    for _ in range(10):
        answer = team.prove(forged, code)
        assert answer.status == 401
        assert cookie_in(answer) == ""
    # Ten guesses at a token filled the address's bucket: alice's password waits too.
    assert team.login("alice", ALICE_PASSWORD).status == 429
    assert team.log().count(("", "second-step-refused")) == 10


def test_a_session_cookie_cannot_stand_in_for_the_pending_one(team: TotpTeam) -> None:
    secret = secret_of(team.enrol())
    bob = team.session("bob", BOB_PASSWORD)
    answer = team.prove(bob.replace("session", "second"), team.code(secret))
    assert answer.status == 401
    assert b"expired" in answer.body


def test_admin_requests_with_bad_input_change_nothing(team: TotpTeam) -> None:
    before = "\n".join(sqlite3.connect(team.db_path).iterdump())
    bad: list[dict[str, object]] = [
        {"op": "totp", "name": "nobody"},
        {"op": "totp", "name": "Alice"},
        {"op": "totp", "name": "alice", "issuer": "bad:issuer"},
        {"op": "totp", "name": "alice", "issuer": 5},
        {"op": "totp", "name": "alice", "issuer": "x" * 65},
        {"op": "totp-off", "name": "alice"},
        {"op": "totp-off", "name": "nobody"},
    ]
    for request in bad:
        with pytest.raises(edge.AdminError):
            edge.apply_admin(team.admin_people, request, team.clock())
    assert "\n".join(sqlite3.connect(team.db_path).iterdump()) == before


def test_a_database_of_an_older_edge_gains_the_tables_of_the_second_step(
    tmp_path: Path,
) -> None:
    path = tmp_path / "team.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE people (name TEXT PRIMARY KEY, hash TEXT NOT NULL, generation TEXT NOT "
        "NULL, internal_password TEXT NOT NULL, upstream TEXT NOT NULL, admin INTEGER NOT NULL "
        "DEFAULT 0, email TEXT, disabled INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL, "
        "last_sign_in INTEGER, last_seen INTEGER);"
    )
    db.close()
    people = edge.People(path)
    try:
        tables = {row[0] for row in people._all("SELECT name FROM sqlite_master")}
        assert {"totp", "recovery_codes", "second_pending", "second_guesses"} <= tables
    finally:
        people.close()
