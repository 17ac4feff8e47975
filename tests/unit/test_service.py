"""Every branch of `Service` on the in-memory engine, with opencode's health endpoint served
for real: the wait loop polls a local HTTP server that answers for the fake container
publishing its port, with the password the tool wrote into that container."""

from __future__ import annotations

import inspect
import json
import os
import re
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fake_opencode import FakeOpencode, holds
from fakes import SANDBOX_ENV, VOLUME_BYTES, FakeEngine
from opencode_cloud.access import credentials
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.config.schema import Config
from opencode_cloud.config.store import save_config
from opencode_cloud.defaults import (
    DEFAULT_OPENCODE_VERSION,
    EDGE_UID,
    PASSWORD_PATH_IN_CONTAINER,
    RUNTIME_HOME,
    RUNTIME_USER,
    WORKING_DIR,
)
from opencode_cloud.docker.client import DockerClient
from opencode_cloud.docker.errors import (
    ContainerExited,
    HealthTimeout,
    ImageNotFound,
    PortInUse,
    PullFailed,
)
from opencode_cloud.docker.image import EDGE_LABEL, LABEL_EDGE, LABEL_OPENCODE_VERSION
from opencode_cloud.docker.models import Mount
from opencode_cloud.docker.spec import ContainerSpec
from opencode_cloud.docker.volume import VOLUME_SPECS, volume_names
from opencode_cloud.instance import (
    LABEL_CONFIG_FILE,
    LABEL_CONFIG_HASH,
    LABEL_INSTANCE,
    Instance,
    command_prefix,
)
from opencode_cloud.mounts import MountError
from opencode_cloud.service.endpoint import Endpoint, is_loopback
from opencode_cloud.service.errors import NeverCreated, NotRunning
from opencode_cloud.service.service import Service
from service_helpers import INSTANCE, NAME, REF, Make
from tls_helpers import days_left, self_signed_pair, shorten_certificate, text

LIVE_VERSION = "1.18.33-live"  # what the served endpoint reports, unlike the image label
REGISTRY = "registry.example.com:5000/mirror"
CERT, KEY = "/run/opencode-cloud/tls/cert.pem", "/run/opencode-cloud/tls/key.pem"


def _never_loaded() -> Config:
    raise AssertionError("the configuration was loaded")


def _actual(fake: FakeEngine) -> ContainerSpec:
    return ContainerSpec.from_inspect(fake.inspect_container(NAME), SANDBOX_ENV)


def test_the_fake_engine_has_the_clients_methods() -> None:
    public = [n for n, _ in inspect.getmembers(DockerClient, inspect.isfunction)]
    for name in (n for n in public if not n.startswith("_")):
        wanted = inspect.signature(getattr(DockerClient, name))
        got = inspect.signature(getattr(FakeEngine, name))
        assert list(got.parameters.values()) == list(wanted.parameters.values()), name


# --------------------------------------------------------------------------- start


def test_first_start_creates_volumes_container_and_password(
    make: Make, fake: FakeEngine, paths: InstancePaths, opencode: FakeOpencode
) -> None:
    steps: list[str] = []
    result = make().start(on_step=steps.append)

    password = paths.password_file.read_text().strip()
    assert stat.S_IMODE(paths.password_file.stat().st_mode) == 0o600
    assert (result.password, result.password_created) == (password, True)
    assert list(fake.files[NAME]) == [PASSWORD_PATH_IN_CONTAINER]
    assert holds(fake.files[NAME][PASSWORD_PATH_IN_CONTAINER], password)
    assert password.encode() not in fake.files[NAME][PASSWORD_PATH_IN_CONTAINER]
    # The hash is the edge's, closed to the agent.
    assert fake.file_modes[NAME][PASSWORD_PATH_IN_CONTAINER] == (
        0o600,
        EDGE_UID,
    )  # the edge's, closed to the agent
    assert sorted(fake.volumes) == sorted(volume_names(INSTANCE))
    for spec in VOLUME_SPECS:
        labels = fake.volumes[INSTANCE.volume_name(spec.kind)]["Labels"]
        assert labels[LABEL_INSTANCE] == "unit"
        assert labels["io.opencode-cloud.role"] == f"volume-{spec.kind}"
    # Volumes first, the password before the first start.
    assert [m for m, _ in fake.calls] == [
        *["create_volume"] * len(VOLUME_SPECS),
        "create_container",
        "put_archive",
        "start_container",
    ]
    info = fake.inspect_container(NAME)
    assert info.running and result.container_id == info.id
    assert info.labels[LABEL_CONFIG_HASH] == _actual(fake).config_hash()
    assert info.labels[LABEL_CONFIG_FILE]
    assert result.url == f"http://127.0.0.1:{opencode.port}"
    assert (result.username, result.image, result.image_action) == ("opencode", REF, "present")
    assert (result.already_running, result.recreated_because) == (False, [])
    assert result.healthy is True and result.seconds_to_healthy is not None
    assert steps == ["Creating the container.", "Waiting for opencode to answer ..."]


def test_start_without_waiting_returns_before_any_probe(make: Make) -> None:
    result = make().start(wait=False)
    assert result.healthy is None and result.seconds_to_healthy is None


def test_unchanged_stopped_service_takes_the_fast_path(make: Make, fake: FakeEngine) -> None:
    make().start()
    make().stop()
    fake.calls.clear()
    steps: list[str] = []
    result = make().start(on_step=steps.append)
    assert fake.calls == [("start_container", NAME)]
    assert (result.password, result.password_created, result.already_running) == (
        None,
        False,
        False,
    )
    assert result.healthy is True
    assert steps == ["Starting the existing container.", "Waiting for opencode to answer ..."]


def test_fast_path_without_waiting_never_loads_the_configuration(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    make().start()
    make().stop()
    fake.calls.clear()
    Service(fake, _never_loaded, INSTANCE, paths).start(wait=False)
    assert fake.calls == [("start_container", NAME)]


def test_start_on_a_running_healthy_service_says_already_running(
    make: Make, fake: FakeEngine
) -> None:
    make().start()
    fake.calls.clear()
    steps: list[str] = []
    result = make().start(on_step=steps.append)
    assert (result.already_running, result.healthy, result.seconds_to_healthy) == (
        True,
        True,
        None,
    )
    assert fake.calls == [] and steps == []


def test_start_on_a_running_service_that_does_not_answer_yet_waits_for_it(
    make: Make, fake: FakeEngine, opencode: FakeOpencode
) -> None:
    make().start()
    opencode.answering = False  # Docker restarted it; opencode still boots
    timer = threading.Timer(0.3, lambda: setattr(opencode, "answering", True))
    timer.start()
    try:
        result = make().start()
    finally:
        timer.cancel()
    assert result.already_running is True
    assert result.healthy is True
    assert result.seconds_to_healthy is not None and result.seconds_to_healthy >= 0.2
    assert fake.calls.count(("start_container", NAME)) == 1  # only the first start's


def test_start_without_waiting_on_a_running_service_reports_it_not_healthy(
    make: Make, opencode: FakeOpencode
) -> None:
    make().start()
    opencode.answering = False
    result = make().start(wait=False)
    assert (result.already_running, result.healthy, result.seconds_to_healthy) == (
        True,
        False,
        None,
    )


def test_a_container_holding_another_password_times_out_as_refused(
    make: Make, paths: InstancePaths
) -> None:
    make().start()
    paths.password_file.write_text("edited-by-hand\n")
    with pytest.raises(HealthTimeout) as caught:
        make().start(timeout=0.4)
    assert caught.value.refused is True
    assert caught.value.name == NAME


# --------------------------------------------------------------------------- re-creation


@pytest.mark.parametrize(
    ("change", "reason", "field", "value"),
    [
        ({"bind_address": "0.0.0.0", "tls": "off"}, "bind address", "bind_address", "0.0.0.0"),
        ({"env": {"TZ": "Europe/Paris"}}, "environment", "env", ("TZ=Europe/Paris",)),
        (  # the image sets 1; another value is the user's
            {"env": {"TZ": "UTC", "OPENCODE_DISABLE_AUTOUPDATE": "0"}},
            "environment",
            "env",
            ("OPENCODE_DISABLE_AUTOUPDATE=0", "TZ=UTC"),
        ),
        ({"username": "alice"}, "user name", "username", "alice"),
        ({"limits": {"memory": "8g"}}, "memory limit", "memory_bytes", 8 << 30),
        ({"limits": {"cpus": 1.5}}, "CPU limit", "nano_cpus", 1_500_000_000),
        ({"limits": {"pids": 100}}, "process limit", "pids_limit", 100),
        ({"stop_timeout": 30}, "stop timeout", "stop_timeout", 30),
    ],
)
def test_a_changed_setting_recreates_the_container_and_names_it(
    make: Make,
    fake: FakeEngine,
    paths: InstancePaths,
    change: dict[str, Any],
    reason: str,
    field: str,
    value: object,
) -> None:
    make(env={"TZ": "UTC"}).start()
    password = paths.password_file.read_text().strip()
    old_id = fake.inspect_container(NAME).id
    fake.calls.clear()
    steps: list[str] = []

    result = make(**{"env": {"TZ": "UTC"}, **change}).start(on_step=steps.append)

    assert result.recreated_because == [reason]
    assert f"Re-creating the container because {reason} changed." in steps
    assert fake.called("remove_container") == [NAME]
    assert fake.called("create_container") == [NAME]
    assert getattr(_actual(fake), field) == value
    assert fake.inspect_container(NAME).id != old_id
    # The new container got the (unchanged) password, and answers with it.
    assert holds(fake.files[NAME][PASSWORD_PATH_IN_CONTAINER], password)
    assert (result.password_created, result.healthy) == (False, True)


def test_a_mounted_folder_recreates_the_container_running_as_its_owner(
    make: Make, fake: FakeEngine, tmp_path: Path
) -> None:
    folder = tmp_path / "code"
    folder.mkdir()
    try:
        os.chown(folder, 4321, 4322)
    except PermissionError:
        pytest.skip("only root can give the folder another owner")
    make().start()
    fake.calls.clear()
    result = make(mounts=[f"{folder}:{RUNTIME_HOME}/code:ro"]).start()
    assert result.recreated_because == ["mounts", "runtime user", "runtime group"]
    actual = _actual(fake)
    assert Mount("bind", str(folder), f"{RUNTIME_HOME}/code", True) in actual.mounts
    assert (actual.runtime_uid, actual.runtime_gid) == (4321, 4322)
    assert result.healthy is True


@pytest.mark.parametrize(
    ("host", "container", "reason"),
    [
        ("{tmp}/gone", f"{RUNTIME_HOME}/code", "missing"),
        ("/var/run", f"{RUNTIME_HOME}/run", "docker-socket"),
        ("{tmp}", RUNTIME_HOME, "protected"),  # it would hide the home volume
    ],
)
def test_a_refused_mount_stops_start_before_anything_changes(
    make: Make, fake: FakeEngine, tmp_path: Path, host: str, container: str, reason: str
) -> None:
    mount = f"{host.format(tmp=tmp_path)}:{container}"
    with pytest.raises(MountError) as caught:
        make(mounts=[mount]).start()
    assert caught.value.reason == reason
    assert fake.calls == []


def test_a_changed_port_recreates_the_container_on_the_new_port(
    make: Make, fake: FakeEngine, serve: Callable[[], FakeOpencode]
) -> None:
    make().start()
    other = serve()
    result = make(port=other.port).start()
    assert result.recreated_because == ["port"]
    assert result.url == f"http://127.0.0.1:{other.port}"
    assert _actual(fake).port == other.port
    assert result.healthy is True


@pytest.mark.parametrize(
    ("before", "after"),
    [({}, {"OPENCODE_DISABLE_AUTOUPDATE": "1"}), ({"OPENCODE_DISABLE_AUTOUPDATE": "1"}, {})],
)
def test_a_variable_equal_to_the_images_is_no_change(
    make: Make, fake: FakeEngine, before: dict[str, str], after: dict[str, str]
) -> None:
    make(env=before).start()
    fake.calls.clear()
    service = make(env=after)
    assert service.status(None).pending_restart == []
    result = service.start()
    assert result.recreated_because == []
    assert fake.called("remove_container") == [] and fake.called("create_container") == []


def test_a_rebuilt_image_tag_recreates_the_container(make: Make, fake: FakeEngine) -> None:
    make().start()
    old_id = fake.inspect_container(NAME).image_id
    new_id = fake.add_image(
        REF, env=SANDBOX_ENV, labels={LABEL_OPENCODE_VERSION: "1.18.33", LABEL_EDGE: EDGE_LABEL}
    )
    assert make().status(None).pending_restart == ["image"]
    fake.calls.clear()
    result = make().start()
    assert result.recreated_because == ["image"]
    assert fake.called("create_container") == [NAME]
    assert fake.inspect_container(NAME).image_id == new_id
    # The image that lost its name to the rebuild goes with its last container.
    assert fake.inspect_image(old_id) is None


def test_an_untagged_image_does_not_make_the_environment_look_changed(
    make: Make, fake: FakeEngine
) -> None:
    make().start()
    image_id = fake.inspect_container(NAME).image_id
    fake.remove_image(REF, force=True)  # the name goes; the container keeps the image
    assert fake.inspect_image(image_id) is not None
    pending = make(stop_timeout=20).status(None).pending_restart
    assert "stop timeout" in pending
    assert "environment" not in pending


def test_a_deleted_password_file_recreates_the_container_with_a_new_password(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    old = make().start().password
    paths.password_file.unlink()
    result = make().start()
    assert result.recreated_because == ["password"]
    assert result.password_created is True
    assert result.password is not None and result.password != old
    assert paths.password_file.read_text().strip() == result.password
    assert holds(fake.files[NAME][PASSWORD_PATH_IN_CONTAINER], result.password)
    assert result.healthy is True  # the service answers with the new one


def test_a_container_deleted_behind_the_tools_back(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    make().start()
    fake.vanish(NAME)
    with pytest.raises(NeverCreated) as caught:
        make().stop()
    assert caught.value.instance == INSTANCE
    with pytest.raises(NeverCreated):
        make().logs()
    fake.calls.clear()
    result = make().start()
    assert fake.called("create_container") == [NAME]
    assert (result.recreated_because, result.password_created) == ([], False)
    password = paths.password_file.read_text().strip()
    assert holds(fake.files[NAME][PASSWORD_PATH_IN_CONTAINER], password)
    assert result.healthy is True


def test_a_port_held_by_another_instance(
    make: Make, fake: FakeEngine, opencode: FakeOpencode, tmp_path: Path
) -> None:
    make().start()
    other = Instance("other")
    other_paths = InstancePaths(tmp_path / "other")
    config = Config(port=opencode.port)
    save_config(other_paths.config_file, config)
    with pytest.raises(PortInUse) as caught:
        Service(fake, config, other, other_paths).start(wait=False)
    assert caught.value.port == opencode.port
    assert fake.inspect_container(other.container_name).status.value == "created"


# --------------------------------------------------------------------------- image


def test_a_missing_image_is_built(make: Make, fake: FakeEngine) -> None:
    fake.images.clear()
    steps: list[str] = []
    result = make().start(on_step=steps.append)
    assert result.image_action == "built"
    assert fake.called("build") == [REF]
    assert fake.builds[0]["OPENCODE_VERSION"] == DEFAULT_OPENCODE_VERSION
    assert f"Image {REF} built." in steps
    image = fake.inspect_image(REF)
    assert image is not None and fake.inspect_container(NAME).image_id == image.id
    assert result.healthy is True


def test_start_with_build_rebuilds_and_recreates(make: Make, fake: FakeEngine) -> None:
    make().start()
    fake.calls.clear()
    result = make().start(build=True)
    assert (result.image_action, result.recreated_because) == ("built", ["image"])
    assert fake.called("build") == [REF]


def test_a_missing_image_override_is_pulled_from_its_own_registry_not_built(
    make: Make, fake: FakeEngine
) -> None:
    override = "registry.example.com/team/sandbox:1.0"
    with pytest.raises(PullFailed) as caught:
        make(image=override).start()
    assert caught.value.image == override
    assert fake.called("pull") == [override]  # tried where the reference points, once
    assert fake.called("build") == [] and fake.containers == {}
    fake.publish(override, env=SANDBOX_ENV)
    assert make(image=override).start().image_action == "pulled"


def test_a_present_image_override_runs(make: Make, fake: FakeEngine) -> None:
    override = "registry.example.com/team/sandbox:1.0"
    image_id = fake.add_image(override, env=SANDBOX_ENV)
    result = make(image=override).start()
    info = fake.inspect_container(NAME)
    assert (info.image, info.image_id, result.image) == (override, image_id, override)


def test_a_missing_image_is_pulled_from_the_registries(make: Make, fake: FakeEngine) -> None:
    fake.images.clear()
    remote = f"{REGISTRY}/{REF}"
    fake.publish(remote, labels={LABEL_OPENCODE_VERSION: DEFAULT_OPENCODE_VERSION})
    result = make(registries=[REGISTRY]).start()
    assert result.image_action == "pulled"
    assert fake.called("pull") == [remote]
    assert fake.called("remove_image") == [remote]
    assert fake.inspect_image(remote) is None  # only the local name is left
    assert fake.inspect_container(NAME).image == REF
    assert result.healthy is True


def test_start_with_pull_recreates_on_a_newer_image(make: Make, fake: FakeEngine) -> None:
    fake.images.clear()
    remote = f"{REGISTRY}/{REF}"
    first = fake.publish(remote, labels={LABEL_OPENCODE_VERSION: "1.18.33"})
    make(registries=[REGISTRY]).start()
    assert fake.inspect_container(NAME).image_id == first
    newer = fake.publish(remote, labels={LABEL_OPENCODE_VERSION: "1.18.33", "rebuilt": "1"})
    result = make(registries=[REGISTRY]).start(pull=True)
    assert (result.image_action, result.recreated_because) == ("pulled", ["image"])
    assert fake.inspect_container(NAME).image_id == newer


@pytest.mark.parametrize("flag", ["pull", "build"])
def test_start_that_fetched_an_identical_image_says_so(
    make: Make, fake: FakeEngine, flag: str
) -> None:
    fake.images.clear()
    fake.publish(f"{REGISTRY}/{REF}", labels={LABEL_OPENCODE_VERSION: "1.18.33"})
    pull, build = flag == "pull", flag == "build"
    make(registries=[REGISTRY]).start(pull=pull, build=build)
    fake.calls.clear()
    result = make(registries=[REGISTRY]).start(pull=pull, build=build)  # the same image again
    assert fake.called(flag) != []
    assert result.recreated_because == []
    assert result.image_action == ("pulled" if flag == "pull" else "built")


def test_an_image_override_is_not_pulled_from_the_registries(make: Make, fake: FakeEngine) -> None:
    override = "registry.example.com/team/sandbox:1.0"
    fake.publish(f"{REGISTRY}/sandbox:1.0")
    with pytest.raises((ImageNotFound, PullFailed)):  # it is nowhere to be had
        make(image=override, registries=[REGISTRY]).start(wait=False)
    assert not any(ref.startswith(REGISTRY) for ref in fake.called("pull"))


def test_pull_without_registries_fails_naming_none(make: Make, fake: FakeEngine) -> None:
    with pytest.raises(PullFailed) as caught:
        make().start(pull=True)
    assert (caught.value.image, caught.value.failures) == (REF, [])
    assert fake.called("pull") == []


def test_pull_from_registries_without_the_image_fails_at_once(make: Make, fake: FakeEngine) -> None:
    fake.images.clear()
    with pytest.raises(PullFailed) as caught:
        make(registries=[REGISTRY]).start()
    [failure] = caught.value.failures
    assert failure.startswith(f"{REGISTRY}: ") and "not found" in failure
    assert fake.called("pull") == [f"{REGISTRY}/{REF}"]  # not found: no second attempt
    assert fake.containers == {}


# --------------------------------------------------------------------------- failures


def test_a_crash_while_waiting_reports_exit_code_and_logs(make: Make, fake: FakeEngine) -> None:
    fake.crash_on_start(NAME, exit_code=3, logs=["Error: bad provider key", "opencode exited"])
    with pytest.raises(ContainerExited) as caught:
        make().start()
    error = caught.value
    assert (error.name, error.exit_code, error.restarting) == (NAME, 3, False)
    assert error.log_tail == ["Error: bad provider key", "opencode exited"]


# --------------------------------------------------------------------------- stop, logs


def test_stop_uses_the_containers_own_stop_timeout(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    make(stop_timeout=25).start()
    save_config(paths.config_file, Config(stop_timeout=3))  # not applied yet
    service = Service(fake, _never_loaded, INSTANCE, paths)
    assert service.stop() is True
    assert fake.stop_timeouts[NAME] == 25
    assert fake.inspect_container(NAME).status.value == "exited"
    assert service.stop() is False
    assert fake.called("stop_container") == [NAME]


def test_stop_with_a_timeout_rounds_it(make: Make, fake: FakeEngine) -> None:
    make().start()
    assert make().stop(timeout=3.6) is True
    assert fake.stop_timeouts[NAME] == 4


def test_logs_and_their_tail(make: Make, fake: FakeEngine) -> None:
    make().start()
    fake.logs[NAME] = ["one", "two", "three"]
    assert b"".join(make().logs(tail=2)) == b"two\nthree\n"
    assert make().last_log_lines(5) == ["one", "two", "three"]


# --------------------------------------------------------------------------- status


def test_status_of_a_service_never_started(make: Make, opencode: FakeOpencode) -> None:
    result = make().status(None)
    assert (result.state, result.running, result.exposed) == ("missing", False, False)
    assert result.url == f"http://127.0.0.1:{opencode.port}"
    assert (result.http_health, result.pending_restart, result.warnings) == (None, [], [])
    assert [(v.name, v.exists, v.size_bytes) for v in result.volumes] == [
        (name, False, None) for name in volume_names(INSTANCE)
    ]


def test_status_tells_existing_volumes_from_missing_ones(make: Make, fake: FakeEngine) -> None:
    session = INSTANCE.volume_name("session")
    fake.create_volume(session, {})
    volumes = {v.name: (v.exists, v.size_bytes) for v in make().status(None).volumes}
    assert volumes.pop(session) == (True, None)
    assert set(volumes.values()) == {(False, None)}
    sized = {v.name: (v.exists, v.size_bytes) for v in make().status(None, sizes=True).volumes}
    assert sized.pop(session) == (True, VOLUME_BYTES)
    assert set(sized.values()) == {(False, None)}


def test_status_counts_disk_usage_only_when_asked(make: Make, fake: FakeEngine) -> None:
    """The engine counts sizes by reading every file of every volume: a slow call that
    `occ status` makes only with --sizes, for the volumes and the snapshots alike."""
    from opencode_cloud.service.snapshots import LABEL_SNAPSHOT, LABEL_SNAPSHOT_KIND

    make().start()
    for kind in ("session", "state"):  # an update's snapshot of two volumes
        labels = {**INSTANCE.labels(f"snapshot-{kind}"), LABEL_SNAPSHOT: "20261205T060000Z"}
        fake.create_volume(f"{INSTANCE.prefix}-snap-{kind}", {**labels, LABEL_SNAPSHOT_KIND: kind})
    plain = make().status(None)
    assert fake.disk_usage_counts == 0
    assert [(s["id"], s["size_bytes"]) for s in plain.snapshots] == [("20261205T060000Z", None)]
    sized = make().status(None, sizes=True)
    assert fake.disk_usage_counts == 2
    assert all(v.size_bytes == VOLUME_BYTES for v in sized.volumes)
    assert [s["size_bytes"] for s in sized.snapshots] == [VOLUME_BYTES * 2]


def test_status_shows_sizes_only_when_counted(make: Make, fake: FakeEngine) -> None:
    from opencode_cloud.cli.status_report import _human

    make().start()
    session = INSTANCE.volume_name("session")
    plain = [line for line in _human(make().status(None)) if session in line]
    assert plain == [f"  {session:<36} /home/opencode/.local/share/opencode"]
    sized = [line for line in _human(make().status(None, sizes=True)) if session in line]
    assert sized == [f"  {session:<36} {'/home/opencode/.local/share/opencode':<40} 4.0 KiB"]
    del fake.volumes[session]  # gone behind the tool's back
    assert any(
        line.startswith(f"  {session} ") and line.endswith(" missing")
        for line in _human(make().status(None))
    )


def test_status_of_a_running_service_reads_no_configuration(
    make: Make, fake: FakeEngine, paths: InstancePaths, opencode: FakeOpencode
) -> None:
    opencode.version = LIVE_VERSION
    make().start()
    password = credentials.read_password(paths)
    result = Service(fake, _never_loaded, INSTANCE, paths).status(password)
    assert (result.state, result.running, result.http_health) == ("running", True, "healthy")
    assert result.opencode_version == LIVE_VERSION
    assert (result.image, result.restart_count, result.pending_restart) == (REF, 0, [])
    assert result.started_at is not None
    assert result.uptime_seconds is not None and 0 <= result.uptime_seconds < 60
    assert all(v.exists and v.size_bytes is None for v in result.volumes)


def test_status_of_a_running_service_that_does_not_answer_is_starting(
    make: Make, paths: InstancePaths, opencode: FakeOpencode
) -> None:
    make().start()
    opencode.answering = False
    result = make().status(credentials.read_password(paths))
    assert (result.state, result.running, result.http_health) == ("starting", True, "unreachable")
    assert result.opencode_version == DEFAULT_OPENCODE_VERSION  # the image's label


def test_status_keeps_running_when_docker_says_unhealthy(
    make: Make, fake: FakeEngine, paths: InstancePaths, opencode: FakeOpencode
) -> None:
    make().start()
    opencode.answering = False
    fake.set_health(NAME, "unhealthy")
    result = make().status(credentials.read_password(paths))
    assert (result.state, result.docker_health, result.http_health) == (
        "running",
        "unhealthy",
        "unreachable",
    )


def test_status_with_a_wrong_password_is_unauthorized(make: Make) -> None:
    make().start()
    result = make().status("not-the-password")
    assert (result.state, result.http_health) == ("running", "unauthorized")


def test_status_of_a_stopped_service(make: Make) -> None:
    make().start()
    make().stop()
    result = make().status(None)
    assert (result.state, result.running, result.http_health) == ("exited", False, None)


def test_status_lists_settings_pending_a_restart(make: Make) -> None:
    make().start()
    from opencode_cloud.cli.status_report import status_warnings

    service = make(port=1, username="alice")
    result = service.status(None)
    assert result.pending_restart == ["port", "user name"]
    warnings = status_warnings(result, command_prefix(service.instance))
    assert any("port, user name" in w for w in warnings)


def test_status_warns_in_plain_words_when_exposed_over_plain_http(make: Make) -> None:
    make(bind_address="0.0.0.0", tls="off").start()
    from opencode_cloud.cli.status_report import status_warnings

    service = make(bind_address="0.0.0.0", tls="off")
    result = service.status(None)
    assert result.exposed is True
    (warning,) = status_warnings(result, command_prefix(service.instance))
    assert "0.0.0.0" in warning and "travel in clear" in warning


def test_exposing_the_service_turns_https_on_by_default(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    """tls=auto: HTTPS with the instance's own CA as soon as the service leaves loopback."""
    with pytest.raises(HealthTimeout):  # the fake opencode speaks plain HTTP
        make(bind_address="0.0.0.0").start(timeout=0.3)
    spec = ContainerSpec.from_inspect(fake.inspect_container(NAME))
    assert spec.tls == "self-signed"
    files = fake.files[NAME]
    assert set(files) == {PASSWORD_PATH_IN_CONTAINER, CERT, KEY}
    ca = (paths.root / "tls" / "ca.pem").read_bytes()
    assert files[CERT].endswith(ca)  # leaf, then the CA
    assert b"PRIVATE KEY" in files[KEY]
    assert b"PRIVATE KEY" not in (paths.root / "tls" / "served.pem").read_bytes()
    # The edge's own user reads them.
    assert fake.file_modes[NAME][CERT] == (0o644, EDGE_UID)
    assert fake.file_modes[NAME][KEY] == (0o600, EDGE_UID)
    endpoint = make(bind_address="0.0.0.0").endpoint()
    assert endpoint.url.startswith("https://127.0.0.1:") and endpoint.context is not None
    # The same settings: nothing to re-create. A new host name is no reason either (the
    # start hands the container a new certificate). Off again: plain HTTP.
    assert make(bind_address="0.0.0.0").status(None).pending_restart == []
    assert make(bind_address="0.0.0.0", host_names=["box.lan"]).status(None).pending_restart == []
    assert make(bind_address="0.0.0.0", tls="off").status(None).pending_restart == ["TLS"]
    assert (paths.root / "tls" / "ca.pem").read_bytes() == ca  # a status makes nothing


# --------------------------------------------------------------------------- renewal


def _edge(fake: FakeEngine, generation: str) -> None:
    """The sandbox image with this `io.opencode-cloud.edge` label."""
    labels = {LABEL_OPENCODE_VERSION: DEFAULT_OPENCODE_VERSION, LABEL_EDGE: generation}
    fake.add_image(REF, env=SANDBOX_ENV, labels=labels)


def _serving_a_certificate_near_its_end(fake: FakeEngine, paths: InstancePaths) -> bytes:
    """The instance as it is 815 days after its certificate was made: the container
    serves one that ends in 5 days. Returns that chain."""
    chain = shorten_certificate(paths.root / "tls", 5)
    (paths.root / "tls" / "served.pem").write_bytes(chain)
    fake.files[NAME][CERT] = chain
    return chain


def _served_days_left(fake: FakeEngine) -> float:
    return days_left(fake.files[NAME][CERT])


def test_a_stopped_service_gets_a_new_certificate_at_a_start_that_changes_nothing_else(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    """The fast path (same configuration, nothing to re-create) renews too: the new files
    reach the container before it starts, and it is not re-created."""
    make(tls="self-signed").start(wait=False)
    make(tls="self-signed").stop()
    cid = fake.inspect_container(NAME).id
    _serving_a_certificate_near_its_end(fake, paths)
    fake.calls.clear()

    result = make(tls="self-signed").start(wait=False)

    assert _served_days_left(fake) > 365
    assert fake.files[NAME][CERT] == (paths.root / "tls" / "served.pem").read_bytes()
    assert [m for m, _ in fake.calls] == ["put_archive", "start_container"]
    assert fake.inspect_container(NAME).id == cid and fake.signals == []
    assert fake.file_modes[NAME][CERT] == (0o644, EDGE_UID)
    assert fake.file_modes[NAME][KEY] == (0o600, EDGE_UID)
    assert (result.certificate_renewed, result.recreated_because) == ("written", [])
    assert result.certificate_not_after and result.new_ca is None


def test_a_certificate_near_its_end_is_renewed_when_the_configuration_changed_too(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    make(tls="self-signed").start(wait=False)
    make(tls="self-signed").stop()
    _serving_a_certificate_near_its_end(fake, paths)
    result = make(tls="self-signed", start_timeout=7).start(wait=False)
    assert _served_days_left(fake) > 365 and result.certificate_renewed == "written"


def test_a_running_service_reloads_a_new_certificate_without_a_restart(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    _edge(fake, "2")
    make(tls="self-signed").start(wait=False)
    cid = fake.inspect_container(NAME).id
    _serving_a_certificate_near_its_end(fake, paths)
    fake.calls.clear()

    result = make(tls="self-signed").start(wait=False)

    assert _served_days_left(fake) > 365
    assert fake.calls == [("put_archive", NAME), ("kill_container", NAME)]
    assert fake.signals == [(NAME, "HUP")]
    info = fake.inspect_container(NAME)
    assert info.id == cid and info.running
    assert (result.already_running, result.certificate_renewed) == (True, "reloaded")
    # And then there is nothing more to do.
    fake.calls.clear()
    assert make(tls="self-signed").start(wait=False).certificate_renewed is None
    assert fake.calls == []


def test_a_running_service_of_an_earlier_image_is_re_created_for_a_new_certificate(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    """Its edge stops on SIGHUP: it is never sent one. The image of an earlier edge is
    built again, and the new container gets the renewed certificate."""
    make(tls="self-signed").start(wait=False)
    info = fake.inspect_container(NAME)
    fake.images[info.image_id]["Config"]["Labels"][LABEL_EDGE] = "1"  # an earlier edge
    _serving_a_certificate_near_its_end(fake, paths)

    result = make(tls="self-signed").start(wait=False)

    assert fake.signals == []
    assert "image" in result.recreated_because
    assert fake.inspect_container(NAME).id != info.id
    assert _served_days_left(fake) > 365


def test_a_new_host_name_reaches_the_running_service_with_a_new_ca_said_plainly(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    _edge(fake, "2")
    make(bind_address="0.0.0.0").start(wait=False)
    cid = fake.inspect_container(NAME).id
    old_ca = (paths.root / "tls" / "ca.pem").read_bytes()

    result = make(bind_address="0.0.0.0", host_names=["box.lan"]).start(wait=False)

    assert fake.inspect_container(NAME).id == cid and fake.signals == [(NAME, "HUP")]
    assert "DNS:box.lan" in text(fake.files[NAME][CERT])
    ca_file = paths.root / "tls" / "ca.pem"
    assert ca_file.read_bytes() != old_ca and fake.files[NAME][CERT].endswith(ca_file.read_bytes())
    assert result.new_ca is not None
    assert (result.new_ca["reason"], result.new_ca["names"]) == ("names", ["box.lan"])
    assert result.new_ca["ca_file"] == str(ca_file)
    assert json.loads(json.dumps(result.to_json()))["new_ca"]["reason"] == "names"
    from opencode_cloud.cli.commands.lifecycle import certificate_lines

    lines = "\n".join(certificate_lines(result, "occ"))
    assert "A new CA was made for this instance" in lines
    assert "box.lan, which the old CA was not allowed to sign for" in lines
    assert f"must now trust {ca_file}" in lines and "without a restart" in lines


def test_a_container_the_chain_was_not_handed_to_gets_it_at_start(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    """After a failed update the old container is given its place back: the tool handed
    the chain (perhaps renewed) to the update's container, not to it."""
    _edge(fake, "2")
    make(tls="self-signed").start(wait=False)
    (paths.root / "tls" / "served-to").write_text("the-updates-container\n")
    fake.calls.clear()
    result = make(tls="self-signed").start(wait=False)
    assert result.certificate_renewed == "reloaded"
    assert fake.calls == [("put_archive", NAME), ("kill_container", NAME)]
    served_to = (paths.root / "tls" / "served-to").read_text().strip()
    assert served_to == fake.inspect_container(NAME).id


def test_a_users_certificate_renewed_in_place_reaches_the_service_at_start(
    make: Make, fake: FakeEngine, paths: InstancePaths, tmp_path: Path
) -> None:
    """`occ start` after a certbot renewal: the configuration is the same, the file not."""
    _edge(fake, "2")
    cert, key = self_signed_pair(tmp_path / "mine", "box.example")
    make(tls_cert=str(cert), tls_key=str(key)).start(wait=False)
    assert fake.files[NAME][CERT] == cert.read_bytes()
    self_signed_pair(tmp_path / "mine", "box.example", days=200)
    fake.calls.clear()

    result = make(tls_cert=str(cert), tls_key=str(key)).start(wait=False)

    assert fake.files[NAME][CERT] == cert.read_bytes()
    assert fake.files[NAME][KEY] == key.read_bytes()
    assert result.certificate_renewed == "reloaded" and fake.signals == [(NAME, "HUP")]
    assert "create_container" not in [m for m, _ in fake.calls]


def test_the_fast_path_with_tls_reads_no_configuration_and_writes_nothing(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    make(tls="self-signed").start(wait=False)
    make(tls="self-signed").stop()
    fake.calls.clear()
    Service(fake, _never_loaded, INSTANCE, paths).start(wait=False)
    assert fake.calls == [("start_container", NAME)]


def test_shell_needs_a_running_container(make: Make, fake: FakeEngine) -> None:
    with pytest.raises(NeverCreated):
        make().shell_target()
    make().start()
    assert make().shell_target().id == fake.inspect_container(NAME).id
    make().stop()
    with pytest.raises(NotRunning) as caught:
        make().run_command(["ls"])
    assert caught.value.instance == INSTANCE
    assert fake.execs == []


def test_run_command_runs_as_the_runtime_user_in_the_projects_folder(
    make: Make, fake: FakeEngine
) -> None:
    make().start()
    fake.exec_result = (b"hello\n", 7)
    output, exit_code = make().run_command(["echo", "hello"])
    assert b"".join(output) == b"hello\n"
    assert exit_code() == 7
    assert fake.execs == [(NAME, ("echo", "hello"), RUNTIME_USER, WORKING_DIR)]


def test_pending_restart_warning_names_the_instance(make: Make) -> None:
    from opencode_cloud.cli.status_report import status_warnings

    make().start()
    service = make(port=1)
    result = service.status(None)
    warnings = status_warnings(result, command_prefix(service.instance))
    commands = [c for w in warnings for c in re.findall(r"`(occ [^`]*)`", w)]
    assert commands, warnings
    assert all("--instance unit" in c for c in commands), commands


# --------------------------------------------------------------------------- password


def test_rotate_password_hands_the_new_hash_to_a_running_service_without_a_restart(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    old = make().start().password
    fake.calls.clear()
    new, applied = make().rotate_password()
    assert applied is True and new != old
    assert paths.password_file.read_text().strip() == new
    assert holds(fake.files[NAME][PASSWORD_PATH_IN_CONTAINER], new)
    # The edge reads it on its next request; Caddy starts afresh, closing what is open.
    assert fake.calls == [("put_archive", NAME), ("kill_container", NAME)]
    assert fake.signals == [(NAME, "USR1")]
    assert make().status(new).http_health == "healthy"
    assert make().status(old).http_health == "unauthorized"


def test_rotate_password_of_an_earlier_edge_generation_still_goes_to_the_edge(
    make: Make, fake: FakeEngine
) -> None:
    """A container of an image before the current edge label, but whose edge has its own
    user already (label 2), gets the hash as the edge's and the edge restart."""
    make().start()
    fake.containers[NAME]["Config"]["Labels"][LABEL_EDGE] = "2"
    fake.signals.clear()
    make().rotate_password()
    assert fake.file_modes[NAME][PASSWORD_PATH_IN_CONTAINER] == (0o600, EDGE_UID)
    assert fake.signals == [(NAME, "USR1")]


def test_rotate_password_of_a_stopped_service_only_writes_the_file(
    make: Make, fake: FakeEngine
) -> None:
    make().start()
    make().stop()
    fake.calls.clear()
    new, applied = make().rotate_password()
    assert applied is True
    assert holds(fake.files[NAME][PASSWORD_PATH_IN_CONTAINER], new)
    assert fake.calls == [("put_archive", NAME)]


def test_rotate_password_without_a_container(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    new, restarted = make().rotate_password()
    assert restarted is False
    assert paths.password_file.read_text().strip() == new
    assert fake.calls == []


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("0::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_endpoint_urls() -> None:
    assert Endpoint("0.0.0.0", 3000, "u").url == "http://127.0.0.1:3000"
    assert Endpoint("::", 3000, "u").url == "http://127.0.0.1:3000"
    assert Endpoint("::1", 8080, "u").server(None).health_url == "http://[::1]:8080/global/health"
    assert Endpoint("10.1.2.3", 80, "u").url == "http://10.1.2.3:80"
