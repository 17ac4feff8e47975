"""Volumes against the real engine."""

from __future__ import annotations

import pytest

from opencode_cloud.docker.container import create_container
from opencode_cloud.docker.errors import VolumeInUse
from opencode_cloud.docker.volume import (
    VOLUME_CONFIG,
    VOLUME_HOME,
    VOLUME_NAMES,
    VOLUME_PROJECTS,
    VOLUME_SESSION,
    VOLUME_STATE,
    ensure_volumes_exist,
    remove_all_volumes,
    remove_volume,
    volume_exists,
    volume_names,
)

pytestmark = pytest.mark.integration


def test_default_instance_uses_the_plan_names() -> None:
    assert VOLUME_SESSION == "opencode-cloud-session"
    assert VOLUME_PROJECTS == "opencode-cloud-projects"
    assert VOLUME_CONFIG == "opencode-cloud-config"
    assert VOLUME_STATE == "opencode-cloud-state"
    assert VOLUME_HOME == "opencode-cloud-home"
    # The home first: Docker mounts a parent before the volumes mounted inside it.
    assert VOLUME_NAMES == (
        VOLUME_HOME,
        VOLUME_SESSION,
        VOLUME_STATE,
        VOLUME_PROJECTS,
        VOLUME_CONFIG,
    )


def test_ensure_creates_every_volume_with_labels(docker_client, docker_sdk, instance) -> None:
    created = ensure_volumes_exist(docker_client, instance)
    names = volume_names(instance)
    assert sorted(created) == sorted(names)
    assert names == tuple(
        f"opencode-cloud-{instance.name}-{k}"
        for k in ("home", "session", "state", "projects", "config")
    )
    for name in names:
        assert volume_exists(docker_client, name)
        labels = docker_sdk.volumes.get(name).attrs["Labels"]
        assert labels["io.opencode-cloud.managed"] == "true"
        assert labels["io.opencode-cloud.instance"] == instance.name
        assert labels["io.opencode-cloud.version"]
        found = docker_client.inspect_volume(name)
        assert found is not None and (found.name, found.labels) == (name, labels)


def test_ensure_twice_is_harmless_and_keeps_data(
    docker_client, docker_sdk, instance, busybox_image
) -> None:
    ensure_volumes_exist(docker_client, instance)
    session = instance.volume_name("session")
    docker_sdk.containers.run(
        busybox_image,
        ["sh", "-c", "echo kept > /v/marker"],
        remove=True,
        volumes={session: {"bind": "/v", "mode": "rw"}},
    )
    assert ensure_volumes_exist(docker_client, instance) == []
    out = docker_sdk.containers.run(
        busybox_image,
        ["cat", "/v/marker"],
        remove=True,
        volumes={session: {"bind": "/v", "mode": "ro"}},
    )
    assert out.strip() == b"kept"


def test_volume_exists_is_false_for_unknown(docker_client, instance) -> None:
    assert not volume_exists(docker_client, instance.volume_name("nothing"))


def test_remove_volume_refuses_while_used_and_names_the_container(
    docker_client, docker_sdk, instance, make_spec
) -> None:
    create_container(docker_client, make_spec(0), instance)
    session = instance.volume_name("session")
    # create_container made the volumes itself, labelled like every other resource.
    labels = docker_sdk.volumes.get(session).attrs["Labels"]
    assert labels["io.opencode-cloud.instance"] == instance.name
    with pytest.raises(VolumeInUse) as caught:
        remove_volume(docker_client, session)
    assert instance.container_name in caught.value.message
    assert (caught.value.volume, caught.value.users) == (session, [instance.container_name])
    assert volume_exists(docker_client, session)

    with pytest.raises(VolumeInUse) as caught:
        remove_all_volumes(docker_client, instance)
    assert caught.value.users == [instance.container_name]
    assert all(volume_exists(docker_client, n) for n in volume_names(instance))


def test_remove_volume_of_missing_volume_is_quiet(docker_client, instance) -> None:
    """Removing a volume that is gone (never made, or removed by an earlier try) is no
    error, and touches no other volume."""
    ensure_volumes_exist(docker_client, instance)
    session = instance.volume_name("session")
    remove_volume(docker_client, session)
    assert not volume_exists(docker_client, session)
    remove_volume(docker_client, session)  # again: nothing there
    remove_volume(docker_client, instance.volume_name("nothing"))  # never made
    assert not volume_exists(docker_client, session)
    assert not volume_exists(docker_client, instance.volume_name("nothing"))
    others = [name for name in volume_names(instance) if name != session]
    assert others and all(volume_exists(docker_client, name) for name in others)


def test_remove_all_volumes_removes_them_all(docker_client, instance) -> None:
    ensure_volumes_exist(docker_client, instance)
    removed = remove_all_volumes(docker_client, instance)
    assert sorted(removed) == sorted(volume_names(instance))
    assert not any(volume_exists(docker_client, n) for n in volume_names(instance))
