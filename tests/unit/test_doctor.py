"""`occ doctor`'s checks on the in-memory engine, with opencode's HTTP API served by a small
local server: each check's ok, warn and fail, the skips a dead engine causes, one broken
check not stopping the others, the exit code, the JSON shape and the table."""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import bcrypt
import pytest

from fake_opencode import FakeOpencode
from fakes import SANDBOX_ENV, FakeEngine
from opencode_cloud.access import tls
from opencode_cloud.cli.app import run
from opencode_cloud.cli.commands.doctor import render_table, summary
from opencode_cloud.cli.hints import hint_for
from opencode_cloud.cli.output import ExitCode
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.config.schema import Config
from opencode_cloud.config.store import load_config, save_config
from opencode_cloud.defaults import DEFAULT_OPENCODE_VERSION, PASSWORD_PATH_IN_CONTAINER
from opencode_cloud.docker.errors import DaemonNotRunning, DockerError, DockerPermissionDenied
from opencode_cloud.docker.image import LABEL_OPENCODE_VERSION, image_ref
from opencode_cloud.docker.models import EngineInfo
from opencode_cloud.doctor import checks as doctor
from opencode_cloud.doctor.checks import CHECKS, Finding, run_checks
from opencode_cloud.doctor.ports import PortHolder, port_holders
from opencode_cloud.instance import LABEL_INSTANCE, Instance, command_prefix
from opencode_cloud.service.service import Service
from tls_helpers import self_signed_pair, shorten_certificate

INSTANCE = Instance("doc")
NAME = INSTANCE.container_name
REF = image_ref(DEFAULT_OPENCODE_VERSION)
PEM = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ\n-----END CERTIFICATE-----\n"
ENGINE_DEPENDENT = ("disk space", "image", "container", "HTTP API", "session API")


# --------------------------------------------------------------------------- fixtures


class Usage(NamedTuple):
    total: int
    used: int
    free: int


@pytest.fixture(autouse=True)
def plenty_of_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """The engine's data folder has 100 GiB free, unless a test says otherwise."""

    def set_free(free: int) -> None:
        monkeypatch.setattr(shutil, "disk_usage", lambda _path: Usage(200 << 30, 0, free))

    set_free(100 << 30)
    return set_free


@pytest.fixture
def fake() -> FakeEngine:
    engine = FakeEngine()
    engine.add_image(
        REF, env=SANDBOX_ENV, labels={LABEL_OPENCODE_VERSION: DEFAULT_OPENCODE_VERSION}
    )
    return engine


@pytest.fixture
def paths(tmp_path: Path) -> InstancePaths:
    return InstancePaths(tmp_path / "doc")


@pytest.fixture
def configure(paths: InstancePaths, free_port: int) -> Callable[..., Config]:
    """Write the instance's configuration file (on a free port unless told otherwise)."""

    def write(**settings: Any) -> Config:
        config = Config(**{"port": free_port, **settings})
        save_config(paths.config_file, config)
        return config

    return write


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No DOCKER_HOST and no Docker context: the default socket."""
    return {"DOCKER_CONFIG": str(tmp_path / "no-docker-config")}


Doctor = Callable[..., dict[str, Finding]]


@pytest.fixture
def diagnose(fake: FakeEngine, paths: InstancePaths, env: dict[str, str]) -> Doctor:
    """Run every check on the fake engine; the findings by check name."""

    def diagnose(factory: Callable[[], Any] | None = None, **kwargs: Any) -> dict[str, Finding]:
        findings = run_checks(
            instance=INSTANCE,
            paths=paths,
            client_factory=factory or (lambda: fake),
            config_loader=load_config,
            hint=lambda error: hint_for(error, command_prefix(INSTANCE)),
            **{"env": env, **kwargs},
        )
        assert [f.name for f in findings] == [name for name, _ in CHECKS]
        return {f.name: f for f in findings}

    return diagnose


def started(fake: FakeEngine, paths: InstancePaths, config: Config) -> Service:
    """The service started the way `occ start` does (without waiting for it)."""
    service = Service(fake, config, INSTANCE, paths)
    service.start(wait=False)
    return service


def dead(error: DockerError) -> Callable[[], Any]:
    def connect() -> Any:
        raise error

    return connect


# --------------------------------------------------------------------------- a healthy setup


def test_a_healthy_service_passes_every_check(
    diagnose: Doctor, fake: FakeEngine, paths: InstancePaths, configure, opencode: FakeOpencode
) -> None:
    started(fake, paths, configure(port=opencode.port))
    found = diagnose()
    assert {name: f.status for name, f in found.items()} == {name: "ok" for name, _ in CHECKS}
    assert found["engine"].detail == (
        "Docker 20.10.24 (API 1.41) at unix:///fake/docker.sock (the default socket); "
        "not rootless (the daemon runs as root)."
    )
    assert "100.0 GiB free of 200.0 GiB in /var/lib/docker" in found["disk space"].detail
    assert (
        found["port"].detail
        == f"127.0.0.1:{opencode.port} is published by this instance's container."
    )
    assert (
        found["image"].detail == f"{REF} holds opencode {DEFAULT_OPENCODE_VERSION}, as configured."
    )
    assert found["HTTP API"].detail == (
        f"opencode {DEFAULT_OPENCODE_VERSION} answers healthy at http://127.0.0.1:{opencode.port}."
    )
    assert all(f.fix == "" for f in found.values())
    assert fake.closed


# --------------------------------------------------------------------------- the engine


def test_a_dead_engine_fails_and_skips_what_needs_it_but_checks_the_rest(
    diagnose: Doctor, configure, paths: InstancePaths
) -> None:
    configure()
    host = "unix:///nonexistent.sock"
    found = diagnose(dead(DaemonNotRunning(host)), env={"DOCKER_HOST": host})
    engine = found["engine"]
    assert engine.status == "fail"
    assert engine.detail == (
        "Cannot connect to the Docker daemon at unix:///nonexistent.sock: it is not running "
        "(set by DOCKER_HOST; /nonexistent.sock does not exist)."
    )
    assert "`unset DOCKER_HOST`" in engine.fix
    for name in ENGINE_DEPENDENT:
        assert found[name].status == "skip", name
        assert found[name].detail == "Not checked: the Docker engine is unreachable.", name
    # What needs no engine is still checked.
    assert found["configuration"].status == "ok"
    assert found["password file"].status == "ok"
    assert found["CA certificates"].status == "ok"
    assert found["port"].status == "ok"
    assert "Docker containers not checked: the Docker engine is unreachable" in (
        found["port"].detail
    )


def test_the_default_engine_down_says_how_to_start_it(diagnose: Doctor, configure) -> None:
    configure()
    found = diagnose(dead(DaemonNotRunning("unix:///var/run/docker.sock")))
    assert found["engine"].status == "fail"
    assert "(the default socket" in found["engine"].detail
    assert "systemctl start docker" in found["engine"].fix


def test_a_docker_context_is_named(diagnose: Doctor, configure, tmp_path: Path) -> None:
    configure()
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    (docker_config / "config.json").write_text('{"currentContext": "remote-box"}')
    found = diagnose(env={"DOCKER_CONFIG": str(docker_config)})
    assert "Docker context 'remote-box', set by `docker context use`" in found["engine"].detail
    found = diagnose(env={"DOCKER_CONTEXT": "other"})
    assert "Docker context 'other', set by DOCKER_CONTEXT" in found["engine"].detail


def test_permission_denied_on_the_socket_describes_it(
    diagnose: Doctor, configure, tmp_path: Path
) -> None:
    configure()
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        found = diagnose(dead(DockerPermissionDenied(f"unix://{path}")))
    engine = found["engine"]
    assert engine.status == "fail"
    assert engine.detail.startswith(f"Permission denied on the Docker socket (unix://{path})")
    assert f"{path} is srwx" in engine.detail
    assert "you are in group" in engine.detail  # the test's own socket, the test's group
    assert "docker group" in engine.fix
    assert found["image"].detail == "Not checked: this user may not use the Docker engine."


def test_rootless_engines_are_named(
    diagnose: Doctor, fake: FakeEngine, configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure()
    info = EngineInfo("25.0.0", "1.44", 4, 8 << 30, "/home/u/.local/share/docker", True, "x")
    monkeypatch.setattr(fake, "info", lambda: info)
    found = diagnose()
    assert found["engine"].detail.endswith("; rootless.")
    assert "/home/u/.local/share/docker" in found["disk space"].detail


def test_an_engine_that_does_not_describe_itself_is_a_warning(
    diagnose: Doctor, fake: FakeEngine, configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure()

    def broken() -> EngineInfo:
        raise DockerError("Docker engine error: info is broken")

    monkeypatch.setattr(fake, "info", broken)
    found = diagnose()
    assert found["engine"].status == "warn"
    assert found["disk space"].status == "skip"
    assert found["image"].status == "ok"  # the engine itself still answers


# --------------------------------------------------------------------------- disk space


@pytest.mark.parametrize(
    ("free", "status"), [(6 << 30, "ok"), (4 << 30, "warn"), (512 << 20, "fail")]
)
def test_disk_space_thresholds(
    diagnose: Doctor, configure, plenty_of_disk, free: int, status: str
) -> None:
    configure()
    plenty_of_disk(free)
    disk = diagnose()["disk space"]
    assert disk.status == status
    assert ("docker image prune" in disk.fix) == (status != "ok")


def test_disk_space_of_a_remote_engine_cannot_be_measured(
    diagnose: Doctor, fake: FakeEngine, configure
) -> None:
    configure()
    fake.host = "tcp://10.0.0.5:2376"
    disk = diagnose()["disk space"]
    assert disk.status == "skip"
    assert "tcp://10.0.0.5:2376 is on another machine" in disk.detail


def test_disk_space_of_a_data_folder_not_on_this_machine(
    diagnose: Doctor, configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure()

    def missing(path: str) -> Usage:
        raise FileNotFoundError(path)

    monkeypatch.setattr(shutil, "disk_usage", missing)
    disk = diagnose()["disk space"]
    assert disk.status == "skip"
    assert "/var/lib/docker is not on this machine" in disk.detail


# --------------------------------------------------------------------------- the files


def test_an_invalid_configuration_fails_with_its_message_and_hint(
    diagnose: Doctor, paths: InstancePaths
) -> None:
    paths.root.mkdir(parents=True)
    paths.config_file.write_text('{"port": 0}')
    found = diagnose()
    config = found["configuration"]
    assert config.status == "fail"
    assert "port is 0, but must be" in config.detail
    assert "occ --instance doc config set port VALUE" in config.fix
    for name in ("CA certificates", "port", "image"):
        assert found[name].detail == "Not checked: the configuration is invalid.", name
    assert found["engine"].status == "ok"
    assert found["container"].status == "warn"  # needs no configuration


def test_a_configuration_that_is_not_json_fails(diagnose: Doctor, paths: InstancePaths) -> None:
    paths.root.mkdir(parents=True)
    paths.config_file.write_text("{port: ")
    config = diagnose()["configuration"]
    assert config.status == "fail"
    assert config.detail.startswith("Invalid JSON in")
    assert "occ --instance doc config reset --yes" in config.fix


def test_unknown_keys_are_a_warning(diagnose: Doctor, paths: InstancePaths, free_port: int) -> None:
    paths.root.mkdir(parents=True)
    paths.config_file.write_text(json.dumps({"port": free_port, "prot": 1}))
    config = diagnose()["configuration"]
    assert config.status == "warn"
    assert "unknown key 'prot' is ignored (did you mean 'port'?)" in config.detail


def test_no_configuration_file_is_every_default(diagnose: Doctor) -> None:
    config = diagnose()["configuration"]
    assert config.status == "ok"
    assert "every setting is a default" in config.detail


@pytest.mark.parametrize(
    ("mode", "content", "status"),
    [
        (0o600, "secret\n", "ok"),
        (0o400, "secret\n", "ok"),
        (0o644, "secret\n", "warn"),
        (0o640, "secret\n", "warn"),
        (0o600, "\n", "warn"),
    ],
)
def test_password_file_mode_and_content(
    diagnose: Doctor, configure, paths: InstancePaths, mode: int, content: str, status: str
) -> None:
    configure()
    paths.password_file.write_text(content)
    paths.password_file.chmod(mode)
    found = diagnose()["password file"]
    assert found.status == status
    if mode & 0o077:
        assert f"mode {mode:04o}" in found.detail
        assert found.fix == f"`chmod 600 {paths.password_file}`"
    # The doctor reports; it does not repair.
    assert paths.password_file.stat().st_mode & 0o777 == mode


def test_no_password_file_yet_is_fine(diagnose: Doctor, configure) -> None:
    configure()
    found = diagnose()["password file"]
    assert found.status == "ok"
    assert "No password yet" in found.detail


def test_an_unreadable_password_file_fails(
    diagnose: Doctor, configure, paths: InstancePaths
) -> None:
    configure()
    paths.password_file.mkdir()
    found = diagnose()["password file"]
    assert found.status == "fail"
    assert "is not a file" in found.detail


def test_ca_certificates(diagnose: Doctor, configure, tmp_path: Path) -> None:
    good = tmp_path / "corp.pem"
    good.write_bytes(PEM + PEM)
    configure(ca_certificates=[str(good)])
    found = diagnose()["CA certificates"]
    assert (found.status, found.detail) == ("ok", f"PEM certificates in {good} (2).")

    der = tmp_path / "corp.der"
    der.write_bytes(b"\x30\x82\x01\x0a")
    missing = tmp_path / "gone.pem"
    configure(ca_certificates=[str(good), str(missing), str(der)])
    found = diagnose()["CA certificates"]
    assert found.status == "fail"
    assert f"Cannot read the CA certificate file {missing}" in found.detail
    assert f"{der} holds no PEM certificate" in found.detail
    assert "Name an existing PEM file" in found.fix


def test_no_ca_certificates_is_fine(diagnose: Doctor, configure) -> None:
    configure()
    assert diagnose()["CA certificates"].status == "ok"


# --------------------------------------------------------------------------- the certificate


def test_the_served_certificate_and_the_ca_with_their_days_left(
    diagnose: Doctor, configure, fake: FakeEngine, paths: InstancePaths
) -> None:
    started(fake, paths, configure(tls="self-signed"))
    found = diagnose()["TLS certificate"]
    served = tls.read_pem(tls.served_file(paths).read_bytes())[0]
    ca = tls.read_pem(tls.ca_file(paths).read_bytes())[0]
    assert found.status == "ok"
    assert found.detail == (
        f"The served certificate has {int(served.days_left())} days left "
        f"(until {served.not_after:%Y-%m-%d}); the instance's CA has "
        f"{int(ca.days_left())} days left (until {ca.not_after:%Y-%m-%d})."
    )


def test_a_served_certificate_within_30_days_of_its_end_is_a_warning(
    diagnose: Doctor, configure, fake: FakeEngine, paths: InstancePaths
) -> None:
    started(fake, paths, configure(tls="self-signed"))
    tls.served_file(paths).write_bytes(shorten_certificate(paths.root / "tls", 5))
    found = diagnose()["TLS certificate"]
    assert found.status == "warn"
    assert found.detail.startswith("The served certificate has 4 days left")
    assert "`occ --instance doc start` makes new ones" in found.fix


def test_certificates_that_ended_fail(
    diagnose: Doctor, configure, fake: FakeEngine, paths: InstancePaths, monkeypatch
) -> None:
    """Seen from later dates: the one a service left running for years still serves."""
    started(fake, paths, configure(tls="self-signed"))
    served = tls.read_pem(tls.served_file(paths).read_bytes())[0]
    ca = tls.read_pem(tls.ca_file(paths).read_bytes())[0]

    def at(moment: datetime) -> None:
        class Clock(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> Any:
                return moment

        monkeypatch.setattr(doctor, "datetime", Clock)

    at(served.not_after - timedelta(days=10))
    found = diagnose()["TLS certificate"]
    assert found.status == "warn" and "The served certificate has 10 days left" in found.detail
    at(ca.not_after + timedelta(days=2))
    found = diagnose()["TLS certificate"]
    assert found.status == "fail" and "the instance's CA ended 2 days ago" in found.detail
    assert found.detail.startswith("The served certificate ended ")
    assert found.detail.endswith("browsers refuse the service.")


def test_a_users_certificate_its_days_left_and_a_renewal_not_yet_served(
    diagnose: Doctor, configure, fake: FakeEngine, paths: InstancePaths, tmp_path: Path
) -> None:
    cert, key = self_signed_pair(tmp_path / "mine", "box.example", days=20)
    config = configure(tls_cert=str(cert), tls_key=str(key))
    found = diagnose()["TLS certificate"]  # not started yet: the file itself
    assert found.status == "warn" and "has 19 days left" in found.detail
    assert "Renew your certificate (tls_cert, tls_key)" in found.fix
    started(fake, paths, config)
    self_signed_pair(tmp_path / "mine", "box.example", days=90)  # renewed in place
    found = diagnose()["TLS certificate"]
    assert found.status == "warn" and "has 19 days left" in found.detail
    assert f"tls_cert ({cert}) holds another one, for the next start" in found.detail
    assert "`occ --instance doc start` hands it over" in found.fix


def test_plain_http_has_no_certificate(diagnose: Doctor, configure) -> None:
    configure()
    found = diagnose()["TLS certificate"]
    assert found.status == "ok" and "plain HTTP" in found.detail


# --------------------------------------------------------------------------- the port


def test_a_free_port(diagnose: Doctor, configure, free_port: int) -> None:
    configure()
    port = diagnose()["port"]
    assert (port.status, port.detail) == ("ok", f"127.0.0.1:{free_port} is free.")


def test_a_port_this_process_holds_names_it(diagnose: Doctor, configure) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        configure(port=taken)
        port = diagnose()["port"]
    assert port.status == "fail"
    assert port.detail.startswith(f"127.0.0.1:{taken} is taken by pid {os.getpid()} (")
    assert "pytest" in port.detail or "python" in port.detail
    assert "occ --instance doc config set port" in port.fix


def test_a_port_held_on_every_address_conflicts(diagnose: Doctor, configure) -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        configure(port=taken)
        port = diagnose()["port"]
    assert port.status == "fail"
    assert f"pid {os.getpid()}" in port.detail


def test_another_container_publishing_the_port_is_named(
    diagnose: Doctor, fake: FakeEngine, configure, free_port: int
) -> None:
    configure()
    binding = {"80/tcp": [{"HostIp": "", "HostPort": str(free_port)}]}
    fake.create_container("web", {"Image": REF, "HostConfig": {"PortBindings": binding}})
    fake.start_container("web")
    port = diagnose()["port"]
    assert port.status == "fail"
    assert port.detail == (
        f"127.0.0.1:{free_port} is published by Docker container web: this instance cannot "
        "start there."
    )
    assert "`docker stop web`" in port.fix

    fake.stop_container("web", 0)  # a stopped container holds nothing
    assert diagnose()["port"].status == "ok"


def test_another_instance_publishing_the_port_is_named(
    diagnose: Doctor, fake: FakeEngine, configure, free_port: int
) -> None:
    configure()
    binding = {"3000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(free_port)}]}
    body = {
        "Image": REF,
        "Labels": {LABEL_INSTANCE: "work"},
        "HostConfig": {"PortBindings": binding},
    }
    fake.create_container("opencode-cloud-work", body)
    fake.start_container("opencode-cloud-work")
    port = diagnose()["port"]
    assert port.status == "fail"
    assert "opencode-cloud instance 'work'" in port.detail
    assert "`occ --instance work stop`" in port.fix


def test_a_container_on_another_address_does_not_conflict(
    diagnose: Doctor, fake: FakeEngine, configure, free_port: int
) -> None:
    configure()
    binding = {"80/tcp": [{"HostIp": "127.0.0.2", "HostPort": str(free_port)}]}
    fake.create_container("web", {"Image": REF, "HostConfig": {"PortBindings": binding}})
    fake.start_container("web")
    assert diagnose()["port"].status == "ok"


def test_a_bind_address_that_is_not_this_machines_fails(diagnose: Doctor, configure) -> None:
    configure(bind_address="192.0.2.1")  # TEST-NET-1: never a local address
    port = diagnose()["port"]
    assert port.status == "fail"
    assert "192.0.2.1 (bind_address) is not an address of this machine" in port.detail
    assert "config set bind_address 127.0.0.1" in port.fix


def test_the_port_of_a_remote_engine_is_only_checked_among_its_containers(
    diagnose: Doctor, fake: FakeEngine, configure
) -> None:
    configure()
    fake.host = "tcp://10.0.0.5:2376"
    port = diagnose()["port"]
    assert port.status == "ok"
    assert "can't be tested from here" in port.detail


def test_the_port_of_a_dead_remote_engine_is_skipped(diagnose: Doctor, configure) -> None:
    configure()
    host = "tcp://10.0.0.5:2376"
    port = diagnose(dead(DaemonNotRunning(host)), env={"DOCKER_HOST": host})["port"]
    assert port.status == "skip"


def _proc(tmp_path: Path, tcp: str, tcp6: str = "") -> Path:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    header = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
    )
    (proc / "net" / "tcp").write_text(header + tcp)
    (proc / "net" / "tcp6").write_text(header + tcp6)
    return proc


def test_port_holders_of_other_users_are_another_program(tmp_path: Path) -> None:
    # 127.0.0.1:3000 (0x0BB8) listening (0A), uid 0, inode 4242; no process is readable.
    line = (
        "   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0  "
        "      0 4242 1\n"
    )
    proc = _proc(tmp_path, line)
    assert port_holders(3000, "127.0.0.1", proc) == [PortHolder(0)]
    assert PortHolder(0).describe() == "another program (of user root)"
    assert port_holders(3000, "127.0.0.2", proc) == []  # another address
    assert port_holders(3001, "127.0.0.1", proc) == []  # another port


def test_port_holders_are_found_by_their_socket(tmp_path: Path) -> None:
    # [::]:3000 listening, held by pid 77 through its descriptor 5.
    line6 = (
        "   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 "
        "0A 00000000:00000000 00:00000000 00000000  1000        0 777 1\n"
    )
    proc = _proc(tmp_path, "", line6)
    (proc / "77" / "fd").mkdir(parents=True)
    (proc / "77" / "cmdline").write_bytes(b"node\0server.js\0")
    os.symlink("socket:[777]", proc / "77" / "fd" / "5")
    assert port_holders(3000, "127.0.0.1", proc) == [PortHolder(1000, 77, "node server.js")]
    assert PortHolder(1000, 77, "node server.js").describe() == "pid 77 (node server.js)"


# --------------------------------------------------------------------------- the image


def test_a_missing_image_is_a_warning_with_how_to_get_it(
    diagnose: Doctor, fake: FakeEngine, configure
) -> None:
    configure()
    fake.remove_image(REF)
    image = diagnose()["image"]
    assert image.status == "warn"
    assert image.detail == (f"{REF} is not in the engine yet: the next start builds it (minutes).")
    assert (
        image.fix
        == "Build it with `occ --instance doc build`, or pull it with `occ --instance doc pull`."
    )


def test_an_image_holding_another_opencode_is_a_warning(
    diagnose: Doctor, fake: FakeEngine, configure
) -> None:
    configure()
    fake.add_image(REF, labels={LABEL_OPENCODE_VERSION: "1.0.0"})
    image = diagnose()["image"]
    assert image.status == "warn"
    assert f"holds opencode 1.0.0, but the configuration asks for {DEFAULT_OPENCODE_VERSION}" in (
        image.detail
    )
    assert image.fix == "Build it again: `occ --instance doc build`."


def test_an_image_override_is_reported_with_its_version(
    diagnose: Doctor, fake: FakeEngine, configure
) -> None:
    configure(image="registry.example.com/team/sandbox:2")
    fake.add_image("registry.example.com/team/sandbox:2", labels={LABEL_OPENCODE_VERSION: "9.9.9"})
    image = diagnose()["image"]
    assert image.status == "ok"
    assert "holds opencode 9.9.9" in image.detail


# --------------------------------------------------------------------------- the container


def test_no_container_is_a_warning_and_skips_the_service_checks(
    diagnose: Doctor, configure
) -> None:
    configure()
    found = diagnose()
    assert found["container"].status == "warn"
    assert found["container"].fix == "Start it with `occ --instance doc start`."
    for name in ("HTTP API", "session API", "pending changes"):
        assert found[name].detail == "Not checked: the service has no container.", name


def test_a_stopped_service_is_a_warning(
    diagnose: Doctor, fake: FakeEngine, paths: InstancePaths, configure, opencode: FakeOpencode
) -> None:
    started(fake, paths, configure(port=opencode.port)).stop()
    found = diagnose()
    assert found["container"].status == "warn"
    assert found["container"].detail == f"{NAME} was stopped."
    assert found["HTTP API"].detail == "Not checked: the service is not running (exited)."


def test_a_crashed_service_fails_with_its_last_log_line(
    diagnose: Doctor, fake: FakeEngine, paths: InstancePaths, configure
) -> None:
    fake.crash_on_start(NAME, 1, ["starting", "Error: database is locked"])
    started(fake, paths, configure())
    container = diagnose()["container"]
    assert container.status == "fail"
    assert container.detail == (
        f"{NAME} stopped: exit code 1; its last log line: Error: database is locked."
    )
    assert "occ --instance doc logs" in container.fix


def test_a_crash_looping_service_fails(
    diagnose: Doctor, fake: FakeEngine, paths: InstancePaths, configure
) -> None:
    started(fake, paths, configure())
    fake.containers[NAME]["State"].update(Status="restarting", Running=True, ExitCode=137)
    fake.containers[NAME]["State"]["OOMKilled"] = True
    fake.containers[NAME]["RestartCount"] = 4
    found = diagnose()
    assert found["container"].status == "fail"
    assert "keeps crashing: 4 restarts, the last run ended with killed: out of memory" in (
        found["container"].detail
    )
    assert found["HTTP API"].detail == "Not checked: the service keeps crashing."


def test_a_paused_service_is_a_warning(
    diagnose: Doctor, fake: FakeEngine, paths: InstancePaths, configure
) -> None:
    started(fake, paths, configure())
    fake.containers[NAME]["State"]["Status"] = "paused"
    container = diagnose()["container"]
    assert (container.status, container.fix) == ("warn", f"`docker unpause {NAME}`")


# --------------------------------------------------------------------------- deep health


def test_a_refused_password_fails_with_rotate(
    diagnose: Doctor, fake: FakeEngine, paths: InstancePaths, configure, opencode: FakeOpencode
) -> None:
    started(fake, paths, configure(port=opencode.port))
    # The container holds the hash of a password other than the host's.
    other = bcrypt.hashpw(b"not the host's", bcrypt.gensalt(4))
    fake.files[NAME][PASSWORD_PATH_IN_CONTAINER] = other + b"\n"
    found = diagnose()
    assert found["HTTP API"].status == "fail"
    assert "refused the credentials: the container holds another password" in (
        found["HTTP API"].detail
    )
    assert "occ --instance doc auth rotate" in found["HTTP API"].fix
    assert found["session API"].detail == "Not checked: opencode refused the credentials."
    assert paths.password_file.exists()


def test_a_service_that_does_not_answer_fails_once_it_had_time(
    diagnose: Doctor, fake: FakeEngine, paths: InstancePaths, configure, opencode: FakeOpencode
) -> None:
    started(fake, paths, configure(port=opencode.port))
    opencode.answering = False
    found = diagnose()
    assert found["HTTP API"].status == "warn"  # just started: still booting
    assert "still starting" in found["HTTP API"].detail

    fake.containers[NAME]["State"]["StartedAt"] = "2020-01-01T00:00:00.123456789Z"
    found = diagnose()
    assert found["HTTP API"].status == "fail"
    assert found["HTTP API"].detail.startswith(
        f"opencode does not answer at http://127.0.0.1:{opencode.port}:"
    )
    assert found["session API"].detail == "Not checked: opencode does not answer."


def test_a_failing_session_api_fails_although_health_passes(
    diagnose: Doctor, fake: FakeEngine, paths: InstancePaths, configure, opencode: FakeOpencode
) -> None:
    started(fake, paths, configure(port=opencode.port))
    opencode.sessions_broken = True
    found = diagnose()
    assert found["HTTP API"].status == "ok"
    sessions = found["session API"]
    assert sessions.status == "fail"
    assert sessions.detail == (
        "opencode answers its health check, but its session API fails (HTTP 500: UnknownError "
        "no such column: x)."
    )
    assert "occ --instance doc config set opencode_version VERSION" in sessions.fix


def test_pending_changes_are_a_warning(
    diagnose: Doctor, fake: FakeEngine, paths: InstancePaths, configure, opencode: FakeOpencode
) -> None:
    started(fake, paths, configure(port=opencode.port))
    configure(port=opencode.port, env={"OCC_MARKER": "1"})
    pending = diagnose()["pending changes"]
    assert pending.status == "warn"
    assert "(environment)" in pending.detail
    assert pending.fix == "Apply it with `occ --instance doc restart`."


# --------------------------------------------------------------------------- independence


def test_a_broken_check_does_not_stop_the_others(
    diagnose: Doctor, configure, paths: InstancePaths, fake: FakeEngine, env: dict[str, str]
) -> None:
    configure()

    def broken(_ctx: doctor.Context) -> Finding:
        raise RuntimeError("boom")

    checks = tuple((name, broken if name == "port" else check) for name, check in CHECKS)
    findings = run_checks(
        instance=INSTANCE,
        paths=paths,
        client_factory=lambda: fake,
        config_loader=load_config,
        env=env,
        checks=checks,
    )
    by_name = {f.name: f for f in findings}
    assert [f.name for f in findings] == [name for name, _ in CHECKS]
    assert by_name["port"].status == "fail"
    assert by_name["port"].detail == "The check itself failed: RuntimeError: boom"
    assert by_name["image"].status == "ok"
    assert by_name["container"].status == "warn"


def test_an_engine_error_inside_a_check_is_that_checks_failure(
    diagnose: Doctor, fake: FakeEngine, configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure()

    def gone(_ref: str) -> None:
        raise DockerError("Docker engine error: images are gone")

    monkeypatch.setattr(fake, "inspect_image", gone)
    found = diagnose()
    assert (found["image"].status, found["image"].detail) == (
        "fail",
        "Docker engine error: images are gone",
    )
    assert found["container"].status == "warn"


# --------------------------------------------------------------------------- the command


FINDINGS = [
    Finding("engine", "ok", "Docker 27 (API 1.47) at unix:///var/run/docker.sock."),
    Finding("port", "warn", "Something to look at.", "`do this`"),
    Finding("image", "skip", "Not checked: the Docker engine is unreachable."),
]


@pytest.fixture
def occ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("OCC_INSTANCE", raising=False)

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run(list(args))
        captured = capsys.readouterr()
        return int(code), captured.out, captured.err

    return invoke


def _canned(monkeypatch: pytest.MonkeyPatch, findings: list[Finding]) -> None:
    monkeypatch.setattr(doctor, "run_checks", lambda **_kwargs: findings)


def test_warnings_alone_exit_zero(occ, monkeypatch: pytest.MonkeyPatch) -> None:
    _canned(monkeypatch, FINDINGS)
    code, out, _ = occ("doctor")
    assert code == ExitCode.OK
    assert out.splitlines()[0].split() == ["CHECK", "RESULT", "DETAIL", "FIX"]
    assert out.rstrip().endswith("1 warning.")


def test_a_failing_check_exits_non_zero(occ, monkeypatch: pytest.MonkeyPatch) -> None:
    _canned(monkeypatch, [*FINDINGS, Finding("container", "fail", "It crashed.", "`occ logs`")])
    code, out, _ = occ("doctor")
    assert code == ExitCode.ERROR
    assert "1 check failed, 1 warning." in out


def test_json_is_the_findings_and_an_ok_flag(occ, monkeypatch: pytest.MonkeyPatch) -> None:
    _canned(monkeypatch, FINDINGS)
    code, out, _ = occ("doctor", "--json")
    assert code == ExitCode.OK
    data = json.loads(out)
    assert data == {
        "ok": True,
        "findings": [
            {"name": f.name, "status": f.status, "detail": f.detail, "fix": f.fix} for f in FINDINGS
        ],
    }
    _canned(monkeypatch, [Finding("engine", "fail", "Dead.", "Start it.")])
    code, out, _ = occ("doctor", "--json")
    assert code == ExitCode.ERROR
    assert json.loads(out)["ok"] is False


def test_the_command_runs_the_real_checks(
    occ, monkeypatch: pytest.MonkeyPatch, fake: FakeEngine, env: dict[str, str]
) -> None:
    """Through the command line, with the fake engine in place of the real one."""
    real = doctor.run_checks

    def on_fake(**kwargs: Any) -> list[Finding]:
        return real(**{**kwargs, "client_factory": lambda: fake}, env=env)

    monkeypatch.setattr(doctor, "run_checks", on_fake)
    code, out, _ = occ("--instance", "doc", "doctor", "--json")
    data = json.loads(out)
    assert [f["name"] for f in data["findings"]] == [name for name, _ in CHECKS]
    assert code == (ExitCode.OK if data["ok"] else ExitCode.ERROR)
    container = next(f for f in data["findings"] if f["name"] == "container")
    assert container["fix"] == "Start it with `occ --instance doc start`."


def test_the_table_aligns_its_columns_and_wraps_long_text() -> None:
    findings = [
        Finding("engine", "ok", "short"),
        Finding("pending changes", "fail", "word " * 40, "fix " * 30),
    ]
    lines = render_table(findings, 100)
    assert all(len(line) <= 100 for line in lines)
    header = lines[0]
    result_at, detail_at, fix_at = (header.index(h) for h in ("RESULT", "DETAIL", "FIX"))
    first = next(line for line in lines if line.startswith("pending changes"))
    assert first.index("fail") == result_at
    assert first.index("word") == detail_at
    assert first.index("fix") == fix_at
    continuation = lines[lines.index(first) + 1]
    assert continuation.startswith(" " * detail_at + "word")
    assert continuation.index("fix") == fix_at
    assert summary(findings) == "1 check failed."
    assert summary([findings[0]]) == "Everything checked is fine."


def test_the_table_colours_only_the_result() -> None:
    lines = render_table([Finding("engine", "fail", "Dead.", "Start it.")], 100, color=True)
    assert "\033[31mfail  \033[0m" in lines[1]


def test_the_table_never_breaks_a_command_in_backquotes() -> None:
    fix = "Stop that program, or choose another port: `occ config set port 3001`."
    lines = render_table([Finding("port", "fail", "Taken.", fix)], 60)
    assert any(line.endswith("`occ config set port 3001`.") for line in lines), lines
