"""Operations on one instance's service: what `occ start`, `stop`, `status`, ... do.

This layer sits between the CLI (which parses and renders) and the engine core in
`opencode_cloud.docker` (which knows nothing of configuration files or passwords). It
reads the configuration, turns it into a `ContainerSpec`, and compares that with what
the engine reports. Each operation returns a plain dataclass the CLI renders as text or
JSON; errors carry data, and the CLI writes their hints.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from opencode_cloud.access import credentials
from opencode_cloud.config.paths import InstancePaths, config_fingerprint, instance_paths
from opencode_cloud.defaults import (
    CONTAINER_PORT,
    EDGE_UID,
    RUNTIME_PATH,
    RUNTIME_USER,
    TLS_ENV,
    WORKING_DIR,
)
from opencode_cloud.docker import container as containers
from opencode_cloud.docker import image as images
from opencode_cloud.docker import volume as volumes
from opencode_cloud.docker.errors import (
    ContainerExited,
    DockerError,
    PullFailed,
    SessionsFailing,
)
from opencode_cloud.docker.models import ContainerFile, ContainerInfo, ImageInfo
from opencode_cloud.docker.spec import ContainerSpec
from opencode_cloud.errors import OpencodeCloudError
from opencode_cloud.instance import LABEL_CONFIG_FILE, Instance
from opencode_cloud.opencode import Server

if TYPE_CHECKING:
    import ssl

    from opencode_cloud.access.tls import TlsMaterial
    from opencode_cloud.config.schema import Config
    from opencode_cloud.docker.client import LogOptions
    from opencode_cloud.docker.engine import Engine
    from opencode_cloud.docker.progress import ProgressReporter


# A restarted container that has not run this long since is still crash-looping.
CRASH_LOOP_WINDOW = 30.0
STATUS_LOG_LINES = 10


class NeverCreated(OpencodeCloudError):
    """The instance has no container: it was never started (or was removed)."""

    def __init__(self, instance: Instance) -> None:
        super().__init__(f"Instance {instance.name!r} has no container (it was never started).")
        self.instance = instance


class VersionChange(OpencodeCloudError):
    """The configuration names another opencode version (or image) than the container runs."""

    def __init__(self, instance: Instance, current: str, wanted: str) -> None:
        super().__init__(
            f"The configuration asks for {wanted}, but instance {instance.name!r} runs "
            f"{current}: a version change goes through `update`."
        )
        self.instance = instance
        self.current = current
        self.wanted = wanted


class NotRunning(OpencodeCloudError):
    """The instance's container exists but does not run."""

    def __init__(self, instance: Instance) -> None:
        super().__init__(f"Instance {instance.name!r} is not running.")
        self.instance = instance


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


def image_for(config: Config) -> str:
    """The image the container runs: the user's override, else the local sandbox tag."""
    return config.image or images.image_ref(config.opencode_version)


@dataclass(frozen=True)
class Endpoint:
    """Where the service answers, and the user name it expects."""

    bind_address: str
    port: int
    username: str
    tls: str = "off"  # what the edge serves: off | self-signed | custom
    # What the tool's probes trust: the instance's CA, or the certificate it handed over.
    context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    # Where this machine reaches the service (`DockerClient.reach`): a forwarded local
    # port when it runs on a remote host; None: where it is published.
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

    def reached_through(self, client: Engine, local_port: int | None = None) -> Endpoint:
        """This endpoint as `client`'s machine reaches it: through the engine's SSH
        connection for a remote host (at `local_port` here, else a free one), never this
        machine's loopback by mistake."""
        remote = client.remote
        if remote is None:
            return self
        remote_host = remote.settings().get("hostname") or remote.host
        return replace(
            self,
            probe_at=client.reach(self.bind_address, self.port, local_port),
            remote_host=remote_host,
        )


def _http_url(scheme: str, host: str, port: int) -> str:
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


@dataclass
class StartResult:
    """What `start` did."""

    url: str
    username: str
    password: str | None
    password_created: bool
    already_running: bool
    recreated_because: list[str] = field(default_factory=list)
    image: str = ""
    image_action: str = "present"  # present | built | pulled
    healthy: bool | None = None
    seconds_to_healthy: float | None = None
    container_id: str = ""
    host: str | None = None  # the remote host it runs on (ssh address); None: this machine
    # It listens on the remote host's loopback: `occ tunnel` reaches it from here.
    needs_tunnel: bool = False
    # The existing container got a new certificate at this start (a renewal, a new name,
    # the user's renewed file): `reloaded` by the running edge, without a restart, or
    # `written` before the container started; None when it kept the one it had.
    certificate_renewed: str | None = None
    # When the served certificate ends (ISO 8601), when this start read it.
    certificate_not_after: str | None = None
    # The instance's CA was made anew (`tls.NewCa.to_json()`): clients that trusted the
    # old one must be told to trust this one.
    new_ca: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["password"] is None:
            data.pop("password")
        return data


@dataclass
class BuildResult:
    """What `build` made."""

    image: str
    id: str
    opencode_version: str


@dataclass
class VolumeStatus:
    name: str
    mount_point: str
    holds: str
    exists: bool
    size_bytes: int | None


@dataclass
class StatusResult:
    """What `status` reports."""

    instance: str
    container: str
    # missing | created | starting | running | exited | restarting | paused | dead
    state: str
    running: bool
    url: str
    bind_address: str
    port: int
    exposed: bool
    docker_health: str | None = None
    http_health: str | None = None  # healthy | unauthorized | unhealthy | unreachable
    session_api: str | None = None  # ok, or what fails when opencode cannot read its data
    opencode_version: str | None = None
    image: str | None = None
    started_at: str | None = None
    uptime_seconds: float | None = None
    restart_count: int = 0
    last_exit_code: int | None = None
    # Why the last run ended, in words: "killed: out of memory", "exit code 1", ...
    last_exit: str | None = None
    # The service's last output lines, when it is not healthy (crash loop, exited, ...).
    log_tail: list[str] = field(default_factory=list)
    pending_restart: list[str] = field(default_factory=list)
    volumes: list[VolumeStatus] = field(default_factory=list)
    # Kept from the last updates, for `occ rollback`: id, image, created, size_bytes.
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    host: str | None = None  # the remote host it runs on (ssh address); None: this machine
    needs_tunnel: bool = False  # it listens on the remote host's loopback only
    warnings: list[str] = field(default_factory=list)  # written by the command line

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Service:
    """One instance's service, as seen from a configuration and an engine."""

    def __init__(
        self,
        client: Engine,
        config: Config | Callable[[], Config],
        instance: Instance,
        paths: InstancePaths | None = None,
    ) -> None:
        """Args:
        config: the configuration, or a function that loads it: operations that do
            not need it (stop, logs, an unchanged start) then never pay for validating it.
        """
        self.client = client
        self._config = config
        self.instance = instance
        self.paths = paths or instance_paths(instance)
        # The instance's CA made anew by `tls_material` (`tls.NewCa.to_json()`), if it was.
        self.new_ca: dict[str, Any] | None = None

    @property
    def config(self) -> Config:
        if callable(self._config):
            self._config = self._config()
        return self._config

    @property
    def name(self) -> str:
        return self.instance.container_name

    @functools.cached_property
    def _engine_cpus(self) -> int:
        """The engine's CPU count ("all CPUs" in `limits`), asked once per operation:
        a start compares the spec and then creates from it."""
        return self.client.info().cpus

    # -- image ----------------------------------------------------------------------

    def ensure_image(
        self, *, build: bool = False, pull: bool = False, reporter: ProgressReporter | None = None
    ) -> str:
        """Make sure the image exists; build or pull it when asked or when it is missing.

        Returns:
            `present`, `built` or `pulled`.

        Raises:
            ImageNotFound: a configured image override is missing and cannot be pulled.
            PullFailed: no registry is configured, or none served the image.
            BuildFailed.
        """
        ref = image_for(self.config)
        found = self.client.inspect_image(ref)
        if found is not None and not (build or pull) and not _without_edge(found):
            return "present"
        if pull or (not build and (self.config.registries or self.config.image)):
            self.pull(reporter)
            return "pulled"
        self.build(reporter=reporter)
        return "built"

    def build(
        self,
        *,
        opencode_version: str | None = None,
        ca_files: Sequence[str | Path] = (),
        no_cache: bool = False,
        reporter: ProgressReporter | None = None,
    ) -> BuildResult:
        """Build the sandbox image for the configured (or the given) opencode version.

        Args:
            ca_files: certificates to trust besides the configured `ca_certificates`.

        Raises:
            BuildFailed, InvalidCertificate.
        """
        version = opencode_version or self.config.opencode_version
        tag = self.config.image or images.image_ref(version)
        image_id = images.build_image(
            self.client,
            tag=tag,
            opencode_version=version,
            ca_files=[*self.config.ca_certificates, *ca_files],
            no_cache=no_cache,
            reporter=reporter,
        )
        return BuildResult(tag, image_id, version)

    def pull(self, reporter: ProgressReporter | None = None) -> str:
        """Pull the image; returns where it came from. An `image` override comes from the
        registry its reference names; the sandbox image from the configured registries.

        Raises:
            PullFailed: no registry is configured, or none served the image.
        """
        ref = image_for(self.config)
        if self.config.image:
            return images.pull_reference(self.client, ref, reporter=reporter)
        if not self.config.registries:
            raise PullFailed(ref)
        return images.pull_image(self.client, self.config.registries, tag=ref, reporter=reporter)

    # -- the spec: wanted, actual, and what differs ---------------------------------

    def tls_material(self) -> TlsMaterial | None:
        """The certificate the configuration asks the edge to serve (made or renewed as
        needed in self-signed mode); None when TLS is off.

        Raises:
            TlsError.
        """
        from opencode_cloud.access import tls

        mode = self.config.tls_mode
        if mode == "off":
            return None
        if mode == "custom":
            return tls.custom(self.config.tls_cert, self.config.tls_key)
        names = tls.server_names(self.config.bind_address, self.config.host_names)
        material = tls.self_signed(self.paths, names, self.instance.name)
        if material.new_ca is not None:
            self.new_ca = material.new_ca.to_json()
        return material

    def container_files(
        self, password: str, material: TlsMaterial | None
    ) -> dict[str, bytes | ContainerFile]:
        """What a new container is handed: the password's hash and the certificate."""
        files: dict[str, bytes | ContainerFile] = {
            **credentials.container_files(password, self.paths)
        }
        if material is not None:
            files.update(material.container_files())
        return files

    def wanted_spec(self, image: ImageInfo | None) -> ContainerSpec:
        """The container the configuration asks for, running `image` (None: not there yet)."""
        return ContainerSpec.from_config(
            self.config,
            self.instance,
            image=image_for(self.config),
            image_id=image.id if image else None,
            labels={LABEL_CONFIG_FILE: config_fingerprint(self.paths.config_file) or ""},
            # "All CPUs" is a number the engine knows; ask only when it is needed.
            engine_cpus=self._engine_cpus if self.config.limits.cpus is None else 0,
        )

    def _file_unchanged(self, info: ContainerInfo) -> bool:
        """True when the configuration file (and the tool) are those the container was
        made from: then its settings are the configuration's, and `status` and `start`
        need not load and validate the file (pydantic costs ~150 ms of start-up).
        """
        recorded = info.labels.get(LABEL_CONFIG_FILE)
        return bool(recorded) and recorded == config_fingerprint(self.paths.config_file)

    def pending_changes(self, info: ContainerInfo) -> list[str]:
        """The settings that differ between the configuration and the container, as the
        user reads them ("port", "environment", ...); empty when none do."""
        image = self.client.inspect_image(info.image)  # what the container's reference is now
        # The image the container runs, for its own environment, even once its name moved.
        running = (
            image
            if image and image.id == info.image_id
            else self.client.inspect_image(info.image_id)
        )
        inherited = running.env if running else (image.env if image else ())
        actual = ContainerSpec.from_inspect(info, inherited)
        if self._file_unchanged(info):
            wanted = replace(actual, image_id=image.id if image else None)
        else:
            same_ref = image_for(self.config) == info.image
            wanted = self.wanted_spec(
                image if same_ref else self.client.inspect_image(image_for(self.config))
            )
        return wanted.without_env(inherited).diff(actual)

    def check_mounts(self) -> None:
        """Refuse host folders that must not reach the container, however they got into
        the configuration (`occ mount add` checks them too, `occ config set` and an
        editor do not): the Docker socket, the volumes, the system folders, a folder
        that is gone.

        Raises:
            MountError: also for any folder when the engine is on a remote host.
        """
        from opencode_cloud.mounts import HostMount, check_mount, remote_mounts_refused

        if self.config.mounts and self.client.remote is not None:
            raise remote_mounts_refused(self.client.remote.url)
        for text in self.config.mounts:
            check_mount(HostMount.parse(text))

    def endpoint(self) -> Endpoint:
        """Where the service answers now (its container's settings, else the configuration's)."""
        return self._endpoint(self.client.find_container(self.name))

    def tunnel_endpoint(self, local_port: int | None = None) -> Endpoint:
        """The running service on a remote host as this machine reaches it, through the
        engine's SSH connection: at `local_port`, else at the service's own port number
        when that is free here, else at a free one.

        Raises:
            NeverCreated; NotRunning: it exists but does not run.
        """
        from opencode_cloud.docker.ssh import local_port_free

        found = self._endpoint(self.shell_target(), reach=False)
        if local_port is None and local_port_free(found.port):
            local_port = found.port
        return found.reached_through(self.client, local_port)

    def _endpoint(self, info: ContainerInfo | None, *, reach: bool = True) -> Endpoint:
        """Where the service answers: read from the container when there is one; as this
        machine reaches it, unless not `reach`."""
        if info is not None and info.published(CONTAINER_PORT) is not None:
            found = Endpoint.of(ContainerSpec.from_inspect(info), self.paths)
        else:
            config = self.config
            found = Endpoint(
                config.bind_address, config.port, config.username, config.tls_mode
            ).trusting(self.paths)
        return found.reached_through(self.client) if reach else found

    # -- lifecycle ------------------------------------------------------------------

    def start(
        self,
        *,
        build: bool = False,
        pull: bool = False,
        wait: bool = True,
        timeout: float | None = None,
        reporter: ProgressReporter | None = None,
        on_step: Callable[[str], None] = lambda _msg: None,
        allow_version_change: bool = False,
    ) -> StartResult:
        """Bring the service up: image, volumes, container (re-created when its spec
        changed), started, and (unless `wait` is False) answering healthy.

        A different opencode version (or image) than the container's is refused: that
        change goes through `versions.Versions.update`, which keeps a snapshot and goes
        back when the new version cannot read the data (`allow_version_change` is how
        it starts the new one).

        Raises:
            HealthTimeout, ContainerExited: it did not come up (the error has the logs).
            PortInUse, ImageNotFound, BuildFailed, PullFailed, DockerError.
        """
        info = self.client.find_container(self.name)
        if (
            info is not None
            and not (build or pull)
            and (password := credentials.read_password(self.paths)) is not None
            and self._file_unchanged(info)
            and not self.pending_changes(info)
            and not self._certificate_due(info)
        ):
            return self._start_existing(info, password, wait=wait, timeout=timeout, on_step=on_step)
        self.check_mounts()
        if info is not None and info.image != image_for(self.config) and not allow_version_change:
            raise VersionChange(self.instance, info.image, image_for(self.config))
        image_action = self.ensure_image(build=build, pull=pull, reporter=reporter)
        if image_action != "present":
            on_step(f"Image {image_for(self.config)} {image_action}.")
        password, created = credentials.load_or_create_password(self.paths)
        recreate = self.pending_changes(info) if info else []
        if info and created and not recreate:
            # The password file was deleted: the container still has the old password.
            recreate = ["password"]
        material = self.tls_material()
        renewed = info is not None and not recreate and self._serves_another(info, material)
        if info and renewed and info.running and not self._reloads_certificate(info):
            # An edge from an earlier image stops on SIGHUP: it reads the files at start.
            recreate = ["TLS certificate"]
        if info and recreate:
            on_step(f"Re-creating the container because {', '.join(recreate)} changed.")
            containers.remove_container(self.client, self.name, force=True)
        elif info:
            handed = self._hand_over(info, material) if renewed and material else None
            result = self._start_existing(
                info, password, wait=wait, timeout=timeout, on_step=on_step, material=material
            )
            result.image_action = image_action
            result.certificate_renewed = handed
            return result
        else:
            on_step("Creating the container.")
        spec = self.wanted_spec(self.client.inspect_image(image_for(self.config)))
        cid = containers.setup_and_start(
            self.client, spec, self.instance, files=self.container_files(password, material)
        )
        self._remember_served(material, cid)
        endpoint = Endpoint.of(spec, self.paths).reached_through(self.client)
        result = StartResult(
            url=endpoint.url,
            username=spec.username,
            password=password if created else None,
            password_created=created,
            already_running=False,
            recreated_because=recreate,
            image=spec.image,
            image_action=image_action,
            container_id=cid,
        )
        _note_certificate(result, material)
        return self._finish_start(
            result, password, endpoint, wait=wait, timeout=timeout, on_step=on_step
        )

    def _remember_served(self, material: TlsMaterial | None, container_id: str) -> None:
        if material is not None:
            from opencode_cloud.access.tls import remember_served

            remember_served(self.paths, material, container_id)

    def _certificate_due(self, info: ContainerInfo) -> bool:
        """Whether the container should get another certificate: a cheap look at the
        instance's files (`tls.handover_due`), for a start that reads no configuration."""
        values = dict(e.split("=", 1) for e in info.env if e.startswith(f"{TLS_ENV}="))
        mode = values.get(TLS_ENV, "off")
        if mode == "off":
            return False
        from opencode_cloud.access.tls import handover_due

        return handover_due(self.paths, mode, info.id)

    def _serves_another(self, info: ContainerInfo, material: TlsMaterial | None) -> bool:
        """Whether `material` is not the chain the container was last handed."""
        if material is None:
            return False
        from opencode_cloud.access.tls import serves

        return not serves(self.paths, info.id, material.cert)

    def _reloads_certificate(self, info: ContainerInfo) -> bool:
        """Whether the container's edge takes a new certificate on SIGHUP (its image's
        `io.opencode-cloud.edge` label)."""
        generation = images.edge_generation(self.client.inspect_image(info.image_id))
        return generation >= images.EDGE_RELOADS_ON_HUP

    def _hand_over(self, info: ContainerInfo, material: TlsMaterial) -> str:
        """Write `material` into the existing container, as into a new one; a running one
        reloads it (SIGHUP: its edge keeps serving, nobody is signed out).

        Returns:
            `reloaded` (it runs) or `written` (it reads the files when it starts).
        """
        containers.put_files(self.client, self.name, material.container_files())
        how = "written"
        if info.running:
            try:
                self.client.kill_container(self.name, "HUP")
                how = "reloaded"
            except DockerError:
                now = self.client.find_container(self.name)
                if now is not None and now.running:
                    raise
        self._remember_served(material, info.id)
        return how

    def create(self) -> str:
        """Create the container the configuration asks for, with its password file, and
        leave it stopped; its image must exist. An update prepares the new version this
        way while the old one still serves.

        Raises:
            ContainerAlreadyExists, ImageNotFound, DockerError.
        """
        password, _ = credentials.load_or_create_password(self.paths)
        material = self.tls_material()
        spec = self.wanted_spec(self.client.inspect_image(image_for(self.config)))
        cid = containers.create_with_files(
            self.client, spec, self.instance, self.container_files(password, material)
        )
        self._remember_served(material, cid)
        return cid

    def _start_existing(
        self,
        info: ContainerInfo,
        password: str,
        *,
        wait: bool,
        timeout: float | None,
        on_step: Callable[[str], None],
        material: TlsMaterial | None = None,
    ) -> StartResult:
        """Start a container whose spec and password are unchanged.

        The container is started first; the configuration (for the start timeout) is
        read only while opencode boots, so a stopped service becomes ready as fast as
        `docker start` allows.
        """
        if not info.running:
            on_step("Starting the existing container.")
            containers.start_container(self.client, self.name)
        endpoint = self._endpoint(info)
        result = StartResult(
            url=endpoint.url,
            username=endpoint.username,
            password=None,
            password_created=False,
            already_running=info.running,
            image=info.image,
            container_id=info.id,
        )
        _note_certificate(result, material)
        return self._finish_start(
            result, password, endpoint, wait=wait, timeout=timeout, on_step=on_step
        )

    def _finish_start(
        self,
        result: StartResult,
        password: str,
        endpoint: Endpoint,
        *,
        wait: bool,
        timeout: float | None,
        on_step: Callable[[str], None],
    ) -> StartResult:
        """Wait until opencode answers, and check that it can read its sessions.

        Raises:
            HealthTimeout, ContainerExited: it did not come up; a crash-looping container
                is stopped, so it does not restart forever.
            SessionsFailing: it answers, but its session API fails.
        """
        result.host = self.client.remote.url if self.client.remote else None
        result.needs_tunnel = endpoint.only_on_remote
        if result.already_running:
            # Running is not the same as answering: right after Docker restarted it, or
            # after an interrupted start, opencode may still be booting.
            if self.probe(password, endpoint)[0] != "healthy":
                if not wait:
                    result.healthy = False
                    return result
                on_step("Waiting for opencode to answer ...")
                result.seconds_to_healthy = self._wait_or_stop(password, timeout, endpoint)
        elif wait:
            on_step("Waiting for opencode to answer ...")
            result.seconds_to_healthy = self._wait_or_stop(password, timeout, endpoint)
        else:
            return result
        problem = self.session_problem(password, endpoint)
        if problem is not None:
            raise SessionsFailing(self.name, problem, self.probe(password, endpoint)[1])
        result.healthy = True
        return result

    def _wait_or_stop(self, password: str, timeout: float | None, endpoint: Endpoint) -> float:
        """`wait_healthy`, but a container that crashed meanwhile is stopped: Docker would
        otherwise restart it forever, and the user is told why it failed instead."""
        try:
            return self.wait_healthy(password, timeout, endpoint)
        except ContainerExited:
            containers.stop_container(self.client, self.name, 0)
            raise

    def session_problem(self, password: str | None, endpoint: Endpoint | None = None) -> str | None:
        """What is wrong with opencode's session API (a call that reads its database), or
        None when it works."""
        endpoint = endpoint or self._endpoint(None)
        return endpoint.server(password).session_problem()

    def wait_healthy(
        self, password: str, timeout: float | None = None, endpoint: Endpoint | None = None
    ) -> float:
        """Block until opencode answers its health endpoint; return the seconds waited.

        Raises:
            HealthTimeout, ContainerExited.
        """
        from opencode_cloud.docker.health import wait_until_healthy

        endpoint = endpoint or self._endpoint(self.client.find_container(self.name))
        server = endpoint.server(password)
        return wait_until_healthy(
            self.client,
            self.name,
            server.health_url,
            server.username,
            server.password,
            timeout=timeout or self.config.start_timeout,
            context=server.context,
        )

    def probe(
        self, password: str | None, endpoint: Endpoint | None = None
    ) -> tuple[str, str | None]:
        """One HTTP request to the health endpoint.

        Returns:
            (`healthy` | `unauthorized` | `unhealthy` | `unreachable`, opencode's version).
        """
        endpoint = endpoint or self._endpoint(None)
        answer = endpoint.server(password).health(timeout=2)
        return answer.state, answer.version

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the container; return False when it was not running.

        Without `timeout` the container's own (its spec's `stop_timeout`) applies, so
        stopping needs no configuration.

        Raises:
            NeverCreated: the instance has no container.
        """
        info = self._require()
        if not info.status.active:
            return False
        self.client.stop_container(
            self.name, containers.grace(info.stop_timeout if timeout is None else timeout)
        )
        return True

    def _require(self) -> ContainerInfo:
        info = self.client.find_container(self.name)
        if info is None:
            raise NeverCreated(self.instance)
        return info

    def logs(self, **options: Unpack[LogOptions]) -> Iterator[bytes]:
        """The container's output (`options` as for `DockerClient.container_logs`).

        Raises:
            NeverCreated: the instance has no container.
        """
        self._require()
        return self.client.container_logs(self.name, **options)

    def last_log_lines(self, count: int = 20) -> list[str]:
        from opencode_cloud.docker.health import log_tail

        return log_tail(self.client, self.name, count)

    def rotate_password(self) -> tuple[str, bool]:
        """Set a new password and hand its hash to the container's edge.

        The edge reads the new hash on its next request: the old password and every
        session cookie made under it stop working at once, without a restart (opencode's
        own password is internal to the container and does not change).

        Returns:
            The new password, and whether a container took it (False: none exists; the
            next start hands it over).
        """
        new = credentials.rotate_password(self.paths)
        info = self.client.find_container(self.name)
        if info is None:
            return new, False
        # Images before the edge had a user of its own read the hash as the runtime user.
        separate_edge = info.labels.get(images.LABEL_EDGE, "1") >= images.EDGE_LABEL
        uid = EDGE_UID if separate_edge else ContainerSpec.from_inspect(info).runtime_uid
        for path, content in credentials.container_files(new, self.paths).items():
            containers.put_file(self.client, self.name, path, content, uid=uid)
        return new, True

    def shell_target(self) -> ContainerInfo:
        """The running container a shell goes into.

        Raises:
            NeverCreated; NotRunning: it exists but does not run.
        """
        info = self._require()
        if not info.running:
            raise NotRunning(self.instance)
        return info

    def run_command(
        self, command: Sequence[str]
    ) -> tuple[Iterator[bytes], Callable[[], int | None]]:
        """Run `command` in the container as the runtime user, in the projects folder.

        Returns:
            Its output as chunks, and a function giving its exit code once read.

        Raises:
            NeverCreated, NotRunning.
        """
        self.shell_target()
        return self.client.exec_run(
            self.name, command, user=RUNTIME_USER, workdir=WORKING_DIR, env=[f"PATH={RUNTIME_PATH}"]
        )

    # -- status ---------------------------------------------------------------------

    def status(self, password: str | None) -> StatusResult:
        """Everything `occ status` shows, from one inspect and one HTTP probe."""
        info = self.client.find_container(self.name)
        # With a container, its own settings say where it listens; the configuration is
        # then only read when it changed since (to report a pending restart).
        endpoint = self._endpoint(info)
        result = StatusResult(
            instance=self.instance.name,
            container=self.name,
            state="missing" if info is None else info.status.value,
            running=bool(info and info.running),
            url=endpoint.url,
            bind_address=endpoint.bind_address,
            port=endpoint.port,
            exposed=not is_loopback(endpoint.bind_address),
            host=self.client.remote.url if self.client.remote else None,
            needs_tunnel=endpoint.only_on_remote,
        )
        if info is not None:
            self._describe_container(result, info, password, endpoint)
        result.volumes = self._volume_status()
        from opencode_cloud.service.snapshots import list_snapshots

        try:
            result.snapshots = [s.to_json() for s in list_snapshots(self.client, self.instance)]
        except DockerError:
            result.snapshots = []
        return result

    def _describe_container(
        self, result: StatusResult, info: ContainerInfo, password: str | None, endpoint: Endpoint
    ) -> None:
        result.docker_health = info.health
        result.image = info.image
        result.opencode_version = info.labels.get(images.LABEL_OPENCODE_VERSION)
        result.restart_count = info.restart_count
        result.pending_restart = self.pending_changes(info)
        if info.finished_at is not None:  # it has ended at least once
            result.last_exit_code = info.exit_code
            result.last_exit = describe_exit(info)
        if info.running:
            result.started_at = info.started_at
            result.uptime_seconds = _seconds_since(info.started_at)
            result.http_health, live_version = self.probe(password, endpoint)
            result.opencode_version = live_version or result.opencode_version
            if result.http_health == "healthy":
                problem = self.session_problem(password, endpoint)
                result.session_api = problem or "ok"
                if problem:
                    result.http_health = "unhealthy"
            elif result.http_health == "unreachable" and info.health != "unhealthy":
                result.state = "starting"  # the process runs, opencode does not answer yet
        if crash_looping(info):
            result.state = "crash-looping"
        if result.http_health != "healthy" and (info.restart_count or info.finished_at):
            from opencode_cloud.docker.health import log_tail

            result.log_tail = log_tail(self.client, self.name, STATUS_LOG_LINES)

    def _volume_status(self) -> list[VolumeStatus]:
        try:
            sizes = volumes.volume_sizes(self.client, self.instance)
        except DockerError:
            sizes = {}
        return [
            VolumeStatus(
                name=(name := self.instance.volume_name(spec.kind)),
                mount_point=spec.mount_point,
                holds=spec.holds,
                exists=name in sizes or volumes.volume_exists(self.client, name),
                size_bytes=sizes.get(name),
            )
            for spec in volumes.VOLUME_SPECS
        ]


def _note_certificate(result: StartResult, material: TlsMaterial | None) -> None:
    """Put a CA made anew, and the certificate's end, into `result`."""
    if material is None:
        return
    not_after = material.not_after
    result.certificate_not_after = not_after.isoformat() if not_after else None
    if material.new_ca is not None:
        result.new_ca = material.new_ca.to_json()


def _without_edge(image: ImageInfo) -> bool:
    """A sandbox image built by an earlier release: before the edge (its entrypoint would
    serve opencode directly and take the password's hash for the password), or with the
    edge running as the agent's own user (edge label 1)."""
    labels = image.labels
    edge = labels.get(images.LABEL_EDGE, "")
    built_here = bool(labels.get(images.LABEL_OPENCODE_VERSION))
    return built_here and (not edge or edge < images.EDGE_LABEL)


def crash_looping(info: ContainerInfo) -> bool:
    """Docker keeps restarting it: between two runs, or up again after crashing within
    moments of its last start."""
    if info.restarting:
        return True
    if not info.running or info.restart_count == 0:
        return False
    uptime = _seconds_since(info.started_at)
    return uptime is not None and uptime < CRASH_LOOP_WINDOW


def describe_exit(info: ContainerInfo) -> str:
    """How the container's last run ended, in words."""
    if info.oom_killed:
        return "killed: out of memory"
    if info.exit_code in (137, 143):
        return f"stopped (exit code {info.exit_code})"
    return f"exit code {info.exit_code}"


def _seconds_since(timestamp: str | None) -> float | None:
    """Seconds since a Docker timestamp (always UTC, nanoseconds: `...T06:10:00.123456789Z`)."""
    if not timestamp:
        return None
    try:
        started = datetime.fromisoformat(timestamp.split(".")[0].rstrip("Z"))
    except ValueError:
        return None
    return max(0.0, time.time() - started.replace(tzinfo=UTC).timestamp())
