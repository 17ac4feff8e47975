"""The service container's lifecycle: create, start, stop, remove, and questions about it.

The container publishes opencode's port on one host address only (127.0.0.1 unless the
caller says otherwise), mounts every data volume as a named volume, and never removes
itself: the tool owns its lifecycle, and Docker restarts it after a crash.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opencode_cloud.docker.client import DockerClient, translate_errors
from opencode_cloud.docker.errors import (
    ContainerAlreadyExists,
    ContainerNotFound,
    DockerError,
    ImageNotFound,
)
from opencode_cloud.docker.image import DEFAULT_IMAGE, image_exists
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


def _get(client: DockerClient, name: str) -> Any:
    import docker.errors

    with translate_errors():
        try:
            return client.docker.containers.get(name)
        except docker.errors.NotFound:
            raise _not_found(name) from None


def _published_port(container: Any) -> int | None:
    bindings = (container.attrs.get("HostConfig") or {}).get("PortBindings") or {}
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
        labels: labels added to the instance's own (a config hash, say).

    Returns:
        The new container's id.

    Raises:
        ContainerAlreadyExists: a container with that name exists.
        ImageNotFound: the image is not in the local engine.
        DockerError: the engine refused for another reason.
    """
    import docker.errors
    from docker.types import Mount

    name = name or instance.container_name
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
    mounts = [
        Mount(target=spec.mount_point, source=instance.volume_name(spec.kind), type="volume")
        for spec in VOLUME_SPECS
    ]
    with translate_errors(port=host_port):
        try:
            container = client.docker.containers.create(
                image=image,
                name=name,
                hostname=HOSTNAME,
                working_dir=WORKING_DIR,
                environment=list(env_vars or []),
                labels={**instance.labels("service"), **(labels or {})},
                ports={f"{CONTAINER_PORT}/tcp": (bind_address, host_port)},
                mounts=mounts,
                auto_remove=False,
                restart_policy={"Name": "on-failure", "MaximumRetryCount": restart_retries},
                security_opt=["no-new-privileges:true"],
                cap_drop=["ALL"],
                privileged=False,
                stop_signal="SIGTERM",
            )
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise ContainerAlreadyExists(f"Container {name} already exists.") from exc
            if exc.status_code == 404:
                raise ImageNotFound(
                    f"Image {image} not found.",
                    "Build it with `occ build`, or pull it with `occ pull`.",
                ) from exc
            raise
    return str(container.id)


def start_container(client: DockerClient, name: str) -> None:
    """Start the container; starting a running container does nothing.

    Raises:
        ContainerNotFound: it does not exist.
        PortInUse: its host port is taken ("Port N is already in use.").
    """
    container = _get(client, name)
    if container.status == "running":
        return
    with translate_errors(port=_published_port(container)):
        container.start()


def stop_container(
    client: DockerClient, name: str, timeout: float | None = DEFAULT_STOP_TIMEOUT
) -> None:
    """Stop the container: SIGTERM, then SIGKILL after `timeout` seconds.

    Stopping a stopped container does nothing. Data volumes are never touched.

    Raises:
        ContainerNotFound: it does not exist.
    """
    container = _get(client, name)
    if container.status not in ("running", "restarting", "paused"):
        return
    grace = DEFAULT_STOP_TIMEOUT if timeout is None else max(0, round(timeout))
    with translate_errors():
        container.stop(timeout=grace)


def restart_container(
    client: DockerClient, name: str, timeout: float | None = DEFAULT_STOP_TIMEOUT
) -> None:
    """Stop (gracefully, then kill after `timeout` seconds) and start the container.

    Raises:
        ContainerNotFound: it does not exist.
    """
    container = _get(client, name)
    grace = DEFAULT_STOP_TIMEOUT if timeout is None else max(0, round(timeout))
    with translate_errors(port=_published_port(container)):
        container.restart(timeout=grace)


def remove_container(client: DockerClient, name: str, force: bool = False) -> None:
    """Remove the container. Its named volumes, and so the user's data, stay.

    Args:
        force: remove it even while it runs (it is killed first).

    Raises:
        ContainerNotFound: it does not exist.
        DockerError: it runs and `force` is False.
    """
    container = _get(client, name)
    if container.status in ("running", "restarting", "paused") and not force:
        raise DockerError(
            f"Container {name} is running.",
            "Stop it first (`occ stop`), or remove it anyway with force.",
        )
    with translate_errors():
        container.remove(force=force, v=False)


def container_exists(client: DockerClient, name: str) -> bool:
    """Return True if a container called `name` exists, in any state."""
    try:
        _get(client, name)
    except ContainerNotFound:
        return False
    return True


def container_state(client: DockerClient, name: str) -> str:
    """Docker's state word for the container: created, running, exited, restarting, ...

    Raises:
        ContainerNotFound: it does not exist.
    """
    return str(_get(client, name).status)


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
    return dict(_get(client, name).attrs)


def container_id(client: DockerClient, name: str) -> str:
    """The container's id.

    Raises:
        ContainerNotFound: it does not exist.
    """
    return str(_get(client, name).id)


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
    directory, _, filename = path.rpartition("/")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(filename)
        info.size, info.mode, info.uid, info.gid = len(content), mode, uid, uid
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(content))
    container = _get(client, name)
    with translate_errors():
        if not container.put_archive(directory or "/", buffer.getvalue()):
            raise DockerError(f"Could not write {path} into container {name}.")


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
    container = _get(client, name)
    with translate_errors():
        stream = container.logs(
            stream=True,
            follow=follow,
            tail="all" if tail is None else tail,
            since=since,
            timestamps=timestamps,
        )
        yield from stream


def setup_and_start(
    client: DockerClient,
    host_port: int | None = None,
    env_vars: Sequence[str] | None = None,
    *,
    image: str | None = None,
    instance: Instance = DEFAULT,
    bind_address: str = DEFAULT_BIND_ADDRESS,
    restart_retries: int = DEFAULT_RESTART_RETRIES,
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
            labels=labels,
        )
        for path, content in (files or {}).items():
            put_file(client, name, path, content, uid=RUNTIME_UID)
    start_container(client, name)
    return cid
