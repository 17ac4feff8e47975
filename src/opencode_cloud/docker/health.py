"""Readiness: poll opencode's health endpoint until it answers, failing fast on a dead container.

The probe is opencode's (`opencode.probe`); this loop adds what the engine knows: a
container that exited, restarts or is removed meanwhile ends the wait at once, with its
last log lines.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from opencode_cloud.docker.engine import Engine
from opencode_cloud.docker.errors import (
    ContainerExited,
    ContainerNotFound,
    DockerError,
    HealthTimeout,
)
from opencode_cloud.docker.models import ContainerInfo, ContainerStatus
from opencode_cloud.opencode import HEALTH_PATH, PROBE_TIMEOUT, ProbeResult, probe

if TYPE_CHECKING:
    import ssl

DEFAULT_HEALTH_TIMEOUT = 60.0
DEFAULT_POLL_INTERVAL = 0.05
# Asking the engine about the container costs a few milliseconds; once per this many
# seconds is enough to notice a crash long before any timeout.
STATE_CHECK_INTERVAL = 0.25
LOG_TAIL_LINES = 20


def health_url(host: str = "127.0.0.1", port: int = 3000) -> str:
    """The health endpoint of a service published on `host:port`."""
    return f"http://{host}:{port}{HEALTH_PATH}"


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
