"""The container config hash: stable, and sensitive to exactly the container's settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from opencode_cloud.config.edit import env_set, set_value
from opencode_cloud.config.hashing import (
    CONTAINER_KEYS,
    container_config_hash,
    container_labels,
    container_settings,
)
from opencode_cloud.config.schema import Config
from opencode_cloud.instance import LABEL_CONFIG_HASH

BASE = Config.model_validate({"env": {"A": "1", "B": "2"}})


def test_hash_is_stable_and_hex() -> None:
    digest = container_config_hash(BASE)
    assert digest == container_config_hash(Config.model_validate({"env": {"B": "2", "A": "1"}}))
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_hash_is_the_same_in_another_process() -> None:
    code = (
        "from opencode_cloud.config.schema import Config\n"
        "from opencode_cloud.config.hashing import container_config_hash\n"
        "print(container_config_hash(Config.model_validate({'env': {'A': '1', 'B': '2'}})))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == container_config_hash(BASE)


def test_default_values_written_explicitly_hash_the_same() -> None:
    explicit = Config.model_validate({"port": 3000, "env": {"A": "1", "B": "2"}})
    assert container_config_hash(explicit) == container_config_hash(BASE)


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("port", "8080"),
        ("bind_address", "0.0.0.0"),
        ("username", "alice"),
        ("restart_retries", "0"),
        ("stop_timeout", "5"),
        ("opencode_version", "1.18.32"),
        ("image", "ghcr.io/acme/sandbox:1"),
        ("env", '{"A": "1", "B": "3"}'),
        ("env", '{"A": "1"}'),
    ],
)
def test_each_container_setting_changes_the_hash(key: str, raw: str) -> None:
    changed = set_value(BASE, key, raw)
    assert container_config_hash(changed) != container_config_hash(BASE)


def test_env_addition_changes_the_hash() -> None:
    assert container_config_hash(env_set(BASE, "C=3")) != container_config_hash(BASE)


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("registries", "ghcr.io/acme"),
        ("ca_certificates", "/etc/ssl/ca.pem"),
        ("start_timeout", "5"),
    ],
)
def test_settings_outside_the_container_keep_the_hash(key: str, raw: str) -> None:
    assert container_config_hash(set_value(BASE, key, raw)) == container_config_hash(BASE)


def test_unknown_keys_keep_the_hash() -> None:
    config = Config.model_validate({"env": {"A": "1", "B": "2"}, "future": 1})
    assert container_config_hash(config) == container_config_hash(BASE)


def test_with_an_image_override_the_version_does_not_matter() -> None:
    with_image = set_value(BASE, "image", "ghcr.io/acme/sandbox:1")
    other_version = set_value(with_image, "opencode_version", "1.18.26")
    assert container_config_hash(with_image) == container_config_hash(other_version)


def test_equal_addresses_hash_equally() -> None:
    assert container_config_hash(set_value(BASE, "bind_address", "::1")) == (
        container_config_hash(set_value(BASE, "bind_address", "0:0::1"))
    )


def test_settings_hide_env_values() -> None:
    secret = env_set(BASE, "TOKEN=hunter2")
    text = json.dumps(container_settings(secret))
    assert "hunter2" not in text and "TOKEN" not in text


def test_labels_carry_the_hash() -> None:
    assert container_labels(BASE) == {LABEL_CONFIG_HASH: container_config_hash(BASE)}
    assert LABEL_CONFIG_HASH == "io.opencode-cloud.config-hash"


def test_container_keys_are_config_keys() -> None:
    assert set(CONTAINER_KEYS) <= set(Config.model_fields)
