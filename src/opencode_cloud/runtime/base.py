"""`Runtime`: where one instance's service runs, and what can be done to it there.

The operations (`service/`) ask a runtime to make the service from its `ContainerSpec`,
start, stop, poll and remove it, tell where it listens, run a command or a terminal in
it, read its output and hand it files. One runtime per instance, as JupyterHub has one
Spawner per user (its `start`, `stop`, `poll`).

Today an instance is one container on one Docker engine (`engine.EngineRuntime`, over any
`Engine`: the real client or the tests' `FakeEngine`). The choice is made in one place,
`choice.runtime_for`; a service on a swarm (a `docker service` of one replica, its volumes on
the node a placement constraint keeps it on) or a Kubernetes StatefulSet would be
another class with these methods, chosen there. What stays the engine's business
whatever the runtime (images, volumes, helper containers for backups and snapshots) is
asked of the `Engine` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Unpack

if TYPE_CHECKING:
    from opencode_cloud.docker.engine import LogOptions
    from opencode_cloud.docker.models import ContainerFile, ContainerInfo
    from opencode_cloud.docker.spec import ContainerSpec
    from opencode_cloud.docker.ssh import SshTarget
    from opencode_cloud.instance import Instance
    from opencode_cloud.opencode import Server


@dataclass(frozen=True)
class Terminal:
    """A program that gives a person a terminal inside the service (`docker exec -it`)."""

    program: str  # its path on this machine
    argv: tuple[str, ...]  # its command line, its name first
    # It reaches the service through this process (an SSH connection it holds): run it
    # as a child, not in this process's place.
    needs_this_process: bool = False


class Runtime(Protocol):
    """Where one instance's service runs."""

    @property
    def instance(self) -> Instance: ...

    # -- its lifecycle --------------------------------------------------------------------

    def state(self) -> ContainerInfo | None:
        """What runs for the instance now; None when nothing was made (or it was removed)."""

    def create(
        self, spec: ContainerSpec, files: Mapping[str, bytes | ContainerFile] | None = None
    ) -> str:
        """Make the service `spec` describes, with `files` (by absolute path) written into
        it before it first starts; it is not started. Returns its id.

        Raises:
            ContainerAlreadyExists, ImageNotFound, MissingPath, DockerError.
        """

    def start(self) -> None:
        """Start it; starting a running service does nothing.

        Raises:
            ContainerNotFound, PortInUse.
        """

    def stop(self, timeout: float | None = None) -> bool:
        """Stop it: killed after `timeout` seconds (None: its own stop timeout). False when
        it was not running. Its data stays.

        Raises:
            ContainerNotFound.
        """

    def poll(self) -> int | None:
        """None while it runs, else how its last run ended (0 when it never ran).

        Raises:
            ContainerNotFound.
        """

    def remove(self) -> None:
        """Remove it, running or not; its data (the volumes) stays.

        Raises:
            ContainerNotFound.
        """

    def wait_ready(self, server: Server, timeout: float) -> float:
        """Block until opencode at `server` answers healthy; the seconds waited.

        Raises:
            HealthTimeout; ContainerExited: it ended or restarted meanwhile (with its log
            tail); ContainerNotFound: it was removed meanwhile.
        """

    # -- where it listens -----------------------------------------------------------------

    @property
    def remote(self) -> SshTarget | None:
        """The SSH address of the machine it runs on, when that is not this one."""

    def reach(self, address: str, port: int, local_port: int | None = None) -> tuple[str, int]:
        """Where this machine reaches `address:port` of the machine it runs on (a port
        forwarded to `local_port`, else a free one, when that is another machine)."""

    def hold(self) -> None:
        """Keep open what reaches it from here until that drops, then raise why (an SSH
        connection's `SshError`); return at once when nothing needs holding."""

    # -- what goes in and comes out -------------------------------------------------------

    def put_files(self, files: Mapping[str, ContainerFile]) -> None:
        """Write files (by absolute path) into it, created or running, without a process.

        Raises:
            ContainerNotFound, MissingPath.
        """

    def signal(self, name: str) -> None:
        """Send its first process a signal (`HUP`, ...).

        Raises:
            ContainerNotFound; DockerError: it does not run.
        """

    def exec(
        self, command: Sequence[str], *, user: str, workdir: str, env: Sequence[str] = ()
    ) -> tuple[Iterator[bytes], Callable[[], int | None]]:
        """Run `command` in it; its output as chunks, and its exit code once read."""

    def terminal(
        self,
        command: Sequence[str],
        *,
        user: str,
        workdir: str,
        env: Sequence[str] = (),
        tty: bool,
    ) -> Terminal | None:
        """The program that runs `command` in it with this terminal attached (a real one
        when `tty`); None when this machine has no such program."""

    def logs(self, **options: Unpack[LogOptions]) -> Iterator[bytes]:
        """Its output (`options` as for `Engine.container_logs`).

        Raises:
            ContainerNotFound (on the first chunk).
        """

    def log_tail(self, lines: int) -> list[str]:
        """Its last output lines; empty when they cannot be read."""
