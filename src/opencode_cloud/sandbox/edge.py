"""The edge's authentication service: login page, session cookies, HTTP Basic, guessing limits.

Runs in the sandbox beside Caddy (which terminates TLS and proxies) and opencode (which
listens on 127.0.0.1 only). Caddy asks `/__occ/verify` about every request
(`forward_auth`): an answer of 200 lets the request through to opencode, any other
answer (a redirect to the login page, 401, 429) goes back to the client as it is. The
pages under `/__occ/` (login, logout) are served here directly.

What it knows of the password is its bcrypt hash, in a file the tool writes into the
container (`occ start`, `occ auth rotate`); the plaintext stays on the host. A new hash
(a rotation) is noticed on the next request: every session made under the old one is
void from then on. Sessions are random tokens, kept as SHA-256 digests in a 0600 file in
the home volume, so they survive restarts and a re-created container (TLS switched on or
off) until they expire, the user logs out, or the password changes.

After `MAX_FAILURES` failed logins (form or Basic) from one address within `WINDOW`
seconds, every further attempt from it, right or wrong, gets 429 until the oldest
failure leaves the window; a valid session cookie (256 random bits, nothing to guess)
keeps working meanwhile. Only Python's standard library and Debian's `python3-bcrypt`.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import math
import os
import re
import secrets
import sys
import threading
import time
from base64 import b64decode
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

MAX_FAILURES = int(os.environ.get("OCC_EDGE_MAX_FAILURES", "10"))
WINDOW = float(os.environ.get("OCC_EDGE_WINDOW", "60"))
SESSION_SECONDS = int(os.environ.get("OCC_EDGE_SESSION_SECONDS", str(7 * 24 * 3600)))
PREFIX = "/__occ"
LOGIN_PATH = f"{PREFIX}/login"
LOGOUT_PATH = f"{PREFIX}/logout"
VERIFY_PATH = f"{PREFIX}/verify"
MAX_BODY = 16 * 1024
_LOOPBACK_HOST = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$", re.IGNORECASE)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Guard:
    """What the edge decides, without HTTP: credentials, sessions and failure counts."""

    def __init__(
        self,
        hash_file: Path,
        username: str,
        state_dir: Path | None = None,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
        session_seconds: int = SESSION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hash_file = hash_file
        self.username = username
        self.state_dir = state_dir
        self.max_failures = max_failures
        self.window = window
        self.session_seconds = session_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._hash = b""
        self.generation = ""  # digest of the current hash: sessions belong to one
        self._proven: set[str] = set()  # Basic credentials already checked, as digests
        self._failures: dict[str, deque[float]] = {}
        self._sessions: dict[str, dict[str, Any]] = self._load_sessions()

    # -- the hash ---------------------------------------------------------------------

    def _current_hash(self) -> bytes:
        """The hash file's content, read at every check (60 bytes): a rotation applies on
        the very next request."""
        try:
            content = self.hash_file.read_bytes().strip()
        except OSError:
            content = b""
        if content != self._hash:
            self._hash = content
            self.generation = hashlib.sha256(content).hexdigest()[:32] if content else ""
            self._proven.clear()
        return self._hash

    def _check(self, username: str, password: str) -> bool:
        import bcrypt  # Debian's python3-bcrypt

        stored = self._current_hash()
        if not stored:
            return False
        name_ok = hmac.compare_digest(username.encode(), self.username.encode())
        try:
            password_ok = bcrypt.checkpw(password.encode(), stored)
        except ValueError:
            return False
        return name_ok and password_ok

    # -- guessing limits ----------------------------------------------------------------

    def retry_after(self, address: str) -> int:
        """Seconds until `address` may try again; 0 when it may now."""
        with self._lock:
            now = self.clock()
            failures = self._failures.get(address)
            if not failures:
                return 0
            while failures and failures[0] <= now - self.window:
                failures.popleft()
            if not failures:
                del self._failures[address]
                return 0
            if len(failures) < self.max_failures:
                return 0
            return max(1, math.ceil(failures[0] + self.window - now))

    def _fail(self, address: str) -> None:
        with self._lock:
            if len(self._failures) > 10000:  # a flood of addresses: forget the oldest
                self._failures.pop(next(iter(self._failures)))
            self._failures.setdefault(address, deque()).append(self.clock())

    def attempt(self, address: str, username: str, password: str) -> str:
        """One login attempt: `ok`, `wrong` or `locked` (too many recent failures).

        A locked address gets `locked` whatever it sends, the right password included:
        answering from the memory of proven credentials would let a guesser test them
        there at full speed.
        """
        if self.retry_after(address):
            return "locked"
        with self._lock:
            self._current_hash()
            proven = _digest(f"{self.generation}\0{username}\0{password}") in self._proven
        if proven:
            return "ok"
        if self._check(username, password):
            with self._lock:
                if len(self._proven) > 1000:
                    self._proven.clear()
                self._proven.add(_digest(f"{self.generation}\0{username}\0{password}"))
            return "ok"
        self._fail(address)
        return "wrong"

    # -- sessions -----------------------------------------------------------------------

    def _sessions_file(self) -> Path | None:
        return self.state_dir / "sessions.json" if self.state_dir else None

    def _load_sessions(self) -> dict[str, dict[str, Any]]:
        path = self._sessions_file()
        if path is None:
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_sessions(self) -> None:
        path = self._sessions_file()
        if path is None:
            return
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(self._sessions, handle)
            os.replace(temp, path)
        except OSError as exc:  # sessions then last until the next restart only
            print(f"edge: cannot save sessions: {exc}", file=sys.stderr)

    def new_session(self) -> str:
        """A new session token (the cookie's value) for the current password."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._current_hash()
            now = self.clock()
            self._sessions = {
                k: v
                for k, v in self._sessions.items()
                if v.get("expires", 0) > now and v.get("generation") == self.generation
            }
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
                entry
                and entry.get("generation") == self.generation
                and entry.get("expires", 0) > self.clock()
            )

    def end_session(self, token: str) -> None:
        with self._lock:
            if self._sessions.pop(_digest(token), None) is not None:
                self._save_sessions()


# --------------------------------------------------------------------------- HTTP


def cookie_name(host: str) -> str:
    """One cookie per port: cookies do not tell ports apart, instances do."""
    port = host.rsplit(":", 1)[1] if re.search(r":\d+$", host) else "default"
    return f"occ_session_{port}"


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site, never another one."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if target.startswith(PREFIX):
        return "/"
    return target


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in - opencode-cloud</title>
<style>
body{{font-family:system-ui,sans-serif;background:#111;color:#eee;display:flex;
justify-content:center;align-items:center;min-height:100vh;margin:0}}
form{{background:#1c1c1c;padding:2rem;border-radius:8px;width:20rem}}
label{{display:block;margin:.8rem 0 .2rem}}
input{{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}}
button{{margin-top:1.2rem;width:100%;padding:.6rem;font-size:1rem}}
.msg{{color:#f88}}
</style></head><body>
<form method="post" action="{action}">
<h1>opencode</h1>
{message}
<input type="hidden" name="next" value="{next}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" value="{username}" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password"
 required autofocus>
<button type="submit">Sign in</button>
</form></body></html>
"""


class Handler(BaseHTTPRequestHandler):
    guard: Guard
    protocol_version = "HTTP/1.1"
    server_version = "opencode-cloud-edge"
    sys_version = ""

    # -- helpers ------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        pass  # Caddy and opencode log requests; failures are logged below

    def _address(self) -> str:
        forwarded = self.headers.get("X-Forwarded-For", "")
        last = forwarded.split(",")[-1].strip()
        return last or self.client_address[0]

    def _host(self) -> str:
        return self.headers.get("X-Forwarded-Host") or self.headers.get("Host") or ""

    def _secure(self) -> bool:
        """Whether the cookie gets `Secure`: always over HTTPS, and over plain HTTP on
        loopback (browsers treat localhost as secure); never over plain HTTP elsewhere,
        where a browser would drop it."""
        if self.headers.get("X-Forwarded-Proto", "http") == "https":
            return True
        return bool(_LOOPBACK_HOST.match(self._host()))

    def _cookie(self) -> str | None:
        name = cookie_name(self._host())
        for part in self.headers.get("Cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name and value:
                return value
        return None

    def _set_cookie(self, value: str, max_age: int) -> str:
        attributes = [
            f"{cookie_name(self._host())}={value}",
            "Path=/",
            f"Max-Age={max_age}",
            "HttpOnly",
            "SameSite=Lax",
        ]
        if self._secure():
            attributes.append("Secure")
        return "; ".join(attributes)

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Cache-Control", "no-store")
        if body or status not in (204, 304):
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(status, body, "application/json", headers)

    def _page(
        self,
        status: int,
        message: str = "",
        target: str = "/",
        username: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        text = PAGE.format(
            action=LOGIN_PATH,
            message=f'<p class="msg">{html.escape(message)}</p>' if message else "",
            next=html.escape(target, quote=True),
            username=html.escape(username, quote=True),
        )
        self._send(status, text.encode(), "text/html; charset=utf-8", headers)

    def _basic(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic" or not token:
            return None
        try:
            decoded = b64decode(token.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return ("", "\0invalid")
        username, _, password = decoded.partition(":")
        return username, password

    def _wants_page(self) -> bool:
        """A browser navigating (rather than a script, or the web UI's own requests)."""
        method = self.headers.get("X-Forwarded-Method", self.command)
        accept = self.headers.get("Accept", "")
        return method in ("GET", "HEAD") and "text/html" in accept

    # -- routes -------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == VERIFY_PATH:
            self._verify()
        elif path == LOGIN_PATH:
            query = parse_qs(urlsplit(self.path).query)
            target = safe_next((query.get("next") or ["/"])[0])
            token = self._cookie()
            if token and self.guard.session_valid(token):
                self._send(303, headers={"Location": target})
            else:
                message = "You are signed out." if "signed_out" in query else ""
                self._page(200, message, target, self.guard.username)
        elif path == LOGOUT_PATH:
            self._logout()
        else:
            self._json(404, "not found")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path == LOGIN_PATH:
            self._login()
        elif path == LOGOUT_PATH:
            self._logout()
        else:
            self._json(404, "not found")

    def _verify(self) -> None:
        """Caddy's question about one request: 200 lets it through."""
        token = self._cookie()
        if token and self.guard.session_valid(token):
            self._send(200)
            return
        credentials = self._basic()
        if credentials is not None:
            outcome = self.guard.attempt(self._address(), *credentials)
            if outcome == "ok":
                self._send(200)
            elif outcome == "locked":
                wait = self.guard.retry_after(self._address())
                self._json(
                    429, "too many failed logins; try again later", {"Retry-After": str(wait)}
                )
            else:
                print(f"edge: failed login from {self._address()}", file=sys.stderr, flush=True)
                self._json(401, "wrong user name or password", self._challenge())
            return
        if self._wants_page():
            target = safe_next(self.headers.get("X-Forwarded-Uri", "/"))
            self._send(303, headers={"Location": f"{LOGIN_PATH}?next={quote(target, safe='/')}"})
            return
        self._json(401, "sign in first", self._challenge())

    def _challenge(self) -> dict[str, str]:
        """Scripts get the Basic challenge; the web UI's own requests do not (a browser
        would pop up its password dialog over the page)."""
        if self.headers.get("Sec-Fetch-Mode"):
            return {}
        return {"WWW-Authenticate": 'Basic realm="opencode-cloud", charset="UTF-8"'}

    def _login(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._json(413, "request too large")
            return
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        username = (form.get("username") or [""])[0]
        password = (form.get("password") or [""])[0]
        target = safe_next((form.get("next") or ["/"])[0])
        outcome = self.guard.attempt(self._address(), username, password)
        if outcome == "ok":
            token = self.guard.new_session()
            self._send(
                303,
                headers={
                    "Location": target,
                    "Set-Cookie": self._set_cookie(token, self.guard.session_seconds),
                },
            )
        elif outcome == "locked":
            wait = self.guard.retry_after(self._address())
            self._page(
                429,
                f"Too many failed sign-ins. Try again in {wait} seconds.",
                target,
                username,
                {"Retry-After": str(wait)},
            )
        else:
            print(f"edge: failed login from {self._address()}", file=sys.stderr, flush=True)
            self._page(401, "Wrong user name or password.", target, username)

    def _logout(self) -> None:
        if self.command == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(min(length, MAX_BODY))
        token = self._cookie()
        if token:
            self.guard.end_session(token)
        self._send(
            303,
            headers={
                "Location": f"{LOGIN_PATH}?signed_out=1",
                "Set-Cookie": self._set_cookie("", 0),
            },
        )


def serve(guard: Guard, host: str, port: int) -> ThreadingHTTPServer:
    """A server for `guard` on host:port (not yet serving: call serve_forever)."""
    handler = type("BoundHandler", (Handler,), {"guard": guard})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main() -> None:
    host, _, port = os.environ.get("OCC_EDGE_LISTEN", "127.0.0.1:4097").rpartition(":")
    state = os.environ.get("OCC_EDGE_STATE_DIR")
    guard = Guard(
        Path(os.environ.get("OCC_EDGE_HASH_FILE", "/run/opencode-cloud/password.bcrypt")),
        os.environ.get("OPENCODE_SERVER_USERNAME", "opencode"),
        Path(state) if state else None,
    )
    server = serve(guard, host, int(port))
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Wait for connections without waking: the default half-second poll (which only
    # serves `shutdown()`, unused here; SIGTERM ends the wait at once) costs an idle
    # service measurable CPU over months.
    server.serve_forever(poll_interval=3600)


if __name__ == "__main__":
    main()
