"""Connect to the Docker engine the way the docker CLI does, and translate its failures.

docker-py (>= 7.2) already resolves `DOCKER_HOST`, then the current Docker context, then
the default socket; this module adds a timeout, an API version floor, and one place that
turns docker-py and socket exceptions into errors that say what to run.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opencode_cloud.docker.errors import (
    START_ENGINE_HINT,
    DaemonNotRunning,
    DockerError,
    DockerNotInstalled,
    DockerPermissionDenied,
    EngineTooOld,
    PortInUse,
)

if TYPE_CHECKING:
    import docker

DEFAULT_TIMEOUT = 60.0
# Docker 19.03. Everything the tool asks of the engine (mounts, health checks,
# no-new-privileges, restart policies) works from here on.
MIN_API_VERSION = "1.40"

_PORT_TAKEN = re.compile(
    r"port is already allocated|address already in use|bind for .* failed", re.IGNORECASE
)


def _api_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _describe_host() -> str:
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if os.environ.get("DOCKER_CONTEXT"):
        return f"the Docker context {os.environ['DOCKER_CONTEXT']!r}"
    return "unix:///var/run/docker.sock"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend([current.__cause__, current.__context__])
        stack.extend(arg for arg in current.args if isinstance(arg, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)


def connection_error(exc: BaseException) -> DockerError:
    """Turn a failure to reach the engine into the error that names its fix."""
    host = _describe_host()
    text = " ".join(str(cause) for cause in _causes(exc))
    if any(isinstance(c, PermissionError) for c in _causes(exc)) or "Permission denied" in text:
        return DockerPermissionDenied(
            f"Permission denied on the Docker socket ({host}).",
            "Add yourself to the docker group (`sudo usermod -aG docker $USER`, then log in "
            "again) or run with sudo.",
        )
    if (
        shutil.which("docker") is None
        and shutil.which("dockerd") is None
        and not os.environ.get("DOCKER_HOST")
    ):
        return DockerNotInstalled(
            "Docker is not installed.",
            "Install Docker Engine (https://docs.docker.com/engine/install/), "
            "or on Debian/Ubuntu run `sudo apt-get install docker.io`.",
        )
    return DaemonNotRunning(
        f"Cannot connect to the Docker daemon at {host}: it is not running.", START_ENGINE_HINT
    )


def _is_connection_failure(exc: BaseException) -> bool:
    import requests

    return any(
        isinstance(c, (requests.exceptions.ConnectionError, ConnectionError, FileNotFoundError))
        for c in _causes(exc)
    )


@contextmanager
def translate_errors(port: int | None = None) -> Iterator[None]:
    """Re-raise engine failures inside the block as `DockerError` subclasses.

    Errors that need context (which container, which image) are raised by the caller;
    this catches what can happen on any call: the daemon going away, a taken port.
    """
    import docker.errors
    import requests

    try:
        yield
    except DockerError:
        raise
    except docker.errors.APIError as exc:
        explanation = str(exc.explanation or exc)
        if _PORT_TAKEN.search(explanation):
            shown = f"Port {port}" if port is not None else "The port"
            raise PortInUse(
                f"{shown} is already in use.",
                "Stop what listens there, or choose another port with --port.",
            ) from exc
        raise DockerError(f"Docker engine error: {explanation}") from exc
    except (requests.exceptions.RequestException, docker.errors.DockerException, OSError) as exc:
        if _is_connection_failure(exc):
            raise connection_error(exc) from exc
        raise DockerError(f"Docker engine error: {exc}") from exc


class DockerClient:
    """A connected Docker engine.

    Attributes:
        docker: the docker-py client, for the operation modules of this package.
        api_version: the API version negotiated with the engine.
    """

    def __init__(self, base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Connect and check the engine answers with a recent enough API.

        Args:
            base_url: engine address (`unix://...`, `tcp://...`); by default the one the
                docker CLI would use (DOCKER_HOST, then the current context).
            timeout: seconds to wait for any one API call.

        Raises:
            DockerNotInstalled, DaemonNotRunning, DockerPermissionDenied, EngineTooOld.
        """
        import docker as docker_sdk

        try:
            if base_url:
                client = docker_sdk.DockerClient(
                    base_url=base_url, version="auto", timeout=int(timeout)
                )
            else:
                client = docker_sdk.from_env(timeout=int(timeout))
        except docker_sdk.errors.DockerException as exc:
            raise connection_error(exc) from exc
        self.docker: docker.DockerClient = client
        self.api_version: str = client.api.api_version
        if _api_tuple(self.api_version) < _api_tuple(MIN_API_VERSION):
            raise EngineTooOld(
                f"The Docker engine speaks API {self.api_version}; opencode-cloud needs "
                f"{MIN_API_VERSION} or newer (Docker 19.03+).",
                "Upgrade Docker Engine (https://docs.docker.com/engine/install/).",
            )

    def ping(self) -> bool:
        """Return True when the engine answers.

        Raises:
            DaemonNotRunning: when it does not.
        """
        with translate_errors():
            return bool(self.docker.ping())

    def close(self) -> None:
        self.docker.close()

    def __enter__(self) -> DockerClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
