"""Readiness: poll opencode's health endpoint until it answers, failing fast on a dead container.

Polling uses `http.client` from the standard library: no third-party import, it keeps
one short connection per probe, and it ignores `HTTP(S)_PROXY` variables, which must not
route a loopback probe through a corporate proxy.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opencode_cloud.docker.engine import Engine
from opencode_cloud.docker.errors import (
    ContainerExited,
    ContainerNotFound,
    DockerError,
    HealthTimeout,
)
from opencode_cloud.docker.models import ContainerInfo, ContainerStatus

if TYPE_CHECKING:
    import ssl

HEALTH_PATH = "/global/health"
SESSIONS_PATH = "/session"
DEFAULT_HEALTH_TIMEOUT = 60.0
DEFAULT_POLL_INTERVAL = 0.05
# One probe must not hang: Docker's port proxy accepts connections before opencode
# listens, and a probe stuck there would blow the whole wait.
PROBE_TIMEOUT = 1.0
# Asking the engine about the container costs a few milliseconds; once per this many
# seconds is enough to notice a crash long before any timeout.
STATE_CHECK_INTERVAL = 0.25
LOG_TAIL_LINES = 20


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


def health_url(host: str = "127.0.0.1", port: int = 3000) -> str:
    """The health endpoint of a service published on `host:port`."""
    return f"http://{host}:{port}{HEALTH_PATH}"


def basic_auth_header(username: str, password: str) -> str:
    """The value of an `Authorization` header for HTTP Basic auth."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def probe(
    url: str,
    username: str | None,
    password: str | None,
    timeout: float = PROBE_TIMEOUT,
    *,
    context: ssl.SSLContext | None = None,
) -> ProbeResult:
    """Ask the endpoint once; never raises for network trouble, it is reported instead.

    `context`: what an https URL's certificate must be signed by (see `tls.ssl_context`).
    """
    status, decoded, error = _get(url, username, password, timeout, context)
    return ProbeResult(status, decoded if isinstance(decoded, dict) else None, error)


def probe_sessions(
    base_url: str,
    username: str | None,
    password: str | None,
    timeout: float = PROBE_TIMEOUT * 5,
    *,
    context: ssl.SSLContext | None = None,
) -> str | None:
    """Ask opencode for its sessions, a call that reads its database: a health check that
    passes while the data cannot be read (after a version change opencode's schema does
    not match, say) is not a working service.

    Returns:
        None when the sessions are listed, else what went wrong, in words.
    """
    return list_sessions(base_url, username, password, timeout, context=context)[1]


def list_sessions(
    base_url: str,
    username: str | None,
    password: str | None,
    timeout: float = PROBE_TIMEOUT * 5,
    *,
    context: ssl.SSLContext | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """opencode's sessions (newest first, as it lists them), or what went wrong."""
    status, decoded, error = _get(base_url + SESSIONS_PATH, username, password, timeout, context)
    if status == 200 and isinstance(decoded, list):
        return [s for s in decoded if isinstance(s, dict)], None
    return [], _problem(status, decoded, error)


def read_session(
    base_url: str,
    session_id: str,
    username: str | None,
    password: str | None,
    timeout: float = PROBE_TIMEOUT * 5,
    *,
    context: ssl.SSLContext | None = None,
) -> str | None:
    """Read one session and its messages; None when both answer, else what went wrong."""
    for path in (f"{SESSIONS_PATH}/{session_id}", f"{SESSIONS_PATH}/{session_id}/message"):
        status, decoded, error = _get(base_url + path, username, password, timeout, context)
        if status != 200:
            return _problem(status, decoded, error)
    return None


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
    # Imported here: http.client pulls in the email package, which commands that never
    # probe (most of them) should not pay for at start-up.
    import http.client

    parts = urlsplit(url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=timeout
        )
    headers = {"Accept": "application/json", "Connection": "close"}
    if password is not None:
        headers["Authorization"] = basic_auth_header(username or "", password)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return None, None, str(exc) or type(exc).__name__
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw), ""
    except ValueError:
        return response.status, None, ""


def probe_health(
    url: str,
    username: str | None,
    password: str | None,
    timeout: float = PROBE_TIMEOUT,
    *,
    context: ssl.SSLContext | None = None,
) -> dict[str, Any] | None:
    """The endpoint's JSON (`{"healthy": true, "version": ...}`) when healthy, else None."""
    result = probe(url, username, password, timeout, context=context)
    return result.body if result.healthy else None


def log_tail(client: Engine, name: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The container's last output lines; empty when they cannot be read."""
    try:
        text = b"".join(client.container_logs(name, tail=lines)).decode("utf-8", "replace")
    except DockerError:
        return []
    return text.splitlines()[-lines:]


def _inspect(client: Engine, name: str) -> ContainerInfo:
    try:
        return client.inspect_container(name)
    except ContainerNotFound:
        raise ContainerNotFound(name, while_waiting=True) from None


def _exited(client: Engine, info: ContainerInfo, since: float) -> ContainerExited:
    # Docker clears the exit code when it restarts the container: the engine's record of
    # the last exit ("die" event) keeps it.
    code = info.exit_code if info.status is ContainerStatus.EXITED else None
    if code is None:
        code = client.last_exit_code(info.name, since)
    return ContainerExited(
        info.name,
        code,
        restarting=info.restarting or info.running,
        oom_killed=info.oom_killed,
        log_tail=log_tail(client, info.name),
    )


def wait_until_healthy(
    client: Engine,
    name: str,
    url: str,
    username: str | None,
    password: str | None,
    *,
    timeout: float = DEFAULT_HEALTH_TIMEOUT,
    interval: float = DEFAULT_POLL_INTERVAL,
    context: ssl.SSLContext | None = None,
) -> float:
    """Poll `url` until opencode answers healthy; return the seconds it took.

    Args:
        client: a connected engine, to notice a container that died.
        name: the container serving `url`.
        url: the health endpoint as published on the host (see `health_url`).
        username, password: Basic auth credentials (opencode refuses every request
            without them when a password is set).
        timeout: seconds to wait in total.
        interval: seconds between probes.
        context: the TLS trust of an https URL.

    Raises:
        ContainerExited: the container stopped or restarted; `log_tail` holds its last
            log lines.
        ContainerNotFound: the container was removed meanwhile.
        HealthTimeout: no healthy answer within `timeout`.
    """
    started = time.monotonic()
    started_at = time.time()
    deadline = started + timeout
    restarts = _inspect(client, name).restart_count
    next_state_check = started + STATE_CHECK_INTERVAL
    last = ProbeResult(None, None, "not probed yet")
    while True:
        now = time.monotonic()
        last = probe(
            url,
            username,
            password,
            min(PROBE_TIMEOUT, max(0.05, deadline - now)),
            context=context,
        )
        if last.healthy:
            return time.monotonic() - started
        now = time.monotonic()
        if last.refused:
            # The edge holds the password's hash from the very start: a refusal will not
            # turn into a welcome, and asking again counts as guessing.
            break
        if now >= next_state_check:
            info = _inspect(client, name)
            if (
                info.status in (ContainerStatus.EXITED, ContainerStatus.DEAD)
                or info.restarting
                or info.restart_count > restarts
            ):
                raise _exited(client, info, started_at)
            next_state_check = now + STATE_CHECK_INTERVAL
        if now >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - now)))
    raise HealthTimeout(
        name,
        round(time.monotonic() - started, 1) if last.refused else timeout,
        last.describe(),
        refused=last.refused,
        log_tail=log_tail(client, name),
    )
