"""`occ doctor`: the checks that answer "why doesn't it work?".

Each check is a function that returns a `Finding`: ok, warn, fail or skip, what it saw,
and what to run to fix it. `run_checks` runs them in order, each on its own: an error in
one check becomes that check's failing finding and the next check still runs. What one
check learns (the engine, the configuration, the container) the later ones use, so a
dead engine turns the checks that need it into "skip" with the reason.

The checks change nothing: the password file is read without tightening its mode, a
port is bound only for a moment to see whether it is free, and the service is only
asked over HTTP.

A fix that runs an `occ` command is asked of the `hint` function as a `Remedy` (what to
fix, with its data): the command line words it with the instance's own `occ --instance
... --host ...`, as it words the hints of errors.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from opencode_cloud.config.errors import ConfigError
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.defaults import CONTAINER_PORT, DEFAULT_START_TIMEOUT
from opencode_cloud.docker.container import containers_publishing
from opencode_cloud.docker.errors import (
    DaemonNotRunning,
    DockerError,
    DockerPermissionDenied,
    HealthTimeout,
    ImageNotFound,
    InvalidCertificate,
)
from opencode_cloud.docker.models import ContainerInfo, ContainerStatus, EngineInfo
from opencode_cloud.doctor.ports import free_port_near, port_holders, try_bind, user_name
from opencode_cloud.errors import OpencodeCloudError
from opencode_cloud.instance import LABEL_INSTANCE, Instance

if TYPE_CHECKING:
    from opencode_cloud.config.schema import Config
    from opencode_cloud.config.store import LoadedConfig
    from opencode_cloud.docker.client import DockerClient
    from opencode_cloud.docker.engine import Engine
    from opencode_cloud.service.endpoint import Endpoint
    from opencode_cloud.service.service import Service

Status = Literal["ok", "warn", "fail", "skip"]
ClientFactory = Callable[[], "Engine"]
ConfigLoader = Callable[[Path], "LoadedConfig"]


@dataclass(frozen=True)
class Remedy:
    """A fix that runs an `occ` command, as data: which one (`kind`) and its values
    (a port, a container, another instance). `cli/hints.py` words it.

    Kinds: `unknown-keys` (path), `password-not-a-file`, `password-unreadable` (path),
    `password-empty`, `port-taken` (port), `port-taken-by-container` (port, container),
    `port-taken-by-instance` (port, instance), `bind-address-foreign`, `low-port`,
    `rebuild-image`, `crash-loop`, `crashed`, `recreate` (container), `unhealthy`,
    `still-starting`, `sessions-failing`, `pending-restart`, `check-failed`,
    `certificate-make`, `certificate-hand-over`, `certificate-renew`,
    `certificate-renew-own`, `backup-failed` (folder), `backup-overdue` (method).
    """

    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)


Hint = Callable[[OpencodeCloudError | Remedy], str]


def _no_hint(item: OpencodeCloudError | Remedy) -> str:
    """Without a command line to word them, errors keep their own hints, and fixes that
    run a command are left out."""
    return item.hint if isinstance(item, OpencodeCloudError) else ""


# Seconds any one engine call may take: a hung engine must not hang the diagnosis.
ENGINE_TIMEOUT = 10.0
# Free space where the engine keeps images and volumes.
DISK_WARN_BYTES = 5 << 30
DISK_FAIL_BYTES = 1 << 30
# A served certificate (or the instance's CA) with fewer days left is a warning.
CERTIFICATE_WARN_DAYS = 30
PROBE_TIMEOUT = 2.0

# The names of the checks, in the order they run.
ENGINE = "engine"
DISK = "disk space"
CONFIGURATION = "configuration"
PASSWORD_FILE = "password file"
CA_CERTIFICATES = "CA certificates"
CERTIFICATE = "TLS certificate"
PORT = "port"
IMAGE = "image"
CONTAINER = "container"
HTTP_API = "HTTP API"
SESSION_API = "session API"
PENDING = "pending changes"
SCHEDULED_BACKUP = "scheduled backup"


@dataclass(frozen=True)
class Finding:
    """What one check found.

    Attributes:
        name: the check, as the table's first column shows it.
        status: `ok`, `warn` (works, but worth a look), `fail` (this is why it does not
            work) or `skip` (could not be checked; `detail` says why).
        detail: what the check saw, in one sentence.
        fix: a command or an action that fixes it; empty when there is nothing to do.
    """

    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def all_ok(findings: list[Finding]) -> bool:
    """True when no check failed (warnings and skipped checks are fine)."""
    return not any(finding.status == "fail" for finding in findings)


def report(findings: list[Finding]) -> dict[str, Any]:
    """What `occ doctor --json` prints."""
    return {"ok": all_ok(findings), "findings": [finding.to_json() for finding in findings]}


class Skip(Exception):
    """Raised inside a check that cannot run: it becomes a `skip` finding with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Context:
    """What the checks share: their inputs, and what earlier checks learned."""

    instance: Instance
    paths: InstancePaths
    client_factory: ClientFactory
    config_loader: ConfigLoader
    hint: Hint
    env: Mapping[str, str]
    client: Engine | None = None
    engine: EngineInfo | None = None
    # Why the checks that need the engine (or the configuration) cannot run.
    engine_problem: str = "the engine was not checked"
    config: Config | None = None
    config_problem: str = "the configuration was not checked"
    container: ContainerInfo | None = None
    container_problem: str = "the container was not checked"
    password: str | None = None
    endpoint: Endpoint | None = None  # where opencode answered healthy
    inside: bool = False  # a person's opencode answered from inside its container
    health_problem: str = "the HTTP API was not checked"
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def fix(self, kind: str, **data: Any) -> str:
        """The words of a fix that runs a command (see `Remedy`)."""
        return self.hint(Remedy(kind, data))

    def need_client(self) -> Engine:
        if self.client is None:
            raise Skip(self.engine_problem)
        return self.client

    def need_config(self) -> Config:
        if self.config is None:
            raise Skip(self.config_problem)
        return self.config

    def service(self) -> Service:
        from opencode_cloud.service.service import Service

        return Service(self.need_client(), self.need_config, self.instance, self.paths)


# --------------------------------------------------------------------------- the engine


def engine_source(env: Mapping[str, str]) -> str:
    """Which setting chose the engine, the way the docker CLI resolves it."""
    if env.get("DOCKER_HOST"):
        return "set by DOCKER_HOST"
    if env.get("DOCKER_CONTEXT", "default") != "default":
        return f"Docker context {env['DOCKER_CONTEXT']!r}, set by DOCKER_CONTEXT"
    docker_config = Path(env.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        current = json.loads(docker_config.read_text(encoding="utf-8")).get("currentContext")
    except (OSError, ValueError, AttributeError):
        current = None
    if current and current != "default":
        return f"Docker context {current!r}, set by `docker context use`"
    return "the default socket"


def _is_local(host: str) -> bool:
    return host.startswith("unix://")


def _group(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _socket_facts(host: str, denied: bool) -> tuple[list[str], str]:
    """What the engine's unix socket looks like: facts for the detail, and a better fix
    when this login session lacks a group the user was added to."""
    if not _is_local(host):
        return [], ""
    path = host.removeprefix("unix://")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return [f"{path} does not exist"], ""
    except OSError as exc:
        return [f"{path}: {exc.strerror or exc}"], ""
    if not stat.S_ISSOCK(st.st_mode):
        return [f"{path} is not a socket"], ""
    group = _group(st.st_gid)
    facts = [f"{path} is {stat.filemode(st.st_mode)} {user_name(st.st_uid)}:{group}"]
    if not denied:
        return facts, ""
    if st.st_gid in os.getgroups() or st.st_gid == os.getegid():
        facts.append(f"you are in group {group}")
        return facts, ""
    import grp

    try:
        members = grp.getgrgid(st.st_gid).gr_mem
    except KeyError:
        members = []
    if user_name(os.geteuid()) in members:
        facts.append(f"you were added to group {group}, but this login session predates it")
        return facts, f"Log in again (or run `newgrp {group}`), so this shell has the group."
    facts.append(f"you are not in group {group}")
    return facts, ""


def check_engine(ctx: Context) -> Finding:
    """The engine answers: where it is (and which setting chose it), its version and API,
    whether this user may use its socket, and whether it runs rootless."""
    source = engine_source(ctx.env)
    try:
        client = ctx.client_factory()
    except DockerError as error:
        host = getattr(error, "host", "")
        facts, better_fix = _socket_facts(host, isinstance(error, DockerPermissionDenied))
        ctx.engine_problem = "the Docker engine is unreachable"
        if isinstance(error, DockerPermissionDenied):
            ctx.engine_problem = "this user may not use the Docker engine"
        ctx.container_problem = ctx.engine_problem
        named = ctx.env.get("DOCKER_HOST")  # in the environment the checks were given
        if isinstance(error, DaemonNotRunning) and error.chosen_by is None and named:
            error = DaemonNotRunning(error.host, chosen_by="DOCKER_HOST")
        fix = better_fix or ctx.hint(error)
        detail = f"{error.message.rstrip('.')} ({'; '.join([source, *facts])})."
        return Finding(ENGINE, "fail", detail, fix)
    ctx.client = client
    ctx.cleanup.append(client.close)
    where = f"at {client.host} ({source})"
    try:
        info = client.info()
    except DockerError as error:
        return Finding(
            ENGINE,
            "warn",
            f"The engine {where} answers (API {client.api_version}), but not about itself: "
            f"{error.message}",
            "Check the engine's own log (`journalctl -u docker`).",
        )
    ctx.engine = info
    mode = "rootless" if info.rootless else "not rootless (the daemon runs as root)"
    return Finding(ENGINE, "ok", f"Docker {info.version} (API {info.api_version}) {where}; {mode}.")


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB"


def check_disk(ctx: Context) -> Finding:
    """Free space on the file system where the engine keeps images and volumes."""
    client = ctx.need_client()
    if ctx.engine is None or not ctx.engine.root_dir:
        raise Skip("the engine did not say where it keeps its data")
    root = ctx.engine.root_dir
    if not _is_local(client.host):
        raise Skip(
            f"the engine at {client.host} is on another machine; free space in "
            f"{root} can't be measured from here"
        )
    try:
        usage = shutil.disk_usage(root)
    except FileNotFoundError:
        raise Skip(
            f"{root} is not on this machine (the engine runs in a VM or "
            "elsewhere); its free space can't be measured from here"
        ) from None
    except OSError as exc:
        return Finding(DISK, "warn", f"Cannot measure free space in {root}: {exc.strerror}.")
    detail = f"{_gib(usage.free)} free of {_gib(usage.total)} in {root}"
    fix = (
        "Free space on that disk: `docker image prune` and `docker builder prune` remove "
        "unused images and build cache (`docker system df` shows what takes room)."
    )
    if usage.free < DISK_FAIL_BYTES:
        return Finding(
            DISK, "fail", f"Only {detail}: builds, pulls and opencode's own writes fail.", fix
        )
    if usage.free < DISK_WARN_BYTES:
        return Finding(DISK, "warn", f"Only {detail}: a build or an upgrade may not fit.", fix)
    return Finding(DISK, "ok", f"{detail}.")


# --------------------------------------------------------------------------- the files


def check_configuration(ctx: Context) -> Finding:
    """The configuration file reads and validates."""
    path = ctx.paths.config_file
    try:
        loaded = ctx.config_loader(path)
    except ConfigError as error:
        ctx.config_problem = "the configuration is invalid"
        return Finding(CONFIGURATION, "fail", error.message, ctx.hint(error))
    ctx.config = loaded.config
    if loaded.warnings:
        return Finding(
            CONFIGURATION,
            "warn",
            " ".join(loaded.warnings),
            ctx.fix("unknown-keys", path=path),
        )
    if not loaded.exists:
        return Finding(CONFIGURATION, "ok", f"No file at {path}: every setting is a default.")
    return Finding(CONFIGURATION, "ok", f"{path} is valid.")


def check_password_file(ctx: Context) -> Finding:
    """The password file: readable, not empty, and private (no access for group or others)."""
    path = ctx.paths.password_file
    try:
        st = path.stat()
    except FileNotFoundError:
        return Finding(PASSWORD_FILE, "ok", f"No password yet: the first start writes {path}.")
    except OSError as exc:
        return Finding(
            PASSWORD_FILE,
            "fail",
            f"Cannot read {path}: {exc.strerror or exc}.",
            f"Check the permissions of {path.parent}.",
        )
    if not stat.S_ISREG(st.st_mode):
        return Finding(
            PASSWORD_FILE,
            "fail",
            f"{path} is not a file.",
            ctx.fix("password-not-a-file"),
        )
    try:
        # Read directly: the tool's own reader tightens a loose mode, and the doctor
        # reports rather than repairs.
        ctx.password = path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        return Finding(
            PASSWORD_FILE,
            "fail",
            f"Cannot read {path}: {reason}.",
            ctx.fix("password-unreadable", path=path),
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return Finding(
            PASSWORD_FILE,
            "warn",
            f"{path} has mode {mode:04o}: other users of this machine can read the password.",
            f"`chmod 600 {path}`",
        )
    if ctx.password is None:
        return Finding(
            PASSWORD_FILE,
            "warn",
            f"{path} is empty: the service cannot check the password.",
            ctx.fix("password-empty"),
        )
    return Finding(PASSWORD_FILE, "ok", f"{path} has mode {mode:04o}.")


def check_ca_certificates(ctx: Context) -> Finding:
    """Each file named in `ca_certificates` exists and holds PEM certificates."""
    from opencode_cloud.docker.image import split_certificates

    files = ctx.need_config().ca_certificates
    if not files:
        return Finding(CA_CERTIFICATES, "ok", "None configured (only needed behind a TLS proxy).")
    problems: list[InvalidCertificate] = []
    counts: list[str] = []
    for name in files:
        path = Path(name).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(
                InvalidCertificate(
                    str(path),
                    f"Cannot read the CA certificate file {path}: {exc.strerror or exc}.",
                    unreadable=True,
                )
            )
            continue
        certificates = split_certificates(data)
        if not certificates:
            problems.append(
                InvalidCertificate(
                    str(path),
                    f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----).",
                    unreadable=False,
                )
            )
            continue
        counts.append(f"{path} ({len(certificates)})")
    if problems:
        detail = " ".join(problem.message for problem in problems)
        return Finding(
            CA_CERTIFICATES,
            "fail",
            f"{detail} The next image build fails.",
            ctx.hint(problems[0]),
        )
    return Finding(CA_CERTIFICATES, "ok", f"PEM certificates in {', '.join(counts)}.")


def check_certificate(ctx: Context) -> Finding:
    """The certificate the service serves over HTTPS, and the instance's CA: how many
    days each has left (the files only: what the tool last handed the container)."""
    from opencode_cloud.access import tls

    config = ctx.need_config()
    mode = config.tls_mode
    if mode == "off":
        return Finding(CERTIFICATE, "ok", "None: the service speaks plain HTTP (`tls` is off).")
    served = tls.served_file(ctx.paths)
    own = Path(config.tls_cert).expanduser() if mode == "custom" and config.tls_cert else None
    source = served if served.exists() else own or tls.tls_dir(ctx.paths) / "server.pem"
    try:
        chain = tls.read_pem(source.read_bytes())
    except FileNotFoundError:
        return Finding(
            CERTIFICATE, "ok", "Not made yet: the next start makes it.", ctx.fix("certificate-make")
        )
    except (OSError, tls.TlsError) as exc:
        chain, problem = [], str(getattr(exc, "strerror", None) or exc)
    else:
        problem = "it holds no PEM certificate"
    if not chain:
        return Finding(
            CERTIFICATE,
            "fail",
            f"Cannot read the certificate in {source}: {problem}.",
            "Point tls_cert at a PEM certificate chain (leaf first)."
            if own is not None and source == own
            else ctx.fix("certificate-hand-over"),
        )
    now = datetime.now(UTC)
    left = [("The served certificate", chain[0].days_left(now), chain[0].not_after)]
    if mode == "self-signed":
        ca = tls.ca_file(ctx.paths)
        try:
            ca_facts = tls.read_pem(ca.read_bytes())
        except (OSError, tls.TlsError):
            ca_facts = []
        if ca_facts:
            left.append(("the instance's CA", ca_facts[0].days_left(now), ca_facts[0].not_after))
    detail = "; ".join(
        f"{what} ended {_days(days)} ago ({end:%Y-%m-%d})"
        if days < 0
        else f"{what} has {_days(days)} left (until {end:%Y-%m-%d})"
        for what, days, end in left
    )
    if own is not None and served.exists():
        try:
            waiting = own.read_bytes() != served.read_bytes()
        except OSError:
            waiting = False
        if waiting:
            detail += f"; tls_cert ({own}) holds another one, for the next start"
    worst = min(days for _what, days, _end in left)
    if worst >= CERTIFICATE_WARN_DAYS:
        return Finding(CERTIFICATE, "ok", detail + ".")
    fix = ctx.fix("certificate-renew" if mode == "self-signed" else "certificate-renew-own")
    if worst < 0:
        return Finding(CERTIFICATE, "fail", f"{detail}: browsers refuse the service.", fix)
    return Finding(CERTIFICATE, "warn", detail + ".", fix)


def _days(days: float) -> str:
    whole = int(abs(days))
    return "1 day" if whole == 1 else f"{whole} days"


# --------------------------------------------------------------------------- the port


def check_port(ctx: Context) -> Finding:
    """The configured port is free, or published by this instance's own container: not
    by another container, not by another program."""
    if ctx.instance.person is not None:
        raise Skip("the front door publishes the team's port, not a person's instance")
    config = ctx.need_config()
    port, address = config.port, config.bind_address
    where = f"{address}:{port}"
    host = ctx.client.host if ctx.client else ctx.env.get("DOCKER_HOST") or "unix://"
    local = _is_local(host)

    def another_port() -> int:
        free = free_port_near(address, port) if local else None
        return free or port + 1

    if ctx.client is None and not local:
        raise Skip(f"{ctx.engine_problem}, and it is on another machine ({host})")
    unchecked = ""
    if ctx.client is None:
        unchecked = f" (Docker containers not checked: {ctx.engine_problem})"
    else:
        for info in containers_publishing(ctx.client, port, address):
            if info.name == ctx.instance.container_name:
                return Finding(PORT, "ok", f"{where} is published by this instance's container.")
            instance = info.labels.get(LABEL_INSTANCE)
            if instance:
                owner = f"the container of opencode-cloud instance {instance!r} ({info.name})"
                fix = ctx.fix("port-taken-by-instance", port=another_port(), instance=instance)
            else:
                owner = f"Docker container {info.name}"
                fix = ctx.fix("port-taken-by-container", port=another_port(), container=info.name)
            return Finding(
                PORT,
                "fail",
                f"{where} is published by {owner}: this instance cannot start there.",
                fix,
            )
        if not local:
            return Finding(
                PORT,
                "ok",
                f"No container publishes {where}; the engine at {host} is on another machine, "
                "so whether another program holds the port there can't be tested from here.",
            )
    problem = try_bind(address, port)
    if problem is None:
        return Finding(PORT, "ok", f"{where} is free{unchecked}.")
    if problem.errno == errno.EADDRNOTAVAIL:
        return Finding(
            PORT,
            "fail",
            f"{address} (bind_address) is not an address of this machine.",
            ctx.fix("bind-address-foreign"),
        )
    holders = port_holders(port, address)
    if problem.errno == errno.EACCES and not holders:
        if ctx.engine is not None and ctx.engine.rootless:
            return Finding(
                PORT,
                "fail",
                f"Port {port} is below 1024: a rootless engine cannot publish it.",
                ctx.fix("low-port"),
            )
        return Finding(
            PORT,
            "ok",
            f"Nothing listens on {where} (below 1024, only the engine, running as root, "
            f"may bind it){unchecked}.",
        )
    if problem.errno not in (errno.EADDRINUSE, errno.EACCES):
        return Finding(
            PORT, "warn", f"Cannot test {where}: {problem.strerror or problem}{unchecked}."
        )
    who = ", ".join(holder.describe() for holder in holders) or "another program"
    return Finding(
        PORT,
        "fail",
        f"{where} is taken by {who}{unchecked}.",
        ctx.fix("port-taken", port=another_port()),
    )


# --------------------------------------------------------------------------- the image


def check_image(ctx: Context) -> Finding:
    """The image the service runs is in the engine, holding the configured opencode."""
    from opencode_cloud.docker.image import LABEL_OPENCODE_VERSION
    from opencode_cloud.service.image import image_for

    client = ctx.need_client()
    config = ctx.need_config()
    ref = image_for(config)
    image = client.inspect_image(ref)
    if image is None:
        how = "pulls it" if (config.registries or config.image) else "builds it (minutes)"
        return Finding(
            IMAGE,
            "warn",
            f"{ref} is not in the engine yet: the next start {how}.",
            ctx.hint(ImageNotFound(ref)),
        )
    version = image.labels.get(LABEL_OPENCODE_VERSION) or None
    if config.image:
        holds = f"opencode {version}" if version else "an opencode version it does not label"
        return Finding(IMAGE, "ok", f"{ref} (the configured image) holds {holds}.")
    if version != config.opencode_version:
        return Finding(
            IMAGE,
            "warn",
            f"{ref} holds opencode {version or 'of an unknown version'}, but the "
            f"configuration asks for {config.opencode_version}.",
            ctx.fix("rebuild-image"),
        )
    return Finding(IMAGE, "ok", f"{ref} holds opencode {version}, as configured.")


# --------------------------------------------------------------------------- the service


def _since(timestamp: str | None) -> str:
    return f" since {timestamp[:16].replace('T', ' ')} UTC" if timestamp else ""


def _last_line(ctx: Context) -> str:
    lines = [line for line in ctx.service().last_log_lines(5) if line.strip()]
    return f"; its last log line: {lines[-1].strip()}" if lines else ""


def check_container(ctx: Context) -> Finding:
    """The instance's container: missing, running, stopped, crashed, crash-looping."""
    from opencode_cloud.service.errors import NeverCreated, NotRunning
    from opencode_cloud.service.status import crash_looping, describe_exit

    client = ctx.need_client()
    name = ctx.instance.container_name
    info = client.find_container(name)
    ctx.container = info
    if info is None:
        ctx.container_problem = "the service has no container"
        return Finding(
            CONTAINER,
            "warn",
            f"No container {name}: the service was never started (or was removed).",
            ctx.hint(NeverCreated(ctx.instance)),
        )
    ctx.container_problem = f"the service is not running ({info.status.value})"
    if crash_looping(info):
        ctx.container_problem = "the service keeps crashing"
        return Finding(
            CONTAINER,
            "fail",
            f"{name} keeps crashing: {info.restart_count} restarts, the last run ended with "
            f"{describe_exit(info)}{_last_line(ctx)}.",
            ctx.fix("crash-loop"),
        )
    restarts = (
        f", after {info.restart_count} restarts (the last run ended with {describe_exit(info)})"
        if info.restart_count
        else ""
    )
    match info.status:
        case ContainerStatus.RUNNING:
            return Finding(
                CONTAINER, "ok", f"{name} has been running{_since(info.started_at)}{restarts}."
            )
        case ContainerStatus.EXITED if info.oom_killed or info.exit_code not in (0, 137, 143):
            return Finding(
                CONTAINER,
                "fail",
                f"{name} stopped: {describe_exit(info)}{_last_line(ctx)}.",
                ctx.fix("crashed"),
            )
        case ContainerStatus.EXITED | ContainerStatus.CREATED:
            done = "was stopped" if info.status is ContainerStatus.EXITED else "never started"
            return Finding(CONTAINER, "warn", f"{name} {done}.", ctx.hint(NotRunning(ctx.instance)))
        case ContainerStatus.PAUSED:
            return Finding(CONTAINER, "warn", f"{name} is paused.", f"`docker unpause {name}`")
    return Finding(
        CONTAINER,
        "fail",
        f"{name} is {info.status.value}: the engine cannot run it.",
        ctx.fix("recreate", container=name),
    )


def _running(ctx: Context) -> ContainerInfo:
    info = ctx.container
    if info is None or not info.running:
        ctx.health_problem = ctx.container_problem
        raise Skip(ctx.container_problem)
    return info


def _check_person_inside(ctx: Context, info: ContainerInfo) -> Finding:
    """A person's opencode in team mode, asked from inside its container (only the front
    door reaches it from outside)."""
    service = ctx.service()
    healthy, _ = service.ask_inside("/global/health", timeout=PROBE_TIMEOUT)
    if not healthy:
        ctx.health_problem = "opencode does not answer"
        return Finding(
            HTTP_API, "fail", f"opencode in {info.name} does not answer.", ctx.fix("unhealthy")
        )
    ctx.inside = True
    return Finding(HTTP_API, "ok", f"opencode answers healthy in {info.name}.")


def check_http_api(ctx: Context) -> Finding:
    """opencode answers its health endpoint, with the host's password."""
    info = _running(ctx)
    if ctx.instance.person is not None:
        return _check_person_inside(ctx, info)
    if info.published(CONTAINER_PORT) is None:
        ctx.health_problem = "the container publishes no port"
        return Finding(
            HTTP_API,
            "fail",
            f"{info.name} does not publish port {CONTAINER_PORT}: nothing can reach opencode.",
            ctx.fix("recreate", container=info.name),
        )
    endpoint = ctx.service().endpoint_of(info)
    server = endpoint.server(ctx.password)
    answer = server.health(PROBE_TIMEOUT)
    ctx.health_problem = {
        "unauthorized": "opencode refused the credentials",
        "unreachable": "opencode does not answer",
    }.get(answer.state, "opencode is not healthy")
    logs = ctx.fix("unhealthy")
    if answer.healthy:
        ctx.endpoint = endpoint
        running = f"opencode {answer.version}" if answer.version else "opencode"
        return Finding(HTTP_API, "ok", f"{running} answers healthy at {endpoint.url}.")
    if answer.state == "unauthorized":
        problem = (
            f"there is no password file ({ctx.paths.password_file})"
            if ctx.password is None
            else "the container holds another password than the host's password file"
        )
        return Finding(
            HTTP_API,
            "fail",
            f"{endpoint.url} refused the credentials: {problem}.",
            ctx.hint(HealthTimeout(info.name, 0, answer.describe(), refused=True)),
        )
    if answer.state == "unreachable":
        from opencode_cloud.service.status import seconds_since

        age = seconds_since(info.started_at)
        grace = ctx.config.start_timeout if ctx.config else DEFAULT_START_TIMEOUT
        if info.health == "starting" or (age is not None and age < grace):
            return Finding(
                HTTP_API,
                "warn",
                f"opencode does not answer at {endpoint.url} yet ({answer.describe()}): it "
                "is still starting.",
                ctx.fix("still-starting"),
            )
        return Finding(
            HTTP_API,
            "fail",
            f"opencode does not answer at {endpoint.url}: {answer.describe()}.",
            logs,
        )
    return Finding(
        HTTP_API, "fail", f"{server.health_url} answers {answer.describe()}, not healthy.", logs
    )


def check_session_api(ctx: Context) -> Finding:
    """opencode lists its sessions: a call that reads its database, which fails while the
    health check passes when the data does not fit the running version."""
    if ctx.inside:
        listed, _ = ctx.service().ask_inside("/session")
        problem = None if listed else "listing them failed"
    elif ctx.endpoint is None:
        raise Skip(ctx.health_problem)
    else:
        problem = ctx.service().session_problem(ctx.password, ctx.endpoint)
    if problem is None:
        return Finding(SESSION_API, "ok", "opencode lists its sessions.")
    return Finding(
        SESSION_API,
        "fail",
        f"opencode answers its health check, but its session API fails ({problem}).",
        ctx.fix("sessions-failing"),
    )


def check_pending_changes(ctx: Context) -> Finding:
    """The container was made from the current configuration (else a restart applies it)."""
    info = ctx.container
    if info is None:
        raise Skip(ctx.container_problem)
    if ctx.instance.person is not None:
        raise Skip("a person's container is made by the team, not from the configuration")
    ctx.need_config()
    changed = ctx.service().pending_changes(info)
    if changed:
        return Finding(
            PENDING,
            "warn",
            f"The configuration changed since the container was made ({', '.join(changed)}).",
            ctx.fix("pending-restart"),
        )
    return Finding(PENDING, "ok", "The container matches the configuration.")


def check_scheduled_backup(ctx: Context) -> Finding:
    """The last scheduled backup worked, and one ran lately (when backups are scheduled)."""
    from opencode_cloud.config.backup_schedule import (
        read_last_run,
        read_schedule,
        schedule_problem,
    )

    schedule = read_schedule(ctx.paths)
    problem = schedule_problem(ctx.paths)
    last = read_last_run(ctx.paths)
    if problem and last is not None and not last.ok:
        folder = schedule.folder if schedule else "its folder"
        return Finding(SCHEDULED_BACKUP, "fail", problem, ctx.fix("backup-failed", folder=folder))
    if schedule is None:  # not a fault: backups are the user's choice
        return Finding(SCHEDULED_BACKUP, "ok", "No backups are scheduled on this machine.")
    if problem:
        return Finding(
            SCHEDULED_BACKUP,
            "warn",
            problem + ".",
            ctx.fix("backup-overdue", method=schedule.method),
        )
    when = f"the last one at {last.at}" if last is not None else "none has run yet"
    return Finding(
        SCHEDULED_BACKUP,
        "ok",
        f"Backed up {schedule.every} into {schedule.folder} ({schedule.method}); {when}.",
    )


# --------------------------------------------------------------------------- running them


Check = Callable[[Context], Finding]

CHECKS: tuple[tuple[str, Check], ...] = (
    (ENGINE, check_engine),
    (DISK, check_disk),
    (CONFIGURATION, check_configuration),
    (PASSWORD_FILE, check_password_file),
    (CA_CERTIFICATES, check_ca_certificates),
    (CERTIFICATE, check_certificate),
    (PORT, check_port),
    (IMAGE, check_image),
    (CONTAINER, check_container),
    (HTTP_API, check_http_api),
    (SESSION_API, check_session_api),
    (PENDING, check_pending_changes),
    (SCHEDULED_BACKUP, check_scheduled_backup),
)


def _default_loader(path: Path) -> LoadedConfig:
    from opencode_cloud.config.store import load_config

    return load_config(path)


def _default_client() -> DockerClient:
    from opencode_cloud.docker.client import DockerClient

    return DockerClient(timeout=ENGINE_TIMEOUT)


def run_checks(
    *,
    instance: Instance,
    paths: InstancePaths,
    client_factory: ClientFactory = _default_client,
    config_loader: ConfigLoader = _default_loader,
    hint: Hint = _no_hint,
    env: Mapping[str, str] | None = None,
    checks: tuple[tuple[str, Check], ...] = CHECKS,
) -> list[Finding]:
    """Run every check, each on its own; return their findings in order.

    Args:
        client_factory: connects to the engine (raises `EngineUnavailable` when it cannot).
        config_loader: reads and validates the configuration file at a path.
        hint: the fix for an error, or the words of a `Remedy` (the command line's
            `hint_for`, which names the instance and its host in the commands).
        env: the environment that chose the engine (`os.environ` by default).
    """
    ctx = Context(
        instance=instance,
        paths=paths,
        client_factory=client_factory,
        config_loader=config_loader,
        hint=hint,
        env=os.environ if env is None else env,
    )
    findings: list[Finding] = []
    try:
        for name, check in checks:
            findings.append(_run_one(ctx, name, check))
    finally:
        for close in ctx.cleanup:
            with contextlib.suppress(Exception):
                close()
    return findings


def _run_one(ctx: Context, name: str, check: Check) -> Finding:
    try:
        return check(ctx)
    except Skip as skip:
        return Finding(name, "skip", f"Not checked: {skip.reason}.")
    except OpencodeCloudError as error:
        return Finding(name, "fail", error.message, ctx.hint(error))
    except Exception as exc:  # one broken check must not hide what the others find
        return Finding(
            name,
            "fail",
            f"The check itself failed: {type(exc).__name__}: {exc}",
            ctx.fix("check-failed"),
        )
