"""opencode itself, as the tool meets it: the one module that knows how opencode works.

Everything else treats opencode as a server in a container. What the tool assumes about
that server is written here, so that a release which changes it (opencode 2.x changed how
its server starts and how it checks credentials) means changing this one module:

- **How its server starts.** The image's entrypoint (`sandbox/entrypoint.sh`, which keeps
  the shell side) runs `SERVER_COMMAND` as the runtime user, in the projects folder,
  listening on 127.0.0.1:`INTERNAL_PORT` inside the container only, with the variables
  of `SERVER_ENV`; the image's health check asks `HEALTH_PATH` there.
- **How it is authenticated.** HTTP Basic: `USERNAME_ENV` names the user and
  `PASSWORD_ENV` holds an internal password, made at every start, that only the edge in
  front of opencode knows. The edge checks the service password and passes requests on
  with the internal one, so the tool's own requests (`Server`) send the service password
  the same way, as HTTP Basic.
- **Where it keeps its data.** The runtime user's XDG folders: `DATA_DIR` (sessions,
  provider credentials), `STATE_DIR` (prompt history) and `CONFIG_DIR` (its
  configuration). `docker.volume` mounts a volume at each; a new release may rewrite
  what they hold (`MIGRATED`), which is what an update snapshots first.
- **How it is asked whether it works.** `GET HEALTH_PATH` answers
  `{"healthy": true, "version": ...}`; `GET SESSIONS_PATH` lists the sessions, a call
  that reads its database (a health check alone passes on data a release cannot read);
  `SESSIONS_PATH/ID` and `SESSIONS_PATH/ID/message` read one.
- **Where it keeps provider keys.** Its auth store, `AUTH_FILE` (0600, in the data volume),
  written through its API: `PUT AUTH_PATH/ID` with `api_key_auth(key)`, `DELETE` to
  remove. A custom OpenAI-compatible provider is also an entry of its global
  configuration (`custom_provider`, `PATCH GLOBAL_CONFIG_PATH`), without the key: opencode
  hands the stored key to the provider as its API key. Its API can add to the
  configuration, not take from it: a custom provider is taken out of `GLOBAL_CONFIG_FILES`
  themselves. Providers are read once per project, so after a change `POST DISPOSE_PATH`
  has them read again.

Requests speak HTTP/1.1 on a socket of their own (`http1`; `http.client` for https): no
third-party import, one short connection per request, and no `HTTP(S)_PROXY`, which must
not route a loopback probe through a corporate proxy.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opencode_cloud.defaults import RUNTIME_HOME

if TYPE_CHECKING:
    import ssl

# -- how its server starts ---------------------------------------------------------------

INTERNAL_PORT = 4096
SERVER_COMMAND = ("opencode", "web", "--hostname", "127.0.0.1", "--port", str(INTERNAL_PORT))
USERNAME_ENV = "OPENCODE_SERVER_USERNAME"
PASSWORD_ENV = "OPENCODE_SERVER_PASSWORD"
# The variables opencode reads, and why each is set (by the image or the entrypoint).
SERVER_ENV: Mapping[str, str] = {
    USERNAME_ENV: "the user name of HTTP Basic (the container's environment, from the tool)",
    PASSWORD_ENV: "the password of HTTP Basic: internal, made at each start, known to the edge",
    "OPENCODE_TEST_HOME": "where opencode takes its home to be: the projects folder, so the "
    "web UI's Open project dialog lists the projects ($HOME stays the real home)",
    "OPENCODE_DISABLE_AUTOUPDATE": "the tool owns upgrades: opencode never replaces itself",
    "BUN_GC_TIMER_DISABLE": "no extra garbage collections while idle, unless the user set "
    "BUN_GC_TIMER_INTERVAL",
}

# -- where it keeps its data -------------------------------------------------------------

DATA_DIR = f"{RUNTIME_HOME}/.local/share/opencode"
STATE_DIR = f"{RUNTIME_HOME}/.local/state/opencode"
CONFIG_DIR = f"{RUNTIME_HOME}/.config"
# What a release may migrate when it first starts on the data of an older one.
MIGRATED = (DATA_DIR, STATE_DIR, CONFIG_DIR)

# -- how it is asked whether it works -----------------------------------------------------

HEALTH_PATH = "/global/health"
SESSIONS_PATH = "/session"
# One request must not hang: Docker's port proxy accepts connections before opencode
# listens, and a request stuck there would blow a whole wait.
PROBE_TIMEOUT = 1.0
# Listing or reading sessions reads the database: a slower answer than health.
SESSION_TIMEOUT = PROBE_TIMEOUT * 5


# -- where it keeps provider keys ----------------------------------------------------------

AUTH_FILE = f"{DATA_DIR}/auth.json"
AUTH_PATH = "/auth"
GLOBAL_CONFIG_PATH = "/global/config"
DISPOSE_PATH = "/global/dispose"
# The files of its global configuration, in the order it reads them (a later one wins).
GLOBAL_CONFIG_FILES = tuple(
    f"{CONFIG_DIR}/opencode/{name}" for name in ("config.json", "opencode.json", "opencode.jsonc")
)
# The package opencode bundles for any OpenAI-compatible API.
CUSTOM_PROVIDER_PACKAGE = "@ai-sdk/openai-compatible"
# Provider ids opencode knows without a configuration of its own, and the variable each
# reads its key from (a key set with `occ config env` is found by this name). Its full
# list comes from models.dev, which is not always reachable: these are the common ones.
KNOWN_PROVIDERS: Mapping[str, str] = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
    "google": "GOOGLE_GENERATIVE_AI_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "groq": "GROQ_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "xai": "XAI_API_KEY",
    "togetherai": "TOGETHER_API_KEY",
    "fireworks-ai": "FIREWORKS_API_KEY",
    "cerebras": "CEREBRAS_API_KEY",
    "perplexity": "PERPLEXITY_API_KEY",
    "opencode": "OPENCODE_API_KEY",
}


def api_key_auth(key: str) -> bytes:
    """The body of `PUT AUTH_PATH/ID` that stores an API key."""
    return json.dumps({"type": "api", "key": key}).encode()


def custom_provider(base_url: str, models: tuple[str, ...], name: str) -> dict[str, Any]:
    """A custom OpenAI-compatible provider as opencode's configuration describes it: its
    base URL and models, never its key (that is in the auth store)."""
    return {
        "npm": CUSTOM_PROVIDER_PACKAGE,
        "name": name,
        "options": {"baseURL": base_url},
        "models": {model: {"name": model, "tool_call": True} for model in models},
    }


def basic_auth_header(username: str, password: str) -> str:
    """The value of an `Authorization` header for HTTP Basic auth."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


@dataclass(frozen=True)
class ProbeResult:
    """One answer (or its absence) from the health endpoint."""

    status: int | None
    body: dict[str, Any] | None
    error: str = ""

    @property
    def healthy(self) -> bool:
        return self.status == 200 and bool(self.body and self.body.get("healthy"))

    @property
    def version(self) -> str | None:
        """The opencode release that answered healthy, when it said."""
        version = (self.body or {}).get("version") if self.healthy else None
        return str(version) if version else None

    @property
    def state(self) -> str:
        """`healthy`, `unauthorized` (401, 429), `unhealthy` (another answer) or `unreachable`."""
        if self.healthy:
            return "healthy"
        if self.status is None:
            return "unreachable"
        return "unauthorized" if self.refused else "unhealthy"

    @property
    def refused(self) -> bool:
        """The edge refused the credentials (401), or refuses every attempt for a while
        after too many wrong ones (429)."""
        return self.status in (401, 429)

    def describe(self) -> str:
        if self.status is None:
            return self.error or "no answer"
        if self.status == 401:
            return "HTTP 401: the credentials were refused"
        if self.status == 429:
            return "HTTP 429: too many wrong passwords from this address; locked for a minute"
        return f"HTTP {self.status}"


def probe(
    url: str,
    username: str | None,
    password: str | None,
    timeout: float = PROBE_TIMEOUT,
    *,
    context: ssl.SSLContext | None = None,
) -> ProbeResult:
    """Ask the health endpoint at `url` once; never raises for network trouble, it is
    reported instead.

    `context`: what an https URL's certificate must be signed by (see `tls.ssl_context`).
    """
    status, decoded, error = _get(url, username, password, timeout, context)
    return ProbeResult(status, decoded if isinstance(decoded, dict) else None, error)


@dataclass(frozen=True)
class Server:
    """opencode's HTTP API at `base_url` (the edge in front of it), asked with the service's
    credentials."""

    base_url: str
    username: str | None
    password: str | None
    # What an https URL's certificate must be signed by.
    context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    @property
    def health_url(self) -> str:
        return self.base_url + HEALTH_PATH

    def health(self, timeout: float = PROBE_TIMEOUT) -> ProbeResult:
        """One request to the health endpoint."""
        return probe(self.health_url, self.username, self.password, timeout, context=self.context)

    def sessions(self, timeout: float = SESSION_TIMEOUT) -> tuple[list[dict[str, Any]], str | None]:
        """opencode's sessions (newest first, as it lists them), or what went wrong."""
        status, decoded, error = self._get(SESSIONS_PATH, timeout)
        if status == 200 and isinstance(decoded, list):
            return [s for s in decoded if isinstance(s, dict)], None
        return [], _problem(status, decoded, error)

    def session_problem(self, timeout: float = SESSION_TIMEOUT) -> str | None:
        """What is wrong with the session API (a call that reads opencode's database), or
        None when it lists the sessions: a health check that passes while the data cannot
        be read (after a version change the schema does not match, say) is not a working
        service."""
        return self.sessions(timeout)[1]

    def read_session(self, session_id: str, timeout: float = SESSION_TIMEOUT) -> str | None:
        """Read one session and its messages; None when both answer, else what went wrong."""
        for path in (f"{SESSIONS_PATH}/{session_id}", f"{SESSIONS_PATH}/{session_id}/message"):
            status, decoded, error = self._get(path, timeout)
            if status != 200:
                return _problem(status, decoded, error)
        return None

    def _get(self, path: str, timeout: float) -> tuple[int | None, Any, str]:
        return _get(self.base_url + path, self.username, self.password, timeout, self.context)


def _problem(status: int | None, decoded: Any, error: str) -> str:
    """An answer that is not the one wanted, in words."""
    if status is None:
        return error or "no answer"
    if isinstance(decoded, dict):
        data = decoded.get("data")
        message = data.get("message") if isinstance(data, dict) else None
        name = decoded.get("name")
        if message or name:
            return f"HTTP {status}: {' '.join(str(p) for p in (name, message) if p)}"
    return f"HTTP {status}"


def _get(
    url: str,
    username: str | None,
    password: str | None,
    timeout: float,
    context: ssl.SSLContext | None = None,
) -> tuple[int | None, Any, str]:
    """One GET with Basic auth: (status or None, decoded JSON or None, error text)."""
    parts = urlsplit(url)
    headers = {"Accept": "application/json"}
    if password is not None:
        headers["Authorization"] = basic_auth_header(username or "", password)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    host = parts.hostname or "127.0.0.1"
    try:
        if parts.scheme == "https":
            status, raw = _https_get(host, parts.port, path, headers, timeout, context)
        else:  # imported here: most commands never ask opencode
            import socket

            from opencode_cloud import http1

            request = http1.request_bytes("GET", path, headers, None, host=parts.netloc)
            # An ASCII name in bytes: as text, the socket module loads the IDNA codec (~1 ms).
            name: Any = host.encode() if host.isascii() else host
            with socket.create_connection((name, parts.port or 80), timeout=timeout) as sock:
                status, _, raw = http1.exchange(sock, request, "opencode", url)
    except OSError as exc:
        return None, None, str(exc) or type(exc).__name__
    try:
        return status, json.loads(raw), ""
    except ValueError:
        return status, None, ""


def _https_get(
    host: str,
    port: int | None,
    path: str,
    headers: dict[str, str],
    timeout: float,
    context: ssl.SSLContext | None,
) -> tuple[int, bytes]:
    """One GET through TLS, with `http.client` (the TLS handshake loads `ssl` anyway)."""
    import http.client

    connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        connection.request("GET", path, headers={**headers, "Connection": "close"})
        response = connection.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as exc:
        raise ConnectionError(str(exc) or type(exc).__name__) from exc
    finally:
        connection.close()
