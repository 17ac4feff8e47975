"""Remote hosts by name: `occ host add|list|remove|test|default` and `--host NAME`.

A host is an SSH address (`ssh://[user@]host[:port]`) or a Docker context whose endpoint
is one, plus the path of the engine's socket there. The list lives in `hosts.json` in the
config directory; each host's instances keep their files under `hosts/<name>/`, so the
same instance name on two hosts is two services. Without a host, the engine is the one
the docker CLI would use (DOCKER_HOST, the current context, the local socket), and an
`ssh://` DOCKER_HOST is reached the same way as a named host. `connect` makes a client of
a host's engine; `describe_host` connects and says what runs there.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opencode_cloud.config.paths import config_dir
from opencode_cloud.errors import OpencodeCloudError

if TYPE_CHECKING:
    from opencode_cloud.docker.client import DockerClient
    from opencode_cloud.docker.ssh import SshTarget

HOSTS_FILE = "hosts.json"
# The name that means "this machine's engine" wherever a host name is asked for.
LOCAL = "local"
_NAME_RULE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")


class HostError(OpencodeCloudError):
    """A host name or address that cannot be used.

    Attributes:
        reason: `not-ssh` (a saved host that is not reached over SSH), `invalid-name`,
            `unknown` (no saved host of that name), or empty; the command line words the
            hint of the first three.
        name: The host name concerned.
    """

    def __init__(self, message: str, hint: str = "", *, reason: str = "", name: str = "") -> None:
        super().__init__(message, hint)
        self.reason = reason
        self.name = name


def hosts_file() -> Path:
    return config_dir() / HOSTS_FILE


def host_root(name: str) -> Path:
    """The folder of the files of `name`'s instances (its default instance's config)."""
    return config_dir() / "hosts" / name


@dataclass(frozen=True)
class Host:
    """A remote engine by name: an ssh address or a Docker context, and its socket."""

    name: str
    address: str  # ssh://[user@]host[:port], or a Docker context's name
    socket_path: str | None = None  # None: the default socket there

    @property
    def is_context(self) -> bool:
        return not self.address.startswith("ssh://")

    def target(self) -> SshTarget:
        """The ssh address behind this host (a context's endpoint, read now).

        Raises:
            HostError: the context is missing or does not point to an ssh:// endpoint.
        """
        from opencode_cloud.docker.ssh import SshTarget

        url = context_endpoint(self.address) if self.is_context else self.address
        try:
            return SshTarget.parse(url, self.socket_path)
        except ValueError as exc:
            raise HostError(
                f"Host {self.name!r}: {exc}.", reason="not-ssh", name=self.name
            ) from None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"address": self.address}
        if self.socket_path:
            data["socket"] = self.socket_path
        return data


def context_endpoint(context: str) -> str:
    """The engine address of the Docker context named `context` (as `docker context ls`).

    Raises:
        HostError: no such context.
    """
    from opencode_cloud.docker.transport import context_endpoint as endpoint

    url = endpoint(context)
    if url is None:
        raise HostError(
            f"{context!r} is neither an ssh:// address nor a Docker context.",
            "Give ssh://[user@]host[:port], or a name from `docker context ls`.",
        )
    return url


def validate_host_name(name: str) -> str:
    if name == LOCAL or not _NAME_RULE.match(name):
        raise HostError(
            f"Invalid host name {name!r}: use lower-case letters, digits, dots and dashes"
            + (f"; {LOCAL!r} means this machine." if name == LOCAL else "."),
            reason="invalid-name",
            name=name,
        )
    return name


@dataclass
class HostList:
    """The contents of hosts.json: the hosts, and which one commands use by default."""

    hosts: dict[str, Host]
    default: str | None = None

    @classmethod
    def load(cls) -> HostList:
        """The saved list (empty when there is none).

        Raises:
            HostError: the file exists but is not a valid list.
        """
        path = hosts_file()
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls({})
        except (OSError, ValueError) as exc:
            raise HostError(
                f"Cannot read {path}: {exc}.", f"Fix or remove {path}; it lists the hosts."
            ) from None
        try:
            hosts = {
                name: Host(name, str(entry["address"]), entry.get("socket"))
                for name, entry in data.get("hosts", {}).items()
            }
            default = data.get("default")
        except (AttributeError, KeyError, TypeError):
            raise HostError(
                f"{path} is not a list of hosts.", f"Fix or remove {path}; it lists the hosts."
            ) from None
        return cls(hosts, default if default in hosts else None)

    def save(self) -> None:
        from opencode_cloud.config.store import write_atomically

        data = {
            "default": self.default,
            "hosts": {name: host.to_json() for name, host in sorted(self.hosts.items())},
        }
        write_atomically(hosts_file(), (json.dumps(data, indent=2) + "\n").encode())

    def get(self, name: str) -> Host:
        """The host called `name`.

        Raises:
            HostError: there is none.
        """
        try:
            return self.hosts[name]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none yet"
            raise HostError(
                f"No host named {name!r} (known: {known}).", reason="unknown", name=name
            ) from None


def chosen_host(name: str | None) -> Host | None:
    """The host a command acts on: `--host`/OCC_HOST, else the saved default, else None
    (this machine, or whatever DOCKER_HOST names)."""
    if name == LOCAL:
        return None
    hosts = HostList.load() if name or hosts_file().exists() else HostList({})
    if name:
        return hosts.get(name)
    return hosts.hosts.get(hosts.default) if hosts.default else None


def environment_target() -> SshTarget | None:
    """An ssh:// engine named by DOCKER_HOST (or the current Docker context)."""
    from opencode_cloud.docker.errors import UnknownContext
    from opencode_cloud.docker.transport import engine_address

    try:
        url = engine_address().url
    except UnknownContext:
        return None  # connecting says so
    if not url.startswith("ssh://"):
        return None
    from opencode_cloud.docker.ssh import SshTarget

    try:
        return SshTarget.parse(url)
    except ValueError as exc:
        raise HostError(f"DOCKER_HOST: {exc}.", "Use ssh://[user@]host[:port].") from None


def connect(
    host: Host | None, timeout: float | None = None, *, login_timeout: float | None = None
) -> DockerClient:
    """A client of `host`'s engine, or of the one the environment names; an SSH login
    gets `login_timeout` seconds (default: `ssh.CONNECT_TIMEOUT` and a margin)."""
    from opencode_cloud.docker.client import DEFAULT_TIMEOUT, DockerClient

    target = host.target() if host is not None else environment_target()
    if target is None:
        return DockerClient(timeout=timeout or DEFAULT_TIMEOUT)
    from opencode_cloud.docker.ssh import SshTunnel

    tunnel = (
        SshTunnel(target) if login_timeout is None else SshTunnel(target, timeout=login_timeout)
    )
    try:
        return DockerClient(timeout=timeout or DEFAULT_TIMEOUT, tunnel=tunnel)
    except BaseException:
        tunnel.close()
        raise


def describe_host(host: Host) -> dict[str, Any]:
    """Connect to `host` and describe its engine: version, system, CPUs, the instances
    that run there, and how long connecting took (`host add` and `host test` show it).

    Raises:
        SshError: why the connection failed; DockerError.
    """
    from opencode_cloud.instance import LABEL_INSTANCE, LABEL_MANAGED, LABEL_ROLE

    started = time.monotonic()
    with connect(host) as client:
        connected = time.monotonic() - started
        engine = client.info()
        services = client.list_containers(labels=[f"{LABEL_MANAGED}=true", f"{LABEL_ROLE}=service"])
        instances = sorted(
            {client.inspect_container(name).labels.get(LABEL_INSTANCE, "?") for name in services}
        )
    return {
        "host": host.name,
        "address": host.address,
        "connect_seconds": connected,
        "engine": engine.version,
        "os": engine.operating_system,
        "cpus": engine.cpus,
        "instances": instances,
    }
