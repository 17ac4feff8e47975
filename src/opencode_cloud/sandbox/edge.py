"""The edge's authentication service: login page, session cookies, HTTP Basic, guessing limits.

Runs in the sandbox beside Caddy (which terminates TLS and proxies) and opencode (which
listens on 127.0.0.1 only). Caddy asks `/__occ/verify` about every request
(`forward_auth`): an answer of 200 lets the request through to opencode, any other
answer (a redirect to the login page, 401, 429) goes back to the client as it is. The
pages under `/__occ/` (login, logout) are served here directly.

Where it listens: `OCC_EDGE_LISTEN`, `unix:/absolute/path` for a unix socket (what the
container uses), or `host:port`. The agent shares the container's network: on a loopback
port it could reach this service directly, name any X-Forwarded-For (forging the
addresses in the log, spending the shared allowance of failures to lock others out) and
ask about requests Caddy never saw. The socket is a 0600 file of the edge's user in a
directory of that user only, so Caddy (the same user) is the only client. A stale socket
there is replaced at start; any other file, or a symbolic link, is refused.

Credentials. What it knows of the password is its bcrypt hash, in a file the tool writes
into the container (`occ start`, `occ auth rotate`); the plaintext stays on the host. A
new hash (a rotation) is noticed on the next request: every session made under the old
one is void from then on, and so is an attempt checked against the old one that had not
yet got its session (a session is made, under one lock, only for the hash its password
was checked against). Sessions are random tokens, kept as SHA-256 digests in a 0600 file
of the state directory, so they survive restarts until they expire, the user signs out,
or the password changes. Basic credentials proven right are remembered in memory (as
digests keyed with a secret of this process, and with the hash they were proven
against), so API clients do not pay for bcrypt on every request.

Guessing limits, with device cookies (OWASP's "Slow down online guessing attacks with
device cookies"). A browser that signs in also gets a device cookie: a random name signed
with a key of the state directory. It proves only that this browser signed in here
before, and lets nobody in: it outlives a rotation (so that the owner, who rotates
because something guesses, can still sign in while the guesser keeps the shared buckets
full) and is void when that key is lost. Each attempt (form or Basic) is counted in
buckets, failures within `WINDOW` seconds:
- with a valid device cookie, in that device's own bucket only (`MAX_FAILURES`);
- without one, in the bucket of its address (the last X-Forwarded-For entry, set by
  Caddy; without one, the TCP peer, or `UNIX_PEER` on a unix socket; `MAX_FAILURES`)
  and in one bucket shared by every such attempt
  (`MAX_UNTRUSTED_FAILURES`), so many addresses do not buy many guesses.
A full bucket answers 429 until its oldest failure leaves the window, without the
password being looked at: right and wrong get the same answer. Behind Docker's port proxy
every client has the same address, so a guesser fills that bucket for everyone; browsers
that signed in before keep their own buckets and can still sign in. An attempt counts as
a failure from before its check until it proves right, so concurrent guesses cannot slip
past a count that has not caught up with them; identical attempts at the same time share
one check. At most `BCRYPT_WORKERS` checks run at once and `BCRYPT_QUEUE` more wait; an
attempt finding no place gets 503 at once and counts as a failure, so that the memory of
proven credentials answers nothing for free.

Forms. Signing in and out are POSTs that must come from this site: an `Origin` (or
`Referer`, or `Sec-Fetch-Site`) naming another one gets 403. The login form also carries
a token that must equal the one in a cookie sent with the page (double submit); so does
the sign-out button, where the token stands in for a missing Origin and Referer. `GET
/__occ/logout` shows that button. Cookies, one set per port (instances):
`occ_session_PORT` (Path=/, SameSite=Lax), `occ_device_PORT` and `occ_csrf_PORT`
(Path=/__occ/, SameSite=Strict), all HttpOnly.

Changes and websockets. SameSite=Lax keeps the session cookie from requests of other
sites, not from those of the same site (another port of this host, a sibling name), and
opencode takes bodiless `text/plain` POSTs and opens its terminal's websocket whatever
the Origin. So a request let through by the session cookie whose method is not GET, HEAD
or OPTIONS, or that is an upgrade (Upgrade, Connection: upgrade, Sec-WebSocket-Key,
Sec-Fetch-Mode: websocket), gets 403 when the browser says it comes from elsewhere:
`Sec-Fetch-Site` same-site or cross-site, or else an `Origin` (or, without one, a
`Referer`) that is not this host and port (and scheme, over HTTPS; over plain HTTP a TLS
proxy of the user's own may stand in front). With none of those headers it passes: old
browsers and scripts send none, and every current browser sends Origin on such requests.
Basic credentials are not held to this: they are a script's, and a current browser never
gets the challenge that would make it remember them (`_challenge`).

Connections. Caddy keeps its connections to this service open and sends request after
request on them, whoever they come from, so a request must end exactly where Caddy thinks
it does:
- every request's body is read whole (`Content-Length`, at most `MAX_BODY` bytes) before
  it is answered, whatever its method and path; `Transfer-Encoding`, a `Content-Length`
  that is not one plain number, folded or malformed header lines and versions other than
  HTTP/1.0 and 1.1 are refused (400, 413, 505), and the connection closed, as after any
  answer given before the body was read;
- deadlines: `IDLE_TIMEOUT` seconds between requests, `HEADER_TIMEOUT` for a request's
  head and `BODY_TIMEOUT` for its body, however slowly the bytes trickle in;
- at most `MAX_CONNECTIONS` connections (a thread each): a new one beyond that closes the
  one that has been waiting longest for its request, or gets 503 when none is waiting.

Team mode (docs/team.md), when `OCC_EDGE_TEAM_DB` names a SQLite database (WAL, 0600,
made when missing): several people, each signing in with their own name (the form's
`name`, Basic's user name) and password, each with an opencode of their own. The
database holds the people (bcrypt hash, a random generation that a new hash or disabling
replaces, the internal password and address of their instance), their sessions (digests,
each of one person and generation) and a sign-in log. Every rule above holds per person:
a session or a proof of Basic credentials lets through only that person, while they are
enabled and their password is of that generation, so `passwd`, `disable` and `remove`
end them on the next request. A name that is nobody's, or a disabled person's, is
checked against a dummy hash of the same cost and counted like any wrong password; no
bucket is kept per name (a guesser could fill it to lock that person out). A device
cookie is made for the person who signed in with it and gives a bucket of its own to
their attempts only: a member of the team cannot make device cookies by the dozen to
guess another's password outside the shared buckets. verify's 200 names the person and
their instance in `X-Occ-Person`, `X-Occ-Upstream` and `X-Occ-Upstream-Auth` (Caddy
deletes what the client sent under those names), and notes them seen (`last_seen`, at
most every `LAST_SEEN_EVERY` seconds). A person whose instance does not answer its
health check is sent to `/__occ/starting` after signing in, a page that polls
`/__occ/ready`, which asks the starter (`OCC_EDGE_STARTER`, a unix socket, one JSON line
each way) to start it. With `OCC_EDGE_IDLE_STOP` > 0, instances seen in use whose person
has not been seen for that many seconds are asked to stop (a long-lived request, such as
an event stream, counts when it began only). `edge.py admin FILE` applies one request
of the admin tool to the database (`apply_admin`). A person with a second factor (TOTP,
`edge_totp.py`) gets no session from their password alone but a pending sign-in and the
page `/__occ/second` (`edge_second.py`); their Basic credentials are refused. Passkeys
(`edge_passkeys.py`) sign people in without a password. Single sign-on with OpenID Connect
(`/__occ/oidc/start` and `/__occ/oidc/callback`, a button on the sign-in page) is
edge_oidc.py's; a refused one counts as a failed sign-in from its address.

Single-user records (edge_single.py): each session also keeps its address, browser and
last use; `sessions.json` is read again whenever another process replaced it, so a
session revoked by `edge.py single-admin FILE` (the host's `occ auth sessions --revoke`,
through `docker exec`) is refused from its next request on. The sign-in log and a second
factor (TOTP and recovery codes, the same second step as team mode's) are in `single.db`
of the state directory. With a second factor on, Basic credentials are refused but for
opencode's health check (`HEALTH_PATH`), which the tool asks.

The numbers can be set with `OCC_EDGE_` variables (below). Only Python's standard library
and Debian's `python3-bcrypt`, `python3-pyotp`, `python3-fido2` and `python3-authlib`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import html
import json
import math
import os
import re
import secrets
import socket
import socketserver
import sqlite3
import stat
import sys
import threading
import time
import unicodedata
from base64 import b64decode, b64encode
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

# The edge's own modules (edge_*.py) sit beside it, in a directory only root can write;
# `python3 -I` leaves that directory off the path. Appended, so no file there can stand in
# for a module of the standard library.
sys.path.append(str(Path(__file__).resolve().parent))

import edge_oidc  # type: ignore[import-not-found]
import edge_second  # type: ignore[import-not-found]  # the second step of a sign-in
import edge_single  # type: ignore[import-not-found]  # single-user mode's records
import edge_totp  # type: ignore[import-not-found]


def _passkeys() -> Any:
    """Team mode's passkeys (edge_passkeys.py, beside this file), loaded on first use."""
    import edge_passkeys  # type: ignore[import-not-found]  # found on the path above

    return edge_passkeys


MAX_FAILURES = int(os.environ.get("OCC_EDGE_MAX_FAILURES", "10"))
MAX_UNTRUSTED_FAILURES = int(os.environ.get("OCC_EDGE_MAX_UNTRUSTED_FAILURES", "100"))
WINDOW = float(os.environ.get("OCC_EDGE_WINDOW", "60"))
SESSION_SECONDS = int(os.environ.get("OCC_EDGE_SESSION_SECONDS", str(7 * 24 * 3600)))
DEVICE_SECONDS = 400 * 24 * 3600  # the longest browsers keep a cookie
CSRF_SECONDS = 24 * 3600
# Between requests. Best longer than the proxy keeps its idle connections (Caddy's
# `keepalive`): a request it sends just as the edge closes one would be lost.
IDLE_TIMEOUT = float(os.environ.get("OCC_EDGE_IDLE_TIMEOUT", "15"))
HEADER_TIMEOUT = float(os.environ.get("OCC_EDGE_HEADER_TIMEOUT", "5"))
BODY_TIMEOUT = float(os.environ.get("OCC_EDGE_BODY_TIMEOUT", "5"))
MAX_CONNECTIONS = int(os.environ.get("OCC_EDGE_MAX_CONNECTIONS", "128"))
BCRYPT_WORKERS = 2  # bcrypt checks at once (each ~60 ms of a core)
BCRYPT_QUEUE = 8  # checks waiting for one of them
LINGER_SECONDS = 1.0  # reading what a refused request still sends, before closing
PREFIX = "/__occ"
LOGIN_PATH = f"{PREFIX}/login"
LOGOUT_PATH = f"{PREFIX}/logout"
VERIFY_PATH = f"{PREFIX}/verify"
STARTING_PATH = f"{PREFIX}/starting"  # team mode's
READY_PATH = f"{PREFIX}/ready"  # team mode's
SECOND_PATH = edge_second.SECOND_PATH  # the second step, for those with a second factor
SECOND_EXPIRED = "This sign-in has expired. Please sign in again."
SECOND_BLOCKED = "Too many wrong codes: use a recovery code, or ask your administrator."
MAX_BODY = 16 * 1024
MAX_HEAD = 64 * 1024  # request line and headers (browsers' cookies add up)
MAX_HEADERS = 200
MAX_SESSIONS = 1000
MAX_BUCKETS = 10000
# The client's address when the edge listens on a unix socket and the request names none
# in X-Forwarded-For (Caddy always does): such a connection has no address of its own.
UNIX_PEER = "local"
_LOOPBACK_HOST = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$", re.IGNORECASE)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REQUEST_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (/[\x21-\x7e]*) (HTTP/\d\.\d)")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a header value may hold tabs, no other
_RANDOM = re.compile(r"[A-Za-z0-9_-]{16,64}")  # what secrets.token_urlsafe makes
# Headers that say one thing: two of them mean two parties disagree about the request.
_SINGLE_HEADERS = frozenset(
    {
        "authorization",
        "content-length",
        "content-type",
        "host",
        "origin",
        "referer",
        "sec-fetch-mode",
        "sec-fetch-site",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-method",
        "x-forwarded-proto",
        "x-forwarded-uri",
    }
)
# On the edge's own pages (and every other answer of it): no framing by other sites, no
# guessing of content types, no full URLs in Referer headers to elsewhere.
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'self'",
    ),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- state files


_read_small_file: Callable[[Path, int], bytes | None] = edge_single.read_small_file
_write_private_file: Callable[[Path, bytes], None] = edge_single.write_private_file
SINGLE_USER: str = edge_single.OWNER  # the single user's name in its records


# --------------------------------------------------------------------------- limits


class _Bucket:
    __slots__ = ("failures", "pending")

    def __init__(self) -> None:
        self.failures: deque[float] = deque()  # times of failures, oldest first
        self.pending = 0  # attempts being checked: failures until they prove right


class Limiter:
    """Failed attempts per bucket within a sliding window.

    An attempt takes its place in its buckets before its password is checked and counts
    as a failure until it proves right: concurrent guesses cannot all pass a limit that
    has not yet heard of the others.
    """

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def _load(self, key: str, now: float) -> tuple[_Bucket | None, int]:
        """The bucket of `key` without its failures past the window, and its count."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return None, 0
        while bucket.failures and bucket.failures[0] <= now - self.window:
            bucket.failures.popleft()
        if not bucket.failures and not bucket.pending:
            del self._buckets[key]
            return None, 0
        return bucket, len(bucket.failures) + bucket.pending

    def _wait(self, limits: Sequence[tuple[str, int]], now: float) -> int:
        longest = 0
        for key, limit in limits:
            bucket, count = self._load(key, now)
            if bucket is None or count < limit:
                continue
            # The count falls below the limit when its (count - limit + 1)th oldest
            # failure leaves the window; attempts still being checked end sooner.
            excess = count - limit
            if excess < len(bucket.failures):
                wait = math.ceil(bucket.failures[excess] + self.window - now)
            else:
                wait = 1
            longest = max(longest, wait, 1)
        return longest

    def wait(self, limits: Sequence[tuple[str, int]]) -> int:
        """Seconds until every bucket of `limits` admits an attempt; 0 when they do now."""
        with self._lock:
            return self._wait(limits, self.clock())

    def reserve(self, limits: Sequence[tuple[str, int]]) -> int:
        """Count an attempt in every bucket of `limits`, if they all admit it (0); else
        the seconds to wait, and nothing is counted."""
        with self._lock:
            now = self.clock()
            wait = self._wait(limits, now)
            if wait:
                return wait
            if len(self._buckets) > MAX_BUCKETS:
                for key in list(self._buckets):
                    self._load(key, now)
            for key, _ in limits:
                self._buckets.setdefault(key, _Bucket()).pending += 1
            return 0

    def settle(self, keys: Sequence[str], failed: bool) -> None:
        """End an attempt reserved in the buckets `keys`: a failure stays counted."""
        with self._lock:
            now = self.clock()
            for key in keys:
                bucket = self._buckets.setdefault(key, _Bucket())
                bucket.pending = max(0, bucket.pending - 1)
                if failed:
                    bucket.failures.append(now)
                self._load(key, now)


# --------------------------------------------------------------------------- the guard


class _Check:
    """A bcrypt check under way, and its outcome once `done`."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.outcome = "busy"


class Guard:
    """What the edge decides, without HTTP: credentials, sessions, devices, failure counts."""

    def __init__(
        self,
        hash_file: Path,
        username: str,
        state_dir: Path | None = None,
        *,
        max_failures: int = MAX_FAILURES,
        max_untrusted_failures: int = MAX_UNTRUSTED_FAILURES,
        window: float = WINDOW,
        session_seconds: int = SESSION_SECONDS,
        bcrypt_workers: int = BCRYPT_WORKERS,
        bcrypt_queue: int = BCRYPT_QUEUE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hash_file = hash_file
        self.username = username
        self.state_dir = state_dir
        self.max_failures = max_failures
        self.max_untrusted_failures = max_untrusted_failures
        self.window = window
        self.session_seconds = session_seconds
        self.clock = clock
        self.limiter = Limiter(window, clock)
        self._lock = threading.Lock()
        self._hash = b""
        self.generation = ""  # digest of the current hash: sessions and devices belong to one
        # Credentials proven right, as digests keyed with a random secret of this process
        # (never the passwords themselves).
        self._proof_key = secrets.token_bytes(32)
        self._proven: set[bytes] = set()
        self._checks: dict[bytes, _Check] = {}  # checks under way, by proof
        self._places = threading.BoundedSemaphore(bcrypt_workers + bcrypt_queue)
        self._workers = threading.BoundedSemaphore(bcrypt_workers)
        self._device_key = self._load_device_key()
        self._sessions = edge_single.Sessions(self._sessions_dir())
        self._session_seen: dict[str, float] = {}  # digest -> when its seen was last written
        # The sign-in log and the second factor (edge_single.py): in single.db of the
        # state directory; none without one.
        self.records: People | None = self._open_records()
        self.second: Any = self._second_step()

    # -- the hash ---------------------------------------------------------------------

    def _current_hash(self) -> bytes:
        """The hash file's content, read at every check (60 bytes): a rotation applies on
        the very next request. Called with the lock held."""
        try:
            content = self.hash_file.read_bytes().strip()
        except OSError:
            content = b""
        if content != self._hash:
            self._hash = content
            self.generation = hashlib.sha256(content).hexdigest()[:32] if content else ""
            self._proven.clear()
        return self._hash

    def _credential(self, username: str) -> tuple[bytes, str]:
        """The hash `username`'s password is checked against and its generation. Called
        with the lock held."""
        return self._current_hash(), self.generation

    def _generation_now(self, username: str) -> str:
        """The generation of `username`'s password now (a check may outlast it). Called
        with the lock held."""
        self._current_hash()
        return self.generation

    def _checked(self, address: str, username: str, outcome: str) -> None:
        """Told the outcome of each check that ran (not of attempts that shared one)."""
        if outcome == "wrong":  # bounded by the guessing limits, as every check is
            known = hmac.compare_digest(username.encode(), self.username.encode())
            self._log(edge_single.OWNER if known else "", "failed", address)

    def _log(self, name: str, event: str, address: str) -> None:
        """One line of the sign-in log (`name`: the single user's, or "" for a name that
        is not theirs)."""
        if self.records is None:
            return
        try:
            self.records.log(self.clock(), name, event, address)
        except sqlite3.Error as exc:  # the log is not worth a refused sign-in
            print(f"edge: cannot log {event}: {exc!r}", file=sys.stderr, flush=True)

    def _open_records(self) -> People | None:
        if self.state_dir is None:
            return None
        try:
            return People(self.state_dir / edge_single.DB_FILE)
        except (OSError, sqlite3.Error) as exc:  # no log, and no second factor to ask
            print(f"edge: cannot open the records: {exc!r}", file=sys.stderr, flush=True)
            return None

    def _second_step(self) -> Any:
        """The second step of a sign-in (edge_second.py), in the records; None without."""
        if self.records is None:
            return None
        return edge_second.SecondStep(
            self.records._transaction,
            self.records._reading,
            self.clock,
            [edge_totp.Totp(), edge_second.RecoveryCode()],
            generation_now=lambda _name: self._generation_locked(),
        )

    def record_name(self, name: str) -> str:
        """The name `name`'s second factor and log lines are kept under."""
        return SINGLE_USER

    def _generation_locked(self) -> str:
        with self._lock:
            return self._generation_now(self.username)

    def _check(self, username: str, password: str, stored: bytes) -> bool:
        """Whether the credentials are right for `stored`, the hash read when the attempt
        began (not the file's content now: the attempt belongs to that password)."""
        import bcrypt  # Debian's python3-bcrypt

        if not stored:
            return False
        name_ok = hmac.compare_digest(username.encode(), self.username.encode())
        try:
            password_ok = bcrypt.checkpw(password.encode(), stored)
        except ValueError:  # not a hash, or a password bcrypt refuses (NUL, too long)
            return False
        return name_ok and password_ok

    def _proof(self, generation: str, username: str, password: str) -> bytes:
        """What the memory of proven credentials keeps of them."""
        text = f"{generation}\0{username}\0{password}".encode("utf-8", "surrogatepass")
        return hmac.digest(self._proof_key, text, "sha256")

    def _run_check(self, username: str, password: str, stored: bytes) -> str:
        """`ok` or `wrong` from bcrypt, or `busy` when there is no place among the checks."""
        if not self._places.acquire(blocking=False):
            return "busy"
        try:
            with self._workers:
                return "ok" if self._check(username, password, stored) else "wrong"
        finally:
            self._places.release()

    # -- guessing limits ----------------------------------------------------------------

    def _limits(self, address: str, device: str | None, name: str = "") -> list[tuple[str, int]]:
        """The buckets an attempt (for `name`, in team mode) counts in: its device's own,
        or its address's and the one of all attempts without a device cookie."""
        device_id = self.device_id(device, name) if device else None
        if device_id and name:
            # In team mode every sign-in gives its browser a device cookie: all of a
            # person's devices together get a few buckets' worth, or a member could mint
            # device after device, each with its own failures to spend (keeping the
            # bcrypt checks busy for everyone).
            return [
                (f"device {device_id}", self.max_failures),
                (f"devices of {name}", self.max_failures * PERSON_DEVICE_BUCKETS),
            ]
        if device_id:
            return [(f"device {device_id}", self.max_failures)]
        return [
            (f"address {address}", self.max_failures),
            ("untrusted", self.max_untrusted_failures),
        ]

    def retry_after(self, address: str, device: str | None = None, name: str = "") -> int:
        """Seconds until `address` (or the device) may try again; 0 when it may now."""
        return self.limiter.wait(self._limits(address, device, name))

    def attempt(
        self, address: str, username: str, password: str, device: str | None = None
    ) -> tuple[str, str]:
        """One login attempt: its outcome, `ok`, `wrong`, `locked` (too many recent
        failures) or `busy` (too many checks under way), and the generation of the
        password it was checked against (a session is made for that one only:
        `new_session`).

        A locked client gets `locked` whatever it sends, the right password included:
        neither bcrypt nor the memory of proven credentials is asked. An attempt the
        limits admit counts as a failure while it is checked, and stays one unless it
        proves right; one that finds no place among the checks (`busy`) stays one too,
        or it would be a free question to the memory. Identical attempts under way at
        the same time share one check (a client's first burst of requests). A password
        replaced while it was being checked is no longer right: such an attempt is
        `wrong`, and not remembered.
        """
        limits = self._limits(address, device, username)
        trusted = limits[0][0].startswith("device ")
        with self._lock:
            stored, generation = self._credential(username)
            proof = self._proof(generation, username, password)
            if self.limiter.wait(limits):
                return "locked", generation
            if proof in self._proven:
                return "ok", generation
            check = self._checks.get(proof)
            mine = check is None
            if check is None:
                check = self._checks[proof] = _Check()
                self.limiter.reserve(limits)  # admitted just above, under the same lock
        if not mine:  # the same proof: the same credentials and the same generation
            check.done.wait()
            return check.outcome, generation
        try:
            check.outcome = self._run_check(username, password, stored)
        finally:
            with self._lock:
                del self._checks[proof]
                if self._generation_now(username) != generation and check.outcome == "ok":
                    check.outcome = "wrong"  # rotated meanwhile: the old password is void
                if check.outcome == "ok":
                    if len(self._proven) > 1000:
                        self._proven.clear()
                    self._proven.add(proof)
                # No place among the checks (`busy`) is a failure of the attempt's own,
                # except in the bucket of a device that signed in as this very person:
                # its owner is not to be locked out by others keeping bcrypt busy, and the
                # memory it could ask for free holds only its own password.
                failed = check.outcome != "ok" and not (check.outcome == "busy" and trusted)
                self.limiter.settle([key for key, _ in limits], failed=failed)
            check.done.set()
        self._checked(address, username, check.outcome)
        return check.outcome, generation

    def attempt_step(
        self, address: str, device: str | None, name: str, check: Callable[[], bool]
    ) -> str:
        """A step of a sign-in other than the password (a second factor's code), held to
        the same guessing limits: `locked` (`check` is not called), `ok` or `wrong` (a
        failure, as a wrong password is)."""
        limits = self._limits(address, device, name)
        if self.limiter.reserve(limits):
            return "locked"
        ok = False
        try:
            ok = check()
        finally:
            self.limiter.settle([key for key, _ in limits], failed=not ok)
        return "ok" if ok else "wrong"

    # -- devices ------------------------------------------------------------------------

    def _load_device_key(self) -> bytes:
        """The key that signs device cookies, kept in the state directory so that they
        outlive a restart; without one, a key for this process only."""
        path = self.state_dir / "device.key" if self.state_dir else None
        if path is None:
            return secrets.token_bytes(32)
        key = _read_small_file(path, 64)
        if key is not None and len(key) == 32:
            return key
        key = secrets.token_bytes(32)
        try:
            _write_private_file(path, key)
        except OSError as exc:
            print(f"edge: cannot save the device key: {exc}", file=sys.stderr)
        return key

    def _device_mac(self, nonce: str, name: str = "") -> str:
        text = f"device\0{nonce}".encode()
        return hmac.new(self._device_key, text, "sha256").hexdigest()[:32]

    def new_device(self, name: str = "") -> str:
        """A device cookie's value: a random name and its signature. It says that this
        browser signed in here before, and gives it a bucket of its own; it lets nobody
        in. So it outlives a new password (the owner, after `occ auth rotate`, still has
        a bucket no guesser fills), and is void only with the key that signed it."""
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._device_mac(nonce, name)}"

    def device_id(self, token: str, name: str = "") -> str | None:
        """The name of the device, when `token` is one of our device cookies (in team
        mode: made when `name` signed in); else None."""
        nonce, _, mac = token.partition(".")
        if not _RANDOM.fullmatch(nonce):
            return None
        # As bytes: a cookie may hold any Latin-1 character, compare_digest takes ASCII.
        expected = self._device_mac(nonce, name).encode()
        if hmac.compare_digest(mac.encode("latin-1", "replace"), expected):
            return nonce
        return None

    # -- sessions -----------------------------------------------------------------------

    def _sessions_dir(self) -> Path | None:
        """Where sessions.json is (edge_single.py); None: in memory only."""
        return self.state_dir

    def new_session(self, generation: str) -> str | None:
        """A new session token (the cookie's value) for a sign-in checked against the
        password of `generation`; None when that password has been replaced since."""
        with self._lock:
            return self._new_session(generation)

    def sign_in(
        self, generation: str, name: str = "", address: str = "", agent: str = ""
    ) -> tuple[str, str] | None:
        """A session and a device cookie for a sign-in checked against the password of
        `generation`, made together; None when that password has been replaced since.
        `address` and `agent` (the browser's User-Agent) are kept with the session (in
        team mode, with `name`, the person's)."""
        with self._lock:
            session = self._new_session(generation, address, agent)
        if session is None:
            return None
        self._log(edge_single.OWNER, "signed-in", address)
        return session, self.new_device()

    def _new_session(self, generation: str, address: str = "", agent: str = "") -> str | None:
        """Called with the lock held: the hash read here and the session stamped with it
        cannot be told apart by a rotation."""
        self._current_hash()
        if not generation or generation != self.generation:
            return None
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._sessions.changing() as entries:
            kept = edge_single.live(entries, self.generation, now)
            kept.sort(key=lambda item: item[1]["expires"])
            entries.clear()
            entries.update(kept[-(MAX_SESSIONS - 1) :])
            entries[_digest(token)] = {
                "expires": now + self.session_seconds,
                "generation": self.generation,
                "created": int(now),
                "seen": int(now),
                "address": edge_single.printable(address, edge_single.MAX_ADDRESS),
                "agent": edge_single.printable(agent, MAX_AGENT),
            }
        return token

    def session_valid(self, token: str) -> bool:
        """Asked on every request: a session revoked by the admin tool (a new file) is
        refused from its next request on. A live one is noted seen at most every
        `edge_single.SEEN_EVERY` seconds."""
        digest, now = _digest(token), self.clock()
        with self._lock:
            self._current_hash()
            self._sessions.refresh()
            entry = self._sessions.entries.get(digest)
            valid = bool(
                entry and entry["generation"] == self.generation and entry["expires"] > now
            )
            if valid and now - self._session_seen.get(digest, -math.inf) >= edge_single.SEEN_EVERY:
                if len(self._session_seen) >= MAX_SESSIONS * 64:
                    self._session_seen.clear()  # bounded: forgetting costs one write
                self._session_seen[digest] = now
                with self._sessions.changing() as entries:
                    if digest in entries:
                        entries[digest]["seen"] = int(now)
            return valid

    def end_session(self, token: str) -> None:
        digest = _digest(token)
        with self._lock:
            self._sessions.refresh()
            if digest not in self._sessions.entries:
                return
            with self._sessions.changing() as entries:
                entries.pop(digest, None)
        self._log(edge_single.OWNER, "signed-out", "")


# --------------------------------------------------------------------------- team mode

# A person's name: what their containers, volumes and network are named after.
PERSON_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,28}[a-z0-9])?")
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_UPSTREAM = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}):([0-9]{1,5})")
_INTERNAL_PASSWORD = re.compile(r"[\x21-\x7e]{1,256}")
INTERNAL_PASSWORD_BYTES = 24  # of one the door makes, as the tool's (hex: the starter's rule)
DEFAULT_STATE_DIR = "/var/lib/opencode-cloud-edge"
DEFAULT_TEAM_DB = f"{DEFAULT_STATE_DIR}/team.db"
DEFAULT_HASH_FILE = "/run/opencode-cloud/password.bcrypt"
INTERNAL_USER = "opencode"  # the user name of a person's instance's internal password
HEALTH_PATH = "/global/health"
HEALTH_TIMEOUT = 1.0  # an instance that does not answer its health check by then is not ready
STARTER_TIMEOUT = 5.0  # the starter answers once the engine took the request
CREATE_TIMEOUT = 60.0  # ... or made a person's volumes, network and container
START_REPEAT = 2.0  # a person's instance is asked to start at most this often
LAST_SEEN_EVERY = 10.0  # seconds between two writes of a person's last_seen
# An instance takes requests once it answered its health check, and until it is known to
# have stopped (the starter says it started it again, or a check finds it down): opencode
# opens its port a moment before it serves, and a request that arrives then is never
# answered. Not asked again on a timer: under load a check can be slow, and a slow
# check must not turn a busy instance's requests away.
IDLE_STOP = float(os.environ.get("OCC_EDGE_IDLE_STOP", "0"))  # 0: never stop an instance
IDLE_CHECK_EVERY = 60.0  # at most this long between two looks for idle instances
DB_BUSY_MS = 5000  # how long a write waits for another process's (the admin tool's)
MAX_LOG_ROWS = 10000  # the sign-in log keeps its newest rows only
# ... and of each person's sign-ins and sign-outs (which no limit slows) its newest these
# many, so that a member signing in again and again cannot push failures out of it.
MAX_LOG_SIGN_INS = 100
# All the device cookies of one person together: this many devices' buckets of failures.
PERSON_DEVICE_BUCKETS = 3
MAX_ADMIN_REQUEST = 64 * 1024
SESSION_ID_LENGTH: int = edge_single.SESSION_ID_LENGTH  # of a digest, a session's name
MAX_AGENT: int = edge_single.MAX_AGENT  # characters of a User-Agent kept with a session
MAX_LOG_LINES = 10000  # at most this many lines of the sign-in log in one answer
# The cost of the dummy hash checked for unknown names while no person's hash shows the
# one in use: the tool's (access/credentials.py).
DEFAULT_BCRYPT_COST = 10
# What a credential's "hash" starts with for a name that is nobody's (or a disabled
# person's): the check runs against a dummy hash of the cost that follows.
_DUMMY = b"dummy:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS people (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    generation TEXT NOT NULL,
    internal_password TEXT NOT NULL,
    upstream TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    email TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL,
    last_sign_in INTEGER,
    last_seen INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    token TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    generation TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    agent TEXT NOT NULL DEFAULT '',
    seen INTEGER
);
CREATE INDEX IF NOT EXISTS sessions_by_name ON sessions (name);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires);
CREATE TABLE IF NOT EXISTS sign_ins (
    time INTEGER NOT NULL,
    name TEXT NOT NULL,
    event TEXT NOT NULL,
    address TEXT NOT NULL
);
"""
# Columns a database made by an older edge lacks: added when it is opened.
_ADDED_COLUMNS = {
    "sessions": (
        ("address", "TEXT NOT NULL DEFAULT ''"),
        ("agent", "TEXT NOT NULL DEFAULT ''"),
        ("seen", "INTEGER"),
    ),
}
_PERSON_COLUMNS = (
    "name, hash, generation, internal_password, upstream, admin, email, disabled, "
    "created, last_sign_in, last_seen"
)


@dataclass(frozen=True)
class Person:
    name: str
    hash: str = field(repr=False)
    generation: str = field(repr=False)
    internal_password: str = field(repr=False)
    upstream: str
    admin: bool
    email: str | None
    disabled: bool
    created: int
    last_sign_in: int | None
    last_seen: int | None

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> Person:
        name, hashed, generation, internal, upstream, admin, email, disabled, *times = row
        return cls(
            name, hashed, generation, internal, upstream, bool(admin), email, bool(disabled), *times
        )

    def upstream_auth(self) -> str:
        """The Authorization header of the person's own instance."""
        credentials = f"{INTERNAL_USER}:{self.internal_password}".encode()
        return "Basic " + b64encode(credentials).decode("ascii")

    def grant(self) -> list[tuple[str, str]]:
        """The headers of verify's 200: where Caddy sends this person's requests."""
        return [
            ("X-Occ-Person", self.name),
            ("X-Occ-Upstream", self.upstream),
            ("X-Occ-Upstream-Auth", self.upstream_auth()),
        ]

    def public(self) -> dict[str, Any]:
        """What `list` tells of the person: never a hash or a password."""
        return {
            "name": self.name,
            "admin": self.admin,
            "email": self.email,
            "disabled": self.disabled,
            "created": self.created,
            "last_sign_in": self.last_sign_in,
            "last_seen": self.last_seen,
        }


class AdminError(Exception):
    """A request of `edge.py admin` that is not applied: its message is the answer."""


def _new_generation() -> str:
    """A person's sessions belong to one of these; a new one voids them all."""
    return secrets.token_hex(16)


def _open_private_db(path: Path) -> sqlite3.Connection:
    """The database at `path` (made, 0600, when missing; its directory 0700 when made),
    in WAL mode, with its tables. A symbolic link or any other file there is refused."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, 0o600)  # SQLite gives its -wal and -shm files this mode too
    finally:
        os.close(fd)
    # Autocommit (isolation_level None): each statement sees what other processes wrote.
    db = sqlite3.connect(
        path, timeout=DB_BUSY_MS / 1000, isolation_level=None, check_same_thread=False
    )
    db.execute(f"PRAGMA busy_timeout = {DB_BUSY_MS}")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise OSError(f"{path}: cannot use WAL mode ({mode})")
    db.executescript(_SCHEMA + edge_second.SCHEMA + edge_totp.SCHEMA)
    for table, columns in _ADDED_COLUMNS.items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for column, declaration in columns:
            if column not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    return db


class People:
    """The team's people, their sessions and the sign-in log, in SQLite.

    One connection, used under a lock by the edge's threads; the admin tool writes the
    same file from its own process (WAL mode: readers never wait for it, a writer waits
    up to `DB_BUSY_MS`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = _open_private_db(path)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _all(self, sql: str, *args: Any) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _run(self, sql: str, *args: Any) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads only (each statement on its own)."""
        with self._lock:
            yield self._db

    # -- what the edge asks -----------------------------------------------------------

    def get(self, name: str) -> Person | None:
        rows = self._all(f"SELECT {_PERSON_COLUMNS} FROM people WHERE name = ?", name)
        return Person.of_row(rows[0]) if rows else None

    def some_hash(self) -> str | None:
        """A person's hash: its cost is the one the tool uses."""
        rows = self._all("SELECT hash FROM people LIMIT 1")
        return rows[0][0] if rows else None

    def session_person(self, digest: str, now: float) -> Person | None:
        """The enabled person whose live session has this digest, with the generation
        of their password now; None for anything else."""
        columns = ", ".join(f"p.{c.strip()}" for c in _PERSON_COLUMNS.split(","))
        rows = self._all(
            f"SELECT {columns} FROM sessions s JOIN people p ON p.name = s.name "
            "WHERE s.token = ? AND s.expires > ? AND s.generation = p.generation "
            "AND p.disabled = 0",
            digest,
            now,
        )
        return Person.of_row(rows[0]) if rows else None

    def add_session(
        self,
        digest: str,
        name: str,
        generation: str,
        now: float,
        expires: float,
        address: str = "",
        agent: str = "",
    ) -> bool:
        """Keep a session of `name` under `generation`, if that is still the generation
        of their password and they are enabled (in one transaction with the admin
        tool's changes)."""
        with self._transaction() as db:
            found = db.execute(
                "SELECT 1 FROM people WHERE name = ? AND generation = ? AND disabled = 0",
                (name, generation),
            ).fetchall()
            if not found:
                return False
            db.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
            db.execute(
                "DELETE FROM sessions WHERE name = ? AND token NOT IN (SELECT token FROM "
                "sessions WHERE name = ? ORDER BY expires DESC LIMIT ?)",
                (name, name, MAX_SESSIONS - 1),
            )
            db.execute(
                "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (digest, name, generation, int(now), int(expires), address, agent, int(now)),
            )
            db.execute("UPDATE people SET last_sign_in = ? WHERE name = ?", (int(now), name))
            return True

    def end_session(self, digest: str) -> str | None:
        """Forget a session; the name it was of, if it was one."""
        with self._transaction() as db:
            rows = db.execute("SELECT name FROM sessions WHERE token = ?", (digest,)).fetchall()
            db.execute("DELETE FROM sessions WHERE token = ?", (digest,))
        return rows[0][0] if rows else None

    def seen(self, name: str, now: float) -> None:
        self._run("UPDATE people SET last_seen = ? WHERE name = ?", int(now), name)

    def session_seen(self, digest: str, now: float) -> None:
        self._run("UPDATE sessions SET seen = ? WHERE token = ?", int(now), digest)

    def log(self, now: float, name: str, event: str, address: str) -> None:
        """One line of the sign-in log, which keeps its newest `MAX_LOG_ROWS` only, and of
        each person's sign-ins and sign-outs the newest `MAX_LOG_SIGN_INS`."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO sign_ins VALUES (?, ?, ?, ?)", (int(now), name, event, address[:64])
            )
            if cursor.lastrowid:
                db.execute(
                    "DELETE FROM sign_ins WHERE rowid <= ?", (cursor.lastrowid - MAX_LOG_ROWS,)
                )
            if event in ("signed-in", "signed-out"):
                db.execute(
                    "DELETE FROM sign_ins WHERE name = ? AND event = ? AND rowid NOT IN "
                    "(SELECT rowid FROM sign_ins WHERE name = ? AND event = ? "
                    "ORDER BY rowid DESC LIMIT ?)",
                    (name, event, name, event, MAX_LOG_SIGN_INS),
                )

    def events(self) -> list[tuple[int, str, str, str]]:
        return [tuple(row) for row in self._all("SELECT * FROM sign_ins ORDER BY rowid")]

    def log_lines(self, name: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` lines of the sign-in log (of `name` only, when given),
        oldest first."""
        where, args = ("WHERE name = ?", (name,)) if name else ("", ())
        rows = self._all(
            f"SELECT time, name, event, address FROM sign_ins {where} ORDER BY rowid DESC LIMIT ?",
            *args,
            limit,
        )
        keys = ("time", "name", "event", "address")
        return [dict(zip(keys, row, strict=True)) for row in reversed(rows)]

    def sessions_of(self, name: str, now: float) -> list[dict[str, Any]]:
        """`name`'s live sessions, newest first, each under its public id (the start of
        the digest of its token: it names the session, and reveals nothing of the token).
        """
        rows = self._all(
            "SELECT s.token, s.created, s.expires, s.seen, s.address, s.agent "
            "FROM sessions s JOIN people p ON p.name = s.name "
            "WHERE s.name = ? AND s.expires > ? AND s.generation = p.generation "
            "ORDER BY s.created DESC, s.token",
            name,
            now,
        )
        return [
            {
                "id": token[:SESSION_ID_LENGTH],
                "created": created,
                "expires": expires,
                "seen": seen,
                "address": address,
                "agent": agent,
            }
            for token, created, expires, seen, address, agent in rows
        ]

    def revoke(self, name: str, which: str) -> int:
        """End `name`'s session with the public id `which`, or all of them (`all`); how
        many ended."""
        with self._transaction() as db:
            if not db.execute("SELECT 1 FROM people WHERE name = ?", (name,)).fetchall():
                raise AdminError(f"no such person: {name}")
            if which == "all":
                return db.execute("DELETE FROM sessions WHERE name = ?", (name,)).rowcount
            tokens = [
                row[0]
                for row in db.execute("SELECT token FROM sessions WHERE name = ?", (name,))
                if row[0][:SESSION_ID_LENGTH] == which
            ]
            if not tokens:
                raise AdminError(f"no such session of {name}: {which}")
            for token in tokens:
                db.execute("DELETE FROM sessions WHERE token = ?", (token,))
            return len(tokens)

    # -- what the admin tool asks -----------------------------------------------------

    def put(
        self,
        name: str,
        hashed: str,
        internal_password: str,
        upstream: str,
        admin: bool,
        email: str | None,
        now: float,
    ) -> bool:
        """Add the person or replace their record (keeping their times and whether they
        are disabled; never one made at a first sign-in); a new hash voids their
        sessions. True when added."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT hash, generation FROM people WHERE name = ?", (name,)
            ).fetchall()
            if not rows:
                db.execute(
                    f"INSERT INTO people ({_PERSON_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, NULL, NULL)",
                    (
                        name,
                        hashed,
                        _new_generation(),
                        internal_password,
                        upstream,
                        int(admin),
                        email,
                        int(now),
                    ),
                )
                return True
            old_hash, generation = rows[0]
            if old_hash == edge_oidc.NO_PASSWORD:
                # Made at a first sign-in while the tool added this name: that record is
                # someone else's, linked to their account at the provider.
                raise AdminError(f"{name} was just made by a single sign-on: choose another name")
            if old_hash != hashed:
                generation = _new_generation()
                db.execute("DELETE FROM sessions WHERE name = ?", (name,))
            db.execute(
                "UPDATE people SET hash = ?, generation = ?, internal_password = ?, "
                "upstream = ?, admin = ?, email = ? WHERE name = ?",
                (hashed, generation, internal_password, upstream, int(admin), email, name),
            )
            return False

    def change(self, name: str, sql: str, *args: Any, void_sessions: bool = False) -> None:
        """Apply `UPDATE people SET <sql> WHERE name = ?` to an existing person, with a
        new generation and without their sessions when `void_sessions`."""
        with self._transaction() as db:
            if void_sessions:
                sql = f"{sql}, generation = ?"
                args = (*args, _new_generation())
                db.execute("DELETE FROM sessions WHERE name = ?", (name,))
            changed = db.execute(f"UPDATE people SET {sql} WHERE name = ?", (*args, name))
            if not changed.rowcount:
                raise AdminError(f"no such person: {name}")

    def remove(self, name: str) -> None:
        """Everything of the person's, in one transaction: a removal that fails part way
        leaves nothing (a passkey, a link at the provider) to a new person of the name."""
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE name = ?", (name,))
            edge_second.forget(db, name)
            edge_totp.remove(db, name)
            _passkeys().forget(db, name)
            edge_oidc.forget(db, name)
            if not db.execute("DELETE FROM people WHERE name = ?", (name,)).rowcount:
                raise AdminError(f"no such person: {name}")

    def everyone(self) -> list[Person]:
        rows = self._all(f"SELECT {_PERSON_COLUMNS} FROM people ORDER BY name")
        return [Person.of_row(row) for row in rows]


class Starter:
    """The client of the starter, the one part with the engine's socket: one JSON line
    asked, one answered, per connection. Without its socket, every instance is simply
    not ready."""

    def __init__(self, path: str | None, timeout: float = STARTER_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    def ask(self, op: str, name: str, **more: str) -> dict[str, Any]:
        """The starter's answer (`{"state": ...}`), or `{"error": ...}`."""
        if not self.path:
            return {"error": "no starter"}
        request = json.dumps({"op": op, "name": name, **more}).encode() + b"\n"
        # Making an instance takes the engine several requests.
        timeout = CREATE_TIMEOUT if op == "create" else self.timeout
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                deadline = time.monotonic() + timeout
                sock.settimeout(timeout)
                sock.connect(self.path)
                sock.sendall(request)
                reader = Reader(sock)
                while b"\n" not in reader.buffer and len(reader.buffer) < MAX_BODY:
                    try:
                        reader.fill(deadline)
                    except Closed:
                        break
            answer = json.loads(bytes(reader.buffer).split(b"\n", 1)[0])
        except (OSError, ValueError) as exc:
            print(f"edge: the starter did not answer {op} {name}: {exc!r}", file=sys.stderr)
            return {"error": "the starter did not answer"}
        if not isinstance(answer, dict):
            return {"error": "the starter's answer is not an object"}
        return answer


class TeamGuard(Guard):
    """The guard of team mode: people by name, each with their own password, sessions
    and instance. Everything else (guessing limits, devices, the bcrypt places, the
    memory of proven credentials) is the single-user guard's, per person: a proof and a
    session belong to one person and one generation of their password."""

    def __init__(
        self,
        people: People,
        state_dir: Path | None = None,
        *,
        starter: Starter | None = None,
        idle_stop: float = IDLE_STOP,
        **options: Any,
    ) -> None:
        self.people = people
        # No password file: the people's hashes are in the database.
        super().__init__(Path(os.devnull), "", state_dir, **options)
        self.starter = starter or Starter(None)
        self.idle_stop = idle_stop
        self._team_lock = threading.Lock()
        self._dummies: dict[int, bytes] = {}  # bcrypt cost -> a hash nobody's password has
        self._seen: dict[str, float] = {}  # name -> when last_seen was last written
        self._session_seen: dict[str, float] = {}  # digest -> when its seen was last written
        self._started: dict[str, tuple[float, str]] = {}  # name -> when asked to start, state
        self._running: set[str] = set()  # instances seen in use or running: idle candidates
        self._answering: dict[str, float] = {}  # name -> when its health check last passed
        self._checking: set[str] = set()  # names whose health check is under way
        # The people's passkeys, and their challenges under way.
        self.passkeys = _passkeys().Passkeys(people._transaction, people._reading, self.clock)
        self.sso = edge_oidc.Sso(people, self._log)

    # -- credentials by name ------------------------------------------------------------

    def _sessions_dir(self) -> Path | None:
        return None  # in the database

    def _open_records(self) -> People | None:
        return self.people

    def _second_step(self) -> Any:
        """Second factors (edge_second.py): TOTP first, or a passkey of a person who has
        TOTP too; recovery codes last on the page."""
        totp = edge_totp.Totp()
        return edge_second.SecondStep(
            self.people._transaction,
            self.people._reading,
            self.clock,
            [totp, _passkeys().SecondFactor(totp), edge_second.RecoveryCode()],
        )

    def record_name(self, name: str) -> str:
        return name

    def _credential(self, username: str) -> tuple[bytes, str]:
        """An enabled person's hash and generation. For anyone else, a dummy hash of the
        same cost and no generation: their attempt is checked (and counted) just like a
        wrong password, so that names are not told apart by the time an answer takes."""
        person = self.people.get(username) if PERSON_NAME.fullmatch(username) else None
        # A person made by single sign-on has no password: checked like a wrong one.
        if person is not None and not person.disabled and _BCRYPT_HASH.fullmatch(person.hash):
            return person.hash.encode(), person.generation
        model = person.hash if person is not None else self.people.some_hash()
        cost = int(model[4:6]) if model and _BCRYPT_HASH.fullmatch(model) else 0
        return _DUMMY + str(cost or DEFAULT_BCRYPT_COST).encode(), ""

    def _generation_now(self, username: str) -> str:
        if not PERSON_NAME.fullmatch(username):
            return ""
        person = self.people.get(username)
        return person.generation if person is not None and not person.disabled else ""

    def _check(self, username: str, password: str, stored: bytes) -> bool:
        import bcrypt  # Debian's python3-bcrypt

        if stored.startswith(_DUMMY):
            with contextlib.suppress(ValueError):
                bcrypt.checkpw(password.encode(), self._dummy(int(stored[len(_DUMMY) :])))
            return False
        try:
            return bool(bcrypt.checkpw(password.encode(), stored))
        except ValueError:  # not a hash, or a password bcrypt refuses (NUL, too long)
            return False

    def _dummy(self, cost: int) -> bytes:
        """A hash of `cost` no password is known for (made once per cost)."""
        import bcrypt  # Debian's python3-bcrypt

        with self._team_lock:
            dummy = self._dummies.get(cost)
        if dummy is None:
            dummy = bcrypt.hashpw(secrets.token_bytes(16).hex().encode(), bcrypt.gensalt(cost))
            with self._team_lock:
                dummy = self._dummies.setdefault(cost, dummy)
        return dummy

    def _device_mac(self, nonce: str, name: str = "") -> str:
        """A device cookie is made for the person who signed in on it and gives a bucket
        of its own to their attempts only: a member of the team cannot make device
        cookies by the dozen to guess another's password outside the shared buckets."""
        text = f"device\0{nonce}\0{name}".encode()
        return hmac.new(self._device_key, text, "sha256").hexdigest()[:32]

    def _checked(self, address: str, username: str, outcome: str) -> None:
        if outcome == "wrong":  # bounded by the guessing limits, as every check is
            logged = username if PERSON_NAME.fullmatch(username) else ""
            self._log(logged, "failed", address)

    # -- sessions -------------------------------------------------------------------------

    def new_session(
        self, generation: str, name: str = "", address: str = "", agent: str = ""
    ) -> str | None:
        token = secrets.token_urlsafe(32)
        now = self.clock()
        expires = now + self.session_seconds
        agent = edge_single.printable(agent, MAX_AGENT)  # printed on the admin's terminal
        if not generation or not self.people.add_session(
            _digest(token), name, generation, now, expires, address[:64], agent
        ):
            return None
        self._log(name, "signed-in", address)
        return token

    def sign_in(
        self, generation: str, name: str = "", address: str = "", agent: str = ""
    ) -> tuple[str, str] | None:
        session = self.new_session(generation, name, address, agent)
        return None if session is None else (session, self.new_device(name))

    def session_person(self, token: str) -> Person | None:
        """The person a session cookie is of: enabled, under the generation of their
        password now; None for any other cookie. Asked on every request, so a session
        ended by the admin tool is refused from its next request on. The session is
        noted seen at most every `LAST_SEEN_EVERY` seconds."""
        digest, now = _digest(token), self.clock()
        person = self.people.session_person(digest, now)
        if person is not None:
            with self._team_lock:
                due = now - self._session_seen.get(digest, -math.inf) >= LAST_SEEN_EVERY
                if due:
                    if len(self._session_seen) >= MAX_SESSIONS * 64:
                        self._session_seen.clear()  # bounded: forgetting costs one write
                    self._session_seen[digest] = now
            if due:
                try:
                    self.people.session_seen(digest, now)
                except sqlite3.Error as exc:
                    print(f"edge: cannot note a session seen: {exc!r}", file=sys.stderr)
        return person

    def session_valid(self, token: str) -> bool:
        return self.session_person(token) is not None

    def end_session(self, token: str) -> None:
        name = self.people.end_session(_digest(token))
        if name is not None:
            self._log(name, "signed-out", "")

    def person(self, name: str, generation: str) -> Person | None:
        """The enabled person `name` while their password is of `generation`."""
        person = self.people.get(name) if PERSON_NAME.fullmatch(name) else None
        if person is None or person.disabled or person.generation != generation:
            return None
        return person

    def admit(self, person: Person) -> list[tuple[str, str]]:
        """verify's 200 for `person`: note that they use their instance (last_seen, at
        most every `LAST_SEEN_EVERY` seconds) and tell Caddy where it is.

        As often, the starter is asked (in the background: the request does not wait) to
        start their instance should it be down: a script or an open page of someone
        whose instance was stopped (idle, disabled and enabled again, the engine
        restarted) signs in with no form, and would otherwise find it down for good.
        """
        now = self.clock()
        with self._team_lock:
            self._running.add(person.name)
            due = now - self._seen.get(person.name, -math.inf) >= LAST_SEEN_EVERY
            if due:
                self._seen[person.name] = now
        if due:
            try:
                self.people.seen(person.name, now)
            except sqlite3.Error as exc:
                print(f"edge: cannot note {person.name} seen: {exc!r}", file=sys.stderr)
            threading.Thread(target=self.start, args=(person.name,), daemon=True).start()
        return person.grant()

    # -- instances ----------------------------------------------------------------------

    def healthy(self, person: Person) -> bool:
        """Whether the person's instance answers its health check with 200 within
        `HEALTH_TIMEOUT` seconds in all. One check of a person's instance at a time: the
        instance is the person's own, and could answer a byte at a time to hold checks
        (and the connections that asked) for as long as it likes; asked while a check is
        under way, the answer is that of the last one."""
        if not _UPSTREAM.fullmatch(person.upstream):
            return False  # not written by the admin tool
        with self._team_lock:
            if person.name in self._checking:
                return person.name in self._answering
            self._checking.add(person.name)
        try:
            ready = _answers_200(person.upstream, HEALTH_PATH, person.upstream_auth())
        finally:
            with self._team_lock:
                self._checking.discard(person.name)
                if ready:
                    self._running.add(person.name)
                    self._answering[person.name] = time.monotonic()
                else:
                    self._answering.pop(person.name, None)
        return ready

    def ready(self, person: Person) -> bool:
        """Whether requests may go to the person's instance: it answered its health check
        since it was last (re)started, or does now."""
        with self._team_lock:
            if person.name in self._answering:
                return True
        return self.healthy(person)

    def start(self, name: str) -> str:
        """Ask the starter to start `name`'s instance (at most every `START_REPEAT`
        seconds: the starting page asks twice a second); its state, as far as known."""
        now = time.monotonic()
        with self._team_lock:
            asked, state = self._started.get(name, (-math.inf, ""))
            if now - asked < START_REPEAT:
                return state
            self._started[name] = (now, "starting")
        person = self.people.get(name)
        if person is not None and not person.upstream and person.hash == edge_oidc.NO_PASSWORD:
            answered = self._create(person).get("state")
        else:
            answered = self.starter.ask("start", name).get("state")
        known = ("running", "starting", "stopped", "missing")
        state = answered if isinstance(answered, str) and answered in known else "unavailable"
        with self._team_lock:
            self._started[name] = (now, state)
            if state in ("running", "starting"):
                self._running.add(name)
            if state in ("starting", "stopped", "missing"):  # (re)started, or down:
                self._answering.pop(name, None)  # it must answer anew
        return state

    def _create(self, person: Person) -> dict[str, Any]:
        """Ask the starter to make the instance of a person made by single sign-on, who
        has none yet (no upstream). Their internal password is kept first: should the
        answer be lost, the next ask finds the instance made with it."""
        name = person.name
        if not person.internal_password:
            internal = secrets.token_hex(INTERNAL_PASSWORD_BYTES)
            self.people._run(
                "UPDATE people SET internal_password = ? WHERE name = ? AND internal_password = ''",
                internal,
                name,
            )
            person = self.people.get(name) or person
        answer = self.starter.ask("create", name, password=person.internal_password)
        upstream = answer.get("upstream")
        if (
            answer.get("state") in ("running", "starting")
            and isinstance(upstream, str)
            and _UPSTREAM.fullmatch(upstream)
            and self.people._run(
                "UPDATE people SET upstream = ? WHERE name = ? AND upstream = ''", upstream, name
            )
        ):
            self._log(name, "sso-instance", "starter")
        return answer

    def stop_idle(self) -> list[str]:
        """Ask the starter to stop the instances seen in use whose person has not been
        seen for `idle_stop` seconds; the names asked."""
        cutoff = self.clock() - self.idle_stop
        with self._team_lock:
            candidates = sorted(self._running)
        stopped = []
        for name in candidates:
            person = self.people.get(name)
            last = max(
                (t for t in (person.last_seen, person.last_sign_in) if t is not None)
                if person
                else (),
                default=None,
            )
            if last is not None and last >= cutoff:
                continue
            answer = self.starter.ask("stop", name)
            if "error" in answer:
                continue  # asked again next time
            stopped.append(name)
            with self._team_lock:
                self._running.discard(name)
                self._seen.pop(name, None)
                self._started.pop(name, None)
        return stopped

    def stop_idle_forever(self) -> None:
        """The idle stopper's thread (when `idle_stop` > 0)."""
        interval = min(IDLE_CHECK_EVERY, self.idle_stop)
        while True:
            time.sleep(interval)
            try:
                self.stop_idle()
            except Exception as exc:  # keep looking
                print(f"edge: idle stop: {exc!r}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- HTTP framing


class HttpError(Exception):
    """A request not answered as asked: the status of the answer. The connection is
    closed after it: its bytes may no longer line up with requests."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Closed(Exception):
    """The client closed the connection, or left it idle past the timeout."""


@dataclass(frozen=True)
class Timeouts:
    idle: float = IDLE_TIMEOUT  # between requests
    head: float = HEADER_TIMEOUT  # from a request's first byte to the end of its headers
    body: float = BODY_TIMEOUT  # for the whole body; also for writing an answer


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-case names
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.header("connection").split(",")}
        return self.version == "HTTP/1.1" and "close" not in tokens


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


class Reader:
    """A connection's incoming bytes, read against deadlines: a client that trickles
    them is cut off at the deadline, not at a timeout each new byte would restart."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed
        self.buffer += chunk

    def line(self, deadline: float, limit: int) -> bytes:
        scanned = 0
        while (end := self.buffer.find(b"\n", scanned)) < 0:
            if len(self.buffer) >= limit:
                raise HttpError(431, "request head too large")
            scanned = len(self.buffer)
            self.fill(deadline)
        if end >= limit:
            raise HttpError(431, "request head too large")
        if self.buffer[end - 1 : end] != b"\r":
            raise HttpError(400, "lines must end with CRLF")
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line

    def take(self, size: int, deadline: float) -> bytes:
        while len(self.buffer) < size:
            self.fill(deadline)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


def parse_head(lines: list[bytes]) -> Request:
    """A request's line and headers (each line with its CRLF), strictly: anything two
    readers could take two ways is refused (a CR alone, folded lines, doubled headers
    that must be single)."""
    match = _REQUEST_LINE.fullmatch(lines[0][:-2].decode("latin-1"))
    if not match:
        raise HttpError(400, "malformed request line")
    method, target, version = match.groups()
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505, "only HTTP/1.0 and HTTP/1.1")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        text = raw[:-2].decode("latin-1")
        if text[:1] in (" ", "\t"):
            raise HttpError(400, "folded header line")
        name, colon, value = text.partition(":")
        value = value.strip(" \t")
        if not colon or not _TOKEN.fullmatch(name) or _CONTROL.search(value):
            raise HttpError(400, "malformed header line")
        name = name.lower()
        if name in headers:
            if name in _SINGLE_HEADERS:
                raise HttpError(400, f"more than one {name} header")
            value = headers[name] + ("; " if name == "cookie" else ", ") + value
        headers[name] = value
    if version == "HTTP/1.1" and "host" not in headers:
        raise HttpError(400, "no Host header")
    return Request(method, target, version, headers)


def body_length(request: Request) -> int:
    """The length of the request's body: only a plain Content-Length, within MAX_BODY."""
    if "transfer-encoding" in request.headers:
        raise HttpError(400, "Transfer-Encoding is not accepted; send Content-Length")
    value = request.headers.get("content-length")
    if value is None:
        return 0
    if not re.fullmatch(r"[0-9]{1,18}", value):
        raise HttpError(400, "malformed Content-Length")
    length = int(value)
    if length > MAX_BODY:
        raise HttpError(413, "request too large")
    return length


def read_request(reader: Reader, timeouts: Timeouts) -> Request:
    """The next request of the connection, its body included.

    Raises Closed when the client ends the connection (or leaves it idle) between
    requests, HttpError when the request cannot be answered as asked.
    """
    try:
        if not reader.buffer:
            reader.fill(time.monotonic() + timeouts.idle)
    except TimeoutError:
        raise Closed from None
    try:
        deadline = time.monotonic() + timeouts.head
        lines = [reader.line(deadline, MAX_HEAD)]
        size = len(lines[0])
        while (line := reader.line(deadline, MAX_HEAD - size)) != b"\r\n":
            if len(lines) > MAX_HEADERS:
                raise HttpError(431, "too many header lines")
            lines.append(line)
            size += len(line)
        request = parse_head(lines)
        length = body_length(request)
        expect = request.header("expect").lower()
        if expect and expect != "100-continue":
            raise HttpError(417, "unknown expectation")
        if expect and length > len(reader.buffer):
            reader.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.body = reader.take(length, time.monotonic() + timeouts.body)
    except TimeoutError:
        raise HttpError(408, "request not received in time") from None
    return request


def encode_response(response: Response, *, head_only: bool, close: bool) -> bytes:
    """The bytes of an answer. The one place that writes headers: it refuses any value
    that would end its line early (CR, LF, any control) or that is not ASCII."""
    own = {name.lower() for name, _ in response.headers}
    # A page may carry a policy of its own (the starting page runs a script).
    security = [header for header in SECURITY_HEADERS if header[0].lower() not in own]
    headers = [*response.headers, ("Cache-Control", "no-store"), *security]
    if response.body or response.status not in (204, 304):
        headers.append(("Content-Type", response.content_type))
    headers.append(("Content-Length", str(len(response.body))))
    if close:
        headers.append(("Connection", "close"))
    lines = [f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}"]
    for name, value in headers:
        if (
            not _TOKEN.fullmatch(name)
            or not value.isascii()
            or re.search(r"[\x00-\x1f\x7f]", value)
        ):
            raise ValueError(f"refusing to send the header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head if head_only else head + response.body


# --------------------------------------------------------------------------- the routes


def cookie_name(host: str, kind: str = "session") -> str:
    """One cookie per port: cookies do not tell ports apart, instances do."""
    port = host.rsplit(":", 1)[1] if re.search(r":\d+$", host) else "default"
    return f"occ_{kind}_{port}"


_PRINTABLE_ASCII = "".join(map(chr, range(0x21, 0x7F)))


def starting_next(target: str) -> str | None:
    """The `next` of a link to the starting page. Caddy sends there with the request's URI
    as it came (its 2.6 has no placeholder that escapes a value), so everything after
    `next=` is the path, its own query included; a link of this service's escapes it."""
    query = urlsplit(target).query
    if not query.startswith("next="):
        found = parse_qs(query).get("next")
        return found[0] if found else None
    value = query.removeprefix("next=")
    return unquote(value) if value[:3].upper() == "%2F" else value


def _answers_200(upstream: str, path: str, authorization: str) -> bool:
    """Whether `GET path` at `upstream` (host:port) begins its answer with a 200 status
    line within `HEALTH_TIMEOUT` seconds, all told: connecting, asking and reading
    (however slowly the bytes come). Only the status line is read."""
    host, _, port = upstream.rpartition(":")
    deadline = time.monotonic() + HEALTH_TIMEOUT
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {authorization}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    head = b""
    try:
        with socket.create_connection((host, int(port)), timeout=HEALTH_TIMEOUT) as sock:
            sock.sendall(request)
            while b"\r\n" not in head and len(head) < 256:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                sock.settimeout(left)
                chunk = sock.recv(256 - len(head))
                if not chunk:
                    break
                head += chunk
    except (OSError, ValueError):
        return False
    return re.match(rb"HTTP/1\.[01] 200 ", head) is not None and time.monotonic() <= deadline


def safe_next(target: str | None) -> str:
    """Where to go after signing in: an absolute path on this site, never another one.

    Browsers read `\\` as `/`, and drop tabs and line breaks from URLs, so any of those
    (or other invisible characters) could turn a path into `//another.site`; none is
    accepted. Characters beyond ASCII are percent-encoded, so the path fits a header.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(unicodedata.category(c)[0] in "CZ" for c in target):
        return "/"
    if target.lower().startswith(PREFIX):
        return "/"
    return quote(target, safe=_PRINTABLE_ASCII)


STYLE = """<style>
body{font-family:system-ui,sans-serif;background:#111;color:#eee;display:flex;
justify-content:center;align-items:center;min-height:100vh;margin:0}
form{background:#1c1c1c;padding:2rem;border-radius:8px;width:20rem}
label{display:block;margin:.8rem 0 .2rem}
input{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}
button{margin-top:1.2rem;width:100%;padding:.6rem;font-size:1rem}
.msg{color:#f88}
a.sso{display:block;text-align:center;padding:.6rem;background:#2a2a2a;color:#eee}
</style>"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in - opencode-cloud</title>
{style}</head><body>
<form method="post" action="{action}">
<h1>opencode</h1>
{message}
{sso}
<input type="hidden" name="next" value="{next}">
<input type="hidden" name="csrf" value="{csrf}">
<label for="{field}">{label}</label>
<input id="{field}" name="{field}" autocomplete="username" value="{username}" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password"
 required autofocus>
<button type="submit">Sign in</button>
{passkey}
</form></body></html>
"""

# Team mode: what a person sees while their instance starts. The script asks
# `/__occ/ready` twice a second and goes on to `data-next` once it says ready; the
# page's policy allows this script (by its digest) and nothing else.
STARTING_SCRIPT = """
const next = document.body.dataset.next || "/";
const state = document.getElementById("state");
async function poll() {
  try {
    const answer = await fetch("/__occ/ready", {cache: "no-store"});
    if (answer.status === 401) {
      location.replace("/__occ/login?next=" + encodeURIComponent(next));
      return;
    }
    const body = await answer.json();
    if (body.ready) {
      location.replace(next);
      return;
    }
    if (body.state === "missing") {
      state.textContent = "Your opencode was not found. Ask the administrator.";
    }
  } catch (error) {}
  setTimeout(poll, 500);
}
poll();
"""
STARTING_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-"
    + b64encode(hashlib.sha256(STARTING_SCRIPT.encode()).digest()).decode()
    + "'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
)

STARTING_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Starting - opencode-cloud</title>
{style}</head><body data-next="{next}">
<form>
<h1>opencode</h1>
<p>Your opencode is starting…</p>
<p id="state"></p>
</form>
<script>{script}</script>
</body></html>
"""

# Team mode with single sign-on: a link above the password form; `sso_only` leaves the
# form out (from the first field to the end of the form).
SSO_BUTTON = '<p><a class="sso" href="{link}">Sign in with {name}</a></p>'
SSO_ONLY = re.compile(r'<input type="hidden" name="next".*</form>', re.DOTALL)
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")

LOGOUT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign out - opencode-cloud</title>
{style}</head><body>
<form method="post" action="{action}">
<h1>opencode</h1>
<p>Sign out of opencode in this browser?</p>
<input type="hidden" name="csrf" value="{csrf}">
<button type="submit" autofocus>Sign out</button>
</form></body></html>
"""


class Handler:
    """The answer to one request: the routes, and what they decide with the guard."""

    def __init__(self, guard: Guard, request: Request, peer: str) -> None:
        self.guard = guard
        self.team = guard if isinstance(guard, TeamGuard) else None  # team mode's guard
        self.request = request
        self.peer = peer
        self._csrf: str | None = None  # the forms' token, once known
        self._csrf_is_new = False  # then sent in a cookie with the answer

    def respond(self) -> Response:
        routes: dict[str, dict[str, Callable[[], Response]]] = {
            VERIFY_PATH: {"GET": self.verify},
            LOGIN_PATH: {"GET": self.login_page, "POST": self.login},
            LOGOUT_PATH: {"GET": self.logout_page, "POST": self.logout},
        }
        if self.team is not None:
            routes[STARTING_PATH] = {"GET": self.starting}
            routes[READY_PATH] = {"GET": self.ready}
        if self.guard.second is not None:
            routes[SECOND_PATH] = {"GET": self.second_page, "POST": self.second}
            routes.update(_passkeys().routes(self, sys.modules[__name__]))
            routes[edge_oidc.START_PATH] = {"GET": self.oidc_start}
            routes[edge_oidc.CALLBACK_PATH] = {"GET": self.oidc_callback}
        methods = routes.get(self.request.path)
        if methods is None:
            return self._json(404, "not found")
        method = "GET" if self.request.method == "HEAD" else self.request.method
        action = methods.get(method)
        if action is None:
            allowed = ", ".join(sorted({*methods, "HEAD"}))
            return self._json(405, "method not allowed", [("Allow", allowed)])
        return action()

    # -- what the request says ----------------------------------------------------------

    def _address(self) -> str:
        last = self.request.header("x-forwarded-for").split(",")[-1].strip()
        return last or self.peer

    def _host(self) -> str:
        return self.request.header("x-forwarded-host") or self.request.header("host")

    def _https(self) -> bool:
        return self.request.header("x-forwarded-proto") == "https"

    def _secure(self) -> bool:
        """Whether cookies get `Secure`: always over HTTPS, and over plain HTTP on
        loopback (browsers treat localhost as secure); never over plain HTTP elsewhere,
        where a browser would drop them."""
        return self._https() or bool(_LOOPBACK_HOST.match(self._host()))

    def _cookie(self, kind: str) -> str | None:
        name = cookie_name(self._host(), kind)
        for part in self.request.header("cookie").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name and value:
                return value
        return None

    def _basic(self) -> tuple[str, str] | None:
        scheme, _, token = self.request.header("authorization").partition(" ")
        if scheme.lower() != "basic" or not token:
            return None
        try:
            decoded = b64decode(token.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return ("", "\0invalid")
        username, _, password = decoded.partition(":")
        return self._name(username), password

    def _name(self, typed: str) -> str:
        """The user name as the guard knows it: in team mode a person's name is lower
        case (phones capitalise the first letter typed)."""
        return typed.strip().lower() if self.team is not None else typed

    def _form(self) -> dict[str, str] | None:
        """The form's fields (the first of each name); None when it is not a form."""
        try:
            text = self.request.body.decode("utf-8")
            fields = parse_qs(text, max_num_fields=20, errors="strict")
        except (ValueError, UnicodeDecodeError):
            return None
        return {name: values[0] for name, values in fields.items()}

    def _wants_page(self) -> bool:
        """A browser navigating (rather than a script, or the web UI's own requests)."""
        method = self.request.header("x-forwarded-method") or self.request.method
        return method in ("GET", "HEAD") and "text/html" in self.request.header("accept")

    def _acts(self) -> bool:
        """Whether the request Caddy asks about may change something or opens a
        websocket: any method but GET, HEAD and OPTIONS, or an upgrade.

        The session cookie goes along with such a request from another site of the same
        site (another port of this host, a sibling name), where SameSite=Lax does not
        hold it back; opencode takes bodiless `text/plain` POSTs and opens its terminal
        for any Origin. forward_auth passes the original headers on (Upgrade and
        Connection included, for an upgrade), the method in X-Forwarded-Method."""
        method = self.request.header("x-forwarded-method") or self.request.method
        connection = {t.strip().lower() for t in self.request.header("connection").split(",")}
        return (
            method not in ("GET", "HEAD", "OPTIONS")
            or bool(self.request.header("upgrade"))
            or "upgrade" in connection
            or bool(self.request.header("sec-websocket-key"))
            or self.request.header("sec-fetch-mode") == "websocket"
        )

    def _of_this_site(self, url: str) -> bool:
        """Whether `url` (an Origin or Referer) is on the host the request was sent to.

        Over plain HTTP only host and port are compared: behind a TLS proxy of the
        user's own, the browser's Origin says https while the edge sees http."""
        try:
            source = urlsplit(url)
            here = urlsplit(f"//{self._host()}")
            ports = (source.port, here.port)
        except ValueError:
            return False
        if source.scheme not in ("http", "https") or not source.hostname:
            return False
        if self._https() and source.scheme != "https":
            return False
        default = 443 if source.scheme == "https" else 80
        return source.hostname == here.hostname and (ports[0] or default) == (ports[1] or default)

    def _origin(self) -> str:
        """`same` (the browser says the request comes from this site), `foreign`, or
        `unknown` (no browser's word either way: a script, an old browser, or one told
        to hide the Referer). Sec-Fetch-Site naming another site is foreign whatever
        else is sent; otherwise Origin decides, or without it the Referer."""
        if self.request.header("sec-fetch-site") in ("cross-site", "same-site"):
            return "foreign"
        source = self.request.header("origin") or self.request.header("referer")
        if not source:
            return "unknown"
        return "same" if self._of_this_site(source) else "foreign"

    def _csrf_token(self) -> str:
        """The token the forms carry: the one of the browser's cookie, or a new one
        (then set in the answer)."""
        if self._csrf is None:
            current = self._cookie("csrf")
            if current and _RANDOM.fullmatch(current):
                self._csrf = current
            else:
                self._csrf = secrets.token_urlsafe(24)
                self._csrf_is_new = True
        return self._csrf

    def _csrf_ok(self, form: dict[str, str]) -> bool:
        cookie = self._cookie("csrf") or ""
        sent = form.get("csrf", "")
        return bool(_RANDOM.fullmatch(cookie)) and hmac.compare_digest(
            cookie.encode(), sent.encode("utf-8", "surrogatepass")
        )

    # -- answers ------------------------------------------------------------------------

    def _set_cookie(
        self, kind: str, value: str, max_age: int, path: str = "/", same_site: str = "Lax"
    ) -> tuple[str, str]:
        attributes = [
            f"{cookie_name(self._host(), kind)}={value}",
            f"Path={path}",
            f"Max-Age={max_age}",
            "HttpOnly",
            f"SameSite={same_site}",
        ]
        if self._secure():
            attributes.append("Secure")
        return ("Set-Cookie", "; ".join(attributes))

    def _json(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        body = json.dumps({"error": message}).encode()
        return Response(status, body, "application/json", headers or [])

    def _html(self, status: int, text: str, headers: list[tuple[str, str]]) -> Response:
        if self._csrf_is_new and self._csrf:
            cookie = self._set_cookie("csrf", self._csrf, CSRF_SECONDS, f"{PREFIX}/", "Strict")
            headers = [*headers, cookie]
        return Response(status, text.encode(), "text/html; charset=utf-8", headers)

    def _page(
        self,
        status: int,
        message: str = "",
        target: str = "/",
        username: str = "",
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        text = PAGE.format(
            style=STYLE,
            action=LOGIN_PATH,
            message=f'<p class="msg">{html.escape(message)}</p>' if message else "",
            next=html.escape(target, quote=True),
            csrf=self._csrf_token(),
            field="name" if self.team is not None else "username",
            label="Name" if self.team is not None else "User name",
            username=html.escape(username, quote=True),
            passkey=_passkeys().login_block() if self.team is not None else "",
            sso=self._sso_block(target),
        )
        if self._sso_only():
            text = SSO_ONLY.sub("</form>", text)
        headers = list(headers or [])
        if self.team is not None:  # the passkey button's script
            headers.append(("Content-Security-Policy", _passkeys().POLICY))
        return self._html(status, text, headers)

    def _challenge(self) -> list[tuple[str, str]]:
        """Scripts get the Basic challenge; the web UI's own requests do not (a browser
        would pop up its password dialog over the page)."""
        if self.request.header("sec-fetch-mode"):
            return []
        return [("WWW-Authenticate", 'Basic realm="opencode-cloud", charset="UTF-8"')]

    def _refused(
        self, outcome: str, device: str | None = None, name: str = ""
    ) -> tuple[int, str, list[tuple[str, str]]]:
        """Status, message and headers for an attempt that did not succeed."""
        if outcome == "locked":
            wait = self.guard.retry_after(self._address(), device, name)
            message = f"Too many failed sign-ins. Try again in {wait} seconds."
            return 429, message, [("Retry-After", str(wait))]
        if outcome == "busy":
            return 503, "Too many sign-ins at once. Try again in a moment.", [("Retry-After", "1")]
        print(f"edge: failed login from {self._address()}", file=sys.stderr, flush=True)
        return 401, "Wrong user name or password.", []

    # -- routes -------------------------------------------------------------------------

    def _session_grant(self, token: str) -> Response | None:
        """Verify's answer for a session cookie (200; in team mode with the person's
        upstream, or the wait for it: `_grant`); None when the cookie is no session."""
        if self.team is None:
            return Response(200) if self.guard.session_valid(token) else None
        person = self.team.session_person(token)
        return None if person is None else self._grant(person)

    def _basic_grant(self, name: str, generation: str) -> Response | None:
        """Verify's answer for Basic credentials proven right against the password of
        `generation`; None when that person is gone, disabled or has another password
        since."""
        if self.team is None:
            return Response(200)
        person = self.team.person(name, generation)
        return None if person is None else self._grant(person)

    def _grant(self, person: Person) -> Response:
        """200 with the person's upstream when their instance answers; else their instance
        is asked to start, and the client waits: a page on the starting page, anything
        else with a 503 and Retry-After (what Caddy says when an instance goes down)."""
        assert self.team is not None
        if self.team.ready(person):
            return Response(200, headers=self.team.admit(person))
        threading.Thread(target=self.team.start, args=(person.name,), daemon=True).start()
        if self._wants_page() and self.request.method in ("GET", "HEAD"):
            target = safe_next(self.request.header("x-forwarded-uri") or "/")
            return Response(
                302, headers=[("Location", f"{STARTING_PATH}?next={quote(target, safe='/')}")]
            )
        return self._json(503, "The instance is starting.", [("Retry-After", "2")])

    def verify(self) -> Response:
        """Caddy's question about one request: 200 lets it through (in team mode, to the
        upstream its headers name: only what the guard found, never the client's)."""
        token = self._cookie("session")
        if token and (grant := self._session_grant(token)) is not None:
            if self._acts() and self._origin() == "foreign":
                return self._json(403, "changes and websockets only from this site's own pages")
            return grant
        credentials = self._basic()
        if credentials is not None:
            device = self._cookie("device")
            outcome, generation = self.guard.attempt(self._address(), *credentials, device=device)
            if outcome == "ok" and self._has_second(credentials[0]) and not self._health():
                # A second factor that Basic credentials bypass would be none.
                message = "this person signs in with a second factor: sign in in a browser"
                return self._json(401, message)
            if outcome == "ok":
                grant = self._basic_grant(credentials[0], generation)
                if grant is not None:
                    return grant
                outcome = "wrong"
            status, message, headers = self._refused(outcome, device, credentials[0])
            if status == 401:
                headers = self._challenge()
            return self._json(status, message, headers)
        if self._wants_page():
            target = safe_next(self.request.header("x-forwarded-uri") or "/")
            location = f"{LOGIN_PATH}?next={quote(target, safe='/')}"
            return Response(303, headers=[("Location", location)])
        return self._json(401, "sign in first", self._challenge())

    def login_page(self) -> Response:
        query = parse_qs(urlsplit(self.request.target).query)
        target = safe_next((query.get("next") or ["/"])[0])
        token = self._cookie("session")
        if token and self.guard.session_valid(token):
            return Response(303, headers=[("Location", target)])
        message = "You are signed out." if "signed_out" in query else ""
        return self._page(200, message, target, self.guard.username)

    def login(self) -> Response:
        form = self._form()
        if form is None:
            return self._json(400, "not a form")
        if self.team is not None:
            username = self._name(form.get("name", form.get("username", "")))
        else:
            username = form.get("username", "")
        password = form.get("password", "")
        target = safe_next(form.get("next"))
        if self._sso_only():
            return self._page(403, "Sign in with single sign-on.", target)
        if self._origin() == "foreign" or not self._csrf_ok(form):
            # Another site's form, or a page too old: nothing is checked or counted.
            message = "This form was out of date. Please sign in again."
            return self._page(403, message, target, username)
        device = self._cookie("device")
        outcome, generation = self.guard.attempt(self._address(), username, password, device)
        if outcome == "ok" and self._has_second(username):
            return self._second_begin(self.guard.record_name(username), generation, target)
        # Checked against a password replaced since: wrong now, as for any other attempt.
        made = (
            self.guard.sign_in(
                generation, username, self._address(), self.request.header("user-agent")
            )
            if outcome == "ok"
            else None
        )
        if made is None:
            status, message, headers = self._refused(
                "wrong" if outcome == "ok" else outcome, device, username
            )
            return self._page(status, message, target, username, headers)
        session, new_device = made
        if self.team is not None:
            target = self._landing(username, generation, target)
        headers = [
            ("Location", target),
            self._set_cookie("session", session, self.guard.session_seconds),
            self._set_cookie("device", new_device, DEVICE_SECONDS, f"{PREFIX}/", "Strict"),
        ]
        return Response(303, headers=headers)

    def logout_page(self) -> Response:
        """A button, not the sign-out itself: any site can make a browser follow a link."""
        text = LOGOUT_PAGE.format(style=STYLE, action=LOGOUT_PATH, csrf=self._csrf_token())
        return self._html(200, text, [])

    def logout(self) -> Response:
        """Sign out: only this site's own pages may ask (another site could otherwise
        sign the user out with a hidden form)."""
        form = self._form() or {}
        origin = self._origin()
        if origin == "foreign" or (origin == "unknown" and not self._csrf_ok(form)):
            return self._json(403, "sign out from this site's own page")
        token = self._cookie("session")
        if token:
            self.guard.end_session(token)
        headers = [
            ("Location", f"{LOGIN_PATH}?signed_out=1"),
            self._set_cookie("session", "", 0),
        ]
        return Response(303, headers=headers)

    # -- single sign-on (edge_oidc.py) ----------------------------------------------------

    def _sso_settings(self) -> dict[str, Any] | None:
        return self.team.sso.settings() if self.team is not None else None

    def _sso_only(self) -> bool:
        settings = self._sso_settings()
        return bool(settings and settings.get("sso_only"))

    def _sso_block(self, target: str) -> str:
        settings = self._sso_settings()
        if settings is None:
            return ""
        link = f"{edge_oidc.START_PATH}?next={quote(target, safe='/')}"
        name = html.escape(str(settings.get("provider_name") or ""))
        return SSO_BUTTON.format(link=html.escape(link, quote=True), name=name)

    def _sso_limits(self) -> list[tuple[str, int]]:
        """A failed single sign-on counts in the buckets of a wrong password from this
        address: nobody pushes the log's lines out with failures for free."""
        return self.guard._limits(self._address(), None)

    def _sso_locked(self) -> Response | None:
        wait = self.guard.limiter.wait(self._sso_limits())
        if not wait:
            return None
        message = f"Too many failed sign-ins. Try again in {wait} seconds."
        return self._page(429, message, "/", headers=[("Retry-After", str(wait))])

    def _sso_failed(self, error: Any) -> Response:
        """The login page with what went wrong, after a line in the sign-in log."""
        assert self.team is not None
        limits = self._sso_limits()
        if self.guard.limiter.reserve(limits) == 0:
            self.guard.limiter.settle([key for key, _ in limits], failed=True)
            self.team._log(error.name, error.event, self._address())
            print(f"edge: {error.event} from {self._address()}: {error.message}", file=sys.stderr)
        status = {"sso-provider": 502, "sso-refused": 403}.get(error.event, 400)
        return self._page(status, error.message, "/")

    def oidc_start(self) -> Response:
        """Off to the provider, with a cookie that ties the sign-in to this browser."""
        assert self.team is not None
        query = parse_qs(urlsplit(self.request.target).query)
        target = safe_next((query.get("next") or ["/"])[0])
        host = self._host()
        if not _HOST.fullmatch(host):
            return self._page(400, "This address cannot sign in with single sign-on.", target)
        scheme = "https" if self._https() else "http"
        browser = secrets.token_urlsafe(32)
        try:
            location = self.team.sso.begin(
                f"{scheme}://{host}{edge_oidc.CALLBACK_PATH}", target, browser, self._address()
            )
        except edge_oidc.SsoError as error:
            return self._sso_failed(error)
        cookie = self._set_cookie(
            "oidc", browser, edge_oidc.PENDING_SECONDS, edge_oidc.CALLBACK_PATH
        )
        return Response(303, headers=[("Location", location), cookie])

    def oidc_callback(self) -> Response:
        """Back from the provider: a session for the person it signed in, when allowed."""
        assert self.team is not None
        query = urlsplit(self.request.target).query
        address = self._address()
        locked = self._sso_locked()
        if locked is not None:
            return locked
        try:
            name, target = self.team.sso.finish(query, self._cookie("oidc"), address)
        except edge_oidc.SsoError as error:
            return self._sso_failed(error)
        person = self.team.people.get(name)
        agent = self.request.header("user-agent")
        made = self.guard.sign_in(person.generation, name, address, agent) if person else None
        if made is None:
            return self._sso_failed(edge_oidc.SsoError("You cannot sign in now.", name=name))
        session, device = made
        assert person is not None
        headers = [
            ("Location", self._landing(name, person.generation, target)),
            self._set_cookie("session", session, self.guard.session_seconds),
            self._set_cookie("device", device, DEVICE_SECONDS, f"{PREFIX}/", "Strict"),
            self._set_cookie("oidc", "", 0, edge_oidc.CALLBACK_PATH),
        ]
        return Response(303, headers=headers)

    # -- the second step ------------------------------------------------------------------

    def _health(self) -> bool:
        """Whether the request asks opencode's health check only: the tool's `start` and
        `status` ask it with Basic credentials. Its answer holds nothing of the user's,
        and the login form tells as much of a password (it asks the second step)."""
        method = self.request.header("x-forwarded-method") or self.request.method
        return method in ("GET", "HEAD") and self.request.header("x-forwarded-uri") == HEALTH_PATH

    def _has_second(self, name: str) -> bool:
        """Whether `name`, whose password proved right, has a second factor."""
        second = self.guard.second
        return second is not None and bool(second.enrolled(self.guard.record_name(name)))

    def _second_begin(self, name: str, generation: str, target: str) -> Response:
        """The password proved right and `name` has a second factor: a pending sign-in,
        and on to its page (edge_second.py)."""
        token = self.guard.second.begin(name, generation)
        # Logged whether or not a code follows: a password that leaked shows here.
        self.guard._log(name, "second-step-asked", self._address())
        max_age = edge_second.PENDING_SECONDS
        headers = [
            ("Location", f"{SECOND_PATH}?next={quote(target, safe='/')}"),
            self._set_cookie("second", token, max_age, f"{PREFIX}/", "Strict"),
        ]
        return Response(303, headers=headers)

    def _second_form(
        self,
        status: int,
        message: str,
        factors: Sequence[Any],
        target: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        text = edge_second.page(STYLE, message, factors, self._csrf_token(), target)
        headers = list(headers or [])
        if any(f.key == "passkey" for f in factors):  # its button's script
            headers.append(("Content-Security-Policy", _passkeys().POLICY))
        return self._html(status, text, headers)

    def _second_again(self, status: int, message: str, target: str) -> Response:
        """The login page, the pending sign-in's cookie cleared: it is gone."""
        cleared = self._set_cookie("second", "", 0, f"{PREFIX}/", "Strict")
        return self._page(status, message, target, headers=[cleared])

    def second_page(self) -> Response:
        """The second step's page, for a browser with a live pending sign-in."""
        query = parse_qs(urlsplit(self.request.target).query)
        target = safe_next((query.get("next") or ["/"])[0])
        token = self._cookie("second")
        found = self.guard.second.pending(token) if token and _RANDOM.fullmatch(token) else None
        if found is None:
            location = f"{LOGIN_PATH}?next={quote(target, safe='/')}"
            return Response(303, headers=[("Location", location)])
        return self._second_form(200, "", found[1], target)

    def second(self) -> Response:
        """A proof of a second factor for the browser's pending sign-in: the session when
        it is right; counted like a wrong password when it is not."""
        guard, second = self.guard, self.guard.second
        form = self._form()
        if form is None:
            return self._json(400, "not a form")
        target = safe_next(form.get("next"))
        token = self._cookie("second") or ""
        token = token if _RANDOM.fullmatch(token) else ""
        found = second.pending(token) if token else None
        address, device = self._address(), self._cookie("device")
        if found is None:
            # Unknown, used, expired or voided: counted (it is a guess at a token) and
            # logged without a name.
            self.guard.attempt_step(address, device, "", lambda: False)
            guard._log("", "second-step-refused", address)
            return self._second_again(401, SECOND_EXPIRED, target)
        name, factors = found
        if self._sso_only():  # set while this sign-in waited for its second step
            return self._second_again(403, "Sign in with single sign-on.", target)
        if self._origin() == "foreign" or not self._csrf_ok(form):
            message = "This form was out of date. Please try again."
            return self._second_form(403, message, factors, target)
        proved: list[tuple[str, str, str, str] | None] = []

        def check() -> bool:
            verified = None
            if form.get("factor") == "passkey" and self.team is not None:
                verified = _passkeys().second_step_proof(self, name, form)
            proved.append(second.prove(token, form, verified))
            return proved[0] is not None and proved[0][0] == "ok"

        outcome = self.guard.attempt_step(address, device, name, check)
        if outcome == "locked":
            status, message, headers = self._refused("locked", device, name)
            return self._second_form(status, message, factors, target, headers)
        result = proved[0] if proved else None
        if result is None:
            guard._log("", "second-step-refused", address)
            return self._second_again(401, SECOND_EXPIRED, target)
        verdict, name, generation, factor = result
        if verdict == "blocked":
            guard._log(name, f"{factor}-blocked", address)
            return self._second_form(401, SECOND_BLOCKED, factors, target)
        if verdict != "ok":
            guard._log(name, f"failed-{factor or 'second-step'}", address)
            if verdict == "void":
                message = "Too many wrong codes. Please sign in again."
                return self._second_again(401, message, target)
            wrong = "The passkey was refused." if factor == "passkey" else "Wrong code."
            return self._second_form(401, wrong, factors, target)
        if factor == "recovery":
            guard._log(name, "recovery-code-used", address)
        made = guard.sign_in(generation, name, address, self.request.header("user-agent"))
        if made is None:  # a new password, or disabled, meanwhile
            return self._second_again(401, "Please sign in again.", target)
        session, new_device = made
        if self.team is not None:
            target = self._landing(name, generation, target)
        headers = [
            ("Location", target),
            self._set_cookie("session", session, self.guard.session_seconds),
            self._set_cookie("device", new_device, DEVICE_SECONDS, f"{PREFIX}/", "Strict"),
            self._set_cookie("second", "", 0, f"{PREFIX}/", "Strict"),
        ]
        return Response(303, headers=headers)

    def _landing(self, name: str, generation: str, target: str) -> str:
        """Where a person who just signed in goes: `target`, or the starting page when
        their instance does not answer yet (then asked to start)."""
        assert self.team is not None
        person = self.team.person(name, generation)
        if person is None or self.team.healthy(person):
            return target
        self.team.start(name)
        return f"{STARTING_PATH}?next={quote(target, safe='/')}"

    def _signed_in(self) -> Person | None:
        token = self._cookie("session")
        return self.team.session_person(token) if self.team is not None and token else None

    def starting(self) -> Response:
        """The page shown while the person's instance starts: it asks `ready` until
        it is, then goes on to `next`."""
        target = safe_next(starting_next(self.request.target))
        if self._signed_in() is None:
            location = f"{LOGIN_PATH}?next={quote(target, safe='/')}"
            return Response(303, headers=[("Location", location)])
        text = STARTING_PAGE.format(
            style=STYLE, next=html.escape(target, quote=True), script=STARTING_SCRIPT
        )
        return self._html(200, text, [("Content-Security-Policy", STARTING_POLICY)])

    def ready(self) -> Response:
        """Whether the person's instance answers; when it does not, it is asked to start."""
        assert self.team is not None
        person = self._signed_in()
        if person is None:
            return self._json(401, "sign in first")
        if self._origin() == "foreign":
            return self._json(403, "only from this site's own pages")
        if self.team.healthy(person):
            answer: dict[str, Any] = {"ready": True}
        else:
            answer = {"ready": False, "state": self.team.start(person.name)}
        return Response(200, json.dumps(answer).encode(), "application/json")


# --------------------------------------------------------------------------- connections


class Connection(socketserver.BaseRequestHandler):
    """One client connection (in practice, one of Caddy's): its requests one after
    another, each read whole before it is answered."""

    server: Server
    request: socket.socket

    def handle(self) -> None:
        sock = self.request
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = Reader(sock)
        timeouts = self.server.timeouts
        while self.server.waiting(sock):
            try:
                request = read_request(reader, timeouts)
            except (Closed, OSError):
                return
            except HttpError as error:
                self._refuse(error)
                return
            if not self.server.answering(sock):
                return  # closed meanwhile to make room for a newer connection
            response = self._answer(request)
            close = not request.keep_alive
            try:
                data = encode_response(response, head_only=request.method == "HEAD", close=close)
            except ValueError as exc:
                print(f"edge: {exc}", file=sys.stderr, flush=True)
                data = encode_response(Response(500), head_only=False, close=True)
                close = True
            try:
                sock.settimeout(timeouts.body)
                sock.sendall(data)
            except OSError:
                return
            if close:
                return

    def _answer(self, request: Request) -> Response:
        try:
            peer = self.client_address
            address = peer[0] if isinstance(peer, tuple) and peer else UNIX_PEER
            return Handler(self.server.guard, request, address).respond()
        except Exception as exc:
            print(f"edge: error answering {request.path}: {exc!r}", file=sys.stderr, flush=True)
            return Response(500)

    def _refuse(self, error: HttpError) -> None:
        """Answer a request that was not read whole, then close: stop sending, and drop
        what the client still sends for a moment, so that closing does not reset the
        connection before the client read the answer."""
        body = json.dumps({"error": error.message}).encode()
        data = encode_response(
            Response(error.status, body, "application/json"), head_only=False, close=True
        )
        sock = self.request
        self.server.waiting(sock)  # may be closed to make room meanwhile
        with contextlib.suppress(OSError):
            sock.settimeout(self.server.timeouts.body)
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            received = 0
            while received < 1 << 20 and (remaining := deadline - time.monotonic()) > 0:
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += len(chunk)


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
    b"Connection: close\r\n\r\n"
)


def _prepare_socket_path(path: Path) -> None:
    """Make `path` ready for a unix socket of this user only: its directory this user's
    own and closed to everyone else (made, 0700, when missing), and nothing at `path`
    but, perhaps, the socket of an earlier run, which is removed. A symbolic link there,
    or any other file, is refused: neither followed nor removed."""
    directory = path.parent
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    info = os.lstat(directory)
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or stat.S_IMODE(info.st_mode) & 0o077
    ):
        raise OSError(f"{directory} is not a directory of this user's only (0700, not a link)")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise OSError(f"{path} exists and is not a socket: left alone")
    os.unlink(path)


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A thread per connection, at most `max_connections` of them.

    A connection beyond that closes the one that has waited longest for its next
    request (an idle or slow one: its thread is then free), or, when every one is being
    answered, gets 503 at once.

    It listens on TCP (`(host, port)`) or on a unix socket (a path): a socket file of
    mode 0600 in a directory of the edge's user only, so that no other user of the
    container (the agent) can reach it, nor name its own X-Forwarded-For.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256  # a burst of connections waits in the kernel, not refused

    def __init__(
        self,
        address: tuple[str, int] | str,
        guard: Guard,
        timeouts: Timeouts,
        max_connections: int,
    ) -> None:
        self.guard = guard
        self.timeouts = timeouts
        self.max_connections = max_connections
        self._lock = threading.Lock()
        # Open connections, with the time since when each waits for a request's bytes
        # (None while its request is being answered).
        self._open: dict[socket.socket, float | None] = {}
        self._socket_file: tuple[Path, int] | None = None  # a unix socket's path and inode
        if isinstance(address, str):
            self.address_family = socket.AF_UNIX
        super().__init__(address, Connection)  # type: ignore[arg-type]  # a path, for AF_UNIX

    def server_bind(self) -> None:
        if self.address_family != socket.AF_UNIX:
            super().server_bind()
            return
        path = Path(self.server_address)  # type: ignore[arg-type]
        _prepare_socket_path(path)
        self.socket.bind(str(path))
        # The directory is this user's only: nobody else can have put a link there since.
        info = os.lstat(path)
        if not stat.S_ISSOCK(info.st_mode):
            raise OSError(f"{path} is not the socket just made")
        os.chmod(path, 0o600)
        self._socket_file = (path, info.st_ino)
        self.server_address = self.socket.getsockname()

    def server_close(self) -> None:
        super().server_close()
        if self._socket_file is not None:
            path, inode = self._socket_file
            with contextlib.suppress(OSError):
                if os.lstat(path).st_ino == inode:
                    path.unlink()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._admit(request):
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # no thread to be had
            self.shutdown_request(request)

    def _admit(self, sock: socket.socket) -> bool:
        with self._lock:
            if len(self._open) >= self.max_connections:
                waiting = [(since, s) for s, since in self._open.items() if since is not None]
                if not waiting:
                    return False
                _, oldest = min(waiting, key=lambda item: item[0])
                del self._open[oldest]
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)  # its thread's read ends at once
            self._open[sock] = time.monotonic()
            return True

    def waiting(self, sock: socket.socket) -> bool:
        """Mark `sock` as waiting for a request; False when it was closed to make room."""
        with self._lock:
            if sock not in self._open:
                return False
            if self._open[sock] is None:
                self._open[sock] = time.monotonic()
            return True

    def answering(self, sock: socket.socket) -> bool:
        """Mark `sock` as being answered; False when it was closed to make room."""
        with self._lock:
            if sock not in self._open:
                return False
            self._open[sock] = None
            return True

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        print(f"edge: connection error: {sys.exc_info()[1]!r}", file=sys.stderr, flush=True)


def serve(
    guard: Guard,
    host: str,
    port: int,
    *,
    max_connections: int = MAX_CONNECTIONS,
    idle_timeout: float = IDLE_TIMEOUT,
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
) -> Server:
    """A server for `guard` on host:port (not yet serving: call serve_forever)."""
    timeouts = Timeouts(idle_timeout, header_timeout, body_timeout)
    return Server((host, port), guard, timeouts, max_connections)


def serve_unix(
    guard: Guard,
    path: str,
    *,
    max_connections: int = MAX_CONNECTIONS,
    idle_timeout: float = IDLE_TIMEOUT,
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
) -> Server:
    """A server for `guard` on a unix socket at `path` (not yet serving)."""
    timeouts = Timeouts(idle_timeout, header_timeout, body_timeout)
    return Server(path, guard, timeouts, max_connections)


def listen_address(value: str) -> tuple[str, int] | str:
    """Where `OCC_EDGE_LISTEN` says to listen: `unix:/absolute/path` for a unix socket
    (a path), or `host:port` for TCP."""
    if value.startswith("unix:"):
        path = value.removeprefix("unix:")
        if not path.startswith("/"):
            raise ValueError(f"OCC_EDGE_LISTEN: not an absolute path: {path!r}")
        return path
    host, _, port = value.rpartition(":")
    return host, int(port)


# --------------------------------------------------------------------------- admin


def read_admin_request(path: Path) -> dict[str, Any]:
    """The request in `path`, a regular file of this user's (never a link, which is
    left alone), deleted once read: it holds a hash and an internal password."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise AdminError(f"cannot read the request: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise AdminError("the request is not a regular file (a link, or something else)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise AdminError(f"cannot read the request: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
            info.st_dev,
            info.st_ino,
        ):
            raise AdminError("the request is not a regular file (a link, or something else)")
        if opened.st_uid != os.geteuid():
            raise AdminError("the request is not a file of this user's")
        content = handle.read(MAX_ADMIN_REQUEST + 1)
    try:
        path.unlink()
    except OSError as exc:
        raise AdminError(f"cannot delete the request: {exc.strerror}") from None
    if len(content) > MAX_ADMIN_REQUEST:
        raise AdminError("the request is too large")
    try:
        request = json.loads(content)
    except (ValueError, RecursionError):
        raise AdminError("the request is not JSON") from None
    if not isinstance(request, dict):
        raise AdminError("the request is not a JSON object")
    return request


def _field(request: dict[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise AdminError(f"{key}: {what}")
    return value


def _upstream(request: dict[str, Any]) -> str:
    value = _field(request, "upstream", _UPSTREAM, "not host:port")
    port = int(value.rpartition(":")[2])
    if not 0 < port < 65536:
        raise AdminError("upstream: not host:port")
    return value


def _email(request: dict[str, Any]) -> str | None:
    value = request.get("email")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 254 or _CONTROL.search(value) or "\t" in value:
        raise AdminError("email: not an address")
    return value


_SESSION_OPS = ("sessions", "revoke")
_SESSION_CHOICE = re.compile(f"all|[0-9a-f]{{{SESSION_ID_LENGTH}}}")


def _optional_name(request: dict[str, Any]) -> str | None:
    if request.get("name") is None:
        return None
    return _field(request, "name", PERSON_NAME, "not a name (a-z, 0-9 and -, up to 30)")


def _limit(request: dict[str, Any]) -> int:
    limit = request.get("limit", 100)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_LOG_LINES:
        raise AdminError(f"limit: not a whole number from 1 to {MAX_LOG_LINES}")
    return limit


_TOTP_OPS = ("totp", "totp-off")


def _apply_totp(
    people: People, op: str, name: str, request: dict[str, Any], now: float
) -> dict[str, Any]:
    """`totp`: a new seed and recovery codes for `name` (shown once, in the answer), and
    their sessions ended: from now on they sign in with a code. `totp-off`: none."""
    with people._transaction() as db:
        if not db.execute("SELECT 1 FROM people WHERE name = ?", (name,)).fetchall():
            raise AdminError(f"no such person: {name}")
        if op == "totp-off":
            if not edge_totp.remove(db, name):
                raise AdminError(f"{name} has no TOTP")
            answer: dict[str, Any] = {"ok": True, "name": name, "totp": None}
        else:
            issuer = request.get("issuer", "opencode-cloud")
            if not edge_totp.valid_issuer(issuer):
                raise AdminError("issuer: letters, digits, spaces and ._- (up to 64)")
            answer = {"ok": True, "name": name, "totp": "pending"}
            answer.update(edge_totp.enrol(db, name, issuer, now))
            db.execute("DELETE FROM sessions WHERE name = ?", (name,))
            db.execute("UPDATE people SET generation = ? WHERE name = ?", (_new_generation(), name))
    people.log(now, name, "totp-on" if op == "totp" else "totp-off", "admin")
    return answer


def apply_admin(people: People, request: dict[str, Any], now: float) -> dict[str, Any]:
    """Apply one request of the admin tool (docs/team.md); its answer."""
    op = request.get("op")
    if op == "list":
        with people._reading() as db:
            totp = edge_totp.states(db)
        listed = [{**p.public(), "totp": totp.get(p.name)} for p in people.everyone()]
        return {"ok": True, "people": listed}
    if op == "log":
        return {"ok": True, "log": people.log_lines(_optional_name(request), _limit(request))}
    if isinstance(op, str) and op.startswith("oidc-"):
        try:
            return dict(edge_oidc.apply_admin(people, request, _admin_log(people, now)))
        except edge_oidc.SettingsError as exc:
            raise AdminError(str(exc)) from None
    if op in ("passkeys", "passkey-reset", "passkey-host"):
        return _passkey_admin(people, op, request, now)
    known = ("put", "passwd", "disable", "enable", "internal", "remove", *_SESSION_OPS)
    if op not in (*known, *_TOTP_OPS):
        raise AdminError(f"unknown op: {op!r}"[:200])
    name = _field(request, "name", PERSON_NAME, "not a name (a-z, 0-9 and -, up to 30)")
    if op in _TOTP_OPS:
        return _apply_totp(people, op, name, request, now)
    if op == "sessions":
        if people.get(name) is None:
            raise AdminError(f"no such person: {name}")
        return {"ok": True, "name": name, "sessions": people.sessions_of(name, now)}
    if op == "revoke":
        which = _field(request, "session", _SESSION_CHOICE, "a session's id, or all")
        ended = people.revoke(name, which)
        people.log(now, name, "revoked-all" if which == "all" else "revoked", "admin")
        return {"ok": True, "name": name, "revoked": ended}
    hash_what = "not a bcrypt hash"
    internal_what = "1 to 256 printable ASCII characters, no spaces"
    if op == "put":
        admin = request.get("admin", False)
        if not isinstance(admin, bool):
            raise AdminError("admin: not true or false")
        added = people.put(
            name,
            _field(request, "hash", _BCRYPT_HASH, hash_what),
            _field(request, "internal_password", _INTERNAL_PASSWORD, internal_what),
            _upstream(request),
            admin,
            _email(request),
            now,
        )
        people.log(now, name, "added" if added else "replaced", "admin")
        return {"ok": True, "name": name, "added": added}
    if op == "passwd":
        hashed = _field(request, "hash", _BCRYPT_HASH, hash_what)
        people.change(name, "hash = ?", hashed, void_sessions=True)
    elif op == "disable":
        people.change(name, "disabled = 1", void_sessions=True)
    elif op == "enable":
        people.change(name, "disabled = 0")
    elif op == "internal":
        internal = _field(request, "internal_password", _INTERNAL_PASSWORD, internal_what)
        people.change(name, "internal_password = ?", internal)
    else:
        people.remove(name)
    people.log(now, name, op, "admin")
    return {"ok": True, "name": name}


def _passkey_admin(people: People, op: str, request: dict[str, Any], now: float) -> dict[str, Any]:
    """The admin tool's passkey requests (edge_passkeys.apply_admin), logged when they
    change something."""
    module = _passkeys()
    name = None
    if op != "passkey-host":
        name = _field(request, "name", PERSON_NAME, "not a name (a-z, 0-9 and -, up to 30)")
        if people.get(name) is None:
            raise AdminError(f"no such person: {name}")
    store = module.Passkeys(people._transaction, people._reading)
    try:
        answer: dict[str, Any] = module.apply_admin(store, op, request, name)
    except module.PasskeyError as exc:
        raise AdminError(str(exc)) from None
    if op == "passkey-reset":
        people.log(now, name or "", "passkey-reset", "admin")
    elif op == "passkey-host" and "host" in request:
        people.log(now, "", "passkey-host", "admin")
    return answer


def _admin_log(people: People, now: float) -> Callable[[str, str, str], None]:
    return lambda name, event, address: people.log(now, name, event, address)


def admin_main(arguments: Sequence[str]) -> int:
    """`edge.py admin FILE`: one request, one JSON line; 0, or 1 with `{"error": ...}`."""
    os.umask(0o077)
    try:
        if len(arguments) != 1:
            raise AdminError("usage: edge.py admin FILE")
        request = read_admin_request(Path(arguments[0]))
        people = People(Path(os.environ.get("OCC_EDGE_TEAM_DB", DEFAULT_TEAM_DB)))
        try:
            answer = apply_admin(people, request, time.time())
        finally:
            people.close()
    except AdminError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    except (OSError, sqlite3.Error) as exc:
        print(json.dumps({"error": f"the database: {exc}"}), flush=True)
        return 1
    print(json.dumps(answer), flush=True)
    return 0


def single_admin_main(arguments: Sequence[str]) -> int:
    """`edge.py single-admin FILE`: one request of the host about single-user mode's
    sessions, log or second factor (edge_single.py), one JSON line; 0, or 1 with
    `{"error": ...}`."""
    os.umask(0o077)
    try:
        if len(arguments) != 1:
            raise AdminError("usage: edge.py single-admin FILE")
        request = read_admin_request(Path(arguments[0]))
        guard = Guard(
            Path(os.environ.get("OCC_EDGE_HASH_FILE", DEFAULT_HASH_FILE)),
            "",
            Path(os.environ.get("OCC_EDGE_STATE_DIR", DEFAULT_STATE_DIR)),
        )
        if guard.records is None:
            raise AdminError("cannot open the records of the state directory")
        try:
            answer = edge_single.apply_admin(
                request,
                sessions=guard._sessions,
                generation=guard._generation_locked(),
                records=guard.records,
                now=time.time(),
                max_lines=MAX_LOG_LINES,
            )
        finally:
            guard.records.close()
    except (AdminError, edge_single.SingleAdminError) as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    except (OSError, sqlite3.Error) as exc:
        print(json.dumps({"error": f"the records: {exc}"}), flush=True)
        return 1
    print(json.dumps(answer), flush=True)
    return 0


def main() -> None:
    if sys.argv[1:2] == ["admin"]:
        sys.exit(admin_main(sys.argv[2:]))
    if sys.argv[1:2] == ["single-admin"]:
        sys.exit(single_admin_main(sys.argv[2:]))
    address = listen_address(os.environ.get("OCC_EDGE_LISTEN", "127.0.0.1:4097"))
    state = os.environ.get("OCC_EDGE_STATE_DIR")
    os.umask(0o077)  # whatever the edge makes is its own
    team_db = os.environ.get("OCC_EDGE_TEAM_DB")
    guard: Guard
    if team_db:
        team = TeamGuard(
            People(Path(team_db)),
            Path(state) if state else None,
            starter=Starter(os.environ.get("OCC_EDGE_STARTER")),
        )
        if team.idle_stop > 0:
            threading.Thread(target=team.stop_idle_forever, daemon=True).start()
        guard = team
    else:
        guard = Guard(
            Path(os.environ.get("OCC_EDGE_HASH_FILE", DEFAULT_HASH_FILE)),
            os.environ.get("OPENCODE_SERVER_USERNAME", "opencode"),
            Path(state) if state else None,
        )
    server = serve_unix(guard, address) if isinstance(address, str) else serve(guard, *address)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Wait for connections without waking: the default half-second poll (which only
    # serves `shutdown()`, unused here; SIGTERM ends the wait at once) costs an idle
    # service measurable CPU over months.
    try:
        server.serve_forever(poll_interval=3600)
    finally:
        server.server_close()  # a unix socket's file goes with it


if __name__ == "__main__":
    main()
