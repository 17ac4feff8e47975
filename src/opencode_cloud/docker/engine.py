"""What the tool asks of a container engine: the calls the operations layer makes.

`Engine` is the interface the service, its versions, backups, `occ doctor` and the
container, volume, image and health helpers are written against. `DockerClient`
(`client.py`) is the engine the tool runs on; `tests/fakes.py`'s `FakeEngine` is an
in-memory one for the unit tests. mypy holds both to it. The meaning of each call, its
errors and its edge cases are those of `DockerClient`, where they are documented.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

if TYPE_CHECKING:
    from opencode_cloud.docker.models import ContainerInfo, EngineInfo, ImageInfo, VolumeInfo
    from opencode_cloud.docker.ssh import SshTarget, SshTunnel


class LogOptions(TypedDict, total=False):
    """Which part of a container's output to read (`Engine.container_logs`)."""

    tail: int | None  # the last lines only; None: all
    follow: bool  # keep reading new lines until the caller stops
    since: int | None  # Unix time of the oldest line
    timestamps: bool  # prefix each line with its time


class Engine(Protocol):
    """A connected container engine, as typed calls."""

    # -- the connection -----------------------------------------------------------------

    @property
    def host(self) -> str:
        """The engine's address, in words for messages."""

    @property
    def api_version(self) -> str:
        """The API version spoken with the engine."""

    @property
    def is_local(self) -> bool:
        """The engine runs on this machine: a bind mount of a path here mounts that file."""

    @property
    def tunnel(self) -> SshTunnel | None:
        """The SSH connection to a remote engine, if it is reached through one."""

    @property
    def remote(self) -> SshTarget | None:
        """The SSH address of a remote engine; None for one reached otherwise."""

    def reach(self, address: str, port: int, local_port: int | None = None) -> tuple[str, int]:
        """Where this machine reaches `address:port` of the engine's host."""

    def info(self) -> EngineInfo:
        """The engine's version and the machine it runs on."""

    def close(self) -> None: ...

    # -- containers -----------------------------------------------------------------------

    def inspect_container(self, name: str) -> ContainerInfo: ...

    def find_container(self, name: str) -> ContainerInfo | None: ...

    def create_container(self, name: str, body: Mapping[str, Any]) -> str: ...

    def start_container(self, name: str) -> None: ...

    def stop_container(self, name: str, timeout: int) -> None: ...

    def restart_container(self, name: str, timeout: int) -> None: ...

    def remove_container(self, name: str, *, force: bool = False) -> None: ...

    def rename_container(self, name: str, new_name: str) -> None: ...

    def last_exit_code(self, name: str, since: float) -> int | None: ...

    def wait_container(self, name: str, timeout: float) -> int: ...

    def list_containers(
        self, *, labels: Sequence[str] = (), volume: str | None = None
    ) -> list[str]: ...

    def kill_container(self, name: str, signal: str) -> None: ...

    def pause_container(self, name: str) -> None: ...

    def unpause_container(self, name: str) -> None: ...

    def put_archive(self, name: str, directory: str, archive: bytes) -> None: ...

    def get_archive(self, name: str, path: str, *, chunk_size: int = ...) -> Iterator[bytes]: ...

    def put_archive_stream(self, name: str, directory: str, chunks: Iterable[bytes]) -> None: ...

    def container_logs(
        self,
        name: str,
        *,
        tail: int | None = None,
        follow: bool = False,
        since: int | None = None,
        timestamps: bool = False,
    ) -> Iterator[bytes]: ...

    def follow_output(self, name: str) -> Iterator[bytes]: ...

    def exec_run(
        self,
        name: str,
        command: Sequence[str],
        *,
        user: str,
        workdir: str,
        env: Sequence[str] = (),
    ) -> tuple[Iterator[bytes], Callable[[], int | None]]: ...

    # -- images ---------------------------------------------------------------------------

    def inspect_image(self, ref: str) -> ImageInfo | None: ...

    def list_images(
        self, *, labels: Sequence[str] = (), dangling: bool | None = None
    ) -> list[ImageInfo]: ...

    def tag_image(self, image: str, repository: str, tag: str) -> None: ...

    def remove_image(self, ref: str, *, noprune: bool = False, force: bool = False) -> None: ...

    def build(
        self,
        context: bytes,
        *,
        tag: str,
        buildargs: Mapping[str, str] | None = None,
        no_cache: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]: ...

    def pull(self, repository: str, tag: str) -> Iterator[dict[str, Any]]: ...

    # -- volumes --------------------------------------------------------------------------

    def inspect_volume(self, name: str) -> VolumeInfo | None: ...

    def create_volume(self, name: str, labels: Mapping[str, str]) -> None: ...

    def remove_volume(self, name: str) -> None: ...

    def list_volumes(self, *, labels: Sequence[str] = ()) -> list[VolumeInfo]: ...

    def volume_sizes(self, names: Sequence[str]) -> dict[str, int | None]: ...

    def memory_in_use(self, name: str) -> int | None: ...

    # -- networks -------------------------------------------------------------------------

    def network_exists(self, name: str) -> bool: ...

    def create_network(self, name: str, labels: Mapping[str, str]) -> None: ...

    def remove_network(self, name: str) -> None: ...

    def list_networks(self, *, labels: Sequence[str] = ()) -> list[str]: ...

    def connect_network(self, network: str, container: str) -> None: ...

    def disconnect_network(self, network: str, container: str) -> None: ...
