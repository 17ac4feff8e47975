"""How requests reach the engine. Private to `client.py`, the only module that imports it.

Two transports answer the same `request` call:

- `SocketTransport` speaks HTTP/1.1 over the local unix socket in a few lines: a command
  such as `occ status` then never imports docker-py and requests (about 140 ms).
- `DockerPyTransport` goes through docker-py, which resolves remote engines
  (`DOCKER_HOST=tcp://...`, `ssh://...`, Docker contexts) the way the docker CLI does,
  and decodes the engine's streams (builds, pulls, logs).

Both turn "cannot reach the engine" into the error that names its cause; every answer the
engine gives, error or not, comes back as a `Response` for the client to judge.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opencode_cloud import http1
from opencode_cloud.docker.errors import (
    DaemonNotRunning,
    DockerError,
    DockerNotInstalled,
    DockerPermissionDenied,
    IncompleteAnswer,
    UnknownContext,
)
from opencode_cloud.http1 import AnswerCut

if TYPE_CHECKING:
    import docker

DEFAULT_SOCKET = "/var/run/docker.sock"


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


class Refused(Exception):
    """The engine answered a streaming call with an error status."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.message)
        self.response = response


def describe_host() -> str:
    """The engine the docker CLI would use, in words for an error message."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if os.environ.get("DOCKER_CONTEXT"):
        return f"the Docker context {os.environ['DOCKER_CONTEXT']!r}"
    return f"unix://{DEFAULT_SOCKET}"


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


def connection_error(
    exc: BaseException, host: str | None = None, address: EngineAddress | None = None
) -> DockerError:
    """Turn a failure to reach the engine into the error that names its cause; `address`
    says which setting chose the engine, for the hint."""
    host = host or describe_host()
    text = " ".join(str(cause) for cause in _causes(exc))
    if any(isinstance(c, PermissionError) for c in _causes(exc)) or "Permission denied" in text:
        return DockerPermissionDenied(host)
    if any(isinstance(c, AnswerCut) for c in _causes(exc)):
        return IncompleteAnswer(host)
    import shutil

    if (
        shutil.which("docker") is None
        and shutil.which("dockerd") is None
        and not os.environ.get("DOCKER_HOST")
    ):
        return DockerNotInstalled(host)
    address = address or EngineAddress()
    return DaemonNotRunning(host, chosen_by=address.chosen_by, context=address.context)


def docker_config_dir() -> Path:
    """The docker CLI's own folder (`DOCKER_CONFIG`, else ~/.docker): contexts live there."""
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def current_context() -> str | None:
    """The Docker context the docker CLI would use, when it is not the default one."""
    name = os.environ.get("DOCKER_CONTEXT")
    if not name:
        try:
            name = json.loads((docker_config_dir() / "config.json").read_text()).get(
                "currentContext"
            )
        except (OSError, ValueError, AttributeError):
            return None
    return str(name) if name and name != "default" else None


def context_endpoint(name: str) -> str | None:
    """The engine address of the Docker context `name` (`docker context inspect`'s
    Endpoints.docker.Host), or None when there is no such context."""
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = docker_config_dir() / "contexts" / "meta" / digest / "meta.json"
    try:
        data = json.loads(meta.read_text())
        return str(data["Endpoints"]["docker"]["Host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class EngineAddress:
    """Where the engine is, and which setting said so.

    Attributes:
        url: `unix://...`, `tcp://...`, `ssh://...`; empty for the default socket.
        chosen_by: `DOCKER_HOST`, `DOCKER_CONTEXT` or `docker context use` (the docker
            CLI's own configuration); None when given by the caller, or the default.
        context: The Docker context it comes from, if any.
    """

    url: str = ""
    chosen_by: str | None = None
    context: str | None = None

    @property
    def socket_path(self) -> str | None:
        """The unix socket to speak to directly, or None when docker-py must resolve the
        address (`tcp://`, `ssh://`)."""
        if self.url.startswith("unix://"):
            return self.url[len("unix://") :]
        return None if self.url else DEFAULT_SOCKET


def engine_address(base_url: str | None = None) -> EngineAddress:
    """The engine to use, as the docker CLI resolves it: `base_url`, else DOCKER_HOST,
    else the current Docker context's endpoint, else the default socket.

    Raises:
        UnknownContext: the current context (DOCKER_CONTEXT, or `docker context use`)
            does not exist; the docker CLI refuses it too, rather than guess an engine.
    """
    if base_url:
        return EngineAddress(base_url)
    if os.environ.get("DOCKER_HOST"):
        return EngineAddress(os.environ["DOCKER_HOST"], "DOCKER_HOST")
    name = current_context()
    if name is None:
        return EngineAddress()
    chosen_by = "DOCKER_CONTEXT" if os.environ.get("DOCKER_CONTEXT") else "docker context use"
    url = context_endpoint(name)
    if url is None:
        raise UnknownContext(name, chosen_by)
    return EngineAddress(url, chosen_by, name)


def decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace").strip()


# Names why the engine cannot be reached, from the exception a request met.
Explain = Callable[[BaseException], DockerError]


class SocketTransport:
    """HTTP/1.1 over a local unix socket, one connection per request."""

    def __init__(self, path: str, explain: Explain | None = None) -> None:
        self.path = path
        self._explain = explain or (lambda exc: connection_error(exc, f"unix://{path}"))

    def request(
        self, method: str, url: str, data: bytes | None, headers: dict[str, str], timeout: float
    ) -> Response:
        try:
            status, _, raw = _unix_http(self.path, method, url, data, headers, timeout)
        except OSError as exc:
            raise self._explain(exc) from exc
        return Response(status, decode(raw))

    def api_version(self, timeout: float) -> str | None:
        """The engine's API version from the header of its cheapest answer, `/_ping`
        (about 1 ms; `/version` asks containerd too and takes ten). None when the answer
        does not say."""
        try:
            status, header, _ = _unix_http(self.path, "GET", "/_ping", None, {}, timeout)
        except OSError as exc:
            raise self._explain(exc) from exc
        return header.get("api-version") if status == 200 else None

    def stream(
        self, method: str, url: str, headers: dict[str, str], timeout: float
    ) -> Iterator[bytes]:
        """The body of one answer in pieces as they arrive (chunked transfer decoded), for
        calls whose answer goes on for as long as something happens (a container's
        output followed until it ends).

        Raises:
            Refused: the engine answered with an error status.
        """
        request = _request_bytes(method, url, headers, None)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(self.path)
                sock.sendall(request)
                received = b""
                while b"\r\n\r\n" not in received:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
                status, header, body = _split_answer(received, self.path)
                pieces = _read_all(sock, body)
                if header.get("transfer-encoding", "").lower() == "chunked":
                    pieces = _dechunked(pieces)
                if status >= 400:
                    raise Refused(Response(status, decode(b"".join(pieces))))
                yield from pieces
        except OSError as exc:
            raise self._explain(exc) from exc


def _read_all(sock: socket.socket, first: bytes) -> Iterator[bytes]:
    if first:
        yield first
    while chunk := sock.recv(65536):
        yield chunk


ENGINE = "the engine"  # how errors name the other end


def _dechunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    return http1.dechunked(pieces, ENGINE)


def _split_answer(received: bytes, socket_path: str) -> tuple[int, dict[str, str], bytes]:
    return http1.split_answer(received, ENGINE, socket_path)


def _unix_http(
    socket_path: str,
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    timeout: float,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 exchange over a unix socket; returns (status, header fields, body)."""
    request = _request_bytes(method, url, headers, body)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        return http1.exchange(sock, request, ENGINE, socket_path)


def _request_bytes(method: str, url: str, headers: dict[str, str], body: bytes | None) -> bytes:
    return http1.request_bytes(method, url, headers, body, host="docker")


def dechunk(data: bytes) -> bytes:
    """The body of a whole `Transfer-Encoding: chunked` payload."""
    return http1.dechunk(data, ENGINE)


class DockerPyTransport:
    """docker-py's low-level API, created on first use."""

    def __init__(
        self,
        *,
        socket_path: str | None,
        base_url: str | None,
        version: str,
        timeout: float,
        explain: Explain | None = None,
    ) -> None:
        self._socket_path = socket_path
        self._base_url = base_url
        self._version = version
        self._timeout = timeout
        self._explain = explain or connection_error
        self._api: docker.APIClient | None = None

    @property
    def api(self) -> docker.APIClient:
        if self._api is None:
            import docker as docker_sdk

            try:
                if self._socket_path is not None:
                    url: str | None = f"unix://{self._socket_path}"
                else:
                    url = self._base_url
                if url:
                    self._api = docker_sdk.APIClient(
                        base_url=url, version=self._version, timeout=int(self._timeout)
                    )
                else:
                    self._api = docker_sdk.from_env(
                        version=self._version, timeout=int(self._timeout)
                    ).api
            except docker_sdk.errors.DockerException as exc:
                raise self._explain(exc) from exc
        return self._api

    @contextmanager
    def translated(self) -> Iterator[None]:
        """docker-py's exceptions inside the block become `Refused` or connection errors."""
        import docker.errors
        import requests

        try:
            yield
        except DockerError:
            raise
        except docker.errors.APIError as exc:
            status = exc.status_code or 500
            raise Refused(Response(status, {"message": str(exc.explanation or exc)})) from exc
        except (
            requests.exceptions.RequestException,
            docker.errors.DockerException,
            OSError,
        ) as exc:
            if any(
                isinstance(
                    c, (requests.exceptions.ConnectionError, ConnectionError, FileNotFoundError)
                )
                for c in _causes(exc)
            ):
                raise self._explain(exc) from exc
            raise DockerError(f"Docker engine error: {exc}") from exc

    def request(
        self, method: str, url: str, data: bytes | None, headers: dict[str, str], timeout: float
    ) -> Response:
        api = self.api
        with self.translated():
            answer = api.request(
                method, api.base_url + url, data=data, headers=headers, timeout=timeout
            )
        return Response(answer.status_code, decode(answer.content))

    def stream(self, call: Callable[[docker.APIClient], Iterator[Any]]) -> Iterator[Any]:
        """Items of a docker-py streaming call, with its exceptions translated."""
        with self.translated():
            yield from call(self.api)

    def api_version(self) -> str:
        with self.translated():
            return str(self.api.api_version)

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
