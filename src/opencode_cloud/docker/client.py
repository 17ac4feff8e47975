"""The Docker engine, as typed calls: the one door between the tool and the engine.

`DockerClient` finds the engine the way the docker CLI does (DOCKER_HOST, then the
current Docker context, then the default socket), checks its API version, and offers
typed methods: inspect, create, start, stop, pause, remove, logs, archive upload and
download (streamed both ways), image inspect/tag/remove, build and pull streams, and
volume calls. Which transport serves a call (`transport.py`) stays private to it, and
`_check` is the one place that turns the engine's error answers into typed errors.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlencode

from opencode_cloud.docker.errors import (
    ContainerAlreadyExists,
    ContainerNotFound,
    ContainerRunning,
    DockerError,
    EngineTooOld,
    ImageNotFound,
    MissingPath,
    PortInUse,
    VolumeInUse,
)
from opencode_cloud.docker.models import (
    ContainerInfo,
    EngineInfo,
    ImageInfo,
    VolumeInfo,
    parse_container,
    parse_engine,
    parse_image,
    parse_volume,
)
from opencode_cloud.docker.transport import (
    DockerPyTransport,
    Refused,
    Response,
    SocketTransport,
    connection_error,
    describe_host,
    engine_address,
)

if TYPE_CHECKING:
    from opencode_cloud.docker.ssh import SshTarget, SshTunnel
    from opencode_cloud.docker.swarm import SwarmMembership, SwarmNode, SwarmService, SwarmTask

DEFAULT_TIMEOUT = 60.0
# Docker 19.03. Everything the tool asks of the engine (mounts, health checks,
# no-new-privileges, restart policies) works from here on.
MIN_API_VERSION = "1.40"
# The download of opencode is silent while it fetches about 60 MB; the engine's stream
# can pause for minutes, so the usual per-call timeout would abort a healthy build.
BUILD_HTTP_TIMEOUT = 3600
# Times a refused disk-usage count is asked again, a quarter second apart.
DISK_USAGE_RETRIES = 20
# A followed output may be silent this long (a helper listing a large volume).
FOLLOW_TIMEOUT = 3600.0
# Archive streams (backups) arrive and leave in pieces of at most this many bytes.
ARCHIVE_CHUNK_BYTES = 1 << 20

_PORT_TAKEN = re.compile(
    r"port is already allocated|address already in use|bind for .* failed", re.IGNORECASE
)
_PORT_IN_MESSAGE = re.compile(r":(\d{1,5})(?: failed|: bind)")


def _api_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _check(
    response: Response,
    *,
    container: str | None = None,
    image: str | None = None,
    volume: str | None = None,
) -> Response:
    """The one mapping from engine error answers to typed errors; returns `response` when
    it is not an error.

    Args:
        container, image, volume: what the call was about, for the error's fields.

    Raises:
        ContainerNotFound, ContainerAlreadyExists, ContainerRunning, ImageNotFound,
        VolumeInUse, PortInUse, DockerError.
    """
    if response.status < 400:
        return response
    message = response.message
    lowered = message.lower()
    if _PORT_TAKEN.search(message):
        port = _PORT_IN_MESSAGE.search(message)
        raise PortInUse(int(port.group(1)) if port else None)
    if response.status == 404:
        if container is not None and "no such container" in lowered:
            raise ContainerNotFound(container)
        if image is not None or "no such image" in lowered:
            raise ImageNotFound(image or message)
    if response.status == 409:
        if volume is not None:
            raise VolumeInUse(volume, [])
        if container is not None and "already in use" in lowered:
            raise ContainerAlreadyExists(container)
        if container is not None and "remove a running container" in lowered:
            raise ContainerRunning(container)
    raise DockerError(f"Docker engine error: {message}")


def _check_archive(response: Response, name: str, path: str) -> Response:
    """`_check` for the archive calls: a 404 that is not about the container is about the
    path inside it."""
    if response.status == 404 and "no such container" not in response.message.lower():
        raise MissingPath(name, path, path)
    return _check(response, container=name)


def loopback_for(address: str) -> str:
    """The address a client on the same machine uses for a service bound to `address`:
    a wildcard is reached on loopback."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(address, address)


def _tunnel_failure(tunnel: SshTunnel) -> Callable[[BaseException], DockerError]:
    """How a failed request through `tunnel` is explained: by what ssh knows."""

    def explain(exc: BaseException) -> DockerError:
        return tunnel.failure(exc)

    return explain


class DockerClient:
    """A connected Docker engine.

    Attributes:
        api_version: the API version negotiated with the engine.
        host: the engine's address, in words for messages.
        is_local: the engine runs on this machine: a bind mount of a path here mounts
            this very file (backups then read and write the volumes without streaming
            them through the API).
    """

    def __init__(
        self,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        direct: bool = True,
        tunnel: SshTunnel | None = None,
        local: bool | None = None,
    ) -> None:
        """Connect and check the engine answers with a recent enough API.

        Args:
            base_url: engine address (`unix://...`, `tcp://...`); by default the one the
                docker CLI would use (DOCKER_HOST, then the current context, then the
                default socket).
            timeout: seconds to wait for any one API call.
            direct: speak to a local unix socket directly (False: always docker-py).
            tunnel: an SSH connection to a remote engine (`ssh.py`); the client uses its
                socket, reaches the service's ports through it, and closes it.
            local: whether the engine runs on this machine (`is_local`); by default, when
                it is reached through a unix socket that is not an SSH tunnel's (the
                default one, DOCKER_HOST's, or a Docker context's: rootless Docker,
                Docker Desktop and colima give one).

        Raises:
            DockerNotInstalled, DaemonNotRunning, DockerPermissionDenied, EngineTooOld,
            UnknownContext (the current Docker context does not exist), and for a tunnel
            the `ssh.SshError` that names why the remote engine is unusable.
        """
        self.timeout = timeout
        self.tunnel = tunnel
        if tunnel is not None:
            base_url = f"unix://{tunnel.engine_socket}"
        address = engine_address(base_url)
        socket_path = address.socket_path
        self.host = f"unix://{socket_path}" if socket_path else (address.url or describe_host())
        explain: Callable[[BaseException], DockerError]
        if tunnel is not None:
            self.host = tunnel.target.url
            explain = _tunnel_failure(tunnel)
        else:
            host = self.host

            def explain(exc: BaseException) -> DockerError:
                return connection_error(exc, host, address)

        self._prefix = ""
        if local is None:
            local = socket_path is not None and tunnel is None
        self.is_local = local
        self._socket = SocketTransport(socket_path, explain) if socket_path and direct else None
        if self._socket is not None:
            self.api_version = self._socket.api_version(timeout) or str(
                _check(self._request("GET", "/version")).body["ApiVersion"]
            )
        self._sdk = DockerPyTransport(
            socket_path=socket_path,
            base_url=base_url,
            version=self.api_version if self._socket is not None else "auto",
            timeout=timeout,
            explain=explain,
        )
        if self._socket is None:
            self.api_version = self._sdk.api_version()
        self._prefix = f"/v{self.api_version}"
        if _api_tuple(self.api_version) < _api_tuple(MIN_API_VERSION):
            raise EngineTooOld(self.host, self.api_version, MIN_API_VERSION)

    # -- plumbing ---------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        *,
        timeout: float | None = None,
        content_type: str = "application/json",
    ) -> Response:
        params = {
            key: json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            for key, value in (query or {}).items()
            if value is not None
        }
        url = self._prefix + path + ("?" + urlencode(params) if params else "")
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if data is not None else {}
        transport = self._socket or self._sdk
        return transport.request(method, url, data, headers, timeout or self.timeout)

    def _stream(self, call: Any, **context: str) -> Iterator[Any]:
        try:
            yield from self._sdk.stream(call)
        except Refused as refused:
            _check(refused.response, **context)
            raise  # pragma: no cover (_check raises for every error status)
        except DockerError:
            self.check_connection()
            raise
        self.check_connection()

    def check_connection(self) -> None:
        """Raise if the connection to a remote engine has ended: a stream that stops
        because the link dropped looks, to the transport, like one that was done.

        Raises:
            ssh.ConnectionDropped: the SSH connection is gone.
        """
        if self.tunnel is None:
            return
        if self.tunnel.alive:
            self.ping()  # a link that has just dropped fails here (`_tunnel_failure`)
        if not self.tunnel.alive:
            raise self.tunnel.failure()

    def reach(self, address: str, port: int, local_port: int | None = None) -> tuple[str, int]:
        """Where this machine reaches `address:port` of the engine's host: the address
        itself for a local engine (a wildcard becomes loopback), a forwarded local port
        (`local_port`, else a free one) for a remote one, so a probe never lands on this
        machine's loopback by mistake.

        Raises:
            ssh.ForwardFailed, ssh.ConnectionDropped: for a remote engine.
        """
        address = loopback_for(address)
        if self.tunnel is None:
            return address, port
        return "127.0.0.1", self.tunnel.forward(address, port, local_port)

    @property
    def remote(self) -> SshTarget | None:
        """The SSH address of a remote engine; None for one reached otherwise."""
        return self.tunnel.target if self.tunnel is not None else None

    def info(self) -> EngineInfo:
        """The engine's version and the machine it runs on (CPUs, memory, data folder)."""
        info = _check(self._request("GET", "/info")).body or {}
        version = _check(self._request("GET", "/version")).body or {}
        return parse_engine(info, version)

    def ping(self) -> bool:
        """True when the engine answers.

        Raises:
            DaemonNotRunning: when it does not.
        """
        return self._request("GET", "/_ping").status == 200

    def close(self) -> None:
        self._sdk.close()
        if self.tunnel is not None:
            self.tunnel.close()

    def __enter__(self) -> DockerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- containers -------------------------------------------------------------------

    def inspect_container(self, name: str) -> ContainerInfo:
        """The engine's description of the container.

        Raises:
            ContainerNotFound: it does not exist.
        """
        response = _check(self._request("GET", f"{_c(name)}/json"), container=name)
        return parse_container(response.body)

    def find_container(self, name: str) -> ContainerInfo | None:
        """Like `inspect_container`, but None when it does not exist."""
        try:
            return self.inspect_container(name)
        except ContainerNotFound:
            return None

    def create_container(self, name: str, body: Mapping[str, Any]) -> str:
        """Create a container from an Engine API create body; returns its id.

        Raises:
            ContainerAlreadyExists, ImageNotFound, DockerError.
        """
        response = self._request("POST", "/containers/create", query={"name": name}, body=body)
        if response.status == 409:
            raise ContainerAlreadyExists(name)
        if response.status == 404:
            raise ImageNotFound(str(body.get("Image", "")))
        return str(_check(response, container=name).body["Id"])

    def start_container(self, name: str) -> None:
        """Start the container; a running one is left alone.

        Raises:
            ContainerNotFound, PortInUse.
        """
        _check(self._request("POST", f"{_c(name)}/start"), container=name)

    def stop_container(self, name: str, timeout: int) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; a stopped one is left alone.

        Raises:
            ContainerNotFound.
        """
        response = self._request(
            "POST", f"{_c(name)}/stop", query={"t": timeout}, timeout=timeout + self.timeout
        )
        _check(response, container=name)

    def restart_container(self, name: str, timeout: int) -> None:
        """Stop (killing after `timeout` seconds) and start again.

        Raises:
            ContainerNotFound, PortInUse.
        """
        response = self._request(
            "POST", f"{_c(name)}/restart", query={"t": timeout}, timeout=timeout + self.timeout
        )
        _check(response, container=name)

    def remove_container(self, name: str, *, force: bool = False) -> None:
        """Remove the container; its named volumes stay.

        Raises:
            ContainerNotFound, ContainerRunning (without `force`).
        """
        query = {"force": str(force).lower(), "v": "false"}
        _check(self._request("DELETE", _c(name), query=query), container=name)

    def rename_container(self, name: str, new_name: str) -> None:
        """Give the container another name.

        Raises:
            ContainerNotFound, ContainerAlreadyExists (`new_name` is taken).
        """
        response = self._request("POST", f"{_c(name)}/rename", query={"name": new_name})
        if response.status == 409:
            raise ContainerAlreadyExists(new_name)
        _check(response, container=name)

    def last_exit_code(self, name: str, since: float) -> int | None:
        """The exit code of the container's last exit since `since` (Unix time), from the
        engine's events; None when it has not exited since."""
        query = {
            "since": int(since) - 1,
            "until": int(time.time()) + 1,
            "filters": {"container": [name], "event": ["die"]},
        }
        body = _check(self._request("GET", "/events", query=query)).body
        lines = body.splitlines() if isinstance(body, str) else [json.dumps(body)] if body else []
        codes = []
        for line in lines:
            try:
                attributes = json.loads(line).get("Actor", {}).get("Attributes", {})
            except (ValueError, AttributeError):
                continue
            if str(attributes.get("exitCode", "")).lstrip("-").isdigit():
                codes.append(int(attributes["exitCode"]))
        return codes[-1] if codes else None

    def wait_container(self, name: str, timeout: float) -> int:
        """Block until the container exits (at most `timeout` seconds); its exit code.

        Raises:
            ContainerNotFound.
        """
        response = self._request("POST", f"{_c(name)}/wait", timeout=timeout)
        body = _check(response, container=name).body or {}
        code = body.get("StatusCode")
        return code if isinstance(code, int) else -1

    def list_containers(
        self, *, labels: Sequence[str] = (), volume: str | None = None
    ) -> list[str]:
        """Names of the containers (running or not) with all `labels` (`key=value`), or
        that mount `volume`."""
        filters: dict[str, list[str]] = {}
        if labels:
            filters["label"] = list(labels)
        if volume:
            filters["volume"] = [volume]
        response = _check(
            self._request("GET", "/containers/json", query={"all": "true", "filters": filters})
        )
        return [c["Names"][0].lstrip("/") for c in response.body or []]

    def put_archive(self, name: str, directory: str, archive: bytes) -> None:
        """Unpack a tar archive into `directory` of the container (running or not).

        Raises:
            ContainerNotFound; MissingPath: the directory is not in the container.
        """
        response = self._request(
            "PUT",
            f"{_c(name)}/archive",
            query={"path": directory},
            body=archive,
            content_type="application/x-tar",
        )
        if response.status == 404 and "no such container" not in response.message.lower():
            raise MissingPath(name, directory, directory)
        _check(response, container=name)

    def kill_container(self, name: str, signal: str) -> None:
        """Send `signal` (`SIGUSR1`, ...) to the running container's main process.

        Raises:
            ContainerNotFound; DockerError: it does not run.
        """
        _check(self._request("POST", f"{_c(name)}/kill", query={"signal": signal}), container=name)

    def pause_container(self, name: str) -> None:
        """Freeze every process of the running container (the cgroup freezer): nothing in
        it runs, and nothing it writes changes, until `unpause_container`.

        Raises:
            ContainerNotFound; DockerError: it does not run, or is paused already.
        """
        _check(self._request("POST", f"{_c(name)}/pause"), container=name)

    def unpause_container(self, name: str) -> None:
        """Let a paused container's processes run again.

        Raises:
            ContainerNotFound; DockerError: it is not paused.
        """
        _check(self._request("POST", f"{_c(name)}/unpause"), container=name)

    def get_archive(
        self, name: str, path: str, *, chunk_size: int = ARCHIVE_CHUNK_BYTES
    ) -> Iterator[bytes]:
        """`path` in the container (created, running or paused; its volumes included) as an
        uncompressed tar stream, in chunks of at most `chunk_size` bytes. The tar's one
        top-level entry is `path`'s last component. Nothing is held in memory but a chunk.

        Raises (on the first chunk):
            ContainerNotFound; MissingPath: `path` is not in the container.
        """

        def chunks(api: Any) -> Iterator[bytes]:
            stream, _stat = api.get_archive(name, path, chunk_size=chunk_size)
            return cast(Iterator[bytes], stream)

        try:
            yield from self._sdk.stream(chunks)
        except Refused as refused:
            _check_archive(refused.response, name, path)
            raise  # pragma: no cover (_check_archive raises for every error status)

    def put_archive_stream(self, name: str, directory: str, chunks: Iterable[bytes]) -> None:
        """Unpack a tar stream into `directory` of the container (created or running),
        sending it as it comes (chunked), so it is never whole in memory. Files keep the
        owners, modes and times their tar entries give them.

        Raises:
            ContainerNotFound; MissingPath: the directory is not in the container;
            whatever iterating `chunks` raises (the upload is then abandoned).
        """

        def upload(api: Any) -> Iterator[bool]:
            yield bool(api.put_archive(name, directory, data=iter(chunks)))

        try:
            for _done in self._sdk.stream(upload):
                pass
        except Refused as refused:
            _check_archive(refused.response, name, directory)
            raise  # pragma: no cover (_check_archive raises for every error status)

    def container_logs(
        self,
        name: str,
        *,
        tail: int | None = None,
        follow: bool = False,
        since: int | None = None,
        timestamps: bool = False,
    ) -> Iterator[bytes]:
        """The container's stdout and stderr, interleaved, as chunks of bytes.

        Raises:
            ContainerNotFound (on the first chunk).
        """
        return self._stream(
            lambda api: api.logs(
                name,
                stream=True,
                follow=follow,
                tail="all" if tail is None else tail,
                since=since,
                timestamps=timestamps,
            ),
            container=name,
        )

    def follow_output(self, name: str) -> Iterator[bytes]:
        """A container's stdout and stderr (interleaved) from its start, in pieces as they
        come, until it ends: for a helper that reports to this process as it works. On a
        local socket this needs no docker-py (about 0.1 s of start-up).

        Raises (on the first piece):
            ContainerNotFound.
        """
        if self._socket is None:
            yield from self.container_logs(name, follow=True)
            return
        query = urlencode({"follow": "1", "stdout": "1", "stderr": "1"})
        url = f"{self._prefix}{_c(name)}/logs?{query}"
        try:
            yield from _frames(self._socket.stream("GET", url, {}, FOLLOW_TIMEOUT))
        except Refused as refused:
            _check(refused.response, container=name)
            raise  # pragma: no cover (_check raises for every error status)

    def exec_run(
        self,
        name: str,
        command: Sequence[str],
        *,
        user: str,
        workdir: str,
        env: Sequence[str] = (),
    ) -> tuple[Iterator[bytes], Callable[[], int | None]]:
        """Run a command in the running container, without a terminal or input.

        Returns:
            The command's output (stdout and stderr interleaved) as chunks, and a function
            that gives its exit code once the output is read.

        Raises:
            ContainerNotFound, DockerError (the container does not run).
        """
        created = _check(
            self._request(
                "POST",
                f"{_c(name)}/exec",
                body={
                    "Cmd": list(command),
                    "User": user,
                    "WorkingDir": workdir,
                    "Env": list(env),
                    "AttachStdout": True,
                    "AttachStderr": True,
                },
            ),
            container=name,
        )
        exec_id = str(created.body["Id"])
        output = self._stream(
            lambda api: api.exec_start(exec_id, stream=True, demux=False), container=name
        )

        def exit_code() -> int | None:
            answer = _check(self._request("GET", f"/exec/{exec_id}/json"))
            code = answer.body.get("ExitCode")
            return code if isinstance(code, int) else None

        return output, exit_code

    # -- images -----------------------------------------------------------------------

    def inspect_image(self, ref: str) -> ImageInfo | None:
        """The image called `ref` (a name:tag or an id), or None when absent."""
        response = self._request("GET", f"/images/{quote(ref, safe='')}/json")
        if response.status == 404:
            return None
        return parse_image(_check(response, image=ref).body)

    def list_images(
        self, *, labels: Sequence[str] = (), dangling: bool | None = None
    ) -> list[ImageInfo]:
        """Images with all `labels` (`key=value` or `key`)."""
        filters: dict[str, list[str]] = {"label": list(labels)} if labels else {}
        if dangling is not None:
            filters["dangling"] = [str(dangling).lower()]
        response = _check(self._request("GET", "/images/json", query={"filters": filters}))
        return [
            ImageInfo(
                id=str(i.get("Id", "")),
                tags=tuple(t for t in i.get("RepoTags") or [] if t != "<none>:<none>"),
                labels=dict(i.get("Labels") or {}),
                size_bytes=int(i.get("Size") or 0),
            )
            for i in response.body or []
        ]

    def tag_image(self, image: str, repository: str, tag: str) -> None:
        """Give `image` the name `repository:tag` (moving it from any other image).

        Raises:
            ImageNotFound.
        """
        query = {"repo": repository, "tag": tag, "force": "true"}
        _check(
            self._request("POST", f"/images/{quote(image, safe='')}/tag", query=query), image=image
        )

    def remove_image(self, ref: str, *, noprune: bool = False, force: bool = False) -> None:
        """Remove an image name (and its layers, unless `noprune` or still used).

        Raises:
            ImageNotFound, DockerError (used by a container).
        """
        query = {"noprune": str(noprune).lower(), "force": str(force).lower()}
        _check(self._request("DELETE", f"/images/{quote(ref, safe='')}", query=query), image=ref)

    def build(
        self,
        context: bytes,
        *,
        tag: str,
        buildargs: Mapping[str, str] | None = None,
        no_cache: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Build an image from a tar context; yields the engine's progress messages.

        The base image is never pulled: a present local base is used as is, which is how
        machines without a registry build at all.
        """
        import io

        return self._stream(
            lambda api: api.build(
                fileobj=io.BytesIO(context),
                custom_context=True,
                tag=tag,
                buildargs=dict(buildargs or {}),
                labels=dict(labels or {}),
                nocache=no_cache,
                pull=False,
                rm=True,
                forcerm=True,
                decode=True,
                timeout=BUILD_HTTP_TIMEOUT,
            ),
            image=tag,
        )

    def pull(self, repository: str, tag: str) -> Iterator[dict[str, Any]]:
        """Pull `repository:tag`; yields the engine's progress messages."""
        return self._stream(
            lambda api: api.pull(repository, tag=tag, stream=True, decode=True),
            image=f"{repository}:{tag}",
        )

    # -- volumes ----------------------------------------------------------------------

    def inspect_volume(self, name: str) -> VolumeInfo | None:
        """The volume called `name`, or None when absent."""
        response = self._request("GET", f"/volumes/{quote(name, safe='')}")
        if response.status == 404:
            return None
        return parse_volume(_check(response, volume=name).body)

    def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        """Create a local volume (an existing one with that name is left as it is)."""
        body = {"Name": name, "Driver": "local", "Labels": dict(labels)}
        _check(self._request("POST", "/volumes/create", body=body), volume=name)

    def remove_volume(self, name: str) -> None:
        """Remove a volume; one that does not exist is not an error.

        Raises:
            VolumeInUse: a container mounts it.
        """
        response = self._request("DELETE", f"/volumes/{quote(name, safe='')}")
        if response.status != 404:
            _check(response, volume=name)

    def list_volumes(self, *, labels: Sequence[str] = ()) -> list[VolumeInfo]:
        """Volumes with all `labels`."""
        filters = {"label": list(labels)} if labels else {}
        response = _check(self._request("GET", "/volumes", query={"filters": filters}))
        return [parse_volume(v) for v in (response.body or {}).get("Volumes") or []]

    def volume_sizes(self, names: Sequence[str]) -> dict[str, int | None]:
        """Bytes used by each of the named volumes that exist (None when the engine does
        not say); a missing volume has no entry."""
        response = self._request("GET", "/system/df")
        for _ in range(DISK_USAGE_RETRIES):
            # The engine counts disk usage for one caller at a time and refuses the others.
            if response.status < 400 or "already running" not in response.message:
                break
            time.sleep(0.25)
            response = self._request("GET", "/system/df")
        usage = _check(response).body or {}
        sizes: dict[str, int | None] = {}
        for volume in usage.get("Volumes") or []:
            if volume.get("Name") in names:
                size = (volume.get("UsageData") or {}).get("Size")
                sizes[volume["Name"]] = size if isinstance(size, int) and size >= 0 else None
        return sizes

    def memory_in_use(self, name: str) -> int | None:
        """Bytes of memory the running container uses now, without the page cache the
        kernel can reclaim (what `docker stats` shows); None when the engine does not say."""
        response = self._request(
            "GET", f"{_c(name)}/stats", query={"stream": "false", "one-shot": "true"}
        )
        if response.status >= 400:
            return None
        stats = (response.body or {}).get("memory_stats") or {}
        usage = stats.get("usage")
        if not isinstance(usage, int):
            return None
        details = stats.get("stats") or {}
        cache = details.get("inactive_file", details.get("total_inactive_file", 0))
        return usage - cache if isinstance(cache, int) else usage

    # -- networks ---------------------------------------------------------------------

    def network_exists(self, name: str) -> bool:
        response = self._request("GET", f"/networks/{quote(name, safe='')}")
        if response.status == 404:
            return False
        _check(response)
        return True

    def create_network(self, name: str, labels: Mapping[str, str]) -> None:
        """Create a bridge network of its own (containers on different ones cannot reach
        each other); an existing one with that name is left as it is."""
        if self.network_exists(name):
            return
        body = {"Name": name, "Driver": "bridge", "Labels": dict(labels), "CheckDuplicate": True}
        _check(self._request("POST", "/networks/create", body=body))

    def remove_network(self, name: str) -> None:
        """Remove a network; one that does not exist is not an error."""
        response = self._request("DELETE", f"/networks/{quote(name, safe='')}")
        if response.status != 404:
            _check(response)

    def list_networks(self, *, labels: Sequence[str] = ()) -> list[str]:
        """Names of the networks with all `labels`."""
        filters = {"label": list(labels)} if labels else {}
        response = _check(self._request("GET", "/networks", query={"filters": filters}))
        return sorted(str(n["Name"]) for n in response.body or [])

    def connect_network(self, network: str, container: str) -> None:
        """Attach a container to a network (already attached is not an error)."""
        response = self._request(
            "POST", f"/networks/{quote(network, safe='')}/connect", body={"Container": container}
        )
        if response.status == 403 and "already exists" in response.message:
            return
        _check(response, container=container)

    def disconnect_network(self, network: str, container: str) -> None:
        """Detach a container from a network (not attached, or gone, is not an error)."""
        response = self._request(
            "POST",
            f"/networks/{quote(network, safe='')}/disconnect",
            body={"Container": container, "Force": True},
        )
        if response.status in (404, 403) or (
            response.status >= 400 and "is not connected" in response.message
        ):
            return
        _check(response, container=container)

    # -- swarm (answered by a manager: docker/swarm.py, loaded by these calls only) -----

    def swarm_membership(self) -> SwarmMembership:
        """This engine's place in a swarm, if any."""
        from opencode_cloud.docker.swarm import parse_membership

        return parse_membership(_check(self._request("GET", "/info")).body or {})

    def swarm_nodes(self) -> list[SwarmNode]:
        """The swarm's nodes, in the order of their names."""
        from opencode_cloud.docker.swarm import parse_node

        body = _check(self._request("GET", "/nodes")).body or []
        return sorted(map(parse_node, body), key=lambda node: (node.hostname, node.id))

    def swarm_services(self, *, labels: Sequence[str] = ()) -> list[SwarmService]:
        """The services with all `labels` (`key=value` or `key`)."""
        from opencode_cloud.docker.swarm import parse_service

        filters = {"label": list(labels)} if labels else {}
        response = _check(self._request("GET", "/services", query={"filters": filters}))
        return sorted(map(parse_service, response.body or []), key=lambda s: s.name)

    def swarm_tasks(self, *, service: str | None = None, ended: bool = False) -> list[SwarmTask]:
        """The tasks the swarm means to run (desired state `running`), of one service or
        of all; with `ended`, those it stopped too."""
        from opencode_cloud.docker.swarm import parse_task

        filters: dict[str, list[str]] = {} if ended else {"desired-state": ["running"]}
        if service is not None:
            filters["service"] = [service]
        response = _check(self._request("GET", "/tasks", query={"filters": filters}))
        return [parse_task(t) for t in response.body or []]

    def create_overlay_network(self, name: str, labels: Mapping[str, str]) -> None:
        """An attachable overlay network across the swarm's nodes; an existing one with
        that name is left as it is. Not encrypted: see docs/cluster.md."""
        if self.network_exists(name):
            return
        body = {
            "Name": name,
            "Driver": "overlay",
            "Attachable": True,
            "Labels": dict(labels),
            "CheckDuplicate": True,
        }
        _check(self._request("POST", "/networks/create", body=body))

    def create_secret(self, name: str, data: bytes, labels: Mapping[str, str]) -> str:
        """A swarm secret (kept encrypted in the managers' store, handed only to the
        tasks of services that name it); its ID."""
        import base64

        body = {"Name": name, "Data": base64.b64encode(data).decode(), "Labels": dict(labels)}
        return str(_check(self._request("POST", "/secrets/create", body=body)).body["ID"])

    def list_secrets(self, *, labels: Sequence[str] = ()) -> list[str]:
        """Names of the swarm secrets with all `labels`."""
        filters = {"label": list(labels)} if labels else {}
        response = _check(self._request("GET", "/secrets", query={"filters": filters}))
        return sorted(str((s.get("Spec") or {}).get("Name")) for s in response.body or [])

    def remove_secret(self, name: str) -> None:
        """Remove a swarm secret; one that does not exist is not an error."""
        response = self._request("DELETE", f"/secrets/{quote(name, safe='')}")
        if response.status != 404:
            _check(response)

    def remove_service(self, name: str) -> bool:
        """Remove a swarm service (its tasks stop); False when there was none."""
        response = self._request("DELETE", f"/services/{quote(name, safe='')}")
        if response.status == 404:
            return False
        _check(response)
        return True

    def create_service(self, body: Mapping[str, Any]) -> str:
        """A swarm service (`docker/swarm.py`'s `service_body`); its ID."""
        return str(_check(self._request("POST", "/services/create", body=dict(body))).body["ID"])

    def service_spec(self, name: str) -> tuple[int, dict[str, Any]] | None:
        """A service's spec as the swarm keeps it, and its version (which
        `update_service` names); None when there is no such service."""
        response = self._request("GET", f"/services/{quote(name, safe='')}")
        if response.status == 404:
            return None
        body = _check(response).body or {}
        return int((body.get("Version") or {}).get("Index") or 0), dict(body.get("Spec") or {})

    def update_service(self, name: str, version: int, spec: Mapping[str, Any]) -> None:
        """Give a service a new spec (the whole of it), made from the one of `version`;
        the swarm replaces its tasks when what they run changed."""
        path = f"/services/{quote(name, safe='')}/update"
        _check(self._request("POST", path, query={"version": version}, body=dict(spec)))

    def push(self, repository: str, tag: str) -> Iterator[dict[str, Any]]:
        """Push `repository:tag` to its registry; yields the engine's progress messages."""
        return self._stream(
            lambda api: api.push(repository, tag=tag, stream=True, decode=True),
            image=f"{repository}:{tag}",
        )


def _frames(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """The payloads of the engine's multiplexed output stream (a container without a
    terminal): frames of an 8-byte header (stream, 0, 0, 0, big-endian size) and data."""
    pending = b""
    for piece in pieces:
        pending += piece
        while len(pending) >= 8:
            size = int.from_bytes(pending[4:8], "big")
            if len(pending) < 8 + size:
                break
            yield pending[8 : 8 + size]
            pending = pending[8 + size :]


def _c(name: str) -> str:
    return f"/containers/{quote(name, safe='')}"
