"""Container lifecycle against the real engine, on a tiny busybox image built here."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from opencode_cloud.defaults import DEFAULT_PORT, EDGE_UID
from opencode_cloud.docker.container import (
    CONTAINER_NAME,
    container_exists,
    container_is_running,
    container_state,
    create_container,
    put_file,
    remove_container,
    setup_and_start,
    start_container,
    stop_container,
)
from opencode_cloud.docker.errors import (
    ContainerAlreadyExists,
    ContainerNotFound,
    ContainerRunning,
    DockerError,
    ImageNotFound,
    PortInUse,
)
from opencode_cloud.docker.models import ContainerStatus, Mount, PortBinding
from opencode_cloud.docker.spec import ContainerSpec
from opencode_cloud.docker.volume import VOLUME_SPECS
from opencode_cloud.instance import LABEL_CONFIG_HASH

pytestmark = pytest.mark.integration


def _exec(sdk, name: str, command: str, user: str = "") -> str:
    result = sdk.containers.get(name).exec_run(["sh", "-c", command], user=user)
    assert result.exit_code == 0, result.output
    return result.output.decode().strip()


def test_plan_constants() -> None:
    assert CONTAINER_NAME == "opencode-cloud"
    assert DEFAULT_PORT == 3000


def test_create_configures_the_container_as_planned(
    docker_client, docker_sdk, instance, make_spec, free_port
) -> None:
    spec = make_spec(free_port, env={"FOO": "bar"})
    cid = create_container(docker_client, spec, instance)
    name = instance.container_name
    # What the engine itself reports, read without the tool's parser.
    info = docker_sdk.api.inspect_container(name)
    assert info["Id"] == cid
    assert info["State"]["Status"] == "created"  # create does not start
    config, host = info["Config"], info["HostConfig"]
    assert config["Hostname"] == "opencode-cloud"
    assert config["WorkingDir"] == "/"  # root's `docker exec` starts outside the agent's folders
    assert "3000/tcp" in config["ExposedPorts"]
    assert "FOO=bar" in config["Env"]
    # The entrypoint runs opencode as this uid and gid: the image's user without mounts.
    assert {"OCC_UID=1000", "OCC_GID=1000"} <= set(config["Env"])
    assert host["PortBindings"] == {
        "3000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(free_port)}]
    }
    assert host["AutoRemove"] is False
    assert host["Privileged"] is False
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["CapDrop"] == ["ALL"]
    # Only what the entrypoint needs as root before it drops to its users for good, and
    # the supervisor's KILL.
    assert sorted(c.removeprefix("CAP_") for c in host["CapAdd"]) == [
        "CHOWN",
        "DAC_OVERRIDE",
        "KILL",
        "SETGID",
        "SETUID",
    ]
    # Back after a crash or an engine restart, unless stopped; bounded; logs rotated.
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert (host["Memory"], host["PidsLimit"]) == (4 << 30, 4096)
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "10m", "max-file": "3"},
    }
    assert config["StopTimeout"] == 10
    assert host["Binds"] in (None, [])  # named volumes only, never bind mounts
    mounts = {m["Target"]: m for m in host["Mounts"]}
    assert set(mounts) == {v.mount_point for v in VOLUME_SPECS}
    for v in VOLUME_SPECS:
        assert mounts[v.mount_point]["Type"] == "volume"
        assert mounts[v.mount_point]["Source"] == instance.volume_name(v.kind)
    assert mounts["/home/opencode"]["Source"].endswith("-home")
    assert mounts["/home/opencode/projects"]["Source"].endswith("-projects")
    assert mounts["/home/opencode/.local/share/opencode"]["Source"].endswith("-session")
    assert mounts["/home/opencode/.config"]["Source"].endswith("-config")
    labels = config["Labels"]
    assert labels["io.opencode-cloud.managed"] == "true"
    assert labels["io.opencode-cloud.instance"] == instance.name
    assert labels["io.opencode-cloud.version"]
    assert labels[LABEL_CONFIG_HASH] == spec.config_hash()
    # The tool's own reading of the container agrees, and gives back the spec it made.
    typed = docker_client.inspect_container(name)
    assert (typed.id, typed.name, typed.status) == (cid, name, ContainerStatus.CREATED)
    assert typed.published(3000) == PortBinding("127.0.0.1", free_port)
    assert typed.stop_timeout == 10 and typed.restart_policy == "unless-stopped"
    assert (typed.memory_bytes, typed.pids_limit) == (4 << 30, 4096)
    assert (
        Mount("volume", instance.volume_name("projects"), "/home/opencode/projects") in typed.mounts
    )
    image = docker_client.inspect_image(spec.image)
    assert image is not None
    found = ContainerSpec.from_inspect(typed, image.env)
    assert spec.without_env(image.env).diff(found) == []
    cli = subprocess.run(
        ["docker", "inspect", "-f", "{{.Config.Hostname}} {{.Config.WorkingDir}}", name],
        capture_output=True,
        text=True,
        check=True,
    )
    assert cli.stdout.split() == ["opencode-cloud", "/"]


def test_start_stop_remove(docker_client, instance, make_spec, free_port) -> None:
    name = instance.container_name
    create_container(docker_client, make_spec(free_port), instance)
    assert container_exists(docker_client, name)
    assert not container_is_running(docker_client, name)

    start_container(docker_client, name)
    assert container_state(docker_client, name) == "running"
    assert container_is_running(docker_client, name)
    start_container(docker_client, name)  # starting a running container is harmless

    began = time.monotonic()
    stop_container(docker_client, name, timeout=5)
    assert time.monotonic() - began < 5
    assert container_state(docker_client, name) == "exited"
    stop_container(docker_client, name)  # stopping a stopped container is harmless

    remove_container(docker_client, name)
    assert not container_exists(docker_client, name)
    assert not container_is_running(docker_client, name)
    with pytest.raises(ContainerNotFound):
        container_state(docker_client, name)


def test_stop_kills_a_container_that_ignores_term(
    docker_client, docker_sdk, instance, make_spec, free_port
) -> None:
    name = instance.container_name
    create_container(docker_client, make_spec(free_port), instance)
    start_container(docker_client, name)
    # A frozen process cannot act on TERM, so only the kill after the timeout stops it.
    docker_sdk.containers.get(name).kill(signal="STOP")
    began = time.monotonic()
    stop_container(docker_client, name, timeout=1)
    elapsed = time.monotonic() - began
    assert container_state(docker_client, name) == "exited"
    assert 0.5 < elapsed < 8


def test_remove_running_needs_force(docker_client, instance, make_spec, free_port) -> None:
    name = instance.container_name
    create_container(docker_client, make_spec(free_port), instance)
    start_container(docker_client, name)
    with pytest.raises(ContainerRunning) as caught:
        remove_container(docker_client, name)
    assert isinstance(caught.value, DockerError)
    assert "running" in caught.value.message
    assert caught.value.name == name
    assert container_is_running(docker_client, name)
    remove_container(docker_client, name, force=True)
    assert not container_exists(docker_client, name)


def test_create_twice_raises_already_exists(docker_client, instance, make_spec, free_port) -> None:
    create_container(docker_client, make_spec(free_port), instance)
    began = time.monotonic()
    with pytest.raises(ContainerAlreadyExists) as caught:
        create_container(docker_client, make_spec(free_port), instance)
    assert instance.container_name in caught.value.message
    assert caught.value.name == instance.container_name
    assert time.monotonic() - began < 5


def test_missing_image_raises_image_not_found(
    docker_client, instance, make_spec, free_port
) -> None:
    spec = make_spec(free_port, image="opencode-cloud-test/absent:nope")
    assert spec.image_id is None
    with pytest.raises(ImageNotFound) as caught:
        create_container(docker_client, spec, instance)
    assert "opencode-cloud-test/absent:nope" in caught.value.message
    assert caught.value.image == "opencode-cloud-test/absent:nope"
    assert not container_exists(docker_client, instance.container_name)


def test_taken_port_raises_port_in_use(docker_client, instance, make_spec) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        began = time.monotonic()
        with pytest.raises(PortInUse) as caught:
            setup_and_start(docker_client, make_spec(port), instance)
        assert caught.value.message == f"Port {port} is already in use."
        assert caught.value.port == port
        assert time.monotonic() - began < 15
    assert not container_is_running(docker_client, instance.container_name)


def test_setup_and_start_is_idempotent(docker_client, instance, make_spec, free_port) -> None:
    spec = make_spec(free_port)
    first = setup_and_start(docker_client, spec, instance)
    second = setup_and_start(docker_client, spec, instance)
    assert first == second
    assert container_is_running(docker_client, instance.container_name)
    stop_container(docker_client, instance.container_name, timeout=2)
    third = setup_and_start(docker_client, spec, instance)
    assert third == first
    assert container_is_running(docker_client, instance.container_name)


def test_setup_and_start_writes_files_before_first_start(
    docker_client, docker_sdk, instance, make_spec, free_port
) -> None:
    setup_and_start(docker_client, make_spec(free_port), instance, files={"/tmp/secret": b"s3cret"})
    name = instance.container_name
    # Only its owner, the edge's user, can read it; the agent cannot.
    assert _exec(docker_sdk, name, "cat /tmp/secret", user=str(EDGE_UID)) == "s3cret"
    with pytest.raises(AssertionError, match="Permission denied"):
        _exec(docker_sdk, name, "cat /tmp/secret", user="1000")
    assert _exec(docker_sdk, name, "stat -c '%u %a' /tmp/secret") == f"{EDGE_UID} 600"
    put_file(docker_client, name, "/tmp/other", b"x", mode=0o600, uid=0)
    assert _exec(docker_sdk, name, "stat -c '%u %a' /tmp/other") == "0 600"


def test_data_persists_across_restart_and_recreate(
    docker_client, docker_sdk, instance, make_spec, free_port
) -> None:
    name = instance.container_name
    setup_and_start(docker_client, make_spec(free_port), instance)
    for spec in VOLUME_SPECS:
        _exec(docker_sdk, name, f"echo {spec.kind} > {spec.mount_point}/marker")

    stop_container(docker_client, name, timeout=2)
    start_container(docker_client, name)
    for spec in VOLUME_SPECS:
        assert _exec(docker_sdk, name, f"cat {spec.mount_point}/marker") == spec.kind

    remove_container(docker_client, name, force=True)
    assert not container_exists(docker_client, name)
    setup_and_start(docker_client, make_spec(free_port), instance)
    for spec in VOLUME_SPECS:
        assert _exec(docker_sdk, name, f"cat {spec.mount_point}/marker") == spec.kind


def test_operations_on_missing_container_raise_not_found(docker_client, instance) -> None:
    name = instance.container_name
    for operation in (start_container, stop_container, remove_container, container_state):
        with pytest.raises(ContainerNotFound):
            operation(docker_client, name)
    assert not container_exists(docker_client, name)
