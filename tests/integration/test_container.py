"""Container lifecycle against the real engine, on a tiny busybox image built here."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from opencode_cloud.docker import (
    CONTAINER_NAME,
    DEFAULT_PORT,
    ContainerAlreadyExists,
    ContainerNotFound,
    DockerError,
    ImageNotFound,
    PortInUse,
    container_exists,
    container_is_running,
    container_state,
    create_container,
    remove_container,
    setup_and_start,
    start_container,
    stop_container,
)
from opencode_cloud.docker.container import inspect_container, put_file
from opencode_cloud.docker.volume import VOLUME_SPECS

pytestmark = pytest.mark.integration


def _exec(client, name: str, command: str, user: str = "") -> str:
    result = client.docker.containers.get(name).exec_run(["sh", "-c", command], user=user)
    assert result.exit_code == 0, result.output
    return result.output.decode().strip()


def test_plan_constants() -> None:
    assert CONTAINER_NAME == "opencode-cloud"
    assert DEFAULT_PORT == 3000


def test_create_configures_the_container_as_planned(
    docker_client, instance, busybox_image, free_port
) -> None:
    cid = create_container(
        docker_client,
        image=busybox_image,
        host_port=free_port,
        env_vars=["FOO=bar"],
        instance=instance,
    )
    name = instance.container_name
    # Compare with what the docker CLI itself reports.
    info = inspect_container(docker_client, name)
    assert info["Id"] == cid
    assert info["State"]["Status"] == "created"  # create does not start
    config, host = info["Config"], info["HostConfig"]
    assert config["Hostname"] == "opencode-cloud"
    assert config["WorkingDir"] == "/workspace"
    assert "3000/tcp" in config["ExposedPorts"]
    assert "FOO=bar" in config["Env"]
    assert host["PortBindings"] == {
        "3000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(free_port)}]
    }
    assert host["AutoRemove"] is False
    assert host["Privileged"] is False
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}
    assert config["StopTimeout"] == 10
    assert host["Binds"] in (None, [])  # named volumes only, never bind mounts
    mounts = {m["Target"]: m for m in host["Mounts"]}
    assert set(mounts) == {spec.mount_point for spec in VOLUME_SPECS}
    for spec in VOLUME_SPECS:
        assert mounts[spec.mount_point]["Type"] == "volume"
        assert mounts[spec.mount_point]["Source"] == instance.volume_name(spec.kind)
    assert mounts["/workspace"]["Source"].endswith("-projects")
    assert mounts["/home/opencode/.local/share/opencode"]["Source"].endswith("-session")
    assert mounts["/home/opencode/.config"]["Source"].endswith("-config")
    labels = config["Labels"]
    assert labels["io.opencode-cloud.managed"] == "true"
    assert labels["io.opencode-cloud.instance"] == instance.name
    assert labels["io.opencode-cloud.version"]
    cli = subprocess.run(
        ["docker", "inspect", "-f", "{{.Config.Hostname}} {{.Config.WorkingDir}}", name],
        capture_output=True,
        text=True,
        check=True,
    )
    assert cli.stdout.split() == ["opencode-cloud", "/workspace"]


def test_start_stop_remove(docker_client, instance, busybox_image, free_port) -> None:
    name = instance.container_name
    create_container(docker_client, image=busybox_image, host_port=free_port, instance=instance)
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
    docker_client, instance, busybox_image, free_port
) -> None:
    name = instance.container_name
    create_container(docker_client, image=busybox_image, host_port=free_port, instance=instance)
    start_container(docker_client, name)
    # A frozen process cannot act on TERM, so only the kill after the timeout stops it.
    docker_client.docker.containers.get(name).kill(signal="STOP")
    began = time.monotonic()
    stop_container(docker_client, name, timeout=1)
    elapsed = time.monotonic() - began
    assert container_state(docker_client, name) == "exited"
    assert 0.5 < elapsed < 8


def test_remove_running_needs_force(docker_client, instance, busybox_image, free_port) -> None:
    name = instance.container_name
    create_container(docker_client, image=busybox_image, host_port=free_port, instance=instance)
    start_container(docker_client, name)
    with pytest.raises(DockerError) as caught:
        remove_container(docker_client, name)
    assert "running" in caught.value.message
    assert container_is_running(docker_client, name)
    remove_container(docker_client, name, force=True)
    assert not container_exists(docker_client, name)


def test_create_twice_raises_already_exists(
    docker_client, instance, busybox_image, free_port
) -> None:
    create_container(docker_client, image=busybox_image, host_port=free_port, instance=instance)
    began = time.monotonic()
    with pytest.raises(ContainerAlreadyExists) as caught:
        create_container(docker_client, image=busybox_image, host_port=free_port, instance=instance)
    assert instance.container_name in caught.value.message
    assert time.monotonic() - began < 5


def test_missing_image_raises_image_not_found(docker_client, instance, free_port) -> None:
    with pytest.raises(ImageNotFound) as caught:
        create_container(
            docker_client,
            image="opencode-cloud-test/absent:nope",
            host_port=free_port,
            instance=instance,
        )
    assert "opencode-cloud-test/absent:nope" in caught.value.message
    assert "occ build" in caught.value.hint and "occ pull" in caught.value.hint
    assert not container_exists(docker_client, instance.container_name)


def test_taken_port_raises_port_in_use(docker_client, instance, busybox_image) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        began = time.monotonic()
        with pytest.raises(PortInUse) as caught:
            setup_and_start(docker_client, port, image=busybox_image, instance=instance)
        assert caught.value.message == f"Port {port} is already in use."
        assert time.monotonic() - began < 15
    assert not container_is_running(docker_client, instance.container_name)


def test_setup_and_start_is_idempotent(docker_client, instance, busybox_image, free_port) -> None:
    first = setup_and_start(docker_client, free_port, image=busybox_image, instance=instance)
    second = setup_and_start(docker_client, free_port, image=busybox_image, instance=instance)
    assert first == second
    assert container_is_running(docker_client, instance.container_name)
    stop_container(docker_client, instance.container_name, timeout=2)
    third = setup_and_start(docker_client, free_port, image=busybox_image, instance=instance)
    assert third == first
    assert container_is_running(docker_client, instance.container_name)


def test_setup_and_start_writes_files_before_first_start(
    docker_client, instance, busybox_image, free_port
) -> None:
    setup_and_start(
        docker_client,
        free_port,
        image=busybox_image,
        instance=instance,
        files={"/tmp/secret": b"s3cret"},
    )
    name = instance.container_name
    # Only its owner can read it: root in the container has no capability to bypass that.
    assert _exec(docker_client, name, "cat /tmp/secret", user="1000") == "s3cret"
    with pytest.raises(AssertionError, match="Permission denied"):
        _exec(docker_client, name, "cat /tmp/secret")
    assert _exec(docker_client, name, "stat -c '%u %a' /tmp/secret") == "1000 400"
    put_file(docker_client, name, "/tmp/other", b"x", mode=0o600)
    assert _exec(docker_client, name, "stat -c '%a' /tmp/other") == "600"


def test_data_persists_across_restart_and_recreate(
    docker_client, instance, busybox_image, free_port
) -> None:
    name = instance.container_name
    setup_and_start(docker_client, free_port, image=busybox_image, instance=instance)
    for spec in VOLUME_SPECS:
        _exec(docker_client, name, f"echo {spec.kind} > {spec.mount_point}/marker")

    stop_container(docker_client, name, timeout=2)
    start_container(docker_client, name)
    for spec in VOLUME_SPECS:
        assert _exec(docker_client, name, f"cat {spec.mount_point}/marker") == spec.kind

    remove_container(docker_client, name, force=True)
    assert not container_exists(docker_client, name)
    setup_and_start(docker_client, free_port, image=busybox_image, instance=instance)
    for spec in VOLUME_SPECS:
        assert _exec(docker_client, name, f"cat {spec.mount_point}/marker") == spec.kind


def test_operations_on_missing_container_raise_not_found(docker_client, instance) -> None:
    name = instance.container_name
    for operation in (start_container, stop_container, remove_container, container_state):
        with pytest.raises(ContainerNotFound):
            operation(docker_client, name)
    assert not container_exists(docker_client, name)
