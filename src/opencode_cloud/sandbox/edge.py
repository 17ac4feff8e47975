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

The numbers can be set with `OCC_EDGE_` variables (below). Only Python's standard library
and Debian's `python3-bcrypt`.
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
import stat
import sys
import threading
import time
import unicodedata
from base64 import b64decode
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

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
MAX_BODY = 16 * 1024
MAX_HEAD = 64 * 1024  # request line and headers (browsers' cookies add up)
MAX_HEADERS = 200
MAX_STATE_BYTES = 1 << 20  # a sessions file larger than this was not written here
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
_SESSION_KEY = re.compile(r"[0-9a-f]{64}")
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


def _read_small_file(path: Path, limit: int) -> bytes | None:
    """A regular file's content, or None when it is missing, not a regular file (a FIFO
    would block), or longer than `limit` bytes (it was not written here)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        content = handle.read(limit + 1)
    return content if len(content) <= limit else None


def _write_private_file(path: Path, content: bytes) -> None:
    """Write `content` to `path` (0600, in a 0700 directory) whole or not at all."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.parent.stat().st_mode) & 0o077:
        path.parent.chmod(0o700)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def _valid_session(key: Any, entry: Any) -> bool:
    if not (isinstance(key, str) and _SESSION_KEY.fullmatch(key) and isinstance(entry, dict)):
        return False
    expires, generation = entry.get("expires"), entry.get("generation")
    return (
        isinstance(expires, int | float)
        and not isinstance(expires, bool)
        and math.isfinite(expires)
        and isinstance(generation, str)
        and len(generation) <= 64
    )


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
        self._sessions: dict[str, dict[str, Any]] = self._load_sessions()

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

    def _proof(self, username: str, password: str) -> bytes:
        """What the memory of proven credentials keeps of them. Called with the lock held."""
        text = f"{self.generation}\0{username}\0{password}".encode("utf-8", "surrogatepass")
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

    def _limits(self, address: str, device: str | None) -> list[tuple[str, int]]:
        """The buckets an attempt counts in: its device's own, or its address's and the
        one of all attempts without a device cookie."""
        device_id = self.device_id(device) if device else None
        if device_id:
            return [(f"device {device_id}", self.max_failures)]
        return [
            (f"address {address}", self.max_failures),
            ("untrusted", self.max_untrusted_failures),
        ]

    def retry_after(self, address: str, device: str | None = None) -> int:
        """Seconds until `address` (or the device) may try again; 0 when it may now."""
        return self.limiter.wait(self._limits(address, device))

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
        limits = self._limits(address, device)
        with self._lock:
            stored = self._current_hash()
            generation = self.generation
            proof = self._proof(username, password)
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
                self._current_hash()
                if check.outcome == "ok" and self.generation != generation:
                    check.outcome = "wrong"  # rotated meanwhile: the old password is void
                if check.outcome == "ok":
                    if len(self._proven) > 1000:
                        self._proven.clear()
                    self._proven.add(proof)
                self.limiter.settle([key for key, _ in limits], failed=check.outcome != "ok")
            check.done.set()
        return check.outcome, generation

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

    def _device_mac(self, nonce: str) -> str:
        text = f"device\0{nonce}".encode()
        return hmac.new(self._device_key, text, "sha256").hexdigest()[:32]

    def new_device(self) -> str:
        """A device cookie's value: a random name and its signature. It says that this
        browser signed in here before, and gives it a bucket of its own; it lets nobody
        in. So it outlives a new password (the owner, after `occ auth rotate`, still has
        a bucket no guesser fills), and is void only with the key that signed it."""
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._device_mac(nonce)}"

    def device_id(self, token: str) -> str | None:
        """The name of the device, when `token` is one of our device cookies; else None."""
        nonce, _, mac = token.partition(".")
        if not _RANDOM.fullmatch(nonce):
            return None
        # As bytes: a cookie may hold any Latin-1 character, compare_digest takes ASCII.
        if hmac.compare_digest(mac.encode("latin-1", "replace"), self._device_mac(nonce).encode()):
            return nonce
        return None

    # -- sessions -----------------------------------------------------------------------

    def _sessions_file(self) -> Path | None:
        return self.state_dir / "sessions.json" if self.state_dir else None

    def _load_sessions(self) -> dict[str, dict[str, Any]]:
        """The sessions kept in the state directory; whatever in that file is not one is
        left out (a file too large, or not JSON, counts as empty)."""
        path = self._sessions_file()
        content = _read_small_file(path, MAX_STATE_BYTES) if path else None
        if content is None:
            return {}
        try:
            data = json.loads(content)
        except (ValueError, RecursionError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            key: {"expires": float(entry["expires"]), "generation": entry["generation"]}
            for key, entry in data.items()
            if _valid_session(key, entry)
        }

    def _save_sessions(self) -> None:
        path = self._sessions_file()
        if path is None:
            return
        try:
            _write_private_file(path, json.dumps(self._sessions).encode())
        except OSError as exc:  # sessions then last until the next restart only
            print(f"edge: cannot save sessions: {exc}", file=sys.stderr)

    def new_session(self, generation: str) -> str | None:
        """A new session token (the cookie's value) for a sign-in checked against the
        password of `generation`; None when that password has been replaced since."""
        with self._lock:
            return self._new_session(generation)

    def sign_in(self, generation: str) -> tuple[str, str] | None:
        """A session and a device cookie for a sign-in checked against the password of
        `generation`, made together; None when that password has been replaced since."""
        with self._lock:
            session = self._new_session(generation)
            return None if session is None else (session, self.new_device())

    def _new_session(self, generation: str) -> str | None:
        """Called with the lock held: the hash read here and the session stamped with it
        cannot be told apart by a rotation."""
        self._current_hash()
        if not generation or generation != self.generation:
            return None
        token = secrets.token_urlsafe(32)
        now = self.clock()
        live = [
            (key, entry)
            for key, entry in self._sessions.items()
            if entry["expires"] > now and entry["generation"] == self.generation
        ]
        live.sort(key=lambda item: item[1]["expires"])
        self._sessions = dict(live[-(MAX_SESSIONS - 1) :])
        self._sessions[_digest(token)] = {
            "expires": now + self.session_seconds,
            "generation": self.generation,
        }
        self._save_sessions()
        return token

    def session_valid(self, token: str) -> bool:
        with self._lock:
            self._current_hash()
            entry = self._sessions.get(_digest(token))
            return bool(
                entry and entry["generation"] == self.generation and entry["expires"] > self.clock()
            )

    def end_session(self, token: str) -> None:
        with self._lock:
            if self._sessions.pop(_digest(token), None) is not None:
                self._save_sessions()


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
    headers = [*response.headers, ("Cache-Control", "no-store"), *SECURITY_HEADERS]
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
</style>"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in - opencode-cloud</title>
{style}</head><body>
<form method="post" action="{action}">
<h1>opencode</h1>
{message}
<input type="hidden" name="next" value="{next}">
<input type="hidden" name="csrf" value="{csrf}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" value="{username}" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password"
 required autofocus>
<button type="submit">Sign in</button>
</form></body></html>
"""

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
        return username, password

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
            username=html.escape(username, quote=True),
        )
        return self._html(status, text, headers or [])

    def _challenge(self) -> list[tuple[str, str]]:
        """Scripts get the Basic challenge; the web UI's own requests do not (a browser
        would pop up its password dialog over the page)."""
        if self.request.header("sec-fetch-mode"):
            return []
        return [("WWW-Authenticate", 'Basic realm="opencode-cloud", charset="UTF-8"')]

    def _refused(
        self, outcome: str, device: str | None = None
    ) -> tuple[int, str, list[tuple[str, str]]]:
        """Status, message and headers for an attempt that did not succeed."""
        if outcome == "locked":
            wait = self.guard.retry_after(self._address(), device)
            message = f"Too many failed sign-ins. Try again in {wait} seconds."
            return 429, message, [("Retry-After", str(wait))]
        if outcome == "busy":
            return 503, "Too many sign-ins at once. Try again in a moment.", [("Retry-After", "1")]
        print(f"edge: failed login from {self._address()}", file=sys.stderr, flush=True)
        return 401, "Wrong user name or password.", []

    # -- routes -------------------------------------------------------------------------

    def verify(self) -> Response:
        """Caddy's question about one request: 200 lets it through."""
        token = self._cookie("session")
        if token and self.guard.session_valid(token):
            if self._acts() and self._origin() == "foreign":
                return self._json(403, "changes and websockets only from this site's own pages")
            return Response(200)
        credentials = self._basic()
        if credentials is not None:
            device = self._cookie("device")
            outcome, _ = self.guard.attempt(self._address(), *credentials, device=device)
            if outcome == "ok":
                return Response(200)
            status, message, headers = self._refused(outcome, device)
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
        username, password = form.get("username", ""), form.get("password", "")
        target = safe_next(form.get("next"))
        if self._origin() == "foreign" or not self._csrf_ok(form):
            # Another site's form, or a page too old: nothing is checked or counted.
            message = "This form was out of date. Please sign in again."
            return self._page(403, message, target, username)
        device = self._cookie("device")
        outcome, generation = self.guard.attempt(self._address(), username, password, device)
        # Checked against a password replaced since: wrong now, as for any other attempt.
        made = self.guard.sign_in(generation) if outcome == "ok" else None
        if made is None:
            status, message, headers = self._refused(
                "wrong" if outcome == "ok" else outcome, device
            )
            return self._page(status, message, target, username, headers)
        session, new_device = made
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


def main() -> None:
    address = listen_address(os.environ.get("OCC_EDGE_LISTEN", "127.0.0.1:4097"))
    state = os.environ.get("OCC_EDGE_STATE_DIR")
    guard = Guard(
        Path(os.environ.get("OCC_EDGE_HASH_FILE", "/run/opencode-cloud/password.bcrypt")),
        os.environ.get("OPENCODE_SERVER_USERNAME", "opencode"),
        Path(state) if state else None,
    )
    os.umask(0o077)  # whatever the edge makes is its own
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
