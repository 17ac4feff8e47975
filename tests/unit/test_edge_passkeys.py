"""Passkeys in team mode (sandbox/edge_passkeys.py behind edge.py), served for real on
loopback and asked on raw sockets as Caddy would (see test_edge.py).

The authenticator is a software one built here from `cryptography` keys: it answers
`create` and `get` as a browser hands on an authenticator's answer (base64url JSON), so
every check of fido2's (origin, challenge, relying party, signature) meets real bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256  # type: ignore[import-untyped]
from fido2.ctap2 import (  # type: ignore[import-untyped]
    AttestationObject,
    AttestedCredentialData,
    AuthenticatorData,
)

from unit.test_edge import ADDRESS, CSRF_COOKIE, HOST, TOKEN, Answer, edge, raw
from unit.test_edge_team import ALICE_PASSWORD, BOB_PASSWORD, Team, cookie_in

passkeys = edge._passkeys()

SITE = "localhost:3000"
ORIGIN = f"http://{SITE}"
RP_ID = "localhost"
UP, UV, AT = 0x01, 0x04, 0x40


def b64(data: bytes) -> str:
    return urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator:
    """A software authenticator: one P-256 credential, a counter that goes up at each
    signature (unless `counter_step` is 0, as some authenticators keep none)."""

    def __init__(self, counter_step: int = 1) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.counter = 0
        self.counter_step = counter_step

    def create(self, options: dict[str, Any], origin: str = ORIGIN, **changes: Any) -> Any:
        public_key = options["publicKey"]
        client_data = json.dumps(
            {
                "type": changes.get("type", "webauthn.create"),
                "challenge": changes.get("challenge", public_key["challenge"]),
                "origin": origin,
                "crossOrigin": False,
            }
        ).encode()
        credential = AttestedCredentialData.create(
            b"\0" * 16, self.credential_id, ES256.from_cryptography_key(self.key.public_key())
        )
        rp_id = changes.get("rp_id", public_key["rp"]["id"])
        auth_data = AuthenticatorData.create(
            hashlib.sha256(rp_id.encode()).digest(),
            changes.get("flags", UP | UV | AT),
            self.counter,
            credential,
        )
        attestation = AttestationObject.create("none", auth_data, {})
        return {
            "id": b64(self.credential_id),
            "rawId": b64(self.credential_id),
            "type": "public-key",
            "response": {"clientDataJSON": b64(client_data), "attestationObject": b64(attestation)},
        }

    def get(self, options: dict[str, Any], origin: str = ORIGIN, **changes: Any) -> Any:
        public_key = options["publicKey"]
        self.counter += self.counter_step
        client_data = json.dumps(
            {
                "type": "webauthn.get",
                "challenge": public_key["challenge"],
                "origin": origin,
                "crossOrigin": False,
            }
        ).encode()
        rp_id = changes.get("rp_id", public_key.get("rpId") or public_key["rp"]["id"])
        auth_data = AuthenticatorData.create(
            hashlib.sha256(rp_id.encode()).digest(), changes.get("flags", UP | UV), self.counter
        )
        key = changes.get("key", self.key)
        signature = key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        credential_id = changes.get("credential_id", self.credential_id)
        return {
            "id": b64(credential_id),
            "rawId": b64(credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(client_data),
                "authenticatorData": b64(auth_data),
                "signature": b64(signature),
            },
        }


def at_localhost(data: bytes) -> bytes:
    """A request of `raw` sent to http://localhost:3000 (WebAuthn takes no IP address)."""
    return data.replace(f"Host: {HOST}\r\n".encode(), f"Host: {SITE}\r\n".encode(), 1)


def post(
    team: Team,
    path: str,
    body: Any,
    *cookies: str,
    origin: str = ORIGIN,
    content_type: str = "application/json",
    address: str = ADDRESS,
) -> Answer:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Origin": origin, "Content-Type": content_type}
    cookies = tuple(c for c in (CSRF_COOKIE, *cookies) if c)
    return team.send(at_localhost(raw("POST", path, headers, data, cookies, address)))


def get(team: Team, path: str, *cookies: str) -> Answer:
    return team.send(at_localhost(raw("GET", path, {}, cookies=tuple(c for c in cookies if c))))


def options_of(answer: Answer) -> dict[str, Any]:
    assert answer.status == 200, answer.body
    return dict(json.loads(answer.body))


PASSWORDS = {"alice": ALICE_PASSWORD, "bob": BOB_PASSWORD}


def begin_registration(team: Team, session: str, label: str = "Laptop") -> Answer:
    """The first step of adding a passkey, with the password of the session's person."""
    person = team.guard.session_person(session.partition("=")[2])
    assert person is not None
    body = {"csrf": TOKEN, "label": label, "password": PASSWORDS[person.name]}
    return post(team, "/__occ/passkeys/new", body, session)


def register(team: Team, session: str, authenticator: Authenticator, label: str = "Laptop") -> str:
    begun = begin_registration(team, session, label)
    challenge = cookie_in(begun, "passkey")
    credential = authenticator.create(options_of(begun))
    added = post(
        team, "/__occ/passkeys/add", {"csrf": TOKEN, "credential": credential}, session, challenge
    )
    assert added.status == 200, added.body
    return str(json.loads(added.body)["id"])


def begin_sign_in(team: Team) -> tuple[dict[str, Any], str]:
    begun = post(team, "/__occ/passkey/begin", {"csrf": TOKEN})
    return options_of(begun), cookie_in(begun, "passkey")


def finish(team: Team, challenge: str, credential: Any, next_path: str = "/project/x") -> Answer:
    body = {"csrf": TOKEN, "next": next_path, "credential": credential}
    return post(team, "/__occ/passkey/finish", body, challenge)


def sign_in(team: Team, authenticator: Authenticator, **changes: Any) -> Answer:
    options, challenge = begin_sign_in(team)
    return finish(team, challenge, authenticator.get(options, **changes))


def held(team: Team, name: str) -> list[dict[str, Any]]:
    return list(team.admin(op="passkeys", name=name)["passkeys"])


def events(team: Team) -> list[tuple[str, str]]:
    return [(name, event) for _time, name, event, _address in team.admin_people.events()]


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    running = Team(tmp_path)
    yield running
    running.close()


@pytest.fixture
def alice(team: Team) -> str:
    """Alice's session cookie."""
    return team.session("alice", ALICE_PASSWORD)


# --------------------------------------------------------------------------- the ceremonies


def test_a_registered_passkey_signs_its_person_in_without_a_password(
    team: Team, alice: str
) -> None:
    authenticator = Authenticator()
    passkey_id = register(team, alice, authenticator)
    assert passkey_id == b64(authenticator.credential_id)
    assert [p["label"] for p in held(team, "alice")] == ["Laptop"]

    answer = sign_in(team, authenticator)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["location"] == "/project/x"
    session = cookie_in(answer)
    assert session and session != alice
    assert cookie_in(answer, "device")
    granted = team.verify(session)
    assert granted.status == 200
    assert granted.all("x-occ-person") == ["alice"]
    assert ("alice", "passkey-added") in events(team)
    assert events(team).count(("alice", "signed-in")) == 2
    assert held(team, "alice")[0]["last_used"] == int(team.clock())


def test_an_authenticator_that_was_never_registered_is_refused(team: Team, alice: str) -> None:
    register(team, alice, Authenticator())
    answer = sign_in(team, Authenticator())
    assert answer.status == 400
    assert b"not known" in answer.body
    assert not cookie_in(answer)
    assert events(team)[-1] == ("", "passkey-failed")


def test_a_registered_id_signed_with_another_key_is_refused(team: Team, alice: str) -> None:
    authenticator = Authenticator()
    register(team, alice, authenticator)
    other_key = ec.generate_private_key(ec.SECP256R1())
    answer = sign_in(team, authenticator, key=other_key)
    assert answer.status == 400
    assert b"Invalid signature" in answer.body
    assert not cookie_in(answer)
    assert events(team)[-1] == ("alice", "passkey-failed")


def test_a_challenge_answers_once(team: Team, alice: str) -> None:
    authenticator = Authenticator()
    register(team, alice, authenticator)
    options, challenge = begin_sign_in(team)
    credential = authenticator.get(options)
    assert finish(team, challenge, credential).status == 200
    replayed = finish(team, challenge, credential)
    assert replayed.status == 400
    assert b"unknown or expired" in replayed.body
    assert not cookie_in(replayed)


def test_a_challenge_expires(team: Team, alice: str) -> None:
    authenticator = Authenticator()
    register(team, alice, authenticator)
    options, challenge = begin_sign_in(team)
    team.clock.now += passkeys.CHALLENGE_SECONDS + 1
    answer = finish(team, challenge, authenticator.get(options))
    assert answer.status == 400
    assert b"unknown or expired" in answer.body


def test_an_unknown_challenge_token_or_none_is_refused(team: Team, alice: str) -> None:
    authenticator = Authenticator()
    register(team, alice, authenticator)
    options, _ = begin_sign_in(team)
    credential = authenticator.get(options)
    assert finish(team, "", credential).status == 400
    assert finish(team, "occ_passkey_3000=" + "A" * 43, credential).status == 400


def test_a_registration_challenge_cannot_sign_in(team: Team, alice: str) -> None:
    authenticator = Authenticator()
    register(team, alice, authenticator)
    begun = begin_registration(team, alice)
    answer = finish(team, cookie_in(begun, "passkey"), authenticator.get(options_of(begun)))
    assert answer.status == 400
    assert b"something else" in answer.body


def test_a_counter_that_does_not_go_up_is_a_copy_and_refused(team: Team, alice: str) -> None:
    authenticator = Authenticator()
    register(team, alice, authenticator)
    assert sign_in(team, authenticator).status == 200
    authenticator.counter -= 1  # the copy signs with the counter the original had
    answer = sign_in(team, authenticator)
    assert answer.status == 400
    assert b"counter" in answer.body


def test_an_authenticator_without_a_counter_signs_in_every_time(team: Team, alice: str) -> None:
    authenticator = Authenticator(counter_step=0)
    register(team, alice, authenticator)
    assert sign_in(team, authenticator).status == 200
    assert sign_in(team, authenticator).status == 200


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"origin": "https://evil.example"}, b"origin"),
        ({"origin": "http://localhost:4000"}, b"origin"),
        ({"rp_id": "evil.example"}, b"RP ID"),
        ({"flags": UP}, b"verif"),
    ],
)
def test_another_origin_or_relying_party_or_no_verification_is_refused(
    team: Team, alice: str, changes: dict[str, Any], reason: bytes
) -> None:
    authenticator = Authenticator()
    register(team, alice, authenticator)
    answer = sign_in(team, authenticator, **changes)
    assert answer.status == 400
    assert reason in answer.body
    assert not cookie_in(answer)


def test_a_registration_with_another_origin_or_challenge_keeps_nothing(
    team: Team, alice: str
) -> None:
    authenticator = Authenticator()
    for changes in (
        {"origin": "https://evil.example"},
        {"challenge": b64(os.urandom(32))},
        {"type": "webauthn.get"},
        {"rp_id": "evil.example"},
    ):
        begun = begin_registration(team, alice)
        credential = authenticator.create(options_of(begun), **changes)
        body = {"csrf": TOKEN, "credential": credential}
        answer = post(team, "/__occ/passkeys/add", body, alice, cookie_in(begun, "passkey"))
        assert answer.status == 400, changes
    assert held(team, "alice") == []
    assert events(team)[-1] == ("alice", "passkey-refused")


def test_a_disabled_person_cannot_sign_in_with_their_passkey(team: Team, alice: str) -> None:
    authenticator = Authenticator()
    register(team, alice, authenticator)
    team.admin(op="disable", name="alice")
    answer = sign_in(team, authenticator)
    assert answer.status == 400
    assert not cookie_in(answer)


def test_failed_passkey_sign_ins_count_like_wrong_passwords(team: Team, alice: str) -> None:
    stranger = Authenticator()
    for _ in range(edge.MAX_FAILURES):
        assert sign_in(team, stranger).status == 400
    answer = sign_in(team, stranger)
    assert answer.status == 429
    assert answer.all("retry-after")


# --------------------------------------------------------------------------- the passkeys page


def test_the_page_lists_a_persons_own_passkeys_and_removes_one(team: Team, alice: str) -> None:
    bob = team.session("bob", BOB_PASSWORD)
    register(team, alice, Authenticator(), "Alice's <b>phone</b>")
    bobs = register(team, bob, Authenticator(), "Bob's key")
    page = get(team, "/__occ/passkeys", alice)
    assert page.status == 200
    text = page.body.decode()
    assert "Alice&#x27;s &lt;b&gt;phone&lt;/b&gt;" in text
    assert "Bob" not in text
    assert "'sha256-" in page.all("content-security-policy")[0]

    form = f"csrf={TOKEN}&id={bobs}"
    headers = {"Origin": ORIGIN, "Content-Type": "application/x-www-form-urlencoded"}
    refused = team.send(
        at_localhost(raw("POST", "/__occ/passkeys/remove", headers, form, (CSRF_COOKIE, alice)))
    )
    assert refused.status == 400
    assert len(held(team, "bob")) == 1
    removed = team.send(
        at_localhost(raw("POST", "/__occ/passkeys/remove", headers, form, (CSRF_COOKIE, bob)))
    )
    assert removed.status == 303
    assert held(team, "bob") == []
    assert ("bob", "passkey-removed") in events(team)


def test_adding_a_passkey_takes_the_persons_password(team: Team, alice: str) -> None:
    for password in (None, "", 7, BOB_PASSWORD, "wrong"):
        body = {"csrf": TOKEN, "password": password}
        answer = post(team, "/__occ/passkeys/new", body, alice)
        assert answer.status in (400, 401), answer.body
        assert not cookie_in(answer, "passkey")
    assert events(team).count(("alice", "failed")) == 2
    assert begin_registration(team, alice).status == 200


def test_the_page_and_registration_are_for_people_signed_in(team: Team) -> None:
    assert get(team, "/__occ/passkeys").status == 303
    answer = post(team, "/__occ/passkeys/new", {"csrf": TOKEN})
    assert answer.status == 401


def test_a_person_keeps_at_most_the_limit_of_passkeys(team: Team, alice: str) -> None:
    for _ in range(passkeys.MAX_PASSKEYS):
        register(team, alice, Authenticator())
    answer = begin_registration(team, alice)
    assert answer.status == 400
    assert b"remove one first" in answer.body


def test_the_same_authenticator_is_registered_once(team: Team, alice: str) -> None:
    authenticator = Authenticator()
    register(team, alice, authenticator)
    begun = begin_registration(team, alice)
    options = options_of(begun)
    assert [c["id"] for c in options["publicKey"]["excludeCredentials"]] == [
        b64(authenticator.credential_id)
    ]
    body = {"csrf": TOKEN, "credential": authenticator.create(options)}
    answer = post(team, "/__occ/passkeys/add", body, alice, cookie_in(begun, "passkey"))
    assert answer.status == 400
    assert len(held(team, "alice")) == 1


def test_the_login_page_offers_a_passkey_with_its_script_allowed(team: Team) -> None:
    page = get(team, "/__occ/login")
    assert page.status == 200
    assert b'id="passkey-sign-in"' in page.body
    policy = page.all("content-security-policy")[0]
    script = re.search(rb"<script>(.*?)</script>", page.body, re.DOTALL)
    assert script
    digest = urlsafe_b64encode(hashlib.sha256(script.group(1)).digest()).decode()
    assert digest.replace("-", "+").replace("_", "/") in policy
    assert "connect-src 'self'" in policy


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize("path", ["/__occ/passkey/finish", "/__occ/passkeys/add"])
@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'"text"', "application/json", 400),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400),
        (json.dumps({"csrf": TOKEN}).encode(), "text/plain", 415),
        (json.dumps({"csrf": "B" * 32}).encode(), "application/json", 403),
        (json.dumps({"csrf": 7}).encode(), "application/json", 403),
        (json.dumps({"csrf": TOKEN, "credential": 7}).encode(), "application/json", 400),
        (json.dumps({"csrf": TOKEN, "credential": {"rawId": "!!"}}).encode(), None, 400),
        (
            json.dumps(
                {"csrf": TOKEN, "credential": {"rawId": "A" * 5000, "response": {}}}
            ).encode(),
            None,
            400,
        ),
    ],
)
def test_malformed_answers_get_a_clean_error_and_change_nothing(
    team: Team, alice: str, path: str, body: bytes, content_type: str | None, status: int
) -> None:
    authenticator = Authenticator()
    register(team, alice, authenticator)
    before = held(team, "alice")
    if path.endswith("add"):
        challenge = cookie_in(begin_registration(team, alice), "passkey")
    else:
        challenge = cookie_in(post(team, "/__occ/passkey/begin", {"csrf": TOKEN}), "passkey")
    media = content_type or "application/json"
    answer = post(team, path, body, alice, challenge, content_type=media)
    assert answer.status == status, answer.body
    assert "error" in json.loads(answer.body)
    assert not cookie_in(answer)
    assert held(team, "alice") == before


def test_a_garbled_answer_from_a_real_challenge_is_refused_cleanly(team: Team, alice: str) -> None:
    authenticator = Authenticator()
    register(team, alice, authenticator)
    for field_name, value in (
        ("clientDataJSON", b64(b"not json")),
        ("authenticatorData", b64(b"short")),
        ("signature", b64(b"\x30\x00")),
        ("clientDataJSON", b64(b"[" * 3000)),
    ):
        options, challenge = begin_sign_in(team)
        credential = authenticator.get(options)
        credential["response"][field_name] = value
        answer = finish(team, challenge, credential)
        assert answer.status == 400, field_name
        assert "error" in json.loads(answer.body)


def test_another_sites_request_is_refused_before_anything_is_looked_at(team: Team) -> None:
    answer = post(team, "/__occ/passkey/begin", {"csrf": TOKEN}, origin="https://evil.example")
    assert answer.status == 403
    assert not cookie_in(answer, "passkey")


def test_a_body_beyond_the_limit_is_refused(team: Team, alice: str) -> None:
    answer = post(team, "/__occ/passkey/finish", b"{" + b" " * edge.MAX_BODY + b"}")
    assert answer.status == 413


def test_an_ip_address_gets_no_passkey_ceremony(team: Team) -> None:
    headers = {"Origin": f"http://{HOST}", "Content-Type": "application/json"}
    body = json.dumps({"csrf": TOKEN})
    answer = team.send(raw("POST", "/__occ/passkey/begin", headers, body, (CSRF_COOKIE,)))
    assert answer.status == 400
    assert b"host name" in answer.body


# --------------------------------------------------------------------------- the admin's


def test_a_reset_removes_every_passkey_of_the_person_only(team: Team, alice: str) -> None:
    mine, bobs = Authenticator(), Authenticator()
    register(team, alice, mine)
    register(team, alice, Authenticator())
    register(team, team.session("bob", BOB_PASSWORD), bobs)
    assert team.admin(op="passkey-reset", name="alice")["removed"] == 2
    assert held(team, "alice") == []
    assert sign_in(team, mine).status == 400
    assert sign_in(team, bobs).status == 200
    assert ("alice", "passkey-reset") in events(team)


def test_removing_a_person_forgets_their_passkeys(team: Team, alice: str) -> None:
    authenticator = Authenticator()
    register(team, alice, authenticator)
    team.admin(op="remove", name="alice")
    team.put("alice", ALICE_PASSWORD, "alice-internal-password")
    assert held(team, "alice") == []
    assert sign_in(team, authenticator).status == 400


def test_admin_requests_are_checked(team: Team) -> None:
    with pytest.raises(edge.AdminError, match="no such person"):
        team.admin(op="passkeys", name="carol")
    with pytest.raises(edge.AdminError, match="not a name"):
        team.admin(op="passkey-reset", name="../x")
    for host in ("10.0.0.1", "https://x.example", "a b", "", 7, "x" * 300):
        with pytest.raises(edge.AdminError, match="host"):
            team.admin(op="passkey-host", host=host)
    assert team.admin(op="passkey-host") == {"ok": True, "host": None}


def test_a_host_set_by_the_admin_is_the_only_one_with_passkeys(team: Team, alice: str) -> None:
    assert team.admin(op="passkey-host", host="code.example.com")["host"] == "code.example.com"
    answer = post(team, "/__occ/passkey/begin", {"csrf": TOKEN})
    assert answer.status == 400
    assert b"code.example.com only" in answer.body
    assert team.admin(op="passkey-host", host=None)["host"] is None
    assert post(team, "/__occ/passkey/begin", {"csrf": TOKEN}).status == 200


# --------------------------------------------------------------------------- a second step


def test_an_assertion_for_one_person_takes_only_their_passkeys(team: Team, alice: str) -> None:
    """What a second step after a password does: the challenge names the person."""
    mine, bobs = Authenticator(), Authenticator()
    register(team, alice, mine)
    register(team, team.session("bob", BOB_PASSWORD), bobs)
    store = team.guard.passkeys
    now = team.clock()
    origin_ok = passkeys.origin_check(RP_ID, lambda origin: origin == ORIGIN)

    options, challenge = passkeys.begin_assertion(store, RP_ID, now, name="alice")
    allowed = [c["id"] for c in options["publicKey"]["allowCredentials"]]
    assert allowed == [b64(mine.credential_id)]
    with pytest.raises(passkeys.PasskeyError, match="not known"):
        passkeys.verify_assertion(store, challenge, bobs.get(options), origin_ok, now)
    options, challenge = passkeys.begin_assertion(store, RP_ID, now, name="alice")
    passkey = passkeys.verify_assertion(store, challenge, mine.get(options), origin_ok, now)
    assert passkey.name == "alice"
    with pytest.raises(passkeys.PasskeyError, match="has no passkey"):
        passkeys.begin_assertion(store, RP_ID, now, name="nobody")


def test_a_label_is_kept_as_one_short_printable_line(team: Team, alice: str) -> None:
    register(team, alice, Authenticator(), "\x1b[31mred\nline\u202e" + "x" * 500)
    (label,) = [p["label"] for p in held(team, "alice")]
    assert label.startswith("[31mred line")
    assert len(label) == passkeys.MAX_LABEL
    assert all(c.isprintable() for c in label)
    register(team, alice, Authenticator(), " \t ")
    assert {p["label"] for p in held(team, "alice")} == {label, "Passkey"}


# --------------------------------------------------------------------------- second step


def pending_of(team: Team, name: str = "alice") -> str:
    """The password typed on the login form of a person with a second factor: the
    pending sign-in's cookie."""
    answer = team.login(name, PASSWORDS[name])
    assert answer.all("location") == ["/__occ/second?next=/project/x"], answer.body
    pending = cookie_in(answer, "second")
    assert pending and not cookie_in(answer)
    return pending


def begin_second(team: Team, pending: str) -> tuple[dict[str, Any], str]:
    begun = post(team, "/__occ/second/passkey", {"csrf": TOKEN}, pending)
    return options_of(begun), cookie_in(begun, "passkey")


def prove_second(team: Team, pending: str, challenge: str, credential: Any) -> Answer:
    form = {
        "factor": "passkey",
        "assertion": json.dumps(credential),
        "csrf": TOKEN,
        "next": "/project/x",
    }
    headers = {"Origin": ORIGIN, "Content-Type": "application/x-www-form-urlencoded"}
    cookies = tuple(c for c in (CSRF_COOKIE, pending, challenge) if c)
    return team.send(at_localhost(raw("POST", "/__occ/second", headers, urlencode(form), cookies)))


def with_totp(team: Team, name: str = "alice") -> None:
    team.admin(op="totp", name=name, issuer="opencode-cloud test")


def test_a_person_with_totp_and_a_passkey_answers_the_second_step_with_the_passkey(
    team: Team, alice: str
) -> None:
    authenticator = Authenticator()
    passkey_id = register(team, alice, authenticator)
    with_totp(team)
    pending = pending_of(team)

    page = team.send(
        at_localhost(raw("GET", "/__occ/second?next=/project/x", {"Accept": "text/html"},
                         cookies=(pending,)))
    )  # fmt: skip
    assert page.status == 200
    assert b'name="factor" value="totp"' in page.body
    assert b'name="factor" value="passkey"' in page.body and b"Use a passkey" in page.body
    assert page.all("content-security-policy") == [passkeys.POLICY]

    options, challenge = begin_second(team, pending)
    allowed = [c["id"] for c in options["publicKey"]["allowCredentials"]]
    assert allowed == [passkey_id]  # alice's own passkeys only
    answer = prove_second(team, pending, challenge, authenticator.get(options))
    assert answer.status == 303, answer.body
    assert answer.all("location") == ["/project/x"]
    session = cookie_in(answer)
    assert session and team.verify(session).all("x-occ-person") == ["alice"]
    assert events(team)[-1] == ("alice", "signed-in")
    # The pending sign-in is over: the same cookie proves nothing more.
    again = post(team, "/__occ/second/passkey", {"csrf": TOKEN}, pending)
    assert again.status == 401


def test_a_passkey_without_totp_leaves_the_password_alone_enough(team: Team, alice: str) -> None:
    """A passkey is a second factor only beside TOTP: a person who added one keeps
    signing in with their password alone (and their scripts with Basic credentials)."""
    register(team, alice, Authenticator())
    answer = team.login("alice", ALICE_PASSWORD)
    assert answer.status == 303 and answer.all("location") == ["/project/x"]
    assert team.basic("alice", ALICE_PASSWORD).status == 200
    assert post(team, "/__occ/second/passkey", {"csrf": TOKEN}).status == 401


def test_another_persons_passkey_does_not_answer_a_second_step(team: Team, alice: str) -> None:
    register(team, alice, Authenticator())
    bobs = Authenticator()
    register(team, team.session("bob", BOB_PASSWORD), bobs)
    with_totp(team)
    pending = pending_of(team)
    options, challenge = begin_second(team, pending)
    answer = prove_second(team, pending, challenge, bobs.get(options))
    assert answer.status == 401 and b"The passkey was refused." in answer.body
    assert not cookie_in(answer)
    assert ("alice", "failed-passkey") in events(team)


def test_a_second_step_takes_no_passkey_answer_but_to_its_own_challenge(
    team: Team, alice: str
) -> None:
    authenticator = Authenticator()
    register(team, alice, authenticator)
    with_totp(team)
    pending = pending_of(team)
    # A challenge of the sign-in without a password (anyone's passkey) is not this one.
    options, challenge = begin_sign_in(team)
    answer = prove_second(team, pending, challenge, authenticator.get(options))
    assert answer.status == 401 and not cookie_in(answer)
    # No challenge at all, or a form claiming its own proof, proves nothing.
    options, challenge = begin_second(team, pending)
    credential = authenticator.get(options)
    assert prove_second(team, pending, "", credential).status == 401
    forged = {"verified": "1", "passkey": "ok"}
    assert prove_second(team, pending, challenge, forged).status == 401
    # The challenge went with the forged answer: the real one cannot use it now.
    assert prove_second(team, pending, challenge, credential).status == 401
    # The fifth wrong proof (another key's signature) voids the pending sign-in: the
    # password is asked again.
    options, challenge = begin_second(team, pending)
    other = ec.generate_private_key(ec.SECP256R1())
    answer = prove_second(team, pending, challenge, authenticator.get(options, key=other))
    assert answer.status == 401 and b"sign in again" in answer.body.lower()
    assert post(team, "/__occ/second/passkey", {"csrf": TOKEN}, pending).status == 401


def test_a_passkey_answer_proves_one_second_step_only(team: Team, alice: str) -> None:
    authenticator = Authenticator()
    register(team, alice, authenticator)
    with_totp(team)
    pending = pending_of(team)
    options, challenge = begin_second(team, pending)
    credential = authenticator.get(options)
    assert prove_second(team, pending, challenge, credential).status == 303
    replayed = pending_of(team)
    answer = prove_second(team, replayed, challenge, credential)
    assert answer.status == 401 and not cookie_in(answer)
