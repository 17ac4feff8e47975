"""What every command needs: the instance, the output, and (lazily) config and engine.

The context is the command line's one connection to an engine (`connect`, through
`hosts.connect`); commands never use it themselves, they ask the operations it makes
(`service()`) and hand them the context's progress reporters.

Nothing heavy is imported here at module level: `occ --help` must not pay for docker-py
or pydantic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opencode_cloud.cli.output import Output
from opencode_cloud.config.paths import InstancePaths, instance_paths
from opencode_cloud.instance import Instance, command_prefix

if TYPE_CHECKING:
    from opencode_cloud.config.schema import Config
    from opencode_cloud.docker.client import DockerClient
    from opencode_cloud.docker.progress import ProgressReporter
    from opencode_cloud.hosts import Host
    from opencode_cloud.service.service import Service
    from opencode_cloud.team.cluster import Cluster
    from opencode_cloud.team.team import Team

# Seconds a changing command waits for another one on the same instance to finish.
LOCK_WAIT_SECONDS = 10.0
# The variables that stand for the global options --instance and --host.
INSTANCE_ENVVAR = "OCC_INSTANCE"
HOST_ENVVAR = "OCC_HOST"


@dataclass
class AppContext:
    """Per-invocation state, built by the top-level callback from the global options."""

    instance: Instance
    out: Output
    host_name: str | None = None  # --host / OCC_HOST, as given
    _config: Config | None = field(default=None, repr=False)
    _client: DockerClient | None = field(default=None, repr=False)
    _host: Host | None = field(default=None, repr=False)
    _host_resolved: bool = field(default=False, repr=False)

    @classmethod
    def from_options(
        cls,
        instance: str,
        host_name: str | None,
        *,
        json_output: bool = False,
        quiet: bool = False,
        verbose: bool = False,
        debug: bool = False,
    ) -> AppContext:
        """The context of the global options as given.

        Raises:
            InvalidInstanceName.
        """
        verbosity = -1 if quiet else (1 if verbose else 0)
        out = Output(json=json_output, verbosity=verbosity, debug=debug)
        return cls(instance=Instance(instance), out=out, host_name=host_name or None)

    @property
    def host(self) -> Host | None:
        """The remote host commands act on (`--host`, OCC_HOST, the saved default), or
        None for this machine's engine."""
        if not self._host_resolved:
            from opencode_cloud.hosts import chosen_host

            self._host = chosen_host(self.host_name)
            self._host_resolved = True
        return self._host

    @property
    def remote_address(self) -> str | None:
        """The ssh address of the engine when it is on another machine (a host, or an
        `ssh://` DOCKER_HOST), without connecting; None for this machine's."""
        if self.host is not None:
            return self.host.address
        from opencode_cloud.hosts import environment_target

        target = environment_target()
        return target.url if target else None

    @property
    def occ(self) -> str:
        """The command line that acts on this instance, for hints: `occ --host cloud`."""
        from opencode_cloud.errors import OpencodeCloudError

        try:
            host = self.host.name if self.host else None
        except OpencodeCloudError:  # an unknown --host: say it as it was given
            host = self.host_name
        return command_prefix(self.instance, host)

    @property
    def paths(self) -> InstancePaths:
        from opencode_cloud.hosts import host_root

        host = self.host
        return instance_paths(self.instance, host_root(host.name) if host else None)

    @property
    def config(self) -> Config:
        """The validated configuration; warnings about unknown keys go to stderr once."""
        if self._config is None:
            from opencode_cloud.config.store import load_config

            loaded = load_config(self.paths.config_file)
            for warning in loaded.warnings:
                self.out.warn(warning)
            self._config = loaded.config
        return self._config

    def set_config(self, config: Config) -> None:
        self._config = config

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            self._client = self.connect()
        return self._client

    def connect(self, timeout: float | None = None) -> DockerClient:
        """A new client of the engine this command acts on (over SSH for a remote host)."""
        from opencode_cloud.hosts import connect

        return connect(self.host, timeout)

    def close(self) -> None:
        """End the engine connection (and an SSH connection under it)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def for_instance(self, instance: Instance) -> AppContext:
        """This command's context for `instance` on the same host, its configuration read
        afresh (the same instance after a restore replaced it, or another one); the
        engine connection is shared, and closed with this context's."""
        client = self.client  # connects first: the host is resolved by then
        return AppContext(
            instance=instance,
            out=self.out,
            host_name=self.host_name,
            _client=client,
            _host=self._host,
            _host_resolved=self._host_resolved,
        )

    def for_person(self, person: str | None) -> AppContext:
        """This command's context for `person`'s instance (`--user`) in the team; itself
        for None. Refused unless the instance is in team mode.

        Raises:
            TeamNotEnabled, InvalidPersonName.
        """
        if person is None:
            return self
        from opencode_cloud.team import team_enabled
        from opencode_cloud.team.errors import TeamNotEnabled

        target = self.instance.for_person(person)  # checks the name
        if not team_enabled(self.paths):
            raise TeamNotEnabled(self.instance.name)
        return self.for_instance(target)

    def team(self, *, enabled: bool | None = True) -> Team:
        """The instance's team; with `enabled` True (False), refused unless it is in team
        mode (single-user mode); None: either.

        Raises:
            TeamNotEnabled, TeamAlreadyEnabled.
        """
        from opencode_cloud.team.errors import TeamAlreadyEnabled, TeamNotEnabled
        from opencode_cloud.team.team import Team

        team = Team(self.service())
        if enabled is True and not team.enabled:
            raise TeamNotEnabled(self.instance.name)
        if enabled is False and team.enabled:
            raise TeamAlreadyEnabled(self.instance.name)
        return team

    def cluster(self) -> Cluster:
        """The instance's team on the swarm whose manager is this command's engine."""
        from opencode_cloud.team.cluster import Cluster

        return Cluster(self.client, self.config, self.instance)

    def in_team_mode(self) -> bool:
        """Whether the instance serves a team (a look at one small file)."""
        from opencode_cloud.team import team_enabled

        return self.instance.person is None and team_enabled(self.paths)

    def service(self) -> Service:
        from opencode_cloud.service.service import Service

        # The configuration is loaded (and validated) only if the operation needs it.
        return Service(self.client, lambda: self.config, self.instance, self.paths)

    def reporter(self) -> ProgressReporter:
        """Progress bars on a terminal, plain lines otherwise (and nothing with -q)."""
        from opencode_cloud.cli.progress import reporter_for

        return reporter_for(self.out.stderr, quiet=self.out.verbosity < 0)

    def bytes_reporter(self) -> ProgressReporter | None:
        """Progress in bytes (a backup's) on a terminal; nothing at all otherwise (or with
        -q, --json)."""
        out = self.out
        if out.json or out.verbosity < 0 or not out.stderr.isatty():
            return None
        return self.reporter()

    def confirmed(self, question: str, yes: bool) -> bool:
        """True with `--yes`, or when the person at the terminal answers yes; nobody is
        asked when nobody is there to answer. A no is the caller's to refuse with
        `NotConfirmed` (exit code 2)."""
        if yes:
            return True
        if not self.out.interactive:
            return False
        import click

        return click.confirm(question, default=False, err=True)

    @contextmanager
    def changing(self, command: str) -> Iterator[None]:
        """Hold the instance lock while a command (`start`, `config`) changes things; a
        command that waits for it names this one as it is typed (`occ --instance w
        start`)."""
        from opencode_cloud.locking import instance_lock

        line = f"{self.occ} {command}"
        with instance_lock(self.paths, command=line, timeout=LOCK_WAIT_SECONDS):
            yield

    @contextmanager
    def spinner(self, message: str) -> Iterator[None]:
        """A spinner on a terminal; one plain line otherwise."""
        if self.out.verbosity >= 0 and self.out.color and not self.out.json:
            from rich.console import Console

            with Console(stderr=True).status(message):
                yield
        else:
            self.out.progress(message)
            yield
