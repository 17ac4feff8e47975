"""`ContainerSpec`: the configuration's container and the engine's, compared field by field.

Round trips go through the in-memory engine, which builds inspect JSON from the create
body the way the engine does (the image's environment merged in)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from fakes import SANDBOX_ENV, FakeEngine
from opencode_cloud.config.schema import Config, Limits
from opencode_cloud.defaults import (
    DEFAULT_STOP_TIMEOUT,
    DEFAULT_USERNAME,
    GID_ENV,
    RUNTIME_HOME,
    RUNTIME_UID,
    UID_ENV,
)
from opencode_cloud.docker.models import Mount, parse_container
from opencode_cloud.docker.spec import ContainerSpec, DefaultSettings, runtime_owner
from opencode_cloud.docker.volume import VOLUME_SPECS
from opencode_cloud.instance import (
    LABEL_CONFIG_HASH,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_ROLE,
    Instance,
)
from opencode_cloud.mounts import HostMount
from opencode_cloud.opencode import USERNAME_ENV

INSTANCE = Instance("spec", extra_labels={"io.opencode-cloud.test": "yes"})
IMAGE = "opencode-cloud-sandbox:1.18.33"


def wanted(settings: Any, image_id: str | None = "sha256:aaa") -> ContainerSpec:
    return ContainerSpec.from_config(settings, INSTANCE, image=IMAGE, image_id=image_id)


def created(spec: ContainerSpec) -> ContainerSpec:
    """The spec read back from a container the engine made from `spec.create_body()`,
    with `IMAGE` standing for the image `spec.image_id` names."""
    engine = FakeEngine()
    image_id = engine.add_image(IMAGE, env=SANDBOX_ENV)
    engine.create_container(spec.name, spec.create_body())
    actual = ContainerSpec.from_inspect(engine.inspect_container(spec.name), SANDBOX_ENV)
    assert actual.image_id == image_id
    return replace(actual, image_id=spec.image_id)


# --------------------------------------------------------------------------- round trip


def test_defaults_round_trip_through_the_engine() -> None:
    spec = wanted(DefaultSettings())
    actual = created(spec)
    assert actual == spec
    assert spec.diff(actual) == []
    assert (actual.port, actual.bind_address, actual.username) == (3000, "127.0.0.1", "opencode")
    assert (actual.env, actual.runtime_uid, actual.stop_timeout) == ((), RUNTIME_UID, 10)


def test_non_default_settings_round_trip(tmp_path: Path) -> None:
    config = Config(
        port=8080,
        bind_address="0::1",
        username="alice",
        env={"TZ": "UTC", "A_LIST": "x=1,y=2", "OPENCODE_DISABLE_AUTOUPDATE": "0"},
        mounts=[f"{tmp_path}:{RUNTIME_HOME}/code:ro"],
        limits=Limits(memory="1.5g", cpus=0.5, pids=128),
        stop_timeout=30,
    )
    spec = wanted(config)
    actual = created(spec)
    assert actual == spec
    assert actual.bind_address == "::1"  # 0::1 and ::1 are one address
    assert actual.env == ("A_LIST=x=1,y=2", "OPENCODE_DISABLE_AUTOUPDATE=0", "TZ=UTC")
    assert Mount("bind", str(tmp_path), f"{RUNTIME_HOME}/code", True) in actual.mounts
    assert (actual.memory_bytes, actual.nano_cpus, actual.pids_limit) == (
        int(1.5 * (1 << 30)),
        500_000_000,
        128,
    )
    assert actual.stop_timeout == 30
    assert actual.config_hash() == spec.config_hash()


def test_an_ipv6_address_written_another_way_is_no_change() -> None:
    container = created(wanted(Config(bind_address="::1")))
    assert wanted(Config(bind_address="0::1")).diff(container) == []
    assert wanted(Config(bind_address="0:0::1")).bind_address == "::1"
    assert wanted(Config(bind_address="::2", tls="off")).diff(container) == ["bind address"]


def test_tls_round_trips_and_the_certificate_is_no_part_of_the_spec() -> None:
    """A new certificate reaches the container as files (`Service.start`): it never
    re-creates it. The digest earlier releases put into the environment is neither the
    user's environment nor a change."""
    spec = wanted(Config(tls="self-signed"))
    assert "tls_certificate" not in {f.name for f in fields(spec)}
    assert not any(e.startswith("OCC_TLS_CERT_SHA256=") for e in spec.create_body()["Env"])
    actual = created(spec)
    assert (actual.tls, actual.env) == ("self-signed", ())
    assert spec.diff(actual) == []
    body = spec.create_body()
    body["Env"] = [*body["Env"], "OCC_TLS_CERT_SHA256=0123456789abcdef"]
    engine = FakeEngine()
    engine.add_image(IMAGE, env=SANDBOX_ENV)
    engine.create_container(spec.name, body)
    earlier = ContainerSpec.from_inspect(engine.inspect_container(spec.name), SANDBOX_ENV)
    assert earlier.env == () and spec.diff(replace(earlier, image_id=spec.image_id)) == []
    off = wanted(Config())
    assert off.tls == "off" and "OCC_TLS=off" in off.create_body()["Env"]


def test_the_images_environment_is_not_taken_for_the_users() -> None:
    raw = {
        "Name": "/opencode-cloud-spec",
        "Image": "sha256:abc",
        "Config": {"Env": list(SANDBOX_ENV), "Image": IMAGE},
    }
    actual = ContainerSpec.from_inspect(parse_container(raw), SANDBOX_ENV)
    assert actual.env == ()
    assert actual.username == DEFAULT_USERNAME  # from the image's variable
    assert (actual.runtime_uid, actual.runtime_gid) == (RUNTIME_UID, RUNTIME_UID)


def test_a_container_without_settings_reads_as_defaults() -> None:
    actual = ContainerSpec.from_inspect(parse_container({"Name": "/x", "Config": {"Env": []}}))
    assert (actual.port, actual.bind_address) == (0, "")
    assert (actual.username, actual.stop_timeout) == (DEFAULT_USERNAME, DEFAULT_STOP_TIMEOUT)
    assert (actual.mounts, actual.hardening) == ((), ())


def test_without_env_drops_only_values_the_image_sets_the_same() -> None:
    spec = wanted(Config(env={"OPENCODE_DISABLE_AUTOUPDATE": "1", "LANG": "de_DE.UTF-8"}))
    assert spec.without_env(SANDBOX_ENV).env == ("LANG=de_DE.UTF-8",)


# --------------------------------------------------------------------------- diff


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"port": 9000}, ["port"]),
        ({"bind_address": "0.0.0.0", "tls": "off"}, ["bind address"]),
        ({"bind_address": "0.0.0.0"}, ["bind address", "TLS"]),  # tls=auto: HTTPS when exposed
        ({"tls": "self-signed"}, ["TLS"]),
        ({"env": {"TZ": "Europe/Paris"}}, ["environment"]),
        ({"username": "alice"}, ["user name"]),
        ({"limits": {"memory": "512m"}}, ["memory limit"]),
        ({"limits": {"cpus": 1}}, ["CPU limit"]),
        ({"limits": {"pids": 64}}, ["process limit"]),
        ({"restart_retries": 1}, []),  # retired: no longer shapes the container
        ({"stop_timeout": 30}, ["stop timeout"]),
        ({"port": 9000, "username": "alice"}, ["port", "user name"]),
    ],
)
def test_each_setting_is_noticed_by_name(change: dict[str, Any], named: list[str]) -> None:
    before = Config(env={"TZ": "UTC"})
    after = Config(**{"env": {"TZ": "UTC"}, **change})
    assert wanted(after).diff(created(wanted(before))) == named


def test_a_rebuilt_image_is_noticed() -> None:
    spec = wanted(Config(), image_id="sha256:new")
    assert spec.diff(replace(spec, image_id="sha256:old")) == ["image"]


def test_every_field_with_a_reason_is_compared_and_named() -> None:
    spec = wanted(Config())
    for f in fields(ContainerSpec):
        value = getattr(spec, f.name)
        if isinstance(value, bool) or f.name == "labels":
            continue
        other: Any
        if isinstance(value, int):
            other = value + 1
        elif isinstance(value, tuple):
            other = (*value, Mount("volume", "extra", "/extra"))
        else:
            other = f"{value}-other"
        changed = replace(spec, **{f.name: other})
        expected = [f.metadata["reason"]] if "reason" in f.metadata else []
        assert spec.diff(changed) == expected, f.name


def test_name_and_labels_are_no_change() -> None:
    spec = wanted(Config())
    assert spec.diff(replace(spec, name="other", labels={})) == []


# --------------------------------------------------------------------------- hash, labels


def test_config_hash_is_stable_across_dict_order() -> None:
    one = wanted(Config(env={"A": "1", "B": "2"}))
    two = wanted(Config(env={"B": "2", "A": "1"}))
    assert one.config_hash() == two.config_hash()
    assert re.fullmatch("[0-9a-f]{64}", one.config_hash())  # a sha256, as a label value
    assert replace(one, labels={"z": "1", "a": "2"}).config_hash() == one.config_hash()


HASH_IN_ANOTHER_RUN = """
from opencode_cloud.config.schema import Config
from opencode_cloud.docker.spec import ContainerSpec
from opencode_cloud.instance import Instance

config = Config(env={"B": "2", "A": "1", "C": "3"}, port=3001, username="ada")
spec = ContainerSpec.from_config(config, Instance("spec"), image="x:1", image_id="sha256:a")
print(spec.config_hash())
"""


def test_config_hash_is_the_same_in_another_run() -> None:
    """The label one `occ` run writes is compared with the hash a later run computes:
    nothing that differs between processes (string hashing, set order) may enter it."""
    config = Config(env={"A": "1", "C": "3", "B": "2"}, port=3001, username="ada")
    spec = ContainerSpec.from_config(config, Instance("spec"), image="x:1", image_id="sha256:a")
    for seed in ("1", "2"):
        other = subprocess.run(
            [sys.executable, "-c", HASH_IN_ANOTHER_RUN],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert other.stdout.strip() == spec.config_hash()


@pytest.mark.parametrize(
    "change", [{"port": 3001}, {"env": {"A": "1"}}, {"stop_timeout": 11}, {"username": "bob"}]
)
def test_config_hash_changes_with_a_setting(change: dict[str, Any]) -> None:
    assert wanted(Config(**change)).config_hash() != wanted(Config()).config_hash()


def test_config_hash_changes_with_the_image() -> None:
    assert wanted(Config(), "sha256:a").config_hash() != wanted(Config(), "sha256:b").config_hash()


def test_labels_carry_the_instance_and_the_hash() -> None:
    spec = ContainerSpec.from_config(
        Config(), INSTANCE, image=IMAGE, image_id="sha256:a", labels={"extra": "1"}
    )
    assert spec.labels[LABEL_CONFIG_HASH] == spec.config_hash()
    assert spec.labels[LABEL_MANAGED] == "true"
    assert spec.labels[LABEL_INSTANCE] == "spec"
    assert spec.labels[LABEL_ROLE] == "service"
    assert spec.labels["extra"] == "1"
    assert spec.labels["io.opencode-cloud.test"] == "yes"


# --------------------------------------------------------------------------- create body


def test_create_body_shape() -> None:
    body = wanted(Config(port=8080, bind_address="127.0.0.1")).create_body()
    host = body["HostConfig"]
    assert body["Image"] == IMAGE
    assert body["ExposedPorts"] == {"3000/tcp": {}}
    assert host["PortBindings"] == {"3000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}
    assert host["RestartPolicy"] == {"Name": "unless-stopped"}
    assert (host["Memory"], host["PidsLimit"]) == (4 << 30, 4096)
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "10m", "max-file": "3"},
    }
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["CapDrop"] == ["ALL"]
    assert sorted(host["CapAdd"]) == ["CHOWN", "DAC_OVERRIDE", "KILL", "SETGID", "SETUID"]
    assert host["Privileged"] is False and host["AutoRemove"] is False
    assert body["Env"][:3] == [f"{USERNAME_ENV}=opencode", f"{UID_ENV}=1000", f"{GID_ENV}=1000"]
    assert body["StopTimeout"] == DEFAULT_STOP_TIMEOUT
    assert "PASSWORD" not in str(body)


def test_create_body_mounts_the_instances_named_volumes() -> None:
    mounts = wanted(Config()).create_body()["HostConfig"]["Mounts"]
    assert {m["Type"] for m in mounts} == {"volume"}
    assert {(m["Source"], m["Target"]) for m in mounts} == {
        (INSTANCE.volume_name(v.kind), v.mount_point) for v in VOLUME_SPECS
    }
    targets = [m["Target"] for m in mounts]
    assert targets == sorted(targets)  # a parent (the home) before what it holds
    assert not any(m["ReadOnly"] for m in mounts)


def test_create_body_binds_a_mounted_host_folder(tmp_path: Path) -> None:
    mounts = wanted(Config(mounts=[f"{tmp_path}:/srv/data:ro"])).create_body()["HostConfig"][
        "Mounts"
    ]
    assert {"Type": "bind", "Source": str(tmp_path), "Target": "/srv/data", "ReadOnly": True} in (
        mounts
    )


# --------------------------------------------------------------------------- runtime owner


def test_runtime_owner_is_the_first_existing_folders_owner(tmp_path: Path) -> None:
    folder = tmp_path / "code"
    folder.mkdir()
    try:
        os.chown(folder, 4321, 4322)
    except PermissionError:
        pytest.skip("only root can give the folder another owner")
    missing = HostMount.parse(f"{tmp_path}/missing:/srv/a")
    assert runtime_owner([missing, HostMount.parse(f"{folder}:/srv/b")]) == (4321, 4322)


def test_runtime_owner_is_never_root(tmp_path: Path) -> None:
    folder = tmp_path / "root-owned"
    folder.mkdir()
    try:
        os.chown(folder, 0, 0)
    except PermissionError:
        pytest.skip("only root can own the folder as root")
    assert runtime_owner([HostMount.parse(f"{folder}:/srv/a")]) == (RUNTIME_UID, RUNTIME_UID)
    assert runtime_owner([]) == (RUNTIME_UID, RUNTIME_UID)
