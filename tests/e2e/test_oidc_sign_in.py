"""Single sign-on of the door's login service (sandbox/edge.py with edge_oidc.py) against a
real OpenID Connect provider (oidc-provider, run by node: oidc_helpers.py), the login
service served on loopback as in tests/unit/test_edge_team.py. Every refused step answers
with a page, writes a line of the sign-in log, and changes no person, link or session.

The door's own container, Caddy and Chromium: test_oidc_door.py.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oidc_helpers import CLIENT_ID, Answer, Browser, OidcProvider, claims_of, sign
from unit.test_edge import edge, exchange, raw
from unit.test_edge_team import ALICE_PASSWORD, Team

pytestmark = pytest.mark.e2e

edge_oidc = edge.edge_oidc


class Setup:
    def __init__(self, tmp: Path) -> None:
        # Many refused steps a minute from one address: the guessing limits allow them here
        # (test_edge_oidc.py checks that they count).
        self.team = Team(tmp, max_failures=1000)
        self.url = f"http://127.0.0.1:{self.team.port}"
        self.callback = self.url + edge_oidc.CALLBACK_PATH
        self.provider = OidcProvider(tmp / "provider", "127.0.0.1", [self.callback])
        (tmp / "provider").mkdir()
        self.provider.accounts = {
            "bob-at-idp": {"email": "bob@example.com", "email_verified": True},
            "carol": {"email": "carol@example.com", "email_verified": True, "groups": []},
            "dave": {"email": "dave@elsewhere.test", "email_verified": True, "groups": ["dev"]},
            "mallory": {"email": "mallory@evil.test", "email_verified": True},
            "unverified": {"email": "alice@example.com", "email_verified": False},
        }
        self.provider.start()
        self.configure()

    def configure(self, **changes: Any) -> dict[str, Any]:
        request = {
            "op": "oidc-set",
            "issuer": self.provider.issuer,
            "client_id": CLIENT_ID,
            "client_secret": self.provider.secret,
            "provider_name": "Test ID",
            "allowed_emails": ["bob@example.com"],
            "allowed_domains": ["example.com"],
            "allowed_groups": ["dev"],
            "create_people": True,
            "allow_http": True,
            **changes,
        }
        return dict(self.team.admin(**request))

    def reached_callback(self, url: str) -> bool:
        return url.startswith(self.callback)

    def to_callback(self, login: str, browser: Browser | None = None) -> tuple[Browser, str]:
        """A sign-in begun at the door and done at the provider: the browser, and the
        callback URL the provider sent it to (not yet opened)."""
        browser = browser or Browser()
        start = f"{self.url}{edge_oidc.START_PATH}?next=/project/x"
        last = browser.provider_login(start, login, stop=self.reached_callback)
        assert last.status in (302, 303) and self.reached_callback(last.location), last
        return browser, last.location

    def sign_in(self, login: str, browser: Browser | None = None) -> Answer:
        browser, callback = self.to_callback(login, browser)
        return browser.open(callback)

    def state(self) -> dict[str, Any]:
        """Everything a refused step must leave as it was (the sign-in log aside)."""
        db = self.team.admin_people
        return {
            "people": [p.public() for p in db.everyone()],
            "links": db._all("SELECT * FROM oidc_links ORDER BY name"),
            "sessions": db._all("SELECT token, name FROM sessions ORDER BY token"),
        }

    def events(self) -> list[str]:
        return [event for _t, _n, event, _a in self.team.admin_people.events()]

    def close(self) -> None:
        self.provider.close()
        self.team.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    made = Setup(tmp_path_factory.mktemp("oidc"))
    yield made
    made.close()


def session_of(setup: Setup, answer: Answer) -> str:
    """The session cookie an answer set, as the raw requests send it (port 3000)."""
    found = [c.split(";")[0] for c in answer.cookies if c.startswith("occ_session_")]
    assert found, answer
    return found[0].replace(f"_{setup.team.port}=", "_3000=")


def refused(setup: Setup, answer: Answer, status: int, event: str, before: dict[str, Any]) -> None:
    assert answer.status == status, answer
    assert "<form" in answer.body or "Sign in" in answer.body  # the login page, with a message
    assert setup.events()[-1] == event
    assert setup.state() == before


def test_an_allowed_email_signs_in_and_is_linked_to_the_person_with_that_email(
    setup: Setup,
) -> None:
    answer = setup.sign_in("bob-at-idp")
    assert answer.status == 303, answer
    events = setup.events()
    assert events[-2:] == ["sso-linked", "signed-in"]
    links = setup.team.admin_people._all("SELECT name, sub FROM oidc_links")
    assert ("bob", "bob-at-idp") in links
    # Its session is bob's: the door sends its requests to bob's instance.
    verified = setup.team.verify(session_of(setup, answer))
    assert verified.status == 200 and verified.all("x-occ-person") == ["bob"]


def test_a_refused_email_gets_no_session_and_no_person(setup: Setup) -> None:
    before = setup.state()
    answer = setup.sign_in("mallory")
    refused(setup, answer, 403, "sso-refused", before)
    assert "not allowed" in answer.body


def test_an_unverified_email_is_neither_allowed_nor_linked(setup: Setup) -> None:
    before = setup.state()
    answer = setup.sign_in("unverified")
    refused(setup, answer, 403, "sso-refused", before)


def test_a_first_sign_in_allowed_by_domain_creates_a_person_without_a_password(
    setup: Setup,
) -> None:
    answer = setup.sign_in("carol")
    assert answer.status == 303, answer
    assert setup.events()[-2:] == ["sso-created", "signed-in"]
    carol = setup.team.admin_people.get("carol")
    assert carol is not None and carol.email == "carol@example.com"
    assert carol.hash == edge_oidc.NO_PASSWORD
    # No password signs them in, not even the hash's own text.
    assert setup.team.login("carol", edge_oidc.NO_PASSWORD).status == 401
    # A group allows too, whatever the email.
    assert setup.sign_in("dave").status == 303
    assert setup.team.admin_people.get("dave") is not None


def test_a_replayed_state_and_an_unknown_one_are_refused(setup: Setup) -> None:
    browser, callback = setup.to_callback("bob-at-idp")
    # The browser's cookie of this sign-in, which the answer clears: a replay keeps it.
    kept = [c for c in browser.jar if c.name.startswith("occ_oidc_")]
    assert kept
    assert browser.open(callback).status == 303
    browser.jar.set_cookie(kept[0])
    before = setup.state()
    refused(setup, browser.open(callback), 400, "sso-bad-state", before)
    query = urllib.parse.urlencode({"code": "x", "state": secrets.token_urlsafe(32)})
    refused(setup, browser.open(f"{setup.callback}?{query}"), 400, "sso-bad-state", before)


def test_a_callback_opened_in_another_browser_is_refused(setup: Setup) -> None:
    _browser, callback = setup.to_callback("bob-at-idp")
    before = setup.state()
    answer = Browser().open(callback)  # without the cookie of the browser that began
    refused(setup, answer, 400, "sso-bad-state", before)


def _token_altered(setup: Setup, change: Any) -> Answer:
    browser, callback = setup.to_callback("bob-at-idp")
    assert setup.provider.proxy is not None
    setup.provider.proxy.alter_token = change
    try:
        return browser.open(callback)
    finally:
        setup.provider.proxy.alter_token = None


def _resigned(setup: Setup, **claims: Any) -> Any:
    def change(answer: dict[str, Any]) -> dict[str, Any]:
        payload = {**claims_of(answer["id_token"]), **claims}
        return {**answer, "id_token": sign(payload, setup.provider.key)}

    return change


def test_a_tampered_id_token_is_refused(setup: Setup) -> None:
    def tamper(answer: dict[str, Any]) -> dict[str, Any]:
        head, payload, signature = answer["id_token"].split(".")
        claims = {**claims_of(answer["id_token"]), "sub": "alice-at-idp"}
        forged = urllib.parse.quote(json.dumps(claims))  # any change of the payload
        assert forged
        import base64

        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return {**answer, "id_token": f"{head}.{payload}.{signature}"}

    before = setup.state()
    answer = _token_altered(setup, tamper)
    refused(setup, answer, 400, "sso-bad-token", before)


def test_an_id_token_for_another_audience_is_refused(setup: Setup) -> None:
    before = setup.state()
    answer = _token_altered(setup, _resigned(setup, aud="another-client"))
    refused(setup, answer, 400, "sso-bad-token", before)


def test_an_expired_id_token_is_refused(setup: Setup) -> None:
    now = int(time.time())
    before = setup.state()
    answer = _token_altered(setup, _resigned(setup, iat=now - 7200, exp=now - 3600))
    refused(setup, answer, 400, "sso-bad-token", before)


def test_an_id_token_with_another_nonce_or_signed_by_another_key_is_refused(
    setup: Setup,
) -> None:
    from oidc_helpers import new_key

    before = setup.state()
    answer = _token_altered(setup, _resigned(setup, nonce="another"))
    refused(setup, answer, 400, "sso-bad-token", before)

    stranger = new_key()

    def foreign(answer: dict[str, Any]) -> dict[str, Any]:
        kid = setup.provider.key["kid"]  # names the provider's key, signed with another
        return {**answer, "id_token": sign(claims_of(answer["id_token"]), stranger, kid)}

    refused(setup, _token_altered(setup, foreign), 400, "sso-bad-token", before)


def test_an_oversized_id_token_is_refused(setup: Setup) -> None:
    before = setup.state()
    answer = _token_altered(
        setup, lambda a: {**a, "id_token": a["id_token"] + "A" * edge_oidc.MAX_ID_TOKEN}
    )
    refused(setup, answer, 400, "sso-bad-token", before)


MALFORMED = {
    "no query": "",
    "two states": "state={s}&state={s}&code=x",
    "not percent-encoding": "state={s}&code=%ff%fe",
    "a state of another shape": "state=short&code=x",
    "a code with a control character": "state={s}&code=a%01b",
    "a huge code": "state={s}&code=" + "c" * 4000,
    "too many fields": "&".join(f"f{i}=1" for i in range(30)),
    "an error of the provider": "state={s}&error=access_denied",
    "another issuer": "state={s}&code=x&iss=http%3A%2F%2Fevil.test",
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_callbacks_get_a_page_and_a_log_line_and_change_nothing(
    setup: Setup, case: str
) -> None:
    # A state that was really begun, in this browser, where the case names one.
    browser, callback = setup.to_callback("bob-at-idp")
    state = urllib.parse.parse_qs(urllib.parse.urlsplit(callback).query)["state"][0]
    query = MALFORMED[case].format(s=state)
    before = setup.state()
    answer = browser.open(f"{setup.callback}?{query}")
    assert answer.status in (400, 403), answer
    assert "Sign in" in answer.body
    assert setup.events()[-1] in ("sso-bad-callback", "sso-bad-state", "sso-refused")
    assert setup.state() == before


def test_raw_callbacks_that_break_the_request_itself_are_refused_cleanly(setup: Setup) -> None:
    before = setup.state()
    path = edge_oidc.CALLBACK_PATH
    cases = [
        raw("GET", path + "?state=" + "a" * 70000),  # longer than a request's head
        raw("GET", path + "?state=%00%0d%0a"),
        raw("POST", path, {"Content-Type": "application/x-www-form-urlencoded"}, "code=x"),
    ]
    for data in cases:
        answer = exchange(setup.team.port, data)
        assert answer is None or answer.status in (400, 405, 431), answer
    assert setup.state() == before


def test_the_provider_rotating_its_keys_between_two_sign_ins(setup: Setup) -> None:
    assert setup.sign_in("bob-at-idp").status == 303
    old = setup.provider.rotate()
    assert old["kid"] != setup.provider.key["kid"]
    time.sleep(edge_oidc.JWKS_REFRESH)  # the door fetches keys at most this often
    answer = setup.sign_in("bob-at-idp")
    assert answer.status == 303, answer
    assert setup.events()[-1] == "signed-in"


def test_someone_removed_at_the_provider_or_no_longer_allowed_cannot_sign_in(
    setup: Setup,
) -> None:
    setup.provider.accounts["erin"] = {"email": "erin@example.com", "email_verified": True}
    setup.provider.write_accounts()
    assert setup.sign_in("erin").status == 303
    # No longer allowed: the settings change, the link stays.
    setup.configure(allowed_domains=[])
    before = setup.state()
    refused(setup, setup.sign_in("erin"), 403, "sso-refused", before)
    setup.configure()
    # Removed at the provider: its login of that account does not come back signed in.
    del setup.provider.accounts["erin"]
    setup.provider.write_accounts()
    browser = Browser()
    start = f"{setup.url}{edge_oidc.START_PATH}?next=/"
    last = browser.provider_login(start, "erin", stop=setup.reached_callback)
    if setup.reached_callback(last.location):
        answer = browser.open(last.location)
        assert answer.status in (400, 403), answer
    else:
        assert last.status >= 400 or "error" in last.body, last
    assert setup.state()["sessions"] == before["sessions"]


def test_a_disabled_or_removed_person_cannot_sign_in_though_the_provider_says_yes(
    setup: Setup,
) -> None:
    setup.provider.accounts["frank"] = {"email": "frank@example.com", "email_verified": True}
    setup.provider.write_accounts()
    assert setup.sign_in("frank").status == 303
    setup.team.admin(op="disable", name="frank")
    before = setup.state()
    refused(setup, setup.sign_in("frank"), 403, "sso-refused", before)
    setup.team.admin(op="remove", name="frank")
    links = setup.team.admin_people._all("SELECT name FROM oidc_links WHERE name = 'frank'")
    assert links == []  # a new frank is not the provider's frank


def test_sso_only_hides_the_password_form_and_refuses_passwords(setup: Setup) -> None:
    page = setup.team.get("/__occ/login")
    assert b"Sign in with Test ID" in page.body and b'name="password"' in page.body
    setup.configure(sso_only=True)
    try:
        page = setup.team.get("/__occ/login")
        assert b"Sign in with Test ID" in page.body and b'name="password"' not in page.body
        assert setup.team.login("alice", ALICE_PASSWORD).status == 403
    finally:
        setup.configure()
    assert setup.team.login("alice", ALICE_PASSWORD).status == 303


def test_settings_are_checked_and_a_refused_change_keeps_the_old(setup: Setup) -> None:
    shown = setup.team.admin(op="oidc-show")
    bad: dict[str, Any]
    for bad in (
        {"issuer": "http://example.com"},  # http on a public name
        {"issuer": "ftp://127.0.0.1"},
        {"client_secret": ""},
        {"allowed_emails": [], "allowed_domains": [], "allowed_groups": []},
        {"create_people": "yes"},
    ):
        with pytest.raises(edge.AdminError):
            setup.configure(**bad)
    assert setup.team.admin(op="oidc-show") == shown
    assert "client_secret" not in json.dumps(shown) and setup.provider.secret not in json.dumps(
        shown
    )
