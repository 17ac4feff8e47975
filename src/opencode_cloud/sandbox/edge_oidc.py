"""Single sign-on with OpenID Connect for the team's front door (docs/team.md).

The authorization code flow with PKCE (S256), a state and a nonce. `begin` keeps what a
sign-in started with (the digests of its state and of a cookie of the browser that
started it, its nonce, its code verifier, where to go after) in the People database;
`finish` takes that row away (a state is good once), asks the provider's token endpoint
for the ID token, and verifies it with Debian's authlib 1.2 against the provider's keys
(its JWKS, fetched again, at most every `JWKS_REFRESH` seconds, when a token names a key
it does not hold: the provider rotated its keys). The signature, issuer, audience (and
`azp` with several), expiry and nonce are checked; no JOSE is written here.

Who signs in: the person linked to the token's issuer and `sub` (never its email). The
first time, a person whose email the admin gave (`occ user add --email`) is linked, when
the provider says the email is verified; or else, with `create_people`, a new person
without a password is made (the starter makes their instance when the door first asks to
start it, edge.TeamGuard.start, or the admin with `occ team sso sync`). Whoever it is
must be allowed now: their verified email is in `allowed_emails`, its domain in
`allowed_domains`, or a group of theirs in `allowed_groups`. A disabled or removed person
is refused whatever the provider says.

The settings (issuer, client id and secret, what is allowed) are in the database too,
written by the admin tool (`oidc-set`); the client secret never reaches argv, the
environment or a log. The provider is reached over HTTPS only, except an `http://`
issuer on a loopback or private address when `allow_http` says so (a provider on the
same machine or network).

Only Python's standard library and Debian's `python3-authlib`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
import sqlite3
import threading
import time
import urllib.parse
from base64 import b64encode
from collections.abc import Callable
from typing import Any, Protocol

START_PATH = "/__occ/oidc/start"
CALLBACK_PATH = "/__occ/oidc/callback"
PENDING_SECONDS = 600  # a sign-in must come back from the provider within this
MAX_PENDING = 1000  # sign-ins under way at once; the oldest go first
HTTP_TIMEOUT = 5.0  # seconds for each request to the provider
MAX_RESPONSE = 256 * 1024  # bytes of a provider's answer (discovery, JWKS, tokens)
MAX_ID_TOKEN = 16 * 1024  # characters of an ID token
MAX_CODE = 2048  # characters of an authorization code
CACHE_SECONDS = 3600  # discovery and keys are fetched again after this
JWKS_REFRESH = 5.0  # at most this often when a token names a key not held
LEEWAY = 60  # seconds of clock difference allowed on exp, iat, nbf
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
NO_PASSWORD = "!sso"  # the hash of a person made by single sign-on: no password matches

_STATE = re.compile(r"[A-Za-z0-9_-]{43}")
_CODE = re.compile(rf"[\x21-\x7e]{{1,{MAX_CODE}}}")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,28}[a-z0-9])?")

SCHEMA = """
CREATE TABLE IF NOT EXISTS oidc_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    settings TEXT NOT NULL,
    client_secret TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS oidc_links (
    issuer TEXT NOT NULL,
    sub TEXT NOT NULL,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (issuer, sub)
);
CREATE TABLE IF NOT EXISTS oidc_pending (
    state TEXT PRIMARY KEY,
    browser TEXT NOT NULL,
    nonce TEXT NOT NULL,
    verifier TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    next TEXT NOT NULL,
    created INTEGER NOT NULL
);
"""


class Database(Protocol):
    """What this module needs of edge.People: its SQLite connection's statements, under
    its lock, and the people's records."""

    def _all(self, sql: str, *args: Any) -> list[Any]: ...

    def _run(self, sql: str, *args: Any) -> int: ...


class SsoError(Exception):
    """A sign-in that did not succeed: `message` for the page, `event` for the log."""

    def __init__(self, message: str, event: str = "sso-refused", name: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.event = event
        self.name = name


class SettingsError(ValueError):
    """Settings the admin tool sent that are refused (its message says which)."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- settings -----------------------------------------------------------------------------


def _text(value: Any, key: str, limit: int) -> str:
    if not isinstance(value, str) or not _PRINTABLE.fullmatch(value) or len(value) > limit:
        raise SettingsError(f"{key}: not printable text of up to {limit} characters")
    if not value:
        raise SettingsError(f"{key}: empty")
    return value


def _texts(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 1000:
        raise SettingsError(f"{key}: not a list of up to 1000 entries")
    return sorted({_text(v, key, 254).strip().lower() for v in value} - {""})


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{key}: not true or false")
    return value


def check_issuer(url: str, allow_http: bool) -> None:
    """An issuer (or an endpoint of its) this door may use: https, or http on a loopback
    or private address when `allow_http`; never credentials or a fragment in it."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        raise SettingsError(f"not a URL: {url[:200]}") from None
    if parts.username or parts.password or parts.fragment or not host:
        raise SettingsError(f"not an issuer's URL: {url[:200]}")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and allow_http:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None and (address.is_loopback or address.is_private):
            return
        raise SettingsError(f"http is allowed on a loopback or private address only: {url[:200]}")
    raise SettingsError(f"not https: {url[:200]}")


def clean_settings(request: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The settings of an `oidc-set` request, checked, and the client secret."""
    allow_http = _flag(request.get("allow_http", False), "allow_http")
    issuer = _text(request.get("issuer"), "issuer", 512)  # exactly as the tokens name it
    check_issuer(issuer, allow_http)
    settings = {
        "issuer": issuer,
        "client_id": _text(request.get("client_id"), "client_id", 256),
        "provider_name": _text(request.get("provider_name") or "single sign-on", "name", 60),
        "allowed_emails": _texts(request.get("allowed_emails"), "allowed_emails"),
        "allowed_domains": _texts(request.get("allowed_domains"), "allowed_domains"),
        "allowed_groups": _texts(request.get("allowed_groups"), "allowed_groups"),
        "create_people": _flag(request.get("create_people", False), "create_people"),
        "sso_only": _flag(request.get("sso_only", False), "sso_only"),
        "allow_http": allow_http,
    }
    if not (
        settings["allowed_emails"] or settings["allowed_domains"] or settings["allowed_groups"]
    ):
        raise SettingsError("allow someone: an email, a domain or a group")
    secret = _text(request.get("client_secret"), "client_secret", 1024)
    return settings, secret


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def ensure_tables(db: Database) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db._run(statement)


def read_settings(db: Database) -> tuple[dict[str, Any], str] | None:
    rows = db._all("SELECT settings, client_secret FROM oidc_settings WHERE id = 1")
    if not rows:
        return None
    settings = _json_or_none(rows[0][0])
    return (settings, rows[0][1]) if isinstance(settings, dict) else None


Log = Callable[[str, str, str], None]  # (name, event, address): a line of the sign-in log


def apply_admin(db: Database, request: dict[str, Any], log: Log) -> dict[str, Any]:
    """The admin tool's requests of single sign-on (docs/team.md); SettingsError for a
    bad one."""
    ensure_tables(db)
    op = request.get("op")
    if op == "oidc-set":
        settings, secret = clean_settings(request)
        db._run(
            "INSERT OR REPLACE INTO oidc_settings VALUES (1, ?, ?)", json.dumps(settings), secret
        )
        log("", "sso-set", "admin")
        return {"ok": True, "settings": settings}
    if op == "oidc-show":
        found = read_settings(db)
        links = db._all("SELECT name, issuer, created FROM oidc_links ORDER BY name")
        return {
            "ok": True,
            "settings": found[0] if found else None,
            "links": [{"name": n, "issuer": i, "created": c} for n, i, c in links],
        }
    if op == "oidc-off":
        db._run("DELETE FROM oidc_settings")
        db._run("DELETE FROM oidc_pending")
        log("", "sso-off", "admin")
        return {"ok": True}
    if op == "oidc-instance":  # the tool made the instance of a person made by sign-on
        name = request.get("name")
        internal, upstream = request.get("internal_password"), request.get("upstream")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise SettingsError("name: not a name")
        if not isinstance(internal, str) or not re.fullmatch(r"[\x21-\x7e]{1,256}", internal):
            raise SettingsError("internal_password: 1 to 256 printable ASCII characters")
        if not isinstance(upstream, str) or not re.fullmatch(
            r"[a-z0-9.-]{1,200}:[0-9]{1,5}", upstream
        ):
            raise SettingsError("upstream: not host:port")
        changed = db._run(
            "UPDATE people SET internal_password = ?, upstream = ? WHERE name = ?",
            internal,
            upstream,
            name,
        )
        if not changed:
            raise SettingsError(f"no such person: {name}")
        log(name, "sso-instance", "admin")
        return {"ok": True, "name": name}
    raise SettingsError(f"unknown op: {op!r}"[:200])


def forget(db: Database, name: str) -> None:
    """A person removed: their link goes, so that a new person of the same name is not
    theirs at the provider."""
    ensure_tables(db)
    db._run("DELETE FROM oidc_links WHERE name = ?", name)


# -- the provider -------------------------------------------------------------------------


class Provider:
    """The issuer's discovery document and keys, fetched when needed and kept for
    `CACHE_SECONDS`; its token endpoint."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        # (issuer, allow_http) -> (when, document): a change of either fetches it anew
        self._discovery: dict[tuple[str, bool], tuple[float, dict[str, Any]]] = {}
        self._keys: dict[str, tuple[float, dict[str, Any]]] = {}  # jwks_uri -> (when, jwks)

    def _get(self, url: str, allow_http: bool) -> dict[str, Any]:
        import urllib.request

        check_issuer(url, allow_http)
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        return _exchange(request)

    def discovery(self, issuer: str, allow_http: bool) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            known = self._discovery.get((issuer, allow_http))
        if known and now - known[0] < CACHE_SECONDS:
            return known[1]
        document = self._get(issuer.rstrip("/") + "/.well-known/openid-configuration", allow_http)
        if document.get("issuer") != issuer:
            raise SsoError("The provider's discovery names another issuer.", "sso-provider")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(key)
            if not isinstance(value, str):
                raise SsoError(f"The provider's discovery lacks {key}.", "sso-provider")
            try:
                check_issuer(value, allow_http)
            except SettingsError:
                raise SsoError(f"The provider's {key} is not allowed.", "sso-provider") from None
        with self._lock:
            self._discovery[issuer, allow_http] = (now, document)
        return document

    def keys(self, jwks_uri: str, allow_http: bool, *, refresh: bool = False) -> dict[str, Any]:
        """The provider's key set; fetched anew when `refresh` (a token names a key not
        held) unless it was fetched less than `JWKS_REFRESH` seconds ago."""
        now = self.clock()
        with self._lock:
            known = self._keys.get(jwks_uri)
        age = now - known[0] if known else None
        if (
            known
            and age is not None
            and (age < JWKS_REFRESH or (not refresh and age < CACHE_SECONDS))
        ):
            return known[1]
        jwks = self._get(jwks_uri, allow_http)
        if not isinstance(jwks.get("keys"), list):
            raise SsoError("The provider's key set holds no keys.", "sso-provider")
        with self._lock:
            self._keys[jwks_uri] = (now, jwks)
        return jwks

    def token(self, endpoint: str, form: dict[str, str], client: tuple[str, str]) -> dict[str, Any]:
        """The token endpoint's answer to the code (client_secret_basic)."""
        import urllib.request

        quoted = [urllib.parse.quote(part, safe="") for part in client]
        basic = b64encode(":".join(quoted).encode()).decode()
        request = urllib.request.Request(
            endpoint,
            data=urllib.parse.urlencode(form).encode(),
            headers={
                "Accept": "application/json",
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            method="POST",
        )
        return _exchange(request)


def _exchange(request: urllib.request.Request) -> dict[str, Any]:
    """One request to the provider; its JSON object. No proxy of the environment, no
    redirect followed, at most `MAX_RESPONSE` bytes, `HTTP_TIMEOUT` seconds each.
    (urllib.request, and ssl with it, is loaded at the first sign-in: the login service of
    a single-user container never needs it.)"""
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())
    try:
        with opener.open(request, timeout=HTTP_TIMEOUT) as answer:
            body = answer.read(MAX_RESPONSE + 1)
    except urllib.error.HTTPError as exc:
        body = exc.read(MAX_RESPONSE + 1)
        detail = (
            _json_or_none(body.decode("utf-8", "replace")) if len(body) <= MAX_RESPONSE else None
        )
        error = detail.get("error") if isinstance(detail, dict) else None
        said = f" ({error})" if isinstance(error, str) and _PRINTABLE.fullmatch(error[:60]) else ""
        raise SsoError(f"The provider answered {exc.code}{said[:70]}.", "sso-provider") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"edge: the provider did not answer: {exc!r}", flush=True)
        raise SsoError("The provider did not answer.", "sso-provider") from None
    if len(body) > MAX_RESPONSE:
        raise SsoError("The provider's answer is too large.", "sso-provider")
    value = _json_or_none(body.decode("utf-8", "replace"))
    if not isinstance(value, dict):
        raise SsoError("The provider's answer is not a JSON object.", "sso-provider")
    return value


# -- signing in ---------------------------------------------------------------------------


def verify_id_token(
    token: str,
    provider: Provider,
    document: dict[str, Any],
    settings: dict[str, Any],
    nonce: str,
    now: float,
) -> dict[str, Any]:
    """The claims of a valid ID token (signature by a key of the provider, issuer,
    audience, azp, expiry, nonce); SsoError otherwise."""
    from authlib.jose import JsonWebKey, JsonWebToken  # type: ignore[import-untyped]
    from authlib.jose.errors import JoseError  # type: ignore[import-untyped]

    jwks_uri, allow_http = document["jwks_uri"], bool(settings.get("allow_http"))

    def load_key(header: dict[str, Any], _payload: Any) -> Any:
        kid = header.get("kid")
        for refresh in (False, True):
            keys = provider.keys(jwks_uri, allow_http, refresh=refresh)
            candidates = [
                k
                for k in keys["keys"]
                if isinstance(k, dict) and (kid is None or k.get("kid") == kid)
            ]
            if len(candidates) == 1:
                return JsonWebKey.import_key(candidates[0])
        raise SsoError(
            "The ID token is signed with a key the provider does not have.", "sso-bad-token"
        )

    client_id = settings["client_id"]
    options = {
        "iss": {"essential": True, "value": settings["issuer"]},
        "aud": {"essential": True, "value": client_id},
        "exp": {"essential": True},
        "iat": {"essential": True},
        "sub": {"essential": True},
        "nonce": {"essential": True, "value": nonce},
    }
    try:
        claims = JsonWebToken(list(ALGORITHMS)).decode(token, load_key, claims_options=options)
        claims.validate(now=int(now), leeway=LEEWAY)
    except SsoError:
        raise
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        what = getattr(exc, "error", None) or type(exc).__name__
        raise SsoError(f"The ID token was refused ({what}).", "sso-bad-token") from None
    audience = claims.get("aud")
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:
        raise SsoError("The ID token was refused (azp).", "sso-bad-token")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= 255:
        raise SsoError("The ID token was refused (sub).", "sso-bad-token")
    return dict(claims)


def allowed(settings: dict[str, Any], claims: dict[str, Any]) -> bool:
    """Whether the provider's word about this person is one the settings allow."""
    email = claims.get("email")
    if isinstance(email, str) and claims.get("email_verified") is True:
        email = email.strip().lower()
        if email in settings["allowed_emails"]:
            return True
        if email.rpartition("@")[2] in settings["allowed_domains"]:
            return True
    groups = claims.get("groups")
    if isinstance(groups, list):
        mine = {g.strip().lower() for g in groups if isinstance(g, str)}
        if mine & set(settings["allowed_groups"]):
            return True
    return False


def _new_name(db: Database, claims: dict[str, Any]) -> str:
    """A free person's name made of the preferred user name or the email's local part."""
    wanted = claims.get("preferred_username") or str(claims.get("email") or "").partition("@")[0]
    base = re.sub(r"[^a-z0-9-]+", "-", str(wanted).lower()).strip("-")[:26].strip("-")
    if not base or not base[0].isalpha():
        base = f"u-{base}".strip("-")[:26].strip("-") or "u"
    for number in range(1, 1000):
        name = base if number == 1 else f"{base}-{number}"
        if not db._all("SELECT 1 FROM people WHERE name = ?", name):
            return name
    raise SsoError("No name is free for this person.")


class Sso:
    """Single sign-on of one door: its settings in the database, the provider's documents
    in memory."""

    def __init__(
        self,
        db: Database,
        log: Log,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.log = log
        self.clock = clock
        self.provider = Provider()
        ensure_tables(db)

    def settings(self) -> dict[str, Any] | None:
        found = read_settings(self.db)
        return found[0] if found else None

    def begin(self, redirect_uri: str, target: str, browser: str) -> str:
        """A sign-in under way for the browser holding the cookie `browser`: where to
        send it at the provider."""
        found = read_settings(self.db)
        if found is None:
            raise SsoError("Single sign-on is not set up.", "sso-off")
        settings = found[0]
        document = self.provider.discovery(settings["issuer"], bool(settings["allow_http"]))
        from authlib.oauth2.rfc7636 import (  # type: ignore[import-untyped]
            create_s256_code_challenge,
        )

        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        now = int(self.clock())
        self.db._run("DELETE FROM oidc_pending WHERE created < ?", now - PENDING_SECONDS)
        self.db._run(
            "DELETE FROM oidc_pending WHERE state NOT IN "
            "(SELECT state FROM oidc_pending ORDER BY created DESC LIMIT ?)",
            MAX_PENDING - 1,
        )
        self.db._run(
            "INSERT INTO oidc_pending VALUES (?, ?, ?, ?, ?, ?, ?)",
            _digest(state),
            _digest(browser),
            nonce,
            verifier,
            redirect_uri,
            target,
            now,
        )
        scope = "openid email profile" + (" groups" if settings["allowed_groups"] else "")
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": settings["client_id"],
                "redirect_uri": redirect_uri,
                "scope": scope,
                "state": state,
                "nonce": nonce,
                "code_challenge": create_s256_code_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        endpoint = document["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    def _take_pending(self, state: str, browser: str | None) -> tuple[str, str, str, str]:
        """The sign-in `state` started (nonce, verifier, redirect URI, next), taken away:
        a state is good once, for the browser that started it, within `PENDING_SECONDS`."""
        digest = _digest(state)
        rows = self.db._all(
            "SELECT browser, nonce, verifier, redirect_uri, next, created FROM oidc_pending "
            "WHERE state = ?",
            digest,
        )
        if not rows or not self.db._run("DELETE FROM oidc_pending WHERE state = ?", digest):
            raise SsoError("This sign-in is unknown or was used already.", "sso-bad-state")
        owner, nonce, verifier, redirect_uri, target, created = rows[0]
        if browser is None or not secrets.compare_digest(owner, _digest(browser)):
            raise SsoError("This sign-in was started in another browser.", "sso-bad-state")
        if self.clock() - created > PENDING_SECONDS:
            raise SsoError("This sign-in took too long. Please sign in again.", "sso-bad-state")
        return nonce, verifier, redirect_uri, target

    def finish(self, query: str, browser: str | None, address: str) -> tuple[str, str]:
        """The provider sent the browser back with `query`: the name of the person who
        signed in, and where they go next. SsoError for anything else."""
        try:
            fields = urllib.parse.parse_qs(
                query, keep_blank_values=True, strict_parsing=True, max_num_fields=10
            )
        except ValueError:
            raise SsoError("The provider's answer is malformed.", "sso-bad-callback") from None
        if any(len(v) != 1 for v in fields.values()):
            raise SsoError("The provider's answer is malformed.", "sso-bad-callback")
        got = {k: v[0] for k, v in fields.items()}
        state = got.get("state", "")
        if not _STATE.fullmatch(state):
            raise SsoError("The provider's answer names no sign-in.", "sso-bad-callback")
        found = read_settings(self.db)
        nonce, verifier, redirect_uri, target = self._take_pending(state, browser)
        if found is None:
            raise SsoError("Single sign-on is not set up.", "sso-off")
        settings, secret = found
        if "iss" in got and got["iss"] != settings["issuer"]:  # RFC 9207: another issuer
            raise SsoError("The answer is from another provider.", "sso-bad-callback")
        if "error" in got:
            error = got["error"] if re.fullmatch(r"[a-z_]{1,60}", got["error"]) else "error"
            raise SsoError(f"The provider did not sign you in ({error}).")
        code = got.get("code", "")
        if not _CODE.fullmatch(code):
            raise SsoError("The provider's answer is malformed.", "sso-bad-callback")
        allow_http = bool(settings["allow_http"])
        document = self.provider.discovery(settings["issuer"], allow_http)
        answer = self.provider.token(
            document["token_endpoint"],
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            },
            (settings["client_id"], secret),
        )
        token = answer.get("id_token")
        if not isinstance(token, str) or not token:
            raise SsoError("The provider sent no ID token.", "sso-bad-token")
        if len(token) > MAX_ID_TOKEN:
            raise SsoError("The provider's ID token is too large.", "sso-bad-token")
        claims = verify_id_token(token, self.provider, document, settings, nonce, self.clock())
        try:
            return self._person(settings, claims, address), target
        except sqlite3.IntegrityError:  # the same first sign-in twice at once: one made it
            raise SsoError("Please sign in again.", "sso-refused") from None

    def _person(self, settings: dict[str, Any], claims: dict[str, Any], address: str) -> str:
        """The person these claims are, linked or linked now, or made; SsoError when they
        are not allowed, disabled or removed."""
        issuer, sub = settings["issuer"], claims["sub"]
        rows = self.db._all("SELECT name FROM oidc_links WHERE issuer = ? AND sub = ?", issuer, sub)
        linked = rows[0][0] if rows else None
        if not allowed(settings, claims):
            raise SsoError("You are not allowed to sign in here.", name=linked or "")
        if linked is not None:
            person = self.db._all("SELECT disabled FROM people WHERE name = ?", linked)
            if not person or person[0][0]:
                raise SsoError("You are not allowed to sign in here.", name=linked)
            return str(linked)
        email = claims.get("email") if claims.get("email_verified") is True else None
        if isinstance(email, str):
            match = self.db._all(
                "SELECT name, disabled FROM people WHERE lower(email) = ? AND name NOT IN "
                "(SELECT name FROM oidc_links WHERE issuer = ?)",
                email.strip().lower(),
                issuer,
            )
            if len(match) == 1:
                name, disabled = match[0]
                if disabled:
                    raise SsoError("You are not allowed to sign in here.", name=name)
                self._link(issuer, sub, name)
                self.log(name, "sso-linked", address)
                return str(name)
        if not settings["create_people"]:
            raise SsoError("You have no account here. Ask the administrator.")
        name = _new_name(self.db, claims)
        now = int(self.clock())
        self.db._run(
            "INSERT INTO people (name, hash, generation, internal_password, upstream, admin, "
            "email, disabled, created) VALUES (?, ?, ?, '', '', 0, ?, 0, ?)",
            name,
            NO_PASSWORD,
            secrets.token_hex(16),
            email if isinstance(email, str) and len(email) <= 254 else None,
            now,
        )
        self._link(issuer, sub, name)
        self.log(name, "sso-created", address)
        return name

    def _link(self, issuer: str, sub: str, name: str) -> None:
        self.db._run(
            "INSERT INTO oidc_links VALUES (?, ?, ?, ?)", issuer, sub, name, int(self.clock())
        )
