"""Where an instance's service answers, and the certificate it answers with.

`Endpoint` is the address, the user name and the scheme a browser and the tool's own
requests use, with the TLS trust those requests check (the instance's CA, or the
certificate handed over), as this machine reaches it. The functions below decide at each
start which certificate the edge serves, and hand a new one to an existing container
without re-creating it (a running edge reloads it on SIGHUP).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from opencode_cloud.defaults import TLS_ENV
from opencode_cloud.docker import image as images
from opencode_cloud.docker.errors import DockerError
from opencode_cloud.opencode import Server

if TYPE_CHECKING:
    import ssl

    from opencode_cloud.access.tls import TlsMaterial
    from opencode_cloud.config.paths import InstancePaths
    from opencode_cloud.config.schema import Config
    from opencode_cloud.docker.engine import Engine
    from opencode_cloud.docker.models import ContainerInfo
    from opencode_cloud.docker.spec import ContainerSpec
    from opencode_cloud.instance import Instance
    from opencode_cloud.runtime.base import Runtime


def is_loopback(address: str) -> bool:
    """True for addresses only this machine can reach."""
    import ipaddress

    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def service_url(config: Config) -> str:
    """The URL a browser on this machine (or, when exposed, elsewhere) opens."""
    return Endpoint(config.bind_address, config.port, config.username, config.tls_mode).url


@dataclass(frozen=True)
class Endpoint:
    """Where the service answers, and the user name it expects."""

    bind_address: str
    port: int
    username: str
    tls: str = "off"  # what the edge serves: off | self-signed | custom
    # What the tool's probes trust: the instance's CA, or the certificate it handed over.
    context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    # Where this machine reaches the service (`Runtime.reach`): a forwarded local port
    # when it runs on a remote host; None: where it is published.
    probe_at: tuple[str, int] | None = None
    # The remote host it runs on, by the name a browser there would use (`ssh -G`).
    remote_host: str | None = None

    @classmethod
    def of(cls, spec: ContainerSpec, paths: InstancePaths | None = None) -> Endpoint:
        return cls(spec.bind_address, spec.port, spec.username, spec.tls).trusting(paths)

    def trusting(self, paths: InstancePaths | None) -> Endpoint:
        """This endpoint with the TLS trust of the instance whose files are at `paths`."""
        if self.tls == "off" or paths is None:
            return self
        from opencode_cloud.access.tls import ssl_context

        return replace(self, context=ssl_context(paths, self.tls))

    @property
    def scheme(self) -> str:
        return "http" if self.tls == "off" else "https"

    @property
    def url(self) -> str:
        """The URL a browser opens: on this machine, or on the remote host it runs on
        (by that host's name when it listens on every address there)."""
        host = self.bind_address
        if host in ("0.0.0.0", "::"):
            host = self.remote_host or "127.0.0.1"
        return _http_url(self.scheme, host, self.port)

    @property
    def base_url(self) -> str:
        """Where the tool's own requests go: `url`, or the port that reaches it from here."""
        if self.probe_at is None:
            return self.url
        return _http_url(self.scheme, *self.probe_at)

    def server(self, password: str | None) -> Server:
        """opencode's API here, asked with `password` (and this endpoint's TLS trust)."""
        return Server(self.base_url, self.username, password, self.context)

    @property
    def only_on_remote(self) -> bool:
        """Runs on a remote host and listens on its loopback only: a tunnel reaches it."""
        return self.remote_host is not None and is_loopback(self.bind_address)

    def reached_through(self, runtime: Runtime, local_port: int | None = None) -> Endpoint:
        """This endpoint as this machine reaches it where `runtime` runs it: through the
        SSH connection for a remote host (at `local_port` here, else a free one), never
        this machine's loopback by mistake."""
        remote = runtime.remote
        if remote is None:
            return self
        return replace(
            self,
            probe_at=runtime.reach(self.bind_address, self.port, local_port),
            remote_host=remote.settings().get("hostname") or remote.host,
        )


def _http_url(scheme: str, host: str, port: int) -> str:
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


# -- the certificate the edge serves ------------------------------------------------------


def tls_material(config: Config, paths: InstancePaths, instance: Instance) -> TlsMaterial | None:
    """The certificate the configuration asks the edge to serve (made or renewed as
    needed in self-signed mode, its `new_ca` set when the CA was made anew); None when
    TLS is off.

    Raises:
        TlsError.
    """
    from opencode_cloud.access import tls

    mode = config.tls_mode
    if mode == "off":
        return None
    if mode == "custom":
        return tls.custom(config.tls_cert, config.tls_key)
    names = tls.server_names(config.bind_address, config.host_names)
    return tls.self_signed(paths, names, instance.name)


def certificate_due(paths: InstancePaths, info: ContainerInfo) -> bool:
    """Whether the container should get another certificate: a cheap look at the
    instance's files (`tls.handover_due`), for a start that reads no configuration."""
    values = dict(e.split("=", 1) for e in info.env if e.startswith(f"{TLS_ENV}="))
    mode = values.get(TLS_ENV, "off")
    if mode == "off":
        return False
    from opencode_cloud.access.tls import handover_due

    return handover_due(paths, mode, info.id)


def serves_another(paths: InstancePaths, info: ContainerInfo, material: TlsMaterial | None) -> bool:
    """Whether `material` is not the chain the container was last handed."""
    if material is None:
        return False
    from opencode_cloud.access.tls import serves

    return not serves(paths, info.id, material.cert)


def reloads_certificate(client: Engine, info: ContainerInfo) -> bool:
    """Whether the container's edge takes a new certificate on SIGHUP (its image's
    `io.opencode-cloud.edge` label)."""
    generation = images.edge_generation(client.inspect_image(info.image_id))
    return generation >= images.EDGE_RELOADS_ON_HUP


def hand_over(
    runtime: Runtime, paths: InstancePaths, info: ContainerInfo, material: TlsMaterial
) -> str:
    """Write `material` into the existing container, as into a new one; a running one
    reloads it (SIGHUP: its edge keeps serving, nobody is signed out).

    Returns:
        `reloaded` (it runs) or `written` (it reads the files when it starts).
    """
    runtime.put_files(material.container_files())
    how = "written"
    if info.running:
        try:
            runtime.signal("HUP")
            how = "reloaded"
        except DockerError:
            now = runtime.state()
            if now is not None and now.running:
                raise
    remember_served(paths, material, info.id)
    return how


def remember_served(paths: InstancePaths, material: TlsMaterial | None, container_id: str) -> None:
    """Keep a copy of the chain handed to the container (`tls.remember_served`)."""
    if material is not None:
        from opencode_cloud.access.tls import remember_served as remember

        remember(paths, material, container_id)
