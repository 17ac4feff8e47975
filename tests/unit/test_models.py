"""Parsing the engine's inspect JSON. The samples keep the shape of Docker 20.10's answers
(`docker inspect` of a container, an image and a volume), trimmed of unread keys."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from opencode_cloud.docker.models import (
    ContainerStatus,
    Mount,
    PortBinding,
    parse_container,
    parse_image,
    parse_volume,
)

ZERO = "0001-01-01T00:00:00Z"

RUNNING: dict[str, Any] = {
    "Id": "a7945dcd23052a255210d42a83ea425735d6255c438092f8746d4c941b64a12b",
    "Created": "2026-11-29T16:29:48.341463559Z",
    "Path": "/usr/bin/tini",
    "Args": ["--", "/usr/local/bin/occ-entrypoint"],
    "State": {
        "Status": "running",
        "Running": True,
        "Paused": False,
        "Restarting": False,
        "OOMKilled": False,
        "Dead": False,
        "Pid": 8833,
        "ExitCode": 0,
        "Error": "",
        "StartedAt": "2026-11-29T16:29:48.563691119Z",
        "FinishedAt": ZERO,
        "Health": {
            "Status": "healthy",
            "FailingStreak": 0,
            "Log": [
                {
                    "Start": "2026-11-29T16:29:49.564083093Z",
                    "End": "2026-11-29T16:29:49.617391899Z",
                    "ExitCode": 0,
                    "Output": "",
                }
            ],
        },
    },
    "Image": "sha256:392d73a6164dbed811d9548299b16b7e209f67a4068386973116a1acb77cde18",
    "Name": "/opencode-cloud",
    "RestartCount": 2,
    "Driver": "overlay2",
    "HostConfig": {
        "Binds": None,
        "LogConfig": {"Type": "json-file", "Config": {}},
        "NetworkMode": "default",
        "PortBindings": {
            "3000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "3000"}],
            "53/udp": [{"HostIp": "", "HostPort": "5353"}],
        },
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 5},
        "AutoRemove": False,
        "CapAdd": ["CAP_CHOWN", "SETUID"],
        "CapDrop": ["ALL"],
        "Privileged": False,
        "SecurityOpt": ["no-new-privileges:true"],
        "Memory": 2147483648,
        "NanoCpus": 1500000000,
        "PidsLimit": 512,
        "Mounts": [
            {"Type": "volume", "Source": "opencode-cloud-home", "Target": "/home/opencode"},
            {
                "Type": "bind",
                "Source": "/home/alice/code",
                "Target": "/home/opencode/code",
                "ReadOnly": True,
            },
        ],
    },
    "Mounts": [
        {
            "Type": "volume",
            "Name": "opencode-cloud-home",
            "Source": "/var/lib/docker/volumes/opencode-cloud-home/_data",
            "Destination": "/home/opencode",
            "Driver": "local",
            "Mode": "z",
            "RW": True,
            "Propagation": "",
        }
    ],
    "Config": {
        "Hostname": "opencode-cloud",
        "Domainname": "",
        "User": "1000:1000",
        "ExposedPorts": {"3000/tcp": {}},
        "Tty": False,
        "Env": ["OPENCODE_SERVER_USERNAME=alice", "TZ=UTC", "PATH=/usr/bin:/bin"],
        "Cmd": None,
        "Healthcheck": {"Test": ["CMD", "/usr/local/bin/occ-healthcheck"]},
        "Image": "opencode-cloud-sandbox:1.18.33",
        "Volumes": None,
        "WorkingDir": "/home/opencode/projects",
        "Entrypoint": ["/usr/bin/tini", "--", "/usr/local/bin/occ-entrypoint"],
        "OnBuild": None,
        "Labels": {"io.opencode-cloud.instance": "default", "io.opencode-cloud.role": "service"},
        "StopSignal": "SIGTERM",
        "StopTimeout": 7,
    },
    "NetworkSettings": {"Ports": {"3000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "3000"}]}},
}


def variant(**state: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RUNNING)
    raw["State"].update(state)
    return raw


def test_a_running_container() -> None:
    info = parse_container(RUNNING)
    assert info.id == RUNNING["Id"]
    assert info.name == "opencode-cloud"  # without the engine's leading slash
    assert (info.image, info.image_id) == ("opencode-cloud-sandbox:1.18.33", RUNNING["Image"])
    assert info.status is ContainerStatus.RUNNING and info.running and not info.restarting
    assert (info.health, info.exit_code, info.oom_killed) == ("healthy", 0, False)
    assert info.restart_count == 2
    assert info.started_at == "2026-11-29T16:29:48.563691119Z"
    assert info.finished_at is None  # the zero time means never
    assert info.env == ("OPENCODE_SERVER_USERNAME=alice", "TZ=UTC", "PATH=/usr/bin:/bin")
    assert info.labels["io.opencode-cloud.role"] == "service"
    assert (info.hostname, info.working_dir, info.user) == (
        "opencode-cloud",
        "/home/opencode/projects",
        "1000:1000",
    )
    assert (info.restart_policy, info.restart_retries, info.stop_timeout) == ("on-failure", 5, 7)
    assert info.security_opt == ("no-new-privileges:true",)
    assert (info.cap_drop, info.cap_add) == (("ALL",), ("CAP_CHOWN", "SETUID"))
    assert (info.memory_bytes, info.nano_cpus, info.pids_limit) == (2147483648, 1500000000, 512)
    assert info.log_config == {"Type": "json-file", "Config": {}}


def test_ports_keep_tcp_bindings_only() -> None:
    info = parse_container(RUNNING)
    assert info.ports == {3000: (PortBinding("127.0.0.1", 3000),)}
    assert info.published(3000) == PortBinding("127.0.0.1", 3000)
    assert info.published(53) is None


def test_a_binding_without_address_is_every_address_and_a_random_port_is_none() -> None:
    raw = copy.deepcopy(RUNNING)
    raw["HostConfig"]["PortBindings"] = {
        "3000/tcp": [{"HostIp": "", "HostPort": "8080"}],
        "4000": [{"HostIp": "127.0.0.1", "HostPort": ""}],  # the engine picks the port
    }
    info = parse_container(raw)
    assert info.published(3000) == PortBinding("0.0.0.0", 8080)
    assert info.ports[4000] == ()
    assert info.published(4000) is None


def test_mounts_come_from_the_host_config() -> None:
    assert parse_container(RUNNING).mounts == (
        Mount("volume", "opencode-cloud-home", "/home/opencode", False),
        Mount("bind", "/home/alice/code", "/home/opencode/code", True),
    )


def test_an_exited_container_killed_for_memory() -> None:
    info = parse_container(
        variant(
            Status="exited",
            Running=False,
            OOMKilled=True,
            ExitCode=137,
            FinishedAt="2026-11-29T16:31:02.000000001Z",
        )
    )
    assert info.status is ContainerStatus.EXITED and not info.running
    assert (info.exit_code, info.oom_killed) == (137, True)
    assert info.finished_at == "2026-11-29T16:31:02.000000001Z"


def test_a_created_container_has_never_started() -> None:
    raw = variant(Status="created", Running=False, StartedAt=ZERO, FinishedAt=ZERO)
    del raw["State"]["Health"]
    info = parse_container(raw)
    assert info.status is ContainerStatus.CREATED
    assert (info.started_at, info.finished_at, info.health) == (None, None, None)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("restarting", ContainerStatus.RESTARTING),
        ("paused", ContainerStatus.PAUSED),
        ("removing", ContainerStatus.REMOVING),
        ("dead", ContainerStatus.DEAD),
        ("hibernating", ContainerStatus.DEAD),  # a word this release does not know
        ("", ContainerStatus.CREATED),
    ],
)
def test_status_words(status: str, expected: ContainerStatus) -> None:
    assert parse_container(variant(Status=status)).status is expected


def test_restarting_is_reported() -> None:
    assert parse_container(variant(Status="restarting")).restarting is True


@pytest.mark.parametrize(
    ("health", "expected"),
    [("starting", "starting"), ("unhealthy", "unhealthy"), ("none", None), ("", None)],
)
def test_health_words(health: str, expected: str | None) -> None:
    raw = variant()
    raw["State"]["Health"]["Status"] = health
    assert parse_container(raw).health == expected


def test_active_states_are_those_that_hold_a_process() -> None:
    active = {s for s in ContainerStatus if s.active}
    assert active == {ContainerStatus.RUNNING, ContainerStatus.RESTARTING, ContainerStatus.PAUSED}


def test_missing_keys_give_empty_values() -> None:
    info = parse_container({})
    assert (info.id, info.name, info.image, info.image_id) == ("", "", "", "")
    assert info.status is ContainerStatus.CREATED
    assert (info.health, info.exit_code, info.started_at, info.stop_timeout) == (
        None,
        None,
        None,
        None,
    )
    assert (info.env, info.mounts, info.cap_add, info.security_opt) == ((), (), (), ())
    assert (dict(info.labels), dict(info.ports)) == ({}, {})
    assert (info.restart_policy, info.restart_retries, info.pids_limit) == ("no", 0, None)


def test_null_values_read_as_absent() -> None:
    raw = copy.deepcopy(RUNNING)
    raw["Config"].update(Env=None, Labels=None, StopTimeout=None)
    raw["HostConfig"].update(
        PortBindings=None, Mounts=None, CapAdd=None, PidsLimit=None, RestartPolicy=None
    )
    raw["State"]["ExitCode"] = None
    info = parse_container(raw)
    assert (info.env, dict(info.labels), info.stop_timeout) == ((), {}, None)
    assert (dict(info.ports), info.mounts, info.cap_add, info.pids_limit) == ({}, (), (), None)
    assert (info.restart_policy, info.exit_code) == ("no", None)


# --------------------------------------------------------------------------- images


SANDBOX_IMAGE: dict[str, Any] = {
    "Id": "sha256:09f106825d9b0c1b2e9a1f4c6f0f7a4dc0f8c45a4d06b0d4e7b27d5c1e8f3a21",
    "RepoTags": ["opencode-cloud-sandbox:1.18.33", "opencode-cloud-sandbox:latest"],
    "RepoDigests": [],
    "Parent": "",
    "Created": "2026-11-29T16:27:01.123456789Z",
    "Config": {
        "User": "1000:1000",
        "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "OPENCODE_DISABLE_AUTOUPDATE=1",
        ],
        "Labels": {
            "io.opencode-cloud.opencode-version": "1.18.33",
            "org.opencontainers.image.title": "opencode-cloud-sandbox",
        },
    },
    "Architecture": "amd64",
    "Os": "linux",
    "Size": 1060000000,
}


def test_an_image() -> None:
    image = parse_image(SANDBOX_IMAGE)
    assert image.id == SANDBOX_IMAGE["Id"]
    assert image.tags == ("opencode-cloud-sandbox:1.18.33", "opencode-cloud-sandbox:latest")
    assert image.labels["io.opencode-cloud.opencode-version"] == "1.18.33"
    assert image.env[1] == "OPENCODE_DISABLE_AUTOUPDATE=1"
    assert image.size_bytes == 1060000000


def test_an_imported_image_without_labels_or_tags() -> None:
    # `docker import` leaves Labels null; a dangling image has no tags.
    raw = {"Id": "sha256:8812", "RepoTags": [], "Config": {"Env": ["PATH=/bin"], "Labels": None}}
    image = parse_image(raw)
    assert (image.tags, dict(image.labels), image.env, image.size_bytes) == (
        (),
        {},
        ("PATH=/bin",),
        0,
    )


# --------------------------------------------------------------------------- volumes


def test_a_volume() -> None:
    raw = {
        "CreatedAt": "2026-11-29T16:29:55Z",
        "Driver": "local",
        "Labels": {"io.opencode-cloud.role": "volume-home"},
        "Mountpoint": "/var/lib/docker/volumes/opencode-cloud-home/_data",
        "Name": "opencode-cloud-home",
        "Options": None,
        "Scope": "local",
    }
    volume = parse_volume(raw)
    assert (volume.name, volume.driver) == ("opencode-cloud-home", "local")
    assert volume.labels == {"io.opencode-cloud.role": "volume-home"}


def test_a_volume_without_labels_or_driver() -> None:
    volume = parse_volume({"Name": "made-by-the-engine", "Labels": None, "Driver": ""})
    assert (volume.name, dict(volume.labels), volume.driver) == ("made-by-the-engine", {}, "local")
