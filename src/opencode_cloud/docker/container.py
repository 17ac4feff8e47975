"""The service container's lifecycle: create, start, stop, remove, and questions about it.

The container publishes opencode's port on one host address only (127.0.0.1 unless the
caller says otherwise), mounts every data volume as a named volume, and never removes
itself: the tool owns its lifecycle, and Docker restarts it after a crash.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from opencode_cloud.docker.client import DockerClient, Response, raise_for_status, translate_errors
from opencode_cloud.docker.errors import (
    ContainerAlreadyExists,
    ContainerNotFound,
    DockerError,
    ImageNotFound,
)
from opencode_cloud.docker.volume import VOLUME_SPECS, ensure_volumes_exist
from opencode_cloud.instance import DEFAULT, Instance

CONTAINER_NAME = DEFAULT.container_name
DEFAULT_PORT = 3000
CONTAINER_PORT = 3000
DEFAULT_BIND_ADDRESS = "127.0.0.1"
HOSTNAME = "opencode-cloud"
WORKING_DIR = "/workspace"
DEFAULT_STOP_TIMEOUT = 10
# Docker restarts a crashed container this many times (with its own growing delay)
# before giving up; `occ start` resets the count.
DEFAULT_RESTART_RETRIES = 5
# The image's runtime user `opencode`; files written into the container belong to it.
RUNTIME_UID = 1000


def _not_found(name: str) -> ContainerNotFound:
    return ContainerNotFound(
        f"Container {name} does not exist.", "Create and start it with `occ start`."
    )


_ACTIVE_STATES = ("running", "restarting", "paused")


def _path(name: str) -> str:
    return f"/containers/{quote(name, safe='')}"


def _call(
    client: DockerClient,
    method: str,
    name: str,
    action: str = "",
    *,
    port: int | None = None,
    check: bool = True,
    **kwargs: Any,
) -> Response:
    """One container API call; a 404 "no such container" raises `ContainerNotFound`, and
    other errors raise `DockerError` unless `check` is False."""
    response = client.request(method, _path(name) + action, **kwargs)
    if response.status == 404 and "no such container" in response.message.lower():
        raise _not_found(name)
    if check:
        raise_for_status(response, port)
    return response


def _published_port(info: dict[str, Any]) -> int | None:
    bindings = (info.get("HostConfig") or {}).get("PortBindings") or {}
    for binding in bindings.get(f"{CONTAINER_PORT}/tcp") or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


def create_container(
    client: DockerClient,
    name: str | None = None,
    image: str | None = None,
    host_port: int | None = None,
    env_vars: Sequence[str] | None = None,
    *,
    instance: Instance = DEFAULT,
    bind_address: str = DEFAULT_BIND_ADDRESS,
    restart_retries: int = DEFAULT_RESTART_RETRIES,
    stop_timeout: int = DEFAULT_STOP_TIMEOUT,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Create the service container (it is not started).

    Args:
        client: a connected engine.
        name: container name; the instance's name by default (`opencode-cloud`).
        image: image reference; the locally built sandbox image by default.
        host_port: host port that publishes opencode's port 3000 (default 3000).
        env_vars: extra `KEY=VALUE` environment entries for opencode.
        instance: whose volumes to mount and whose labels to set.
        bind_address: host address the port is published on.
        restart_retries: how often Docker restarts the container after a crash.
        stop_timeout: seconds a stop waits for a clean exit before killing, when the
            caller of `stop_container` gives none.
        labels: labels added to the instance's own (a config hash, say).

    Returns:
        The new container's id.

    Raises:
        ContainerAlreadyExists: a container with that name exists.
        ImageNotFound: the image is not in the local engine.
        DockerError: the engine refused for another reason.
    """
    name = name or instance.container_name
    # Imported here: the image module (builds, pulls, progress) is not needed to stop,
    # inspect or start a container.
    from opencode_cloud.docker.image import DEFAULT_IMAGE, image_exists

    image = image or DEFAULT_IMAGE
    host_port = DEFAULT_PORT if host_port is None else host_port
    if container_exists(client, name):
        raise ContainerAlreadyExists(
            f"Container {name} already exists.",
            "Start it with `occ start`, or remove it first with `docker rm -f " + name + "`.",
        )
    if not image_exists(client, image):
        raise ImageNotFound(
            f"Image {image} not found.",
            "Build it with `occ build`, or pull it with `occ pull`.",
        )
    # Otherwise the engine would create missing volumes itself, without our labels.
    ensure_volumes_exist(client, instance)
    body = {
        "Image": image,
        "Hostname": HOSTNAME,
        "WorkingDir": WORKING_DIR,
        "Env": list(env_vars or []),
        "Labels": {**instance.labels("service"), **(labels or {})},
        "ExposedPorts": {f"{CONTAINER_PORT}/tcp": {}},
        "StopSignal": "SIGTERM",
        "StopTimeout": stop_timeout,
        "HostConfig": {
            "PortBindings": {
                f"{CONTAINER_PORT}/tcp": [{"HostIp": bind_address, "HostPort": str(host_port)}]
            },
            # Named volumes only: a bind mount would tie the data to one host path.
            "Mounts": [
                {
                    "Type": "volume",
                    "Source": instance.volume_name(spec.kind),
                    "Target": spec.mount_point,
                    "ReadOnly": False,
                }
                for spec in VOLUME_SPECS
            ],
            "AutoRemove": False,
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": restart_retries},
            "SecurityOpt": ["no-new-privileges:true"],
            "CapDrop": ["ALL"],
            "Privileged": False,
        },
    }
    response = client.request("POST", "/containers/create", query={"name": name}, body=body)
    if response.status == 409:
        raise ContainerAlreadyExists(f"Container {name} already exists.", response.message)
    if response.status == 404:
        raise ImageNotFound(
            f"Image {image} not found.", "Build it with `occ build`, or pull it with `occ pull`."
        )
    raise_for_status(response, host_port)
    return str(response.body["Id"])


def start_container(client: DockerClient, name: str) -> None:
    """Start the container; starting a running container does nothing.

    Raises:
        ContainerNotFound: it does not exist.
        PortInUse: its host port is taken ("Port N is already in use.").
    """
    info = inspect_container(client, name)
    if info["State"]["Status"] == "running":
        return
    _call(client, "POST", name, "/start", port=_published_port(info))


def stop_container(
    client: DockerClient, name: str, timeout: float | None = DEFAULT_STOP_TIMEOUT
) -> bool:
    """Stop the container: SIGTERM, then SIGKILL after `timeout` seconds.

    With `timeout=None` the container's own stop timeout applies (`stop_timeout` of
    `create_container`). Stopping a stopped container does nothing. Data volumes are
    never touched.

    Returns:
        True when it was running and is now stopped; False when it was not running.

    Raises:
        ContainerNotFound: it does not exist.
    """
    info = inspect_container(client, name)
    if info["State"]["Status"] not in _ACTIVE_STATES:
        return False
    own = (info.get("Config") or {}).get("StopTimeout")
    grace = _grace(own if timeout is None else timeout)
    _call(client, "POST", name, "/stop", query={"t": grace}, timeout=grace + client.timeout)
    return True


def _grace(timeout: float | None) -> int:
    return DEFAULT_STOP_TIMEOUT if timeout is None else max(0, round(timeout))


def restart_container(
    client: DockerClient, name: str, timeout: float | None = DEFAULT_STOP_TIMEOUT
) -> None:
    """Stop (gracefully, then kill after `timeout` seconds) and start the container.

    Raises:
        ContainerNotFound: it does not exist.
    """
    grace = _grace(timeout)
    _call(
        client,
        "POST",
        name,
        "/restart",
        port=_published_port(inspect_container(client, name)),
        query={"t": grace},
        timeout=grace + client.timeout,
    )


def remove_container(client: DockerClient, name: str, force: bool = False) -> None:
    """Remove the container. Its named volumes, and so the user's data, stay.

    Args:
        force: remove it even while it runs (it is killed first).

    Raises:
        ContainerNotFound: it does not exist.
        DockerError: it runs and `force` is False.
    """
    if container_state(client, name) in _ACTIVE_STATES and not force:
        raise DockerError(
            f"Container {name} is running.",
            "Stop it first (`occ stop`), or remove it anyway with force.",
        )
    _call(client, "DELETE", name, query={"force": str(force).lower(), "v": "false"})


def container_exists(client: DockerClient, name: str) -> bool:
    """Return True if a container called `name` exists, in any state."""
    try:
        inspect_container(client, name)
    except ContainerNotFound:
        return False
    return True


def container_state(client: DockerClient, name: str) -> str:
    """Docker's state word for the container: created, running, exited, restarting, ...

    Raises:
        ContainerNotFound: it does not exist.
    """
    return str(inspect_container(client, name)["State"]["Status"])


def container_is_running(client: DockerClient, name: str) -> bool:
    """Return True if the container exists and runs."""
    try:
        return container_state(client, name) == "running"
    except ContainerNotFound:
        return False


def inspect_container(client: DockerClient, name: str) -> dict[str, Any]:
    """The engine's full description of the container (`docker inspect`).

    Raises:
        ContainerNotFound: it does not exist.
    """
    body = _call(client, "GET", name, "/json").body
    if not isinstance(body, dict):
        raise DockerError(f"Docker engine error: unexpected answer for container {name}.")
    return body


def container_id(client: DockerClient, name: str) -> str:
    """The container's id.

    Raises:
        ContainerNotFound: it does not exist.
    """
    return str(inspect_container(client, name)["Id"])


def put_file(
    client: DockerClient, name: str, path: str, content: bytes, *, mode: int = 0o400, uid: int = 0
) -> None:
    """Write one file into a container (created or running) without a process inside.

    The bytes travel in the API request body, so they never show in any process's
    arguments, in the container's environment or in `docker inspect`.

    Raises:
        ContainerNotFound: it does not exist.
        DockerError: the parent directory is missing in the container.
    """
    import tarfile  # only here: most commands never write files into the container

    directory, _, filename = path.rpartition("/")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(filename)
        info.size, info.mode, info.uid, info.gid = len(content), mode, uid, uid
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(content))
    response = _call(
        client,
        "PUT",
        name,
        "/archive",
        query={"path": directory or "/"},
        body=buffer.getvalue(),
        content_type="application/x-tar",
        check=False,
    )
    if response.status == 404:
        raise DockerError(
            f"Cannot write {path} into container {name}: its image has no {directory}.",
            "Use an image built from opencode-cloud's Dockerfile (`occ build`).",
        )
    raise_for_status(response)


def container_logs(
    client: DockerClient,
    name: str,
    *,
    tail: int | None = None,
    follow: bool = False,
    since: int | None = None,
    timestamps: bool = False,
) -> Iterator[bytes]:
    """The container's output, stdout and stderr interleaved, as chunks of bytes.

    Raises:
        ContainerNotFound: it does not exist.
    """
    inspect_container(client, name)  # a missing container fails here, before streaming
    with translate_errors():
        yield from client.docker.api.logs(
            name,
            stream=True,
            follow=follow,
            tail="all" if tail is None else tail,
            since=since,
            timestamps=timestamps,
        )


def setup_and_start(
    client: DockerClient,
    host_port: int | None = None,
    env_vars: Sequence[str] | None = None,
    *,
    image: str | None = None,
    instance: Instance = DEFAULT,
    bind_address: str = DEFAULT_BIND_ADDRESS,
    restart_retries: int = DEFAULT_RESTART_RETRIES,
    stop_timeout: int = DEFAULT_STOP_TIMEOUT,
    labels: Mapping[str, str] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> str:
    """Make the service run: volumes, container, started. Safe to call any number of times.

    Args:
        files: files to write into a newly created container before its first start
            (the password file, for instance), by absolute path; owned by uid 1000.
        Others: as for `create_container`.

    Returns:
        The container id (the existing one when it was already there).

    Raises:
        ImageNotFound, PortInUse, DockerError: see `create_container`, `start_container`.
    """
    name = instance.container_name
    ensure_volumes_exist(client, instance)
    if container_exists(client, name):
        cid = container_id(client, name)
    else:
        cid = create_container(
            client,
            name,
            image,
            host_port,
            env_vars,
            instance=instance,
            bind_address=bind_address,
            restart_retries=restart_retries,
            stop_timeout=stop_timeout,
            labels=labels,
        )
        for path, content in (files or {}).items():
            put_file(client, name, path, content, uid=RUNTIME_UID)
    start_container(client, name)
    return cid
