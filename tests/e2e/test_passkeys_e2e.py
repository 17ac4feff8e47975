"""Passkeys in team mode end to end: the real front door, `occ` as a subprocess, and
Chromium with virtual authenticators (the DevTools protocol's WebAuthn domain).

One team serves the module, on the suite's sandbox image (`sandbox_image`). WebAuthn needs
a secure context: the browser opens the door at http://localhost:PORT.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from browser_helpers import ARTIFACTS
from occ_helpers import free_port, remove_everything_of, run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@dataclass
class Team:
    env: dict[str, str]
    url: str  # http://localhost:PORT
    password: str


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, sandbox_image: str) -> Iterator[Team]:
    instance = f"e2e-passkeys-{secrets.token_hex(3)}"
    env = {
        **os.environ,
        "OCC_CONFIG_DIR": str(tmp_path_factory.mktemp("passkeys") / "config"),
        "OCC_INSTANCE": instance,
        "NO_COLOR": "1",
    }
    port = free_port()
    run(env, "config", "set", "port", str(port))
    run(env, "config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
    try:
        run(env, "start")
        password = json.loads(run(env, "--json", "auth", "show").stdout)["password"]
        run(env, "team", "enable", "--name", "ada")
        yield Team(env, f"http://localhost:{port}", password)
    finally:
        remove_everything_of(instance)


def authenticator(context: Any, page: Any) -> tuple[Any, str]:
    """A virtual platform authenticator for `page` (user verification on): the DevTools
    session and the authenticator's ID."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    options = {
        "protocol": "ctap2",
        "transport": "internal",
        "hasResidentKey": True,
        "hasUserVerification": True,
        "isUserVerified": True,
    }
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})
    return cdp, added["authenticatorId"]


def sign_in_with_password(page: Any, team: Team) -> None:
    page.goto(team.url + "/__occ/login", wait_until="load", timeout=30_000)
    page.fill("#name", "ada")
    page.fill("#password", team.password)
    with page.expect_navigation(timeout=60_000):
        page.click("button[type=submit]")


def sign_out(page: Any, team: Team) -> None:
    page.goto(team.url + "/__occ/logout", wait_until="load", timeout=30_000)
    with page.expect_navigation(timeout=30_000):
        page.click("button[type=submit]")
    assert "/__occ/login" in page.url, page.url


def passkey_sign_in(page: Any, team: Team) -> str:
    """Click "Sign in with a passkey" on the login page: the page's URL once it left the
    login page, or its error line when it stayed."""
    page.goto(team.url + "/__occ/login", wait_until="load", timeout=30_000)
    page.click("#passkey-sign-in")
    page.wait_for_function(
        "() => !location.pathname.startsWith('/__occ/login')"
        " || document.getElementById('passkey-msg').textContent !== ''",
        timeout=30_000,
    )
    if "/__occ/login" in page.url:
        return "error: " + page.inner_text("#passkey-msg")
    return str(page.url)


def signed_in_as(page: Any, team: Team) -> str:
    page.goto(team.url + "/__occ/passkeys", wait_until="load", timeout=30_000)
    return "" if "/__occ/login" in page.url else page.inner_text("h1")


def passkeys_of(team: Team, name: str) -> list[dict[str, Any]]:
    return list(
        json.loads(run(team.env, "--json", "user", "passkey", "list", name).stdout)["passkeys"]
    )


def test_register_sign_in_refuse_another_authenticator_and_reset(browser: Any, team: Team) -> None:
    # The host name the passkeys are for: a bad one changes nothing.
    refused = run(team.env, "user", "passkey", "host", "10.0.0.1", check=False)
    assert refused.returncode != 0
    assert "host" in refused.stderr and "Traceback" not in refused.stderr
    shown = json.loads(run(team.env, "--json", "user", "passkey", "host", "localhost").stdout)
    assert shown == {"host": "localhost"}

    context = browser.new_context()
    page = context.new_page()
    cdp, own = authenticator(context, page)
    try:
        # Register, signed in with the password.
        sign_in_with_password(page, team)
        assert signed_in_as(page, team) == "Passkeys of ada"
        page.fill("#label", "Laptop")
        page.fill("#password", "not the password")
        page.click("#passkey-add")
        page.get_by_text("Wrong password").wait_for(timeout=30_000)
        assert passkeys_of(team, "ada") == []
        page.fill("#password", team.password)
        page.click("#passkey-add")
        page.get_by_role("cell", name="Laptop").wait_for(timeout=30_000)
        (listed,) = passkeys_of(team, "ada")
        assert listed["label"] == "Laptop" and listed["last_used"] is None
        (credential,) = cdp.send("WebAuthn.getCredentials", {"authenticatorId": own})["credentials"]
        assert credential["rpId"] == "localhost"

        # Sign out, then in with the passkey alone.
        sign_out(page, team)
        assert signed_in_as(page, team) == ""
        landed = passkey_sign_in(page, team)
        assert not landed.startswith("error"), landed
        assert signed_in_as(page, team) == "Passkeys of ada"
        assert passkeys_of(team, "ada")[0]["last_used"] is not None

        # Another browser, whose authenticator holds a passkey of the same ID with another
        # key (a forgery), and then one the door never saw: both refused.
        other = browser.new_context()
        stranger = other.new_page()
        other_cdp, theirs = authenticator(other, stranger)
        try:
            for credential_id in (credential["credentialId"], _random_id()):
                other_cdp.send("WebAuthn.clearCredentials", {"authenticatorId": theirs})
                other_cdp.send(
                    "WebAuthn.addCredential",
                    {"authenticatorId": theirs, "credential": _forged(credential_id)},
                )
                answer = passkey_sign_in(stranger, team)
                assert answer.startswith("error: Passkey sign-in failed"), answer
                assert signed_in_as(stranger, team) == ""
        finally:
            other.close()
        log = json.loads(run(team.env, "--json", "team", "log", "--user", "ada").stdout)["log"]
        events = [line["event"] for line in log]
        assert "passkey-added" in events and "passkey-failed" in events
        assert "signed-in" in events

        # The admin resets ada's passkeys (asked first): hers no longer signs in.
        kept = run(team.env, "user", "passkey", "reset", "ada", check=False)
        assert kept.returncode == 2, kept.stderr
        assert len(passkeys_of(team, "ada")) == 1
        reset = json.loads(
            run(team.env, "--json", "user", "passkey", "reset", "ada", "--yes").stdout
        )
        assert reset == {"name": "ada", "removed": 1}
        sign_out(page, team)
        answer = passkey_sign_in(page, team)
        assert answer.startswith("error: Passkey sign-in failed"), answer
        assert "not known" in answer
        assert signed_in_as(page, team) == ""
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "passkeys.png"))
        raise
    finally:
        context.close()


def test_a_passkey_answers_the_second_step_after_the_password(browser: Any, team: Team) -> None:
    """A person with TOTP and a passkey types their password, then uses the passkey
    instead of a code, and lands in their opencode."""
    run(team.env, "user", "passkey", "host", "localhost")
    context = browser.new_context()
    page = context.new_page()
    authenticator(context, page)
    try:
        sign_in_with_password(page, team)
        assert signed_in_as(page, team) == "Passkeys of ada"
        page.fill("#label", "Phone")
        page.fill("#password", team.password)
        page.click("#passkey-add")
        page.get_by_role("cell", name="Phone").wait_for(timeout=30_000)
        run(team.env, "user", "totp", "ada", "--json")
        sign_out(page, team)

        sign_in_with_password(page, team)
        assert "/__occ/second" in page.url, page.url
        with page.expect_navigation(timeout=60_000):
            page.click("#passkey-second")
        page.get_by_text("Projects", exact=True).wait_for(timeout=120_000)  # her opencode
        assert signed_in_as(page, team) == "Passkeys of ada"
        log = json.loads(run(team.env, "--json", "team", "log", "--user", "ada").stdout)["log"]
        assert log[-1]["event"] == "signed-in"
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "passkey-second-step.png"))
        raise
    finally:
        context.close()
        run(team.env, "user", "totp", "ada", "--off", "--yes", check=False)


def _random_id() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _forged(credential_id: str) -> dict[str, Any]:
    """A discoverable credential for localhost with a key of its own (DevTools' form:
    base64, the private key in PKCS #8)."""
    key = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        "credentialId": credential_id,
        "isResidentCredential": True,
        "rpId": "localhost",
        "privateKey": base64.b64encode(pkcs8).decode(),
        "userHandle": base64.b64encode(secrets.token_bytes(16)).decode(),
        "signCount": 100,
    }
