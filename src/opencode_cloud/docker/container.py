"""The service container's lifecycle: create, start, stop, remove, and questions about it.

Functions of one engine call and a rule each (a stopped container stops without error, a
running one is not removed without force). What the container looks like is decided by
its `ContainerSpec`; the tool owns its lifecycle, and Docker restarts it after a crash.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator, Mapping, Sequence

from opencode_cloud.defaults import DEFAULT_PORT, DEFAULT_STOP_TIMEOUT, EDGE_UID
from opencode_cloud.docker.engine import Engine
from opencode_cloud.docker.errors import (
    ContainerAlreadyExists,
    ContainerNotFound,
    ContainerRunning,
    ImageNotFound,
)
from opencode_cloud.docker.models import (
    ContainerFile,
    ContainerInfo,
    ContainerStatus,
    addresses_overlap,
)
from opencode_cloud.docker.spec import ContainerSpec
from opencode_cloud.docker.volume import ensure_volumes_exist
from opencode_cloud.instance import DEFAULT, Instance

CONTAINER_NAME = DEFAULT.container_name

__all__ = [
    "CONTAINER_NAME",
    "DEFAULT_PORT",
    "container_exists",
    "container_is_running",
    "container_state",
    "containers_publishing",
    "create_container",
    "create_with_files",
    "put_file",
    "put_files",
    "remove_container",
    "restart_container",
    "setup_and_start",
    "start_container",
    "stop_container",
]


def create_container(client: Engine, spec: ContainerSpec, instance: Instance = DEFAULT) -> str:
    """Create the container `spec` describes (it is not started), with `instance`'s volumes.

    Returns:
        The new container's id.

    Raises:
        ContainerAlreadyExists, ImageNotFound, DockerError.
    """
    if container_exists(client, spec.name):
        raise ContainerAlreadyExists(spec.name)
    if client.inspect_image(spec.image) is None:
        raise ImageNotFound(spec.image)
    # Otherwise the engine would create missing volumes itself, without their labels.
    ensure_volumes_exist(client, instance)
    return client.create_container(spec.name, spec.create_body())


def start_container(client: Engine, name: str) -> None:
    """Start the container; starting a running container does nothing.

    Raises:
        ContainerNotFound, PortInUse ("Port N is already in use.").
    """
    client.start_container(name)


def stop_container(client: Engine, name: str, timeout: float | None = None) -> bool:
    """Stop the container: SIGTERM, then SIGKILL after `timeout` seconds.

    With `timeout=None` the container's own stop timeout applies (the spec's
    `stop_timeout`). Stopping a stopped container does nothing; volumes are never touched.

    Returns:
        True when it was running and is now stopped; False when it was not running.

    Raises:
        ContainerNotFound: it does not exist.
    """
    info = client.inspect_container(name)
    if not info.status.active:
        return False
    client.stop_container(name, grace(info.stop_timeout if timeout is None else timeout))
    return True


def grace(timeout: float | None) -> int:
    return DEFAULT_STOP_TIMEOUT if timeout is None else max(0, round(timeout))


def restart_container(client: Engine, name: str, timeout: float | None = None) -> None:
    """Stop (killing after `timeout` seconds) and start the container.

    Raises:
        ContainerNotFound, PortInUse.
    """
    client.restart_container(name, grace(timeout))


def remove_container(client: Engine, name: str, force: bool = False) -> None:
    """Remove the container. Its named volumes, and so the user's data, stay.

    Args:
        force: remove it even while it runs (it is killed first).

    Raises:
        ContainerNotFound: it does not exist.
        ContainerRunning: it runs and `force` is False.
    """
    if not force and container_state(client, name).active:
        raise ContainerRunning(name)
    client.remove_container(name, force=force)


def container_exists(client: Engine, name: str) -> bool:
    """Return True if a container called `name` exists, in any state."""
    return client.find_container(name) is not None


def container_state(client: Engine, name: str) -> ContainerStatus:
    """The container's state: created, running, exited, restarting, ...

    Raises:
        ContainerNotFound: it does not exist.
    """
    return client.inspect_container(name).status


def container_is_running(client: Engine, name: str) -> bool:
    """Return True if the container exists and runs."""
    try:
        return container_state(client, name) is ContainerStatus.RUNNING
    except ContainerNotFound:
        return False


def containers_publishing(
    client: Engine, port: int, address: str = "", *, labels: Sequence[str] = ()
) -> Iterator[ContainerInfo]:
    """The active containers (of those carrying `labels`) that publish `port` on an
    address conflicting with `address` (by default any)."""
    for name in client.list_containers(labels=labels):
        try:
            info = client.inspect_container(name)
        except ContainerNotFound:
            continue  # removed meanwhile
        if info.status.active and any(
            binding.host_port == port and addresses_overlap(binding.host_ip, address)
            for bindings in info.ports.values()
            for binding in bindings
        ):
            yield info


def put_file(
    client: Engine,
    name: str,
    path: str,
    content: bytes,
    *,
    mode: int = 0o600,
    uid: int = EDGE_UID,
) -> None:
    """Write one file into a container (created or running) without a process inside.

    By default the file is the edge's (its user owns what the tool hands the container:
    the password's hash, the TLS key), closed to the agent.

    The bytes travel in the API request body, so they never show in any process's
    arguments, in the container's environment or in `docker inspect`.

    Raises:
        ContainerNotFound; MissingPath: the parent directory is not in the container.
    """
    put_files(client, name, {path: ContainerFile(content, mode, uid)})


def put_files(client: Engine, name: str, files: Mapping[str, ContainerFile]) -> None:
    """Write files (by absolute path) into a container, as `put_file` does: one archive
    per directory, so the files of one directory (a certificate and its key) change
    together.

    Raises:
        ContainerNotFound, MissingPath.
    """
    import tarfile  # only here: most commands never write files into the container

    by_directory: dict[str, dict[str, ContainerFile]] = {}
    for path, file in files.items():
        directory, _, filename = path.rpartition("/")
        by_directory.setdefault(directory or "/", {})[filename] = file
    for directory, members in by_directory.items():
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for filename, file in members.items():
                info = tarfile.TarInfo(filename)
                info.size, info.mode = len(file.content), file.mode
                info.uid = info.gid = file.owner
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(file.content))
        client.put_archive(name, directory, buffer.getvalue())


def _file(file: bytes | ContainerFile) -> ContainerFile:
    """Bare bytes are a file only the edge's user reads (see `put_file`)."""
    return file if isinstance(file, ContainerFile) else ContainerFile(file, 0o600, EDGE_UID)


def setup_and_start(
    client: Engine,
    spec: ContainerSpec,
    instance: Instance = DEFAULT,
    *,
    files: Mapping[str, bytes | ContainerFile] | None = None,
) -> str:
    """Make the service run: volumes, container, started. Safe to call any number of times.

    An existing container is started as it is (re-creating it is the caller's decision).

    Args:
        files: files to write into a newly created container before its first start
            (the password file, for instance), by absolute path; bytes alone are owned by
            the runtime user, mode 0400.

    Returns:
        The container id.

    Raises:
        ImageNotFound, PortInUse, DockerError.
    """
    ensure_volumes_exist(client, instance)
    existing = client.find_container(spec.name)
    cid = existing.id if existing is not None else create_with_files(client, spec, instance, files)
    start_container(client, spec.name)
    return cid


def create_with_files(
    client: Engine,
    spec: ContainerSpec,
    instance: Instance = DEFAULT,
    files: Mapping[str, bytes | ContainerFile] | None = None,
) -> str:
    """`create_container`, then write `files` (by absolute path) into the new container.

    Raises:
        ContainerAlreadyExists, ImageNotFound, MissingPath, DockerError.
    """
    cid = create_container(client, spec, instance)
    if files:
        put_files(client, spec.name, {path: _file(file) for path, file in files.items()})
    return cid
