"""Connect to the Docker engine the way the docker CLI does, and translate its failures.

docker-py (>= 7.2) already resolves `DOCKER_HOST`, then the current Docker context, then
the default socket; this module adds a timeout, an API version floor, and one place that
turns docker-py and socket exceptions into errors that say what to run.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

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
    import shutil

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


DEFAULT_SOCKET = "/var/run/docker.sock"


def _context_in_use() -> bool:
    """True when the docker CLI would talk to a non-default context (docker-py resolves it)."""
    if os.environ.get("DOCKER_CONTEXT", "default") != "default":
        return True
    config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    try:
        current = json.loads(config.read_text()).get("currentContext")
    except (OSError, ValueError, AttributeError):
        return False
    return bool(current) and current != "default"


def _local_socket(base_url: str | None) -> str | None:
    """The unix socket path to use directly, or None when docker-py must resolve the host."""
    url = base_url or os.environ.get("DOCKER_HOST") or ""
    if url.startswith("unix://"):
        return url[len("unix://") :]
    if url or _context_in_use():
        return None
    return DEFAULT_SOCKET


def _unix_http(
    socket_path: str,
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    timeout: float,
) -> tuple[int, bytes]:
    """One HTTP/1.1 exchange over a unix socket; returns (status, body).

    A few lines instead of `http.client`, whose import (with `email` and `ssl`) costs
    more than the whole exchange. `Connection: close` lets the answer end at EOF; a
    chunked body is decoded, anything else is taken as it comes.
    """
    lines = [f"{method} {url} HTTP/1.1", "Host: docker", "Connection: close"]
    lines += [f"Content-Length: {len(body or b'')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(request)
        received = []
        while chunk := sock.recv(65536):
            received.append(chunk)
    head, _, payload = b"".join(received).partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        raise ConnectionError(f"not an HTTP answer from {socket_path}: {status_line!r}") from None
    header = {
        name.strip().lower(): value.strip()
        for name, _, value in (field.partition(":") for field in fields)
    }
    if header.get("transfer-encoding", "").lower() == "chunked":
        payload = _dechunk(payload)
    return status, payload


def _dechunk(data: bytes) -> bytes:
    """The body of a `Transfer-Encoding: chunked` payload."""
    out = bytearray()
    position = 0
    while True:
        line_end = data.index(b"\r\n", position)
        size = int(data[position:line_end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        start = line_end + 2
        out += data[start : start + size]
        position = start + size + 2


@dataclass(frozen=True)
class Response:
    """An engine API answer: HTTP status and decoded JSON body (None when empty)."""

    status: int
    body: Any

    @property
    def message(self) -> str:
        if isinstance(self.body, dict) and self.body.get("message"):
            return str(self.body["message"])
        return str(self.body or f"HTTP {self.status}")


def raise_for_status(response: Response, port: int | None = None) -> None:
    """Turn an engine error answer into a `DockerError` (`PortInUse` for a taken port).

    Raises:
        PortInUse, DockerError: for any status of 400 and above.
    """
    if response.status < 400:
        return
    if _PORT_TAKEN.search(response.message):
        shown = f"Port {port}" if port is not None else "The port"
        raise PortInUse(
            f"{shown} is already in use.",
            "Stop what listens there, or choose another port with --port.",
        )
    raise DockerError(f"Docker engine error: {response.message}")


class DockerClient:
    """A connected Docker engine.

    Everyday calls (inspect, start, stop, volumes) go through `request`, which speaks the
    Engine API directly over the local unix socket: a command such as `occ status` then
    never imports docker-py (and requests), about 140 ms of start-up. Builds, pulls,
    container creation and log streams use docker-py (`docker`), imported on first use.
    Remote engines (`DOCKER_HOST=tcp://...`, `ssh://...`, Docker contexts) always go
    through docker-py, which resolves them the way the docker CLI does.

    Attributes:
        api_version: the API version negotiated with the engine.
    """

    def __init__(
        self,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        direct: bool = True,
    ) -> None:
        """Connect and check the engine answers with a recent enough API.

        Args:
            base_url: engine address (`unix://...`, `tcp://...`); by default the one the
                docker CLI would use (DOCKER_HOST, then the current context).
            timeout: seconds to wait for any one API call.
            direct: speak to a local unix socket directly (False: always docker-py).

        Raises:
            DockerNotInstalled, DaemonNotRunning, DockerPermissionDenied, EngineTooOld.
        """
        self.timeout = timeout
        self._base_url = base_url
        self._sdk: docker.DockerClient | None = None
        self._socket = _local_socket(base_url) if direct else None
        if self._socket is not None:
            self._api_prefix = ""
            version = self.request("GET", "/version")
            raise_for_status(version)
            self.api_version = str(version.body["ApiVersion"])
        else:
            self.api_version = self.docker.api.api_version
        self._api_prefix = f"/v{self.api_version}"
        if _api_tuple(self.api_version) < _api_tuple(MIN_API_VERSION):
            raise EngineTooOld(
                f"The Docker engine speaks API {self.api_version}; opencode-cloud needs "
                f"{MIN_API_VERSION} or newer (Docker 19.03+).",
                "Upgrade Docker Engine (https://docs.docker.com/engine/install/).",
            )

    @property
    def docker(self) -> docker.DockerClient:
        """The docker-py client (imported and created on first use)."""
        if self._sdk is None:
            import docker as docker_sdk

            try:
                if self._socket is not None:
                    self._sdk = docker_sdk.DockerClient(
                        base_url=f"unix://{self._socket}",
                        version=self.api_version,
                        timeout=int(self.timeout),
                    )
                elif self._base_url:
                    self._sdk = docker_sdk.DockerClient(
                        base_url=self._base_url, version="auto", timeout=int(self.timeout)
                    )
                else:
                    self._sdk = docker_sdk.from_env(timeout=int(self.timeout))
            except docker_sdk.errors.DockerException as exc:
                raise connection_error(exc) from exc
        return self._sdk

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        *,
        timeout: float | None = None,
        content_type: str = "application/json",
    ) -> Response:
        """One Engine API call; `path` without the version prefix (`/containers/x/json`).

        Args:
            query: query parameters; dicts and lists are sent as JSON (filters).
            body: JSON-encodable data, or bytes sent as they are with `content_type`.
            timeout: seconds for this call (default: the client's timeout).

        Raises:
            DaemonNotRunning, DockerPermissionDenied: the engine cannot be reached.
        """
        params = {
            key: json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            for key, value in (query or {}).items()
            if value is not None
        }
        url = self._api_prefix + path + ("?" + urlencode(params) if params else "")
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if data is not None else {}
        if self._socket is None:
            return self._sdk_request(method, url, data, headers, timeout)
        try:
            status, raw = _unix_http(
                self._socket, method, url, data, headers, timeout or self.timeout
            )
        except OSError as exc:
            raise connection_error(exc) from exc
        return Response(status, _decode(raw))

    def _sdk_request(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: dict[str, str],
        timeout: float | None,
    ) -> Response:
        api = self.docker.api
        with translate_errors():
            answer = api.request(
                method,
                api.base_url + url,
                data=data,
                headers=headers,
                timeout=timeout or self.timeout,
            )
        return Response(answer.status_code, _decode(answer.content))

    def ping(self) -> bool:
        """Return True when the engine answers.

        Raises:
            DaemonNotRunning: when it does not.
        """
        return self.request("GET", "/_ping").status == 200

    def close(self) -> None:
        if self._sdk is not None:
            self._sdk.close()

    def __enter__(self) -> DockerClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace").strip()
