"""Passkeys (WebAuthn) of team mode: signing in without a password, and the page where a
signed-in person adds and removes theirs.

The cryptography is Debian's `python3-fido2` (0.9): `Fido2Server` makes the options of a
ceremony and checks the browser's answer (type, origin, challenge, relying party, user
presence and verification, signature). What is kept, in the team's database (tables of
this module only): each passkey's credential ID, public key (the "attested credential
data"), signature counter, the person it is of, a label and two times. No private key,
no secret: a copy of the table lets nobody in.

Challenges are single use and live `CHALLENGE_SECONDS` in this process's memory, under
the SHA-256 digest of a random token that the browser holds in a cookie
(`occ_passkey_PORT`, Path=/__occ/, SameSite=Strict, HttpOnly); the browser is never
asked what it was challenged with. A challenge is made for one kind of ceremony
(`register` for a signed-in person, `sign-in` for anyone), one relying party ID and, for
a registration or a second step, one person.

The relying party ID is the host name people use: the one an admin set
(`occ user passkey host`), or else the host the browser asked for. WebAuthn needs a
secure context: HTTPS, or plain HTTP on `localhost`. The origin a browser signed must be
this host and port, over HTTPS (or on localhost).

`begin_assertion` and `verify_assertion` make and check an assertion for any caller: the
passwordless sign-in here, or a second step after a password (the challenge names the
person then, and only their passkeys are allowed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from base64 import b64encode, urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

CHALLENGE_SECONDS = 120
MAX_CHALLENGES = 2000  # in memory at once; the oldest goes first
MAX_CHALLENGES_PER_ADDRESS = 10  # of one address: a flood from one ends nobody else's
MAX_PASSKEYS = 10  # of one person
MAX_LABEL = 60
# A browser's answer: base64url fields of a few hundred bytes (an RSA key's signature is
# 512); anything longer was not made by an authenticator.
MAX_FIELD = 4096
MAX_CREDENTIAL_ID = 1023  # WebAuthn's own limit, in bytes
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_PASSKEY_ID = re.compile(r"[A-Za-z0-9_-]{1,1400}")
# A host name for the relying party ID: WebAuthn takes no IP address and no port.
HOST_NAME = re.compile(
    r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
_IP_ADDRESS = re.compile(r"[0-9.]+|\[.*\]")
RP_NAME = "opencode"

SCHEMA = """
CREATE TABLE IF NOT EXISTS passkeys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    credential BLOB NOT NULL,
    sign_count INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL,
    last_used INTEGER
);
CREATE INDEX IF NOT EXISTS passkeys_by_name ON passkeys (name);
CREATE TABLE IF NOT EXISTS passkey_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class PasskeyError(Exception):
    """A ceremony or a request that is refused: its message is shown to the person;
    `name`, the person whose passkey it was, when known (for the log)."""

    def __init__(self, message: str, name: str = "") -> None:
        super().__init__(message)
        self.name = name


def b64url(data: bytes) -> str:
    return urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: Any, what: str, limit: int = MAX_FIELD) -> bytes:
    """The bytes of a base64url field of a browser's answer, or PasskeyError."""
    if not isinstance(text, str) or len(text) > limit or not _BASE64URL.fullmatch(text):
        raise PasskeyError(f"{what}: not base64url")
    try:
        return urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise PasskeyError(f"{what}: not base64url") from None


def _jsonable(value: Any) -> Any:
    """fido2's options as the browser's JSON: bytes in base64url, enums as strings."""
    if isinstance(value, bytes):
        return b64url(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def clean_label(text: Any) -> str:
    """A passkey's label as kept and shown: printable, one line, at most `MAX_LABEL`."""
    if not isinstance(text, str):
        return "Passkey"
    kept = "".join(" " if c.isspace() else c for c in text if c.isprintable() or c.isspace())
    label = " ".join(kept.split())[:MAX_LABEL]
    return label or "Passkey"


# --------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class Passkey:
    id: str  # the credential ID, base64url
    name: str
    label: str
    credential: bytes = field(repr=False)  # attested credential data: AAGUID, ID, key
    sign_count: int
    created: int
    last_used: int | None

    def public(self) -> dict[str, Any]:
        """What is shown of it: never the key (which is no secret, but of no use)."""
        return {
            "id": self.id,
            "label": self.label,
            "created": self.created,
            "last_used": self.last_used,
        }


_COLUMNS = "id, name, label, credential, sign_count, created, last_used"


class Passkeys:
    """The passkeys table of the people's database, through the edge's connection
    (`transaction` opens one write transaction on it, `reading` lends it for reads: the
    edge's `People._transaction` and `People._reading`), and the challenges under way,
    in memory."""

    def __init__(
        self,
        transaction: Callable[[], contextlib.AbstractContextManager[sqlite3.Connection]],
        reading: Callable[[], contextlib.AbstractContextManager[sqlite3.Connection]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._transaction = transaction
        self._reading = reading
        with reading() as db:
            db.executescript(SCHEMA)
        self.challenges = Challenges(clock)

    def _rows(self, sql: str, *args: Any) -> list[Passkey]:
        with self._reading() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM passkeys {sql}", args).fetchall()
        return [Passkey(*row) for row in rows]

    def of(self, name: str) -> list[Passkey]:
        return self._rows("WHERE name = ? ORDER BY created, id", name)

    def get(self, passkey_id: str) -> Passkey | None:
        found = self._rows("WHERE id = ?", passkey_id)
        return found[0] if found else None

    def add(
        self,
        name: str,
        label: str,
        credential_id: bytes,
        credential: bytes,
        count: int,
        now: float,
    ) -> str:
        """Keep a new passkey of `name`; its ID. Refused beyond `MAX_PASSKEYS` and for an
        ID already kept (of anyone)."""
        passkey_id = b64url(credential_id)
        with self._transaction() as db:
            (held,) = db.execute("SELECT COUNT(*) FROM passkeys WHERE name = ?", (name,)).fetchone()
            if held >= MAX_PASSKEYS:
                raise PasskeyError(f"You have {MAX_PASSKEYS} passkeys already: remove one first.")
            if db.execute("SELECT 1 FROM passkeys WHERE id = ?", (passkey_id,)).fetchall():
                raise PasskeyError("This passkey is registered already.")
            db.execute(
                f"INSERT INTO passkeys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (passkey_id, name, label, credential, count, int(now)),
            )
        return passkey_id

    def used(self, passkey_id: str, old_count: int, new_count: int, now: float) -> bool:
        """Note a sign-in with the passkey and its new counter, if the counter is still the
        one checked (two sign-ins with one answer cannot both pass)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE passkeys SET sign_count = ?, last_used = ? WHERE id = ? AND sign_count = ?",
                (new_count, int(now), passkey_id, old_count),
            )
            return cursor.rowcount == 1

    def remove(self, name: str, passkey_id: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM passkeys WHERE name = ? AND id = ?", (name, passkey_id)
            )
            return cursor.rowcount == 1

    def reset(self, name: str) -> int:
        """Forget all of `name`'s passkeys (a lost device, or the person removed)."""
        with self._transaction() as db:
            return db.execute("DELETE FROM passkeys WHERE name = ?", (name,)).rowcount

    def host(self) -> str | None:
        """The relying party ID an admin set, if any."""
        with self._reading() as db:
            row = db.execute("SELECT value FROM passkey_settings WHERE key = 'host'").fetchone()
        return row[0] if row else None

    def set_host(self, host: str | None) -> None:
        with self._transaction() as db:
            if host is None:
                db.execute("DELETE FROM passkey_settings WHERE key = 'host'")
            else:
                db.execute("INSERT OR REPLACE INTO passkey_settings VALUES ('host', ?)", (host,))


def forget(db: sqlite3.Connection, name: str) -> None:
    """A person removed (in the caller's transaction): their passkeys go, so that none
    signs in a new person of the same name."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("DELETE FROM passkeys WHERE name = ?", (name,))


# --------------------------------------------------------------------------- challenges


@dataclass
class Challenge:
    """A ceremony under way: fido2's state (the challenge), for which relying party ID,
    kind and person (None: whoever's passkey answers), until when."""

    kind: str  # "register" or "sign-in"
    rp_id: str
    state: dict[str, Any]
    name: str | None
    expires: float
    label: str = "Passkey"
    allowed: tuple[str, ...] = ()  # passkey IDs a second step accepts
    address: str = ""  # where the request for it came from


class Challenges:
    """Challenges under way, by the digest of their token; each taken at most once."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, Challenge] = {}

    def put(self, challenge: Challenge, address: str = "") -> str:
        """Keep `challenge`, asked for from `address`; the token the browser holds for
        it."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        challenge = replace(challenge, address=address)
        with self._lock:
            for key in [k for k, c in self._open.items() if c.expires <= now]:
                del self._open[key]
            mine = [k for k, c in self._open.items() if c.address == address]
            for key in mine[: max(0, len(mine) - MAX_CHALLENGES_PER_ADDRESS + 1)]:
                del self._open[key]  # this address's oldest
            while len(self._open) >= MAX_CHALLENGES:
                del self._open[next(iter(self._open))]  # the oldest (insertion order)
            self._open[_digest(token)] = challenge
        return token

    def take(self, token: str | None, kind: str) -> Challenge:
        """The live challenge of `token`, of `kind`, forgotten as it is taken."""
        if not token:
            raise PasskeyError("No passkey request under way: try again.")
        with self._lock:
            challenge = self._open.pop(_digest(token), None)
        if challenge is None or challenge.expires <= self.clock():
            raise PasskeyError("This passkey request is unknown or expired: try again.")
        if challenge.kind != kind:
            raise PasskeyError("This passkey request was for something else: try again.")
        return challenge


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- ceremonies


def _fido2() -> Any:
    """Debian's python3-fido2 (0.9), loaded on first use: one namespace of its parts."""
    import fido2.client  # type: ignore[import-untyped]
    import fido2.ctap2  # type: ignore[import-untyped]
    import fido2.server  # type: ignore[import-untyped]
    import fido2.webauthn  # type: ignore[import-untyped]

    return SimpleNamespace(
        ClientData=fido2.client.ClientData,
        AttestationObject=fido2.ctap2.AttestationObject,
        AuthenticatorData=fido2.ctap2.AuthenticatorData,
        AttestedCredentialData=fido2.ctap2.AttestedCredentialData,
        Fido2Server=fido2.server.Fido2Server,
        RpEntity=fido2.webauthn.PublicKeyCredentialRpEntity,
        UserEntity=fido2.webauthn.PublicKeyCredentialUserEntity,
        Descriptor=fido2.webauthn.PublicKeyCredentialDescriptor,
    )


def _server(rp_id: str, origin_ok: Callable[[str], bool]) -> Any:
    lib = _fido2()
    return lib.Fido2Server(lib.RpEntity(rp_id, RP_NAME), verify_origin=origin_ok)


def origin_check(rp_id: str, same_site: Callable[[str], bool]) -> Callable[[str], bool]:
    """What a browser's signed origin must be: this site (`same_site`: its host and
    port), named by the relying party ID, over HTTPS or on localhost."""

    def check(origin: Any) -> bool:
        if not isinstance(origin, str) or len(origin) > 300:
            return False
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        secure = parts.scheme == "https" or (parts.scheme == "http" and rp_id == "localhost")
        return secure and parts.hostname == rp_id and same_site(origin)

    return check


def begin_registration(
    store: Passkeys, rp_id: str, name: str, label: str, now: float
) -> tuple[dict[str, Any], Challenge]:
    """The options of `navigator.credentials.create` for a new passkey of `name`, and the
    challenge to keep. A discoverable credential (it signs in without a name), with the
    person's own passkeys excluded (one authenticator, one passkey)."""

    held = store.of(name)
    if len(held) >= MAX_PASSKEYS:
        raise PasskeyError(f"You have {MAX_PASSKEYS} passkeys already: remove one first.")
    server = _server(rp_id, lambda _origin: False)
    # A random user handle each time: nothing of the person's name is needed to sign in.
    user = _fido2().UserEntity(secrets.token_bytes(16), name, display_name=name)
    options, state = server.register_begin(
        user,
        credentials=[_credential(passkey) for passkey in held],
        resident_key=True,
        user_verification="required",
    )
    options["publicKey"]["timeout"] = CHALLENGE_SECONDS * 1000
    challenge = Challenge("register", rp_id, state, name, now + CHALLENGE_SECONDS, label)
    return _jsonable(options), challenge


def finish_registration(
    store: Passkeys,
    challenge: Challenge,
    answer: Any,
    origin_ok: Callable[[str], bool],
    now: float,
) -> str:
    """Check the browser's answer to a registration and keep the passkey; its ID."""

    response = _response(answer)
    client_data_bytes = unb64url(response.get("clientDataJSON"), "clientDataJSON")
    attestation = unb64url(response.get("attestationObject"), "attestationObject")
    assert challenge.name is not None
    try:
        lib = _fido2()
        client_data = lib.ClientData(client_data_bytes)
        attestation_object = lib.AttestationObject(attestation)
        auth_data = _server(challenge.rp_id, origin_ok).register_complete(
            challenge.state, client_data, attestation_object
        )
        credential = auth_data.credential_data
        if credential is None:
            raise ValueError("no credential in the answer")
        credential_id = bytes(credential.credential_id)
        counter = int(auth_data.counter)
    except PasskeyError:
        raise
    except Exception as exc:  # anything a malformed answer makes fido2's parsers raise
        raise PasskeyError(f"The passkey was refused ({_reason(exc)}).") from None
    if not 0 < len(credential_id) <= MAX_CREDENTIAL_ID:
        raise PasskeyError("The passkey was refused (its ID is too long).")
    return store.add(
        challenge.name, challenge.label, credential_id, bytes(credential), counter, now
    )


def begin_assertion(
    store: Passkeys, rp_id: str, now: float, name: str | None = None
) -> tuple[dict[str, Any], Challenge]:
    """The options of `navigator.credentials.get` and the challenge to keep. Without
    `name`, any passkey of this site may answer (the sign-in without a password; the
    browser offers the person's own); with it, only that person's (a second step after
    their password), and their user verification is not required."""
    allowed = store.of(name) if name is not None else []
    if name is not None and not allowed:
        raise PasskeyError(f"{name} has no passkey.")
    options, state = _server(rp_id, lambda _origin: False).authenticate_begin(
        credentials=[_credential(passkey) for passkey in allowed] or None,
        user_verification="required" if name is None else "preferred",
    )
    options["publicKey"]["timeout"] = CHALLENGE_SECONDS * 1000
    challenge = Challenge(
        "sign-in",
        rp_id,
        state,
        name,
        now + CHALLENGE_SECONDS,
        allowed=tuple(passkey.id for passkey in allowed),
    )
    return _jsonable(options), challenge


def verify_assertion(
    store: Passkeys,
    challenge: Challenge,
    answer: Any,
    origin_ok: Callable[[str], bool],
    now: float,
) -> Passkey:
    """Check the browser's answer to `challenge` (taken from `Challenges`, so used once):
    the passkey that signed it, with its counter noted. Refused (PasskeyError) for a
    passkey that is nobody's (or not of `challenge.name`), a wrong signature, origin or
    relying party, and a signature counter that did not go up (a copied passkey)."""

    if not isinstance(answer, dict):
        raise PasskeyError("The passkey's answer is not an object.")
    raw_id = unb64url(answer.get("rawId"), "rawId", 2 * MAX_CREDENTIAL_ID)
    response = _response(answer)
    client_data_bytes = unb64url(response.get("clientDataJSON"), "clientDataJSON")
    auth_data_bytes = unb64url(response.get("authenticatorData"), "authenticatorData")
    signature = unb64url(response.get("signature"), "signature")
    passkey = store.get(b64url(raw_id)) if raw_id else None
    if passkey is None or (challenge.name is not None and passkey.id not in challenge.allowed):
        raise PasskeyError("This passkey is not known here.")
    try:
        lib = _fido2()
        client_data = lib.ClientData(client_data_bytes)
        auth_data = lib.AuthenticatorData(auth_data_bytes)
        credential = _attested(passkey)
        _server(challenge.rp_id, origin_ok).authenticate_complete(
            challenge.state, [credential], raw_id, client_data, auth_data, signature
        )
        counter = int(auth_data.counter)
    except Exception as exc:  # anything a malformed answer makes fido2's parsers raise
        raise PasskeyError(f"The passkey was refused ({_reason(exc)}).", passkey.name) from None
    # Authenticators that keep a counter raise it at each signature: one that did not go
    # up is a copy of the passkey, or an answer given twice.
    if (counter or passkey.sign_count) and counter <= passkey.sign_count:
        message = "The passkey was refused (its signature counter did not go up)."
        raise PasskeyError(message, passkey.name)
    if not store.used(passkey.id, passkey.sign_count, counter, now):
        message = "The passkey was refused (used at the same time elsewhere)."
        raise PasskeyError(message, passkey.name)
    return passkey


def _response(answer: Any) -> dict[str, Any]:
    response = answer.get("response") if isinstance(answer, dict) else None
    if not isinstance(response, dict):
        raise PasskeyError("The passkey's answer has no response.")
    return response


def _credential(passkey: Passkey) -> Any:
    """A kept passkey as fido2's descriptor of it."""

    return _fido2().Descriptor("public-key", unb64url(passkey.id, "id", 2048))


def _attested(passkey: Passkey) -> Any:

    return _fido2().AttestedCredentialData(passkey.credential)


def _reason(exc: Exception) -> str:
    """A short, printable reason from fido2's exception (never more than a line)."""
    text = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
    return "".join(c for c in text if c.isprintable())[:80] or "malformed"


# --------------------------------------------------------------------------- admin


def apply_admin(
    store: Passkeys, op: str, request: dict[str, Any], name: str | None
) -> dict[str, Any]:
    """`passkeys` (a person's list), `passkey-reset` (forget them all), `passkey-host`
    (show, set or clear the relying party ID): the admin tool's requests of this module.
    `name` is an existing person's, checked by the caller (None for `passkey-host`)."""
    if op == "passkeys" and name is not None:
        return {"ok": True, "name": name, "passkeys": [p.public() for p in store.of(name)]}
    if op == "passkey-reset" and name is not None:
        return {"ok": True, "name": name, "removed": store.reset(name)}
    if op == "passkey-host":
        if "host" in request:
            host = request["host"]
            if host is not None and not (
                isinstance(host, str)
                and HOST_NAME.fullmatch(host)
                and not _IP_ADDRESS.fullmatch(host)
            ):
                raise PasskeyError("host: not a host name (an IP address cannot have passkeys)")
            store.set_host(host)
        return {"ok": True, "host": store.host()}
    raise PasskeyError(f"unknown op: {op!r}"[:200])


# --------------------------------------------------------------------------- the pages

# The login page's button and the passkeys page's form: one script for both, allowed by
# its digest (`POLICY`).
SCRIPT = """
const b64 = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
  .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
const bytes = (text) => Uint8Array.from(
  atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
const csrf = () => document.querySelector("input[name=csrf]").value;
const say = (text) => { document.getElementById("passkey-msg").textContent = text; };
async function post(path, body) {
  const answer = await fetch(path, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await answer.json();
  if (!answer.ok) throw new Error(data.error || "refused");
  return data;
}
function encoded(credential) {
  const r = credential.response;
  const response = {clientDataJSON: b64(r.clientDataJSON)};
  if (r.attestationObject) response.attestationObject = b64(r.attestationObject);
  if (r.authenticatorData) {
    response.authenticatorData = b64(r.authenticatorData);
    response.signature = b64(r.signature);
    if (r.userHandle) response.userHandle = b64(r.userHandle);
  }
  return {id: credential.id, rawId: b64(credential.rawId), type: credential.type, response};
}
function decoded(options) {
  options.challenge = bytes(options.challenge);
  if (options.user) options.user.id = bytes(options.user.id);
  for (const list of [options.allowCredentials, options.excludeCredentials]) {
    for (const c of list || []) c.id = bytes(c.id);
  }
  return options;
}
const signIn = document.getElementById("passkey-sign-in");
if (signIn) signIn.addEventListener("click", async () => {
  say("");
  try {
    const begun = await post("/__occ/passkey/begin", {csrf: csrf()});
    const credential = await navigator.credentials.get({publicKey: decoded(begun.publicKey)});
    const next = document.querySelector("input[name=next]").value;
    const done = await post("/__occ/passkey/finish",
      {csrf: csrf(), next, credential: encoded(credential)});
    location.assign(done.location);
  } catch (error) { say("Passkey sign-in failed: " + error.message); }
});
const second = document.getElementById("passkey-second");
if (second) second.addEventListener("click", async () => {
  say("");
  try {
    const begun = await post("/__occ/second/passkey", {csrf: csrf()});
    const credential = await navigator.credentials.get({publicKey: decoded(begun.publicKey)});
    second.form.querySelector("input[name=assertion]").value =
      JSON.stringify(encoded(credential));
    second.form.submit();
  } catch (error) { say("The passkey failed: " + error.message); }
});
const add = document.getElementById("passkey-add");
if (add) add.addEventListener("click", async () => {
  say("");
  try {
    const label = document.getElementById("label").value;
    const password = document.getElementById("password").value;
    const begun = await post("/__occ/passkeys/new", {csrf: csrf(), label, password});
    const credential = await navigator.credentials.create(
      {publicKey: decoded(begun.publicKey)});
    await post("/__occ/passkeys/add", {csrf: csrf(), credential: encoded(credential)});
    location.reload();
  } catch (error) { say("Adding the passkey failed: " + error.message); }
});
"""
POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-"
    + b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    + "'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
)

SECOND_BLOCK = """<input type="hidden" name="assertion" value="">
<button type="button" id="passkey-second">Use a passkey</button>
<p class="msg" id="passkey-msg"></p>
<script>{script}</script>"""

LOGIN_BLOCK = """<button type="button" id="passkey-sign-in">Sign in with a passkey</button>
<p class="msg" id="passkey-msg"></p>
<script>{script}</script>"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Passkeys - opencode-cloud</title>
{style}
<style>main{{background:#1c1c1c;padding:2rem;border-radius:8px;width:28rem}}
table{{width:100%;border-collapse:collapse}}td{{padding:.3rem .3rem .3rem 0}}
td form{{padding:0;width:auto;background:none}}td button{{margin:0;width:auto}}</style>
</head><body>
<main>
<h1>Passkeys of {name}</h1>
<p>{intro}</p>
<input type="hidden" name="csrf" value="{csrf}">
{rows}
<label for="label">Name of a new passkey</label>
<input id="label" maxlength="{max_label}" placeholder="Laptop">
<label for="password">Your password</label>
<input id="password" type="password" autocomplete="current-password">
<button type="button" id="passkey-add">Add a passkey</button>
<p class="msg" id="passkey-msg">{message}</p>
<p><a href="/" style="color:#9cf">Back to opencode</a></p>
</main>
<script>{script}</script>
</body></html>
"""


# --------------------------------------------------------------------------- the routes

PAGE_PATH = "/__occ/passkeys"
NEW_PATH = "/__occ/passkeys/new"
ADD_PATH = "/__occ/passkeys/add"
REMOVE_PATH = "/__occ/passkeys/remove"
SECOND_BEGIN_PATH = "/__occ/second/passkey"
BEGIN_PATH = "/__occ/passkey/begin"
FINISH_PATH = "/__occ/passkey/finish"
COOKIE = "passkey"  # occ_passkey_PORT: the token of the challenge under way


def login_block() -> str:
    """The login page's part: a button, a line for its errors, the script."""
    return LOGIN_BLOCK.format(script=SCRIPT)


def routes(h: Any, edge: Any) -> dict[str, dict[str, Callable[[], Any]]]:
    """Team mode's passkey routes for the handler `h` of the module `edge`."""
    return {
        PAGE_PATH: {"GET": lambda: _page(h, edge)},
        NEW_PATH: {"POST": lambda: _answer(h, edge, _new)},
        ADD_PATH: {"POST": lambda: _answer(h, edge, _add)},
        REMOVE_PATH: {"POST": lambda: _remove(h, edge)},
        BEGIN_PATH: {"POST": lambda: _answer(h, edge, _begin)},
        FINISH_PATH: {"POST": lambda: _answer(h, edge, _finish)},
        SECOND_BEGIN_PATH: {"POST": lambda: _answer(h, edge, _second_begin)},
    }


class _Refused(PasskeyError):
    def __init__(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


def _answer(h: Any, edge: Any, step: Callable[[Any, Any, dict[str, Any]], Any]) -> Any:
    """Run one JSON step: its request read and held to this site's own pages (Origin and
    the forms' token), a refusal as `{"error": ...}` with nothing changed."""
    try:
        return step(h, edge, _json_body(h))
    except _Refused as refused:
        return h._json(refused.status, str(refused), refused.headers)
    except PasskeyError as exc:
        return h._json(400, str(exc))


def _json_body(h: Any) -> dict[str, Any]:
    media = h.request.header("content-type").split(";")[0].strip().lower()
    if media != "application/json":
        raise _Refused(415, "send JSON (Content-Type: application/json)")
    try:
        body = json.loads(h.request.body)
    except (ValueError, RecursionError):
        raise PasskeyError("not JSON") from None
    if not isinstance(body, dict):
        raise PasskeyError("not a JSON object")
    csrf = body.get("csrf")
    if h._origin() == "foreign" or not h._csrf_ok({"csrf": csrf if isinstance(csrf, str) else ""}):
        raise _Refused(403, "This page was out of date: load it again.")
    return body


def _store(h: Any) -> Passkeys:
    store: Passkeys = h.team.passkeys
    return store


def _rp_id(h: Any) -> str:
    """The relying party ID for this request: the host an admin set (other hosts get
    none), or the host the browser asked for, when it is a name."""
    try:
        host = urlsplit("//" + h._host()).hostname or ""
    except ValueError:
        host = ""
    configured = _store(h).host()
    if configured:
        if host != configured:
            raise PasskeyError(f"Passkeys work at {configured} only.")
        return configured
    if not HOST_NAME.fullmatch(host) or _IP_ADDRESS.fullmatch(host):
        raise PasskeyError("Passkeys need a host name, not an IP address (or localhost).")
    return host


def _origin_ok(h: Any, rp_id: str) -> Callable[[str], bool]:
    return origin_check(rp_id, h._of_this_site)


def _signed_in(h: Any) -> Any:
    person = h._signed_in()
    if person is None:
        raise _Refused(401, "sign in first")
    return person


def _hold(h: Any, challenge: Challenge, options: dict[str, Any], edge: Any) -> Any:
    """Options for the browser, with the challenge's token in its cookie."""
    token = _store(h).challenges.put(challenge, h._address())
    cookie = h._set_cookie(COOKIE, token, CHALLENGE_SECONDS, f"{edge.PREFIX}/", "Strict")
    return edge.Response(200, json.dumps(options).encode(), "application/json", [cookie])


def _take(h: Any, kind: str) -> Challenge:
    return _store(h).challenges.take(h._cookie(COOKIE), kind)


def _new(h: Any, edge: Any, body: dict[str, Any]) -> Any:
    """A registration begins with the person's password, checked (and counted) as at the
    login form: a stolen session cookie alone cannot add a passkey that outlives it."""
    person = _signed_in(h)
    password = body.get("password")
    if not isinstance(password, str) or not password:
        raise PasskeyError("Type your password to add a passkey.")
    device = h._cookie("device")
    outcome, generation = h.guard.attempt(h._address(), person.name, password, device)
    if outcome != "ok" or generation != person.generation:
        status, message, headers = h._refused(
            "wrong" if outcome == "ok" else outcome, device, person.name
        )
        raise _Refused(status, "Wrong password." if status == 401 else message, headers)
    options, challenge = begin_registration(
        _store(h), _rp_id(h), person.name, clean_label(body.get("label")), h.team.clock()
    )
    return _hold(h, challenge, options, edge)


def _add(h: Any, edge: Any, body: dict[str, Any]) -> Any:
    person = _signed_in(h)
    challenge = _take(h, "register")
    if challenge.name != person.name:
        raise PasskeyError("This passkey request was another person's: try again.")
    try:
        passkey_id = finish_registration(
            _store(h),
            challenge,
            body.get("credential"),
            _origin_ok(h, challenge.rp_id),
            h.team.clock(),
        )
    except PasskeyError:
        h.team._log(person.name, "passkey-refused", h._address())
        raise
    h.team._log(person.name, "passkey-added", h._address())
    answer = json.dumps({"ok": True, "id": passkey_id}).encode()
    return edge.Response(200, answer, "application/json")


def _begin(h: Any, edge: Any, body: dict[str, Any]) -> Any:
    if h._sso_only():  # the identity provider is the one way in for browsers
        raise _Refused(403, "This team signs in with single sign-on only.")
    options, challenge = begin_assertion(_store(h), _rp_id(h), h.team.clock())
    return _hold(h, challenge, options, edge)


def _finish(h: Any, edge: Any, body: dict[str, Any]) -> Any:
    """The sign-in with a passkey: a session of its person, as after their password.
    Failures count in the same buckets as wrong passwords without a device cookie."""
    if h._sso_only():  # also for a sign-in begun before single sign-on only was set
        raise _Refused(403, "This team signs in with single sign-on only.")
    guard = h.team
    address = h._address()
    limits = guard._limits(address, None)
    wait = guard.limiter.reserve(limits)
    if wait:
        message = f"Too many failed sign-ins. Try again in {wait} seconds."
        raise _Refused(429, message, [("Retry-After", str(wait))])
    failed = True
    name = ""
    try:
        challenge = _take(h, "sign-in")
        passkey = verify_assertion(
            _store(h),
            challenge,
            body.get("credential"),
            _origin_ok(h, challenge.rp_id),
            guard.clock(),
        )
        name = passkey.name
        person = guard.people.get(name)
        if person is None or person.disabled:
            raise PasskeyError("This passkey's person cannot sign in.")
        made = guard.sign_in(person.generation, name, address, h.request.header("user-agent"))
        if made is None:
            raise PasskeyError("This passkey's person cannot sign in.")
        failed = False
    except PasskeyError as exc:
        guard._log(name or exc.name, "passkey-failed", address)
        raise
    finally:
        guard.limiter.settle([key for key, _ in limits], failed=failed)
    session, device = made
    next_value = body.get("next")
    target = edge.safe_next(next_value if isinstance(next_value, str) else "/")
    target = h._landing(name, person.generation, target)
    headers = [
        h._set_cookie("session", session, guard.session_seconds),
        h._set_cookie("device", device, edge.DEVICE_SECONDS, f"{edge.PREFIX}/", "Strict"),
        h._set_cookie(COOKIE, "", 0, f"{edge.PREFIX}/", "Strict"),
    ]
    body_out = json.dumps({"ok": True, "location": target}).encode()
    return edge.Response(200, body_out, "application/json", headers)


def _second_begin(h: Any, edge: Any, body: dict[str, Any]) -> Any:
    """A challenge for the person of the browser's pending sign-in (their password proved
    right), answered by their own passkeys only."""
    token = h._cookie("second")
    found = h.team.second.pending(token) if token else None
    if found is None or not any(f.key == SecondFactor.key for f in found[1]):
        raise _Refused(401, "Sign in with your password first.")
    options, challenge = begin_assertion(_store(h), _rp_id(h), h.team.clock(), name=found[0])
    return _hold(h, challenge, options, edge)


def second_step_proof(h: Any, name: str, form: dict[str, str]) -> bool:
    """Whether the form's `assertion` is a passkey of `name` answering the challenge of
    this browser's second step (taken: good once). Checked before the second step's
    transaction: a passkey's counter is noted in a transaction of its own."""
    try:
        challenge = _take(h, "sign-in")
        if challenge.name != name:
            raise PasskeyError("This passkey request was another person's.")
        answer = json.loads(form.get("assertion") or "null")
        verify_assertion(
            _store(h), challenge, answer, _origin_ok(h, challenge.rp_id), h.team.clock()
        )
    except (PasskeyError, ValueError, RecursionError):
        return False
    return True


class SecondFactor:
    """A passkey as the second step after a password (edge_second.py's factor), for a
    person who has TOTP (`alongside`) and a passkey: either proves them, so a passkey
    alone never asks for more than before. Its proof comes from `second_step_proof`,
    never from the form itself (`check` says no)."""

    key = "passkey"
    guessable = False  # a signature, not a code

    def __init__(self, alongside: Any) -> None:
        self.alongside = alongside

    def enrolled(self, db: sqlite3.Connection, name: str) -> bool:
        if not self.alongside.enrolled(db, name):
            return False
        try:
            row = db.execute("SELECT 1 FROM passkeys WHERE name = ? LIMIT 1", (name,)).fetchone()
        except sqlite3.OperationalError:  # no passkey table yet
            return False
        return row is not None

    def fields(self) -> str:
        return SECOND_BLOCK.format(script=SCRIPT)

    def check(self, db: sqlite3.Connection, name: str, form: dict[str, str], now: float) -> bool:
        return False


def _remove(h: Any, edge: Any) -> Any:
    """Remove one of the signed-in person's passkeys (a form of the passkeys page)."""
    form = h._form()
    if form is None:
        return h._json(400, "not a form")
    if h._origin() == "foreign" or not h._csrf_ok(form):
        return h._json(403, "This page was out of date: load it again.")
    person = h._signed_in()
    if person is None:
        return h._json(401, "sign in first")
    passkey_id = form.get("id", "")
    if not _PASSKEY_ID.fullmatch(passkey_id) or not _store(h).remove(person.name, passkey_id):
        return _page(h, edge, "No such passkey of yours.", 400)
    h.team._log(person.name, "passkey-removed", h._address())
    return edge.Response(303, headers=[("Location", PAGE_PATH)])


def _page(h: Any, edge: Any, message: str = "", status: int = 200) -> Any:
    """The signed-in person's passkeys: label, when added and last used, a button to
    remove each; and the form that adds one."""
    person = h._signed_in()
    if person is None:
        return edge.Response(303, headers=[("Location", edge.LOGIN_PATH)])
    escape = edge.html.escape
    csrf = h._csrf_token()
    rows = []
    for passkey in _store(h).of(person.name):
        used = _day(passkey.last_used) if passkey.last_used else "never"
        rows.append(
            f"<tr><td>{escape(passkey.label)}</td><td>added {_day(passkey.created)}</td>"
            f'<td>used {used}</td><td><form method="post" action="{REMOVE_PATH}">'
            f'<input type="hidden" name="csrf" value="{csrf}">'
            f'<input type="hidden" name="id" value="{escape(passkey.id, quote=True)}">'
            '<button type="submit">Remove</button></form></td></tr>'
        )
    intro = (
        "Sign in with a passkey instead of your password: your device unlocks it with "
        "your fingerprint, face or PIN."
    )
    try:
        _rp_id(h)
    except PasskeyError as exc:
        intro = str(exc)
    text = PAGE.format(
        style=edge.STYLE,
        name=escape(person.name),
        intro=escape(intro),
        csrf=csrf,
        rows=f"<table>{''.join(rows)}</table>" if rows else "<p>No passkey yet.</p>",
        max_label=MAX_LABEL,
        message=escape(message),
        script=SCRIPT,
    )
    return h._html(status, text, [("Content-Security-Policy", POLICY)])


def _day(seconds: int | None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(seconds or 0))
