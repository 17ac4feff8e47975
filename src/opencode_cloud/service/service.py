"""One instance's service: what `occ start`, `stop`, `status`, `logs`, `shell`, ... do.

This layer sits between the CLI (which parses and renders) and where the service runs
(`runtime`, today a container on the engine of `opencode_cloud.docker`, which knows
nothing of configuration files or passwords). A `Service` reads the configuration, turns
it into a `ContainerSpec`, compares that with what the runtime reports, and makes, starts,
stops and asks the service through the runtime; its image (`image`), where it answers
and the certificate it serves (`endpoint`), and what status reports (`status`) are
modules of their own. Each operation returns a plain dataclass the CLI renders as text
or JSON; errors carry data, and the CLI writes their hints.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from opencode_cloud.access import credentials
from opencode_cloud.config.paths import InstancePaths, config_fingerprint, instance_paths
from opencode_cloud.defaults import (
    CONTAINER_PORT,
    EDGE_DIR,
    EDGE_STATE_DIR,
    EDGE_UID,
    RUNTIME_PATH,
    RUNTIME_USER,
    WORKING_DIR,
)
from opencode_cloud.docker import image as images
from opencode_cloud.docker.container import containers_publishing
from opencode_cloud.docker.errors import (
    ContainerExited,
    ContainerNotFound,
    DockerError,
    SessionsFailing,
)
from opencode_cloud.docker.models import ContainerFile, ContainerInfo, ImageInfo
from opencode_cloud.docker.spec import ContainerSpec
from opencode_cloud.errors import OpencodeCloudError
from opencode_cloud.instance import LABEL_CONFIG_FILE, LABEL_INSTANCE, LABEL_MANAGED, Instance
from opencode_cloud.opencode import SESSIONS_PATH
from opencode_cloud.runtime.choice import runtime_for
from opencode_cloud.service.endpoint import (
    Endpoint,
    certificate_due,
    hand_over,
    is_loopback,
    reloads_certificate,
    remember_served,
    serves_another,
    tls_material,
)
from opencode_cloud.service.errors import (
    EdgeRefused,
    EdgeTooOld,
    NeverCreated,
    NotRunning,
    VersionChange,
)
from opencode_cloud.service.image import (
    BuildResult,
    base_image_for,
    build_image,
    ensure_image,
    image_for,
    pull_image,
)
from opencode_cloud.service.snapshots import remove_unneeded_images

if TYPE_CHECKING:
    from opencode_cloud.access.tls import TlsMaterial
    from opencode_cloud.config.schema import Config
    from opencode_cloud.docker.engine import Engine, LogOptions
    from opencode_cloud.docker.progress import ProgressReporter
    from opencode_cloud.opencode import Server
    from opencode_cloud.runtime.base import Runtime, Terminal
    from opencode_cloud.service.status import PortClash, StatusResult
    from opencode_cloud.service.uninstall import UninstallPlan, UninstallResult

# After a new password, Caddy starts afresh: a moment for the old one to stop listening,
# then up to this long for the new one to answer.
EDGE_RESTART_SETTLE = 0.3
EDGE_RESTART_TIMEOUT = 15.0


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

    def note_certificate(self, material: TlsMaterial | None) -> None:
        """Put a CA made anew, and the certificate's end, into this result."""
        if material is None:
            return
        not_after = material.not_after
        self.certificate_not_after = not_after.isoformat() if not_after else None
        if material.new_ca is not None:
            self.new_ca = material.new_ca.to_json()


class Service:
    """One instance's service, as seen from a configuration and where it runs."""

    def __init__(
        self,
        client: Engine,
        config: Config | Callable[[], Config],
        instance: Instance,
        paths: InstancePaths | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        """Args:
        client: the engine that holds the instance's images and volumes.
        config: the configuration, or a function that loads it: operations that do
            not need it (stop, logs, an unchanged start) then never pay for validating it.
        runtime: where the service runs; by default the one `runtime_for` chooses.
        """
        self.client = client
        self._config = config
        self.instance = instance
        self.paths = paths or instance_paths(instance)
        self.runtime = runtime or runtime_for(client, instance)
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

    @property
    def host(self) -> str | None:
        """The remote host it runs on (its ssh address); None for this machine."""
        remote = self.runtime.remote
        return remote.url if remote is not None else None

    @functools.cached_property
    def _engine_cpus(self) -> int:
        """The engine's CPU count ("all CPUs" in `limits`), asked once per operation:
        a start compares the spec and then creates from it."""
        return self.client.info().cpus

    # -- the image ------------------------------------------------------------------------

    def ensure_image(
        self, *, build: bool = False, pull: bool = False, reporter: ProgressReporter | None = None
    ) -> str:
        """`image.ensure_image` for this configuration: `present`, `built` or `pulled`."""
        return ensure_image(self.client, self.config, build=build, pull=pull, reporter=reporter)

    def build(
        self,
        *,
        opencode_version: str | None = None,
        ca_files: Sequence[str | Path] = (),
        no_cache: bool = False,
        reporter: ProgressReporter | None = None,
    ) -> BuildResult:
        """`image.build_image` for this configuration (or the given opencode version)."""
        return build_image(
            self.client,
            self.config,
            opencode_version=opencode_version,
            ca_files=ca_files,
            no_cache=no_cache,
            reporter=reporter,
        )

    def pull(self, reporter: ProgressReporter | None = None) -> str:
        """`image.pull_image` for this configuration; where the image came from."""
        return pull_image(self.client, self.config, reporter)

    def configured_image(self) -> str | None:
        """The image the configuration names; None when it cannot be read (a backup or an
        uninstall must work with a broken configuration file too)."""
        try:
            return image_for(self.config)
        except OpencodeCloudError:
            return None

    # -- the spec: wanted, actual, and what differs ---------------------------------------

    def tls_material(self) -> TlsMaterial | None:
        """The certificate the configuration asks the edge to serve (`endpoint.tls_material`);
        a CA made anew on the way is kept in `new_ca`."""
        material = tls_material(self.config, self.paths, self.instance)
        if material is not None and material.new_ca is not None:
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

        if self.config.mounts and self.host is not None:
            raise remote_mounts_refused(self.host)
        for text in self.config.mounts:
            check_mount(HostMount.parse(text))

    # -- where it answers -----------------------------------------------------------------

    def endpoint(self) -> Endpoint:
        """Where the service answers now (its container's settings, else the configuration's)."""
        return self.endpoint_of(self.runtime.state())

    def endpoint_of(self, info: ContainerInfo | None, *, reach: bool = True) -> Endpoint:
        """Where the service answers: read from the container `info` when there is one;
        as this machine reaches it, unless not `reach`."""
        if info is not None and info.published(CONTAINER_PORT) is not None:
            found = Endpoint.of(ContainerSpec.from_inspect(info), self.paths)
        else:
            config = self.config
            found = Endpoint(
                config.bind_address, config.port, config.username, config.tls_mode
            ).trusting(self.paths)
        return found.reached_through(self.runtime) if reach else found

    def tunnel_endpoint(self, local_port: int | None = None) -> Endpoint:
        """The running service on a remote host as this machine reaches it, through the
        engine's SSH connection: at `local_port`, else at the service's own port number
        when that is free here, else at a free one.

        Raises:
            NeverCreated; NotRunning: it exists but does not run.
        """
        from opencode_cloud.docker.ssh import local_port_free

        found = self.endpoint_of(self.shell_target(), reach=False)
        if local_port is None and local_port_free(found.port):
            local_port = found.port
        return found.reached_through(self.runtime, local_port)

    def port_clash(self) -> PortClash | None:
        """Another instance's running container that publishes the port this one is
        configured for; None when there is none (or the configuration cannot be read)."""
        from opencode_cloud.service.status import PortClash

        try:
            port = self.config.port
        except OpencodeCloudError:
            return None
        for info in containers_publishing(self.client, port, labels=[f"{LABEL_MANAGED}=true"]):
            if info.name != self.name:
                return PortClash(info.name, info.labels.get(LABEL_INSTANCE, "?"), port)
        return None

    def hold_tunnel(self) -> None:
        """Keep the connection that reaches a service on a remote host open until it
        drops; then raise why (`SshError`). Returns at once for this machine's."""
        self.runtime.hold()

    def probe(
        self, password: str | None, endpoint: Endpoint | None = None
    ) -> tuple[str, str | None]:
        """One HTTP request to the health endpoint.

        Returns:
            (`healthy` | `unauthorized` | `unhealthy` | `unreachable`, opencode's version).
        """
        answer = (endpoint or self.endpoint_of(None)).server(password).health(timeout=2)
        return answer.state, answer.version

    def session_problem(self, password: str | None, endpoint: Endpoint | None = None) -> str | None:
        """What is wrong with opencode's session API (a call that reads its database), or
        None when it works."""
        return self.checked_server(password, endpoint).session_problem()

    def checked_server(
        self, password: str | None, endpoint: Endpoint | None = None
    ) -> Server | InsideSessions:
        """Where the tool reads opencode's sessions to check that it works: through the
        edge with the password; from inside the container when the edge refuses the
        password alone for them but not for the health check (the user signs in with a
        second factor, `occ auth totp`)."""
        server = (endpoint or self.endpoint_of(None)).server(password)
        problem = server.session_problem()
        if problem == SECOND_STEP_ANSWER and server.health(timeout=2).healthy:
            return InsideSessions(self)
        return server

    # -- lifecycle ------------------------------------------------------------------------

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
        info = self.runtime.state()
        if (
            info is not None
            and not (build or pull)
            and (password := credentials.read_password(self.paths)) is not None
            and self._file_unchanged(info)
            and not self.pending_changes(info)
            and not certificate_due(self.paths, info)
        ):
            return self._start_existing(info, password, wait=wait, timeout=timeout, on_step=on_step)
        self.check_mounts()
        image_action = self._prepare_image(
            info,
            build=build,
            pull=pull,
            reporter=reporter,
            on_step=on_step,
            allow_version_change=allow_version_change,
        )
        password, created = credentials.load_or_create_password(self.paths)
        recreate = self.pending_changes(info) if info else []
        if info and created and not recreate:
            # The password file was deleted: the container still has the old password.
            recreate = ["password"]
        material = self.tls_material()
        renewed = info is not None and not recreate and serves_another(self.paths, info, material)
        if info and renewed and info.running and not reloads_certificate(self.client, info):
            # An edge from an earlier image stops on SIGHUP: it reads the files at start.
            recreate = ["TLS certificate"]
        edge_state = None
        if info and recreate:
            on_step(f"Re-creating the container because {', '.join(recreate)} changed.")
            edge_state = self.edge_state(info.name)
            self.runtime.remove()
        elif info:
            handed = None
            if renewed and material:
                handed = hand_over(self.runtime, self.paths, info, material)
            result = self._start_existing(
                info, password, wait=wait, timeout=timeout, on_step=on_step, material=material
            )
            result.image_action = image_action
            result.certificate_renewed = handed
            return result
        else:
            on_step("Creating the container.")
        spec = self.wanted_spec(self.client.inspect_image(image_for(self.config)))
        cid = self.runtime.create(spec, self.container_files(password, material))
        held = self._held_edge_state()  # taken off the disk whichever goes in
        self.restore_edge_state(edge_state or held)
        remember_served(self.paths, material, cid)
        if info is not None and info.image != spec.image and images.is_derived_container(info):
            # The packages changed: the image of the old ones is not needed any more.
            remove_unneeded_images(self.client, [info.image])
        if info is not None:
            # The old container may have kept an image a rebuild took the name of.
            images.remove_unnamed_sandbox_images(self.client)
        self.runtime.start()
        endpoint = Endpoint.of(spec, self.paths).reached_through(self.runtime)
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
        result.note_certificate(material)
        return self._finish_start(
            result, password, endpoint, wait=wait, timeout=timeout, on_step=on_step
        )

    def prepare_image(
        self,
        *,
        reporter: ProgressReporter | None = None,
        on_step: Callable[[str], None] = lambda _msg: None,
    ) -> str:
        """`_prepare_image` for the instance's container as it is now; nothing to do (and
        the configuration is not even loaded) when the container was made from the
        configuration file as it is."""
        info = self.runtime.state()
        if info is not None and self._file_unchanged(info):
            return "present"
        return self._prepare_image(info, reporter=reporter, on_step=on_step)

    def _prepare_image(
        self,
        info: ContainerInfo | None,
        *,
        build: bool = False,
        pull: bool = False,
        reporter: ProgressReporter | None = None,
        on_step: Callable[[str], None] = lambda _msg: None,
        allow_version_change: bool = False,
    ) -> str:
        """Make the image the configuration asks for (`ensure_image`) while the container
        `info` (if any) goes on serving: a restart builds it before it stops the old one.

        Raises:
            VersionChange: the configuration names another opencode version (or image)
                than `info` runs, and `allow_version_change` is False.
            BuildFailed, PullFailed, ImageNotFound.
        """
        if info is not None and not allow_version_change:
            # Packages added to the image (a derived image) are no version change: its base is.
            running = info.labels.get(images.LABEL_BASE_REF) or info.image
            if running != base_image_for(self.config):
                raise VersionChange(self.instance, running, base_image_for(self.config))
        image_action = self.ensure_image(build=build, pull=pull, reporter=reporter)
        if image_action != "present":
            on_step(f"Image {image_for(self.config)} {image_action}.")
        return image_action

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
        cid = self.runtime.create(spec, self.container_files(password, material))
        remember_served(self.paths, material, cid)
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
            self.runtime.start()
        endpoint = self.endpoint_of(info)
        result = StartResult(
            url=endpoint.url,
            username=endpoint.username,
            password=None,
            password_created=False,
            already_running=info.running,
            image=info.image,
            container_id=info.id,
        )
        result.note_certificate(material)
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
        result.host = self.host
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
        """Wait until opencode answers healthy, but a container that crashed meanwhile is
        stopped: Docker would otherwise restart it forever, and the user is told why it
        failed instead.

        Raises:
            HealthTimeout, ContainerExited.
        """
        try:
            return self.runtime.wait_ready(
                endpoint.server(password), timeout or self.config.start_timeout
            )
        except ContainerExited:
            self.runtime.stop(0)
            raise

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the container; return False when it was not running.

        Without `timeout` the container's own (its spec's `stop_timeout`) applies, so
        stopping needs no configuration.

        Raises:
            NeverCreated: the instance has no container.
        """
        try:
            return self.runtime.stop(timeout)
        except ContainerNotFound:
            raise NeverCreated(self.instance) from None

    def _require(self) -> ContainerInfo:
        info = self.runtime.state()
        if info is None:
            raise NeverCreated(self.instance)
        return info

    def logs(self, **options: Unpack[LogOptions]) -> Iterator[bytes]:
        """The container's output (`options` as for `Engine.container_logs`).

        Raises:
            NeverCreated: the instance has no container.
        """
        self._require()
        return self.runtime.logs(**options)

    def last_log_lines(self, count: int = 20) -> list[str]:
        return self.runtime.log_tail(count)

    def rotate_password(self) -> tuple[str, bool]:
        """Set a new password and hand its hash to the container's edge.

        The edge reads the new hash on its next request: the old password and every
        session cookie made under it stop working at once, without a restart (opencode's
        own password is internal to the container and does not change). Connections
        opened before (a terminal, the event stream) are closed too: the container's
        supervisor starts Caddy afresh on SIGUSR1, while opencode and its work go on.

        Returns:
            The new password, and whether a container took it (False: none exists; the
            next start hands it over).
        """
        new = credentials.rotate_password(self.paths)
        info = self.runtime.state()
        if info is None:
            return new, False
        # Images before the edge had a user of its own read the hash as the runtime user.
        label = info.labels.get(images.LABEL_EDGE, "1")
        separate_edge = label.isdigit() and int(label) >= images.EDGE_OWN_USER
        uid = EDGE_UID if separate_edge else ContainerSpec.from_inspect(info).runtime_uid
        files = credentials.container_files(new, self.paths)
        self.runtime.put_files(
            {path: ContainerFile(content, 0o600, uid) for path, content in files.items()}
        )
        if separate_edge and info.running:
            self._restart_edge(new, info)
        return new, True

    def _restart_edge(self, password: str, info: ContainerInfo) -> None:
        """Have the supervisor start Caddy afresh (SIGUSR1), and return once the service
        answers again: the old Caddy stops listening at once, and the new one listens
        once the old one has ended (its last connections get up to 2 s)."""
        self.runtime.signal("USR1")
        time.sleep(EDGE_RESTART_SETTLE)
        self.runtime.wait_ready(self.endpoint_of(info).server(password), EDGE_RESTART_TIMEOUT)

    def plan_uninstall(self, *, volumes: bool) -> UninstallPlan:
        """What `uninstall` would remove (`uninstall.plan_uninstall`); nothing changes."""
        from opencode_cloud.service.uninstall import plan_uninstall

        return plan_uninstall(
            self.client,
            self.instance,
            self.paths,
            volumes=volumes,
            configured_image=self.configured_image(),
        )

    def uninstall(self, plan: UninstallPlan) -> UninstallResult:
        """Remove what `plan` names (`uninstall.uninstall`)."""
        from opencode_cloud.service.uninstall import uninstall

        return uninstall(self.client, self.instance, self.paths, plan)

    # -- inside it ------------------------------------------------------------------------

    def edge_state(self, container: str) -> bytes | None:
        """The login service's state folder of `container` as a tar (sessions, the device
        key, the sign-in log, a second factor), for the container that replaces it: a
        re-created or updated service keeps them. None when there is none to keep."""
        try:
            chunks, size = [], 0
            for chunk in self.client.get_archive(container, EDGE_STATE_DIR):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_EDGE_STATE_BYTES:  # not the login service's records
                    return None
        except DockerError:
            return None
        return b"".join(chunks)

    def hold_edge_state(self) -> None:
        """Keep the container's login service state on this machine (0600, beside the
        password) for the next start: a restore removes the container."""
        state = self.edge_state(self.name)
        if state:
            from opencode_cloud.config.store import write_atomically

            write_atomically(self.paths.edge_state_file, state, 0o600, keep_mode=False)

    def _held_edge_state(self) -> bytes | None:
        """The state `hold_edge_state` kept, taken off the disk: it goes into the new
        container, and only there."""
        path = self.paths.edge_state_file
        try:
            state = path.read_bytes()
        except OSError:
            return None
        path.unlink(missing_ok=True)
        return state

    def restore_edge_state(self, state: bytes | None) -> None:
        """Put a state folder of `edge_state` into this service's new container, before
        it starts. Its files keep their owner (the edge's user) and modes."""
        if state:
            self.client.put_archive(self.name, str(Path(EDGE_STATE_DIR).parent), state)

    def ask_edge(self, request: dict[str, Any]) -> dict[str, Any]:
        """The answer of the running container's sign-in service to one request about
        single-user mode's sessions, sign-in log or second factor (`edge.py single-admin`,
        docs/security.md).

        Raises:
            NeverCreated, NotRunning, EdgeTooOld, EdgeRefused, DockerError.
        """
        from opencode_cloud.runtime import edge_admin

        info = self.shell_target()
        label = info.labels.get(images.LABEL_EDGE, "1")
        if not (label.isdigit() and int(label) >= images.EDGE_SINGLE_RECORDS):
            raise EdgeTooOld(self.instance)
        try:
            return edge_admin.ask(
                self.runtime.put_files,
                lambda argv: self.runtime.exec(argv, user=edge_admin.EDGE_USER, workdir="/"),
                "single-admin",
                request,
            )
        except edge_admin.EdgeRefused as exc:
            raise EdgeRefused(str(exc)) from None

    def revoke_sessions(self, which: str) -> int:
        """End the browser session `which` (an id of `occ auth sessions`), or `all`: it is
        refused from its next request on. Caddy is started afresh (as by `rotate_password`)
        so that what a browser still holds open (the event stream, a terminal) closes too.
        How many ended."""
        ended = int(self.ask_edge({"op": "revoke", "session": which})["revoked"])
        password = credentials.read_password(self.paths)
        if ended and password is not None:
            self._restart_edge(password, self.shell_target())
        return ended

    def enrol_totp(self) -> dict[str, Any]:
        """A new TOTP seed and ten new recovery codes for the user, replacing theirs, shown
        once: `secret`, `uri` (otpauth://) and `recovery_codes`. Every browser is signed
        out (and Caddy started afresh): from now on a code follows the password."""
        issuer = "opencode-cloud"
        if not self.instance.is_default:
            issuer = f"{issuer} {self.instance.name}"
        request = {"op": "totp", "issuer": issuer, "label": self.config.username}
        answer = self.ask_edge(request)
        password = credentials.read_password(self.paths)
        if password is not None:
            self._restart_edge(password, self.shell_target())
        return {key: answer.get(key) for key in ("secret", "uri", "recovery_codes")}

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
        return self.runtime.exec(command, user=RUNTIME_USER, workdir=WORKING_DIR, env=_AGENT_ENV)

    def terminal(self, command: Sequence[str], *, tty: bool) -> Terminal | None:
        """The program that runs `command` in the container as the runtime user, in the
        projects folder, with this terminal attached; None when this machine has none
        (then `run_command`, without a terminal).

        Raises:
            NeverCreated, NotRunning.
        """
        self.shell_target()
        return self.runtime.terminal(
            command, user=RUNTIME_USER, workdir=WORKING_DIR, env=_AGENT_ENV, tty=tty
        )

    # -- status ---------------------------------------------------------------------------

    def ask_inside(self, path: str, timeout: float = 5.0) -> tuple[bool, bytes]:
        """GET `path` of opencode from inside its container, as the image's health check
        does (the edge's user, with its credentials file): how the tool asks a person's
        opencode in team mode, which only the front door reaches from outside. Whether it
        answered 2xx, and the body.

        Raises:
            NotRunning, DockerError.
        """
        output, exit_code = self.runtime.exec(
            ["/usr/bin/curl", "-q", "-sf", "--max-time", f"{timeout:g}", "-K", INSIDE_CURLRC,
             f"http://127.0.0.1:{OPENCODE_INSIDE_PORT}{path}"],
            user=f"{EDGE_UID}:{EDGE_UID}",
            workdir="/",
        )  # fmt: skip
        body = b"".join(output)
        return exit_code() == 0, body

    def call_inside(
        self, method: str, path: str, body: bytes | None = None, timeout: float = 30.0
    ) -> tuple[int | None, bytes]:
        """One request to opencode from inside its container, as `ask_inside`, with any
        method: its HTTP status (None when it did not answer) and body.

        A body (a provider's key, say) never goes on a command line: it is written into
        the edge's own folder (0600, the edge's user, which the agent cannot read) and
        curl reads it from there; the file is removed as curl ends.

        Raises:
            NotRunning, DockerError.
        """
        self.shell_target()
        url = f"http://127.0.0.1:{OPENCODE_INSIDE_PORT}{path}"
        curl = ["/usr/bin/curl", "-q", "-s", "--max-time", f"{timeout:g}", "-K", INSIDE_CURLRC,
                "-X", method, "-w", "\n%{http_code}"]  # fmt: skip
        if body is None:
            command = [*curl, url]
        else:
            import secrets

            request_file = f"{INSIDE_EDGE_DIR}/request-{secrets.token_hex(8)}"
            self.runtime.put_files({request_file: ContainerFile(body, 0o600, EDGE_UID)})
            command = ["/bin/sh", "-c",
                       'f=$1; shift; "$@" --data-binary "@$f"; code=$?; rm -f "$f"; exit $code',
                       "sh", request_file, *curl, "-H", "Content-Type: application/json",
                       url]  # fmt: skip
        edge = f"{EDGE_UID}:{EDGE_UID}"
        try:
            output, _exit_code = self.runtime.exec(command, user=edge, workdir="/")
            said = b"".join(output)
        except OpencodeCloudError:
            if body is not None:  # the request file must not outlive the request
                with contextlib.suppress(OpencodeCloudError):
                    done, _ = self.runtime.exec(["rm", "-f", request_file], user=edge, workdir="/")
                    b"".join(done)
            raise
        answer, _, status = said.rpartition(b"\n")
        code = int(status) if status.strip().isdigit() else 0
        return (code or None), answer

    def overview(self, password: str | None) -> StatusResult:
        """The state, health, URL and opencode version of `status`, without what takes
        longer to gather (volumes, snapshots, pending changes, logs): what `occ list`
        shows of each instance."""
        return self._described(password)[0]

    def _described(self, password: str | None) -> tuple[StatusResult, ContainerInfo | None, bool]:
        """`overview`, the container it was read from, and whether its last log lines
        belong in a status report (`status.describe_container`)."""
        from opencode_cloud.service import status

        info = self.runtime.state()
        # With a container, its own settings say where it listens; the configuration is
        # then only read when it changed since (to report a pending restart).
        endpoint = self.endpoint_of(info)
        result = status.StatusResult(
            instance=self.instance.name,
            person=self.instance.person,
            container=self.name,
            state="missing" if info is None else info.status.value,
            running=bool(info and info.running),
            url=endpoint.url,
            bind_address=endpoint.bind_address,
            port=endpoint.port,
            exposed=not is_loopback(endpoint.bind_address),
            host=self.host,
            needs_tunnel=endpoint.only_on_remote,
        )
        if info is None:
            return result, None, False
        # A person's opencode answers the front door only (docs/team.md): asked inside.
        server = endpoint.server(password) if self.instance.person is None else None
        if server is None and info.running:
            healthy, _ = self.ask_inside("/global/health", timeout=2)
            result.http_health = "healthy" if healthy else "unreachable"
            if healthy:
                listed, _ = self.ask_inside("/session")
                result.session_api = "ok" if listed else "failing"
        logs = status.describe_container(result, info, server)
        if server is not None and result.session_api == SECOND_STEP_ANSWER:
            # The user signs in with a second factor: the sessions are read from inside.
            problem = self.checked_server(password, endpoint).session_problem()
            result.session_api = problem or "ok"
            result.http_health = "unhealthy" if problem else "healthy"
        return result, info, logs

    def status(self, password: str | None, *, sizes: bool = False) -> StatusResult:
        """Everything `occ status` shows, from one inspect and one HTTP probe; with
        `sizes`, the bytes its volumes and snapshots use too (a slow count)."""
        from opencode_cloud.service import status

        result, info, wants_logs = self._described(password)
        # A person's container is the team's to make (`team.people.person_spec`).
        if info is not None and self.instance.person is None:
            result.pending_restart = self.pending_changes(info)
        if wants_logs:
            result.log_tail = self.runtime.log_tail(status.STATUS_LOG_LINES)
        result.volumes = status.volume_status(self.client, self.instance, sizes=sizes)
        result.snapshots = status.snapshot_status(self.client, self.instance, sizes=sizes)
        return result


# More than the login service's state folder holds (its files are bounded to a few MB).
MAX_EDGE_STATE_BYTES = 64 << 20
# What opencode's session API answers the tool through the edge when the password alone
# does not sign the user in (a second factor is on): the health check still answers.
SECOND_STEP_ANSWER = "HTTP 401"


class InsideSessions:
    """opencode's session API asked from inside its container (`Service.ask_inside`), for
    the tool's own checks while the edge asks the user a second factor: the same questions
    as `opencode.Server`'s."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def sessions(self, timeout: float = 10.0) -> tuple[list[dict[str, Any]], str | None]:
        import json

        ok, body = self.service.ask_inside(SESSIONS_PATH, timeout)
        try:
            decoded = json.loads(body) if ok else None
        except ValueError:
            decoded = None
        if isinstance(decoded, list):
            return [s for s in decoded if isinstance(s, dict)], None
        return [], "no list of sessions from inside the container"

    def session_problem(self) -> str | None:
        return self.sessions()[1]

    def read_session(self, session_id: str) -> str | None:
        for path in (f"{SESSIONS_PATH}/{session_id}", f"{SESSIONS_PATH}/{session_id}/message"):
            if not self.service.ask_inside(path, 10.0)[0]:
                return f"no answer to {path} from inside the container"
        return None


# The health check's credentials file in the container (the edge's), and opencode's port
# inside it.
INSIDE_EDGE_DIR = EDGE_DIR
INSIDE_CURLRC = f"{INSIDE_EDGE_DIR}/curlrc"
OPENCODE_INSIDE_PORT = 4096
# What a command or a shell in the container finds first: the tools the agent installed.
_AGENT_ENV = (f"PATH={RUNTIME_PATH}",)
