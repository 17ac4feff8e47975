"""A real OpenID Connect provider for the tests: the npm package oidc-provider (9.x), run
by node with tests/e2e/oidc/provider.mjs, behind a small proxy of the test's that can
alter what its token endpoint answers (the attacks a provider never makes by itself: a
tampered ID token, one for another audience, an expired one). The test holds the
provider's signing key, so the proxy signs such tokens with it where a test says so.

`Browser` is an HTTP client that keeps cookies and follows redirects one at a time, to
drive a sign-in from the door's button through the provider's login form and back.
"""

from __future__ import annotations

import fcntl
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from occ_helpers import free_port

OIDC_PROVIDER = "oidc-provider@9"
SCRIPT = Path(__file__).resolve().parent / "e2e" / "oidc" / "provider.mjs"
CLIENT_ID = "opencode-cloud-test"


def provider_dir() -> Path:
    """oidc-provider installed once per machine (npm), beside the opencode client the
    tests use, with the provider's script copied in (node resolves its imports there)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "opencode-cloud-test" / "oidc-provider-9"
    folder.mkdir(parents=True, exist_ok=True)
    with open(str(folder) + ".lock", "w") as lock:  # one install at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "node_modules" / "oidc-provider" / "package.json").is_file():
            (folder / "package.json").write_text('{"private": true}\n')
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", OIDC_PROVIDER],
                cwd=folder,
                check=True,
                capture_output=True,
                timeout=300,
            )
        shutil.copyfile(SCRIPT, folder / SCRIPT.name)
    return folder


def new_key() -> dict[str, Any]:
    """A private RSA signing key (JWK) with a kid of its own."""
    from authlib.jose import JsonWebKey  # type: ignore[import-untyped]

    key = JsonWebKey.generate_key("RSA", 2048, is_private=True)
    jwk = dict(key.as_dict(is_private=True))
    jwk.update(kid=secrets.token_hex(8), use="sig", alg="RS256")
    return jwk


def sign(claims: dict[str, Any], jwk: dict[str, Any], kid: str | None = None) -> str:
    """An ID token of `claims`, signed with `jwk` (the test's own use of authlib)."""
    from authlib.jose import JsonWebKey, jwt

    header = {"alg": "RS256", "kid": kid or jwk["kid"]}
    token = jwt.encode(header, claims, JsonWebKey.import_key(jwk))
    return token.decode() if isinstance(token, bytes) else str(token)


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (what the proxy changes)."""
    import base64

    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


class _Forward(BaseHTTPRequestHandler):
    server: Proxy

    def log_message(self, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        # The Host header goes along: the provider names its endpoints after it.
        skip = {"content-length", "connection", "accept-encoding"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        target = f"http://127.0.0.1:{self.server.upstream_port}{self.path}"
        request = urllib.request.Request(target, data=body, headers=headers, method=self.command)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        try:
            with opener.open(request, timeout=30) as answer:
                status, answer_headers, data = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            status, answer_headers, data = error.code, error.headers, error.read()
        path = urllib.parse.urlsplit(self.path).path
        alter = self.server.alter_token
        if path.endswith("/token") and status == 200 and alter is not None:
            self.server.alter_token = None  # one token response only
            data = json.dumps(alter(json.loads(data))).encode()
        self.send_response(status)
        for key, value in answer_headers.items():
            if key.lower() not in ("content-length", "connection", "transfer-encoding", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _forward


class Proxy(ThreadingHTTPServer):
    """The provider's public address: everything goes to oidc-provider, and the next
    token response goes through `alter_token` when a test sets it."""

    daemon_threads = True

    def __init__(self, host: str, port: int) -> None:
        super().__init__((host, port), _Forward)
        self.upstream_port = 0
        self.alter_token: Callable[[dict[str, Any]], dict[str, Any]] | None = None


@dataclass
class OidcProvider:
    """oidc-provider, its accounts, its key (rotated by `rotate`), and the proxy in front
    of it at `issuer`."""

    folder: Path
    host: str  # the address the door and the browser both reach it at
    redirect_uris: list[str]
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    key: dict[str, Any] = field(default_factory=new_key)
    process: subprocess.Popen[bytes] | None = None
    proxy: Proxy | None = None

    @property
    def issuer(self) -> str:
        assert self.proxy is not None
        return f"http://{self.host}:{self.proxy.server_address[1]}"

    def write_accounts(self) -> None:
        (self.folder / "accounts.json").write_text(json.dumps(self.accounts))

    def start(self) -> None:
        if self.proxy is None:
            self.proxy = Proxy(self.host, free_port())
            threading.Thread(target=self.proxy.serve_forever, daemon=True).start()
        port = free_port()
        self.proxy.upstream_port = port
        self.write_accounts()
        public = {k: v for k, v in self.key.items() if k in ("kty", "n", "e", "kid", "use", "alg")}
        assert public  # the provider gets the private key; its JWKS shows the public part
        config = {
            "issuer": self.issuer,
            "host": "127.0.0.1",
            "port": port,
            "accounts": str(self.folder / "accounts.json"),
            "jwks": {"keys": [self.key]},
            "client": {
                "client_id": CLIENT_ID,
                "client_secret": self.secret,
                "redirect_uris": self.redirect_uris,
                "response_types": ["code"],
                "grant_types": ["authorization_code"],
                "token_endpoint_auth_method": "client_secret_basic",
            },
        }
        path = self.folder / "provider.json"
        path.write_text(json.dumps(config))
        code = provider_dir()
        self.process = subprocess.Popen(
            ["node", str(code / SCRIPT.name), str(path)],
            cwd=code,
            stdout=subprocess.PIPE,
            stderr=open(self.folder / "provider.log", "ab"),  # noqa: SIM115
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert b"listening" in line, (self.folder / "provider.log").read_text()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def rotate(self) -> dict[str, Any]:
        """A new signing key (and kid): the provider is started again with it only."""
        old = self.key
        self.stop()
        self.key = new_key()
        self.start()
        return old

    def close(self) -> None:
        self.stop()
        if self.proxy is not None:
            self.proxy.shutdown()
            self.proxy.server_close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str
    url: str
    cookies: list[str] = field(default_factory=list)  # every Set-Cookie, in order

    @property
    def location(self) -> str:
        return urllib.parse.urljoin(self.url, self.headers.get("location", ""))


class Browser:
    """Cookies (Secure ones over http too: a browser keeps them on loopback) and one
    request at a time."""

    def __init__(self) -> None:
        policy = http.cookiejar.DefaultCookiePolicy(secure_protocols=("https", "wss", "http"))
        self.jar = http.cookiejar.CookieJar(policy)
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPCookieProcessor(self.jar),
            _NoRedirect(),
        )

    def open(self, url: str, form: dict[str, str] | None = None) -> Answer:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(url, data=data, headers={"Accept": "text/html"})
        try:
            with self.opener.open(request, timeout=30) as answer:
                status, headers, body = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            status, headers, body = error.code, error.headers, error.read()
        lowered = {k.lower(): v for k, v in headers.items()}
        cookies = headers.get_all("Set-Cookie") or []
        return Answer(status, lowered, body.decode(errors="replace"), url, cookies)

    def follow(self, url: str, stop: Callable[[str], bool]) -> Iterator[Answer]:
        """Each answer from `url` on, following redirects until one leads to a URL for
        which `stop` says yes (not opened) or no redirect comes."""
        answer = self.open(url)
        yield answer
        for _ in range(20):
            if answer.status not in (301, 302, 303, 307, 308):
                return
            if stop(answer.location):
                return
            answer = self.open(answer.location)
            yield answer

    def provider_login(self, start: str, login: str, *, stop: Callable[[str], bool]) -> Answer:
        """From the door's sign-in link to the provider's answer (the redirect to the
        door's callback, not opened): signs in as `login` on the provider's form."""
        last = list(self.follow(start, stop))[-1]
        if last.status == 200 and 'name="login"' in last.body:
            action = re.search(r'action="([^"]+)"', last.body)
            assert action is not None, last.body
            url = urllib.parse.urljoin(last.url, action.group(1))
            answer = self.open(url, {"prompt": "login", "login": login, "password": "any"})
            last = list(self.follow_answer(answer, stop))[-1]
        return last

    def follow_answer(self, answer: Answer, stop: Callable[[str], bool]) -> Iterator[Answer]:
        yield answer
        for _ in range(20):
            if answer.status not in (301, 302, 303, 307, 308) or stop(answer.location):
                return
            answer = self.open(answer.location)
            yield answer


def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
