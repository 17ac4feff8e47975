"""Operations on one instance's service: what `occ start`, `stop`, `status`, ... do.

This layer sits between the CLI (which only parses and renders) and the engine core in
`opencode_cloud.docker` (which knows nothing of configuration files or passwords). Each
operation returns a plain dataclass the CLI renders as text or JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opencode_cloud import credentials
from opencode_cloud.config.paths import InstancePaths, config_fingerprint, instance_paths
from opencode_cloud.docker import container as containers
from opencode_cloud.docker import image as images
from opencode_cloud.docker import volume as volumes
from opencode_cloud.docker.container import CONTAINER_PORT
from opencode_cloud.docker.errors import ContainerNotFound, DockerError, ImageNotFound
from opencode_cloud.errors import OpencodeCloudError
from opencode_cloud.instance import LABEL_CONFIG_FILE, Instance

if TYPE_CHECKING:
    from opencode_cloud.config.schema import Config
    from opencode_cloud.docker.client import DockerClient
    from opencode_cloud.docker.progress import ProgressReporter

USERNAME_ENV = "OPENCODE_SERVER_USERNAME"


class NeverCreated(OpencodeCloudError):
    """The instance has no container: it was never started (or was removed)."""


def is_loopback(address: str) -> bool:
    """True for addresses only this machine can reach."""
    import ipaddress

    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def service_url(config: Config) -> str:
    """The URL a browser on this machine (or, when exposed, elsewhere) opens."""
    return Endpoint(config.bind_address, config.port, config.username).url


@dataclass(frozen=True)
class Endpoint:
    """Where the service answers, and the user name it expects."""

    bind_address: str
    port: int
    username: str

    @property
    def url(self) -> str:
        host = self.bind_address
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def health_url(self) -> str:
        return f"{self.url}/global/health"


def image_for(config: Config) -> str:
    """The image the container runs: the user's override, else the local sandbox tag."""
    return config.image or images.image_ref(config.opencode_version)


def desired_settings(config: Config, image_id: str | None) -> dict[str, Any]:
    """The settings that shape the container, in a form comparable with `actual_settings`."""
    return {
        "port": config.port,
        "bind address": config.bind_address,
        "environment": sorted(f"{k}={v}" for k, v in config.env.items()),
        "user name": config.username,
        "image": image_id,
        "restart retries": config.restart_retries,
        "stop timeout": config.stop_timeout,
    }


def actual_settings(info: dict[str, Any], image_env: Iterable[str] = ()) -> dict[str, Any]:
    """The same settings, read back from `docker inspect` of the container.

    Args:
        image_env: the image's own environment, which the container's `Env` also lists
            and which is not the user's.
    """
    host = info.get("HostConfig") or {}
    binding = ((host.get("PortBindings") or {}).get(f"{CONTAINER_PORT}/tcp") or [{}])[0]
    env = list((info.get("Config") or {}).get("Env") or [])
    image_env = set(image_env)
    username = next((e.split("=", 1)[1] for e in env if e.startswith(USERNAME_ENV + "=")), None)
    user_env = sorted(e for e in env if e not in image_env and not e.startswith(USERNAME_ENV + "="))
    return {
        "port": int(binding["HostPort"]) if binding.get("HostPort") else None,
        "bind address": binding.get("HostIp") or "0.0.0.0",
        "environment": user_env,
        "user name": username,
        "image": info.get("Image"),
        "restart retries": (host.get("RestartPolicy") or {}).get("MaximumRetryCount"),
        "stop timeout": (info.get("Config") or {}).get("StopTimeout"),
    }


def changed_settings(desired: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Names of the settings whose desired value differs from the container's."""
    return [key for key, value in desired.items() if actual.get(key) != value]


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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["password"] is None:
            data.pop("password")
        return data


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
    state: str  # missing | created | running | exited | restarting | paused | dead
    running: bool
    url: str
    bind_address: str
    port: int
    exposed: bool
    docker_health: str | None = None
    http_health: str | None = None  # healthy | unauthorized | unreachable
    opencode_version: str | None = None
    image: str | None = None
    started_at: str | None = None
    uptime_seconds: float | None = None
    restart_count: int = 0
    pending_restart: list[str] = field(default_factory=list)
    volumes: list[VolumeStatus] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Service:
    """One instance's service, as seen from a configuration and an engine."""

    def __init__(
        self,
        client: DockerClient,
        config: Config | Callable[[], Config],
        instance: Instance,
        paths: InstancePaths | None = None,
    ) -> None:
        """Args:
        config: the configuration, or a function that loads it: operations that do
            not need it (stop, logs) then never pay for validating it.
        """
        self.client = client
        self._config = config
        self.instance = instance
        self.paths = paths or instance_paths(instance)

    @property
    def config(self) -> Config:
        if callable(self._config):
            self._config = self._config()
        return self._config

    @property
    def name(self) -> str:
        return self.instance.container_name

    # -- image ----------------------------------------------------------------------

    def ensure_image(
        self, *, build: bool = False, pull: bool = False, reporter: ProgressReporter | None = None
    ) -> str:
        """Make sure the image exists; build or pull it when asked or when it is missing.

        Returns:
            `present`, `built` or `pulled`.

        Raises:
            ImageNotFound: a configured image override is missing and cannot be pulled.
            BuildFailed, PullFailed: from the image layer.
        """
        ref = image_for(self.config)
        exists = images.image_exists(self.client, ref)
        if exists and not (build or pull):
            return "present"
        if pull or (self.config.registries and not build):
            if not self.config.registries:
                raise ImageNotFound(
                    "No registries are configured to pull from.",
                    "Add one: occ config set registries REGISTRY/PREFIX, or build with occ build.",
                )
            images.pull_image(self.client, self.config.registries, tag=ref, reporter=reporter)
            return "pulled"
        if self.config.image and not build:
            raise ImageNotFound(
                f"Image {ref} not found.",
                "Pull it (occ pull), or unset the override: occ config unset image",
            )
        images.build_image(
            self.client,
            tag=ref,
            opencode_version=self.config.opencode_version,
            ca_files=[Path(p) for p in self.config.ca_certificates],
            reporter=reporter,
        )
        return "built"

    # -- lifecycle ------------------------------------------------------------------

    def _image_id(self) -> str | None:
        info = images.inspect_image(self.client, image_for(self.config))
        return str(info["Id"]) if info else None

    def _inspect(self) -> dict[str, Any] | None:
        try:
            return containers.inspect_container(self.client, self.name)
        except ContainerNotFound:
            return None

    def _unchanged_since_creation(self, info: dict[str, Any]) -> bool:
        """True when neither the configuration file nor the image changed since the
        container was created from them.

        Then the container's own settings are the configuration's, and `status` and
        `start` need not load and validate the file (pydantic costs ~150 ms of start-up):
        the very same bytes were validated when the container was made.
        """
        labels = (info.get("Config") or {}).get("Labels") or {}
        recorded = labels.get(LABEL_CONFIG_FILE)
        if not recorded or recorded != config_fingerprint(self.paths.config_file):
            return False
        image = images.inspect_image(self.client, (info.get("Config") or {}).get("Image", ""))
        return image is not None and image.get("Id") == info.get("Image")

    def pending_changes(self, info: dict[str, Any] | None = None) -> list[str]:
        """Settings that differ between the configuration and the existing container."""
        info = info if info is not None else self._inspect()
        if info is None or self._unchanged_since_creation(info):
            return []
        image = images.inspect_image(self.client, info["Image"]) or {}
        image_env = (image.get("Config") or {}).get("Env") or []
        desired = desired_settings(self.config, self._image_id())
        # A variable set to what the image already sets is no change to the container.
        desired["environment"] = [e for e in desired["environment"] if e not in image_env]
        return changed_settings(desired, actual_settings(info, image_env))

    def _endpoint(self, info: dict[str, Any] | None) -> Endpoint:
        """Where the service answers: read from the container when there is one."""
        if info is not None:
            actual = actual_settings(info)
            if actual["port"]:
                return Endpoint(
                    actual["bind address"],
                    actual["port"],
                    actual["user name"] or credentials.DEFAULT_USERNAME,
                )
        return Endpoint(self.config.bind_address, self.config.port, self.config.username)

    def _create_and_start(self, password: str) -> str:
        from opencode_cloud.config.hashing import container_labels

        env = [f"{USERNAME_ENV}={self.config.username}"]
        env += [f"{k}={v}" for k, v in sorted(self.config.env.items())]
        return containers.setup_and_start(
            self.client,
            self.config.port,
            env,
            image=image_for(self.config),
            instance=self.instance,
            bind_address=self.config.bind_address,
            restart_retries=self.config.restart_retries,
            stop_timeout=self.config.stop_timeout,
            labels={
                **container_labels(self.config),
                LABEL_CONFIG_FILE: config_fingerprint(self.paths.config_file) or "",
            },
            files=credentials.container_files(password),
        )

    def start(
        self,
        *,
        build: bool = False,
        pull: bool = False,
        wait: bool = True,
        timeout: float | None = None,
        reporter: ProgressReporter | None = None,
        on_step: Callable[[str], None] = lambda _msg: None,
    ) -> StartResult:
        """Bring the service up: image, volumes, container (re-created if its settings
        changed), started, and (unless `wait` is False) answering healthy.

        Raises:
            HealthTimeout, ContainerExited: it did not come up; the message has the logs.
            PortInUse, ImageNotFound, BuildFailed, PullFailed, DockerError.
        """
        info = self._inspect()
        if (
            info is not None
            and not (build or pull)
            and (password := credentials.read_password(self.paths)) is not None
            and self._unchanged_since_creation(info)
        ):
            return self._start_existing(info, password, wait=wait, timeout=timeout, on_step=on_step)
        image_action = self.ensure_image(build=build, pull=pull, reporter=reporter)
        if image_action != "present":
            on_step(f"Image {image_for(self.config)} {image_action}.")
        password, created = credentials.load_or_create_password(self.paths)
        already_running = bool(info and info["State"]["Status"] == "running")
        recreate = self.pending_changes(info) if info else []
        if info and created and not recreate:
            # The password file was deleted: the container still has the old password.
            recreate = ["password"]
        if info and recreate:
            on_step(f"Re-creating the container because {', '.join(recreate)} changed.")
            containers.remove_container(self.client, self.name, force=True)
            already_running = False
        elif info and not already_running:
            on_step("Starting the existing container.")
        elif not info:
            on_step("Creating the container.")
        cid = self._create_and_start(password)
        result = StartResult(
            url=service_url(self.config),
            username=self.config.username,
            password=password if created else None,
            password_created=created,
            already_running=already_running,
            recreated_because=recreate,
            image=image_for(self.config),
            image_action=image_action,
            container_id=cid,
        )
        return self._finish_start(result, password, wait=wait, timeout=timeout, on_step=on_step)

    def _start_existing(
        self,
        info: dict[str, Any],
        password: str,
        *,
        wait: bool,
        timeout: float | None,
        on_step: Callable[[str], None],
    ) -> StartResult:
        """Start a container whose configuration, image and password are unchanged.

        The container is started first; the configuration (for the start timeout) is
        read only while opencode boots, so a stopped service becomes ready as fast as
        `docker start` allows.
        """
        already_running = info["State"]["Status"] == "running"
        if not already_running:
            on_step("Starting the existing container.")
            containers.start_container(self.client, self.name)
        endpoint = self._endpoint(info)
        result = StartResult(
            url=endpoint.url,
            username=endpoint.username,
            password=None,
            password_created=False,
            already_running=already_running,
            image=str((info.get("Config") or {}).get("Image", "")),
            container_id=str(info["Id"]),
        )
        return self._finish_start(
            result, password, wait=wait, timeout=timeout, on_step=on_step, endpoint=endpoint
        )

    def _finish_start(
        self,
        result: StartResult,
        password: str,
        *,
        wait: bool,
        timeout: float | None,
        on_step: Callable[[str], None],
        endpoint: Endpoint | None = None,
    ) -> StartResult:
        if wait and not result.already_running:
            on_step("Waiting for opencode to answer ...")
            result.seconds_to_healthy = self.wait_healthy(password, timeout, endpoint)
            result.healthy = True
        elif result.already_running:
            result.healthy = self.probe(password, endpoint)[0] == "healthy"
        return result

    def wait_healthy(
        self, password: str, timeout: float | None = None, endpoint: Endpoint | None = None
    ) -> float:
        """Block until opencode answers its health endpoint; return the seconds waited.

        Raises:
            HealthTimeout, ContainerExited.
        """
        from opencode_cloud.docker.health import wait_until_healthy

        endpoint = endpoint or self._endpoint(None)
        return wait_until_healthy(
            self.client,
            self.name,
            endpoint.health_url,
            endpoint.username,
            password,
            timeout=timeout or self.config.start_timeout,
        )

    def probe(
        self, password: str | None, endpoint: Endpoint | None = None
    ) -> tuple[str, str | None]:
        """One HTTP request to the health endpoint.

        Returns:
            (`healthy` | `unauthorized` | `unhealthy` | `unreachable`, opencode's version).
        """
        from opencode_cloud.docker.health import probe

        endpoint = endpoint or self._endpoint(None)
        answer = probe(endpoint.health_url, endpoint.username, password, timeout=2)
        version = (answer.body or {}).get("version") if answer.healthy else None
        return answer.state, str(version) if version else None

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the container; return False when it was not running.

        Raises:
            NeverCreated: the instance has no container.
        """
        try:
            # Without an explicit timeout the container's own (set from stop_timeout when
            # it was created) applies, so stopping needs no configuration.
            return containers.stop_container(self.client, self.name, timeout)
        except ContainerNotFound:
            raise self._never_created() from None

    def _never_created(self) -> NeverCreated:
        flag = "" if self.instance.is_default else f" --instance {self.instance.name}"
        return NeverCreated(
            f"Instance {self.instance.name!r} has no container (it was never started).",
            f"Start it with `occ{flag} start`.",
        )

    def _require(self) -> dict[str, Any]:
        info = self._inspect()
        if info is None:
            raise self._never_created()
        return info

    def logs(
        self,
        *,
        tail: int | None = None,
        follow: bool = False,
        since: int | None = None,
        timestamps: bool = False,
    ) -> Iterator[bytes]:
        """The container's output.

        Raises:
            NeverCreated: the instance has no container.
        """
        self._require()
        return containers.container_logs(
            self.client, self.name, tail=tail, follow=follow, since=since, timestamps=timestamps
        )

    def last_log_lines(self, count: int = 20) -> list[str]:
        try:
            text = b"".join(self.logs(tail=count)).decode(errors="replace")
        except (DockerError, NeverCreated):
            return []
        return text.splitlines()[-count:]

    def rotate_password(self) -> tuple[str, bool]:
        """Set a new password and hand it to the container; restart it if it runs.

        Returns:
            The new password, and whether the service was restarted to apply it.
        """
        new = credentials.rotate_password(self.paths)
        info = self._inspect()
        if info is None:
            return new, False
        for path, content in credentials.container_files(new).items():
            containers.put_file(self.client, self.name, path, content, uid=containers.RUNTIME_UID)
        if info["State"]["Status"] != "running":
            return new, False
        containers.restart_container(self.client, self.name, self.config.stop_timeout)
        return new, True

    # -- status ---------------------------------------------------------------------

    def status(self, password: str | None) -> StatusResult:
        """Everything `occ status` shows, from one inspect and one HTTP probe."""
        info = self._inspect()
        # With a container, its own settings say where it listens; the configuration is
        # then only read when it changed since (to report a pending restart).
        endpoint = self._endpoint(info)
        result = StatusResult(
            instance=self.instance.name,
            container=self.name,
            state="missing" if info is None else str(info["State"]["Status"]),
            running=bool(info and info["State"]["Status"] == "running"),
            url=endpoint.url,
            bind_address=endpoint.bind_address,
            port=endpoint.port,
            exposed=not is_loopback(endpoint.bind_address),
        )
        if info is not None:
            state = info["State"]
            result.docker_health = (state.get("Health") or {}).get("Status")
            result.image = (info.get("Config") or {}).get("Image")
            labels = (info.get("Config") or {}).get("Labels") or {}
            result.opencode_version = labels.get("io.opencode-cloud.opencode-version")
            result.restart_count = int(info.get("RestartCount") or 0)
            result.pending_restart = self.pending_changes(info)
            if result.running:
                result.started_at = state.get("StartedAt")
                result.uptime_seconds = _seconds_since(state.get("StartedAt"))
                result.http_health, live_version = self.probe(password, endpoint)
                result.opencode_version = live_version or result.opencode_version
        if result.exposed:
            result.warnings.append(
                f"The service listens on {result.bind_address}: anyone who can reach this "
                "machine can reach the login page."
            )
        if result.pending_restart:
            result.warnings.append(
                "Configuration changed since the container was created ("
                + ", ".join(result.pending_restart)
                + "): run `occ restart` to apply it."
            )
        sizes = _safe(lambda: volumes.volume_sizes(self.client, self.instance), {})
        for spec in volumes.VOLUME_SPECS:
            vname = self.instance.volume_name(spec.kind)
            result.volumes.append(
                VolumeStatus(
                    name=vname,
                    mount_point=spec.mount_point,
                    holds=spec.holds,
                    exists=vname in sizes or volumes.volume_exists(self.client, vname),
                    size_bytes=sizes.get(vname),
                )
            )
        return result


def _seconds_since(timestamp: str | None) -> float | None:
    """Seconds since a Docker timestamp (always UTC, nanoseconds: `...T06:10:00.123456789Z`)."""
    if not timestamp or timestamp.startswith("0001-"):
        return None
    try:
        started = datetime.fromisoformat(timestamp.split(".")[0].rstrip("Z"))
    except ValueError:
        return None
    return max(0.0, time.time() - started.replace(tzinfo=UTC).timestamp())


def _safe(call: Callable[[], Any], default: Any) -> Any:
    try:
        return call()
    except DockerError:
        return default
