"""Single sign-on's parts of the login service that need no provider (sandbox/edge_oidc.py
and its hooks in edge.py), asked on raw sockets as Caddy would: the callback's parser, the
sign-in page's button, the admin tool's settings, which issuers are allowed. The flow
against a real provider: tests/e2e/test_oidc_sign_in.py."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from unit.test_edge import TOKEN, edge, raw
from unit.test_edge_passkeys import post
from unit.test_edge_team import ALICE_PASSWORD, Team

edge_oidc = edge.edge_oidc
SECRET = "client-secret-0123456789"


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    running = Team(tmp_path)
    running.admin(
        op="oidc-set",
        issuer="https://id.example.com",
        client_id="door",
        client_secret=SECRET,
        provider_name="Example <ID>",
        allowed_domains=["example.com"],
    )
    yield running
    running.close()


def state(team: Team) -> dict[str, Any]:
    db = team.admin_people
    return {
        "people": [p.public() for p in db.everyone()],
        "links": db._all("SELECT * FROM oidc_links"),
        "pending": db._all("SELECT * FROM oidc_pending"),
        "sessions": db._all("SELECT token FROM sessions"),
    }


def events(team: Team) -> list[str]:
    return [event for _t, _n, event, _a in team.admin_people.events()]


S = "A" * 43  # a state of the right shape that no sign-in began
CALLBACKS = {
    "no query": "",
    "a state of another shape": "state=abc&code=x",
    "an unknown state": f"state={S}&code=x",
    "two states": f"state={S}&state={S}&code=x",
    "a field without a value sign": f"state={S}&code",
    "not UTF-8": f"state={S}&code=%ff",
    "too many fields": "&".join(f"f{i}=1" for i in range(11)),
    "an error without a state": "error=access_denied",
    "a huge code": f"state={S}&code=" + "c" * 5000,
}


@pytest.mark.parametrize("case", list(CALLBACKS))
def test_a_malformed_or_unknown_callback_gets_the_page_a_log_line_and_changes_nothing(
    team: Team, case: str
) -> None:
    before = state(team)
    query = CALLBACKS[case]
    answer = team.send(raw("GET", f"{edge_oidc.CALLBACK_PATH}?{query}"))
    assert answer.status == 400
    assert b"<form" in answer.body and b"Sign in with Example &lt;ID&gt;" in answer.body
    assert events(team)[-1] in ("sso-bad-callback", "sso-bad-state")
    assert state(team) == before


def test_failed_callbacks_count_as_failed_sign_ins_and_lock_the_address(team: Team) -> None:
    path = f"{edge_oidc.CALLBACK_PATH}?state={S}&code=x"
    for _ in range(edge.MAX_FAILURES):
        assert team.send(raw("GET", path)).status == 400
    logged = len(team.admin_people.events())
    locked = team.send(raw("GET", path))
    assert locked.status == 429 and locked.all("retry-after")
    assert len(team.admin_people.events()) == logged  # no line pushed out by a locked one
    assert team.login("alice", ALICE_PASSWORD).status == 429  # as after wrong passwords
    assert team.send(raw("GET", path, address="198.51.100.7")).status == 400  # another address
    team.clock.now += edge.WINDOW
    assert team.send(raw("GET", path)).status == 400


def test_a_callback_without_single_sign_on_set_up_changes_nothing(team: Team) -> None:
    team.admin(op="oidc-off")
    before = state(team)
    answer = team.send(raw("GET", f"{edge_oidc.CALLBACK_PATH}?state={S}&code=x"))
    assert answer.status == 400 and edge.SSO_BUTTON.split("{")[0].encode() not in answer.body
    assert state(team) == before


def test_the_callback_and_start_take_get_only(team: Team) -> None:
    for path in (edge_oidc.CALLBACK_PATH, edge_oidc.START_PATH):
        answer = team.send(raw("POST", path, {"Content-Type": "text/plain"}, "x"))
        assert answer.status == 405


def test_a_callback_in_a_browser_that_did_not_begin_it_is_refused_and_used_up(
    team: Team,
) -> None:
    """A state begun in one browser (its pending row made as `begin` makes it, without
    asking a provider) is refused with another browser's cookie, and then gone."""
    known = secrets.token_urlsafe(32)
    team.admin_people._run(
        "INSERT INTO oidc_pending VALUES (?, ?, 'n', 'v', 'http://x/cb', '/', ?)",
        edge_oidc._digest(known),
        edge_oidc._digest("the browser's cookie"),
        int(team.guard.sso.clock()),
    )
    path = f"{edge_oidc.CALLBACK_PATH}?state={known}&code=x"
    answer = team.send(raw("GET", path, cookies=("occ_oidc_3000=another-browser",)))
    assert answer.status == 400 and b"another browser" in answer.body
    assert team.admin_people._all("SELECT * FROM oidc_pending") == []
    assert events(team)[-1] == "sso-bad-state"


def test_the_sign_in_page_has_the_button_and_sso_only_leaves_the_form_out(team: Team) -> None:
    page = team.get("/__occ/login?next=/project/x")
    assert b'href="/__occ/oidc/start?next=/project/x"' in page.body
    assert b'name="password"' in page.body
    team.admin(
        op="oidc-set",
        issuer="https://id.example.com",
        client_id="door",
        client_secret=SECRET,
        allowed_domains=["example.com"],
        sso_only=True,
    )
    page = team.get("/__occ/login")
    assert b"Sign in with single sign-on" in page.body
    assert b'name="password"' not in page.body and b"</form>" in page.body
    assert team.login("alice", ALICE_PASSWORD).status == 403  # no session for a password
    assert team.admin_people._all("SELECT token FROM sessions") == []
    # Nor for a passkey: the identity provider is the one way in for browsers.
    assert b"passkey-sign-in" not in page.body
    begun = post(team, "/__occ/passkey/begin", {"csrf": TOKEN})
    assert begun.status == 403 and b"single sign-on only" in begun.body


def test_a_person_without_a_password_is_checked_like_a_wrong_password(team: Team) -> None:
    team.admin_people._run("UPDATE people SET hash = ? WHERE name = 'bob'", edge_oidc.NO_PASSWORD)
    assert team.login("bob", edge_oidc.NO_PASSWORD).status == 401
    assert events(team)[-1] == "failed"


@pytest.mark.parametrize(
    ("issuer", "allow_http", "good"),
    [
        ("https://id.example.com", False, True),
        ("https://id.example.com/realms/team/", False, True),
        ("http://id.example.com", True, False),  # http on a public name
        ("http://8.8.8.8", True, False),  # http on a public address
        ("http://127.0.0.1:9000", False, False),  # http not allowed
        ("http://127.0.0.1:9000", True, True),
        ("http://172.18.0.1:9000", True, True),
        ("https://user:pw@id.example.com", False, False),
        ("https://id.example.com#x", False, False),
        ("https://id.example.com:notaport", False, False),
        ("ftp://id.example.com", False, False),
        ("https://", False, False),
    ],
)
def test_which_issuers_are_allowed(issuer: str, allow_http: bool, good: bool) -> None:
    if good:
        edge_oidc.check_issuer(issuer, allow_http)
    else:
        with pytest.raises(edge_oidc.SettingsError):
            edge_oidc.check_issuer(issuer, allow_http)


@pytest.mark.parametrize(
    "bad",
    [
        {"issuer": "http://id.example.com"},
        {"client_id": ""},
        {"client_id": "a\nb"},
        {"client_secret": None},
        {"client_secret": "x" * 2000},
        {"allowed_domains": "example.com"},  # not a list
        {"allowed_domains": [], "allowed_emails": [], "allowed_groups": []},
        {"create_people": 1},
        {"provider_name": "x" * 100},
    ],
)
def test_refused_settings_keep_the_old_ones(team: Team, bad: dict[str, Any]) -> None:
    shown = team.admin(op="oidc-show")
    request = {
        "op": "oidc-set",
        "issuer": "https://id.example.com",
        "client_id": "door",
        "client_secret": SECRET,
        "allowed_domains": ["example.com"],
        **bad,
    }
    with pytest.raises(edge.AdminError):
        team.admin(**request)
    assert team.admin(op="oidc-show") == shown
    assert SECRET not in str(shown)


def test_a_removed_person_loses_their_link(team: Team) -> None:
    team.admin_people._run(
        "INSERT INTO oidc_links VALUES ('https://id.example.com', 's', 'bob', 1)"
    )
    team.admin(op="remove", name="bob")
    assert team.admin_people._all("SELECT * FROM oidc_links") == []


@pytest.mark.parametrize(
    ("claims", "allowed"),
    [
        ({"email": "a@example.com", "email_verified": True}, True),
        ({"email": "A@Example.COM", "email_verified": True}, True),
        ({"email": "a@example.com", "email_verified": False}, False),
        ({"email": "a@example.com"}, False),  # not said verified
        ({"email": "a@sub.example.com", "email_verified": True}, False),
        ({"email": "boss@other.org", "email_verified": True}, True),
        ({"groups": ["Dev"]}, True),
        ({"groups": "dev"}, False),  # not a list
        ({"groups": ["ops"]}, False),
    ],
)
def test_who_is_allowed(claims: dict[str, Any], allowed: bool) -> None:
    settings = {
        "allowed_emails": ["boss@other.org"],
        "allowed_domains": ["example.com"],
        "allowed_groups": ["dev"],
    }
    assert edge_oidc.allowed(settings, claims) is allowed
