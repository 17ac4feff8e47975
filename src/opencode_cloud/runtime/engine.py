"""`EngineRuntime`: an instance's service as one container on one Docker engine.

Each method is one of the container rules of `docker.container` (or a call of the
`Engine`) on the instance's container; any `Engine` will do, the real `DockerClient` or
the tests' in-memory `FakeEngine`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Unpack

from opencode_cloud.docker import container as containers

if TYPE_CHECKING:
    from opencode_cloud.docker.engine import Engine, LogOptions
    from opencode_cloud.docker.models import ContainerFile, ContainerInfo
    from opencode_cloud.docker.spec import ContainerSpec
    from opencode_cloud.docker.ssh import SshTarget
    from opencode_cloud.instance import Instance
    from opencode_cloud.opencode import Server
    from opencode_cloud.runtime.base import Terminal


class EngineRuntime:
    """The instance's container on `engine` (a `runtime.base.Runtime`)."""

    def __init__(self, engine: Engine, instance: Instance) -> None:
        self.engine = engine
        self._instance = instance
        self.name = instance.container_name

    @property
    def instance(self) -> Instance:
        return self._instance

    # -- its lifecycle --------------------------------------------------------------------

    def state(self) -> ContainerInfo | None:
        return self.engine.find_container(self.name)

    def create(
        self, spec: ContainerSpec, files: Mapping[str, bytes | ContainerFile] | None = None
    ) -> str:
        return containers.create_with_files(self.engine, spec, self.instance, files)

    def start(self) -> None:
        containers.start_container(self.engine, self.name)

    def stop(self, timeout: float | None = None) -> bool:
        return containers.stop_container(self.engine, self.name, timeout)

    def poll(self) -> int | None:
        info = self.engine.inspect_container(self.name)
        if info.status.active:
            return None
        return info.exit_code or 0

    def remove(self) -> None:
        containers.remove_container(self.engine, self.name, force=True)

    def wait_ready(self, server: Server, timeout: float) -> float:
        from opencode_cloud.docker.health import wait_until_healthy

        return wait_until_healthy(
            self.engine,
            self.name,
            server.health_url,
            server.username,
            server.password,
            timeout=timeout,
            context=server.context,
        )

    # -- where it listens -----------------------------------------------------------------

    @property
    def remote(self) -> SshTarget | None:
        return self.engine.remote

    def reach(self, address: str, port: int, local_port: int | None = None) -> tuple[str, int]:
        return self.engine.reach(address, port, local_port)

    def hold(self) -> None:
        tunnel = self.engine.tunnel
        if tunnel is None:
            return
        tunnel.wait()
        raise tunnel.failure()

    # -- what goes in and comes out -------------------------------------------------------

    def put_files(self, files: Mapping[str, ContainerFile]) -> None:
        containers.put_files(self.engine, self.name, files)

    def signal(self, name: str) -> None:
        self.engine.kill_container(self.name, name)

    def exec(
        self, command: Sequence[str], *, user: str, workdir: str, env: Sequence[str] = ()
    ) -> tuple[Iterator[bytes], Callable[[], int | None]]:
        return self.engine.exec_run(self.name, command, user=user, workdir=workdir, env=env)

    def terminal(
        self,
        command: Sequence[str],
        *,
        user: str,
        workdir: str,
        env: Sequence[str] = (),
        tty: bool,
    ) -> Terminal | None:
        """`docker exec`: the docker CLI gives a real terminal (and input) to interactive
        programs. It talks to the same engine; a remote one through this process's SSH
        connection, which must outlive it."""
        # Only here: shutil loads the compression modules, which no other call needs.
        import shutil

        from opencode_cloud.runtime.base import Terminal

        docker = shutil.which("docker")
        if docker is None:
            return None
        exec_argv = [
            "exec", "-it" if tty else "-i", "-u", user, "-w", workdir,
            *(word for variable in env for word in ("-e", variable)), self.name, *command,
        ]  # fmt: skip
        tunnel = self.engine.tunnel
        if tunnel is None:
            return Terminal(docker, ("docker", *exec_argv))
        socket = f"unix://{tunnel.engine_socket}"
        return Terminal(docker, (docker, "-H", socket, *exec_argv), needs_this_process=True)

    def logs(self, **options: Unpack[LogOptions]) -> Iterator[bytes]:
        return self.engine.container_logs(self.name, **options)

    def log_tail(self, lines: int) -> list[str]:
        from opencode_cloud.docker.health import log_tail

        return log_tail(self.engine, self.name, lines)
