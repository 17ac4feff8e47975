"""How the service layer compares the configuration with a container (canned inspect data)."""

from __future__ import annotations

import pytest

from opencode_cloud.config.schema import Config
from opencode_cloud.service import (
    Endpoint,
    actual_settings,
    changed_settings,
    desired_settings,
    is_loopback,
)

IMAGE_ENV = ["PATH=/usr/bin", "OPENCODE_DISABLE_AUTOUPDATE=1", "OPENCODE_SERVER_USERNAME=opencode"]


def inspect_of(config: Config, image_id: str = "sha256:abc", extra_env: list[str] = ()) -> dict:
    """What `docker inspect` shows for a container created from `config`."""
    env = [*IMAGE_ENV[:2], f"OPENCODE_SERVER_USERNAME={config.username}"]
    env += [f"{k}={v}" for k, v in config.env.items()] + list(extra_env)
    return {
        "Image": image_id,
        "Config": {"Env": env, "StopTimeout": config.stop_timeout},
        "HostConfig": {
            "PortBindings": {
                "3000/tcp": [{"HostIp": config.bind_address, "HostPort": str(config.port)}]
            },
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": config.restart_retries},
        },
    }


def test_a_container_made_from_the_config_has_no_changes() -> None:
    config = Config(env={"TZ": "UTC"}, port=8080)
    actual = actual_settings(inspect_of(config), IMAGE_ENV)
    assert changed_settings(desired_settings(config, "sha256:abc"), actual) == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"port": 9000}, "port"),
        ({"bind_address": "0.0.0.0"}, "bind address"),
        ({"env": {"TZ": "Europe/Paris"}}, "environment"),
        ({"username": "alice"}, "user name"),
        ({"restart_retries": 1}, "restart retries"),
        ({"stop_timeout": 30}, "stop timeout"),
    ],
)
def test_each_container_setting_is_noticed(change: dict, named: str) -> None:
    before = Config(env={"TZ": "UTC"})
    after = before.model_copy(update=change)
    actual = actual_settings(inspect_of(before), IMAGE_ENV)
    assert changed_settings(desired_settings(after, "sha256:abc"), actual) == [named]


def test_a_rebuilt_image_is_noticed() -> None:
    config = Config()
    actual = actual_settings(inspect_of(config, image_id="sha256:old"), IMAGE_ENV)
    assert changed_settings(desired_settings(config, "sha256:new"), actual) == ["image"]


def test_image_environment_is_not_taken_for_the_users() -> None:
    actual = actual_settings(inspect_of(Config()), IMAGE_ENV)
    assert actual["environment"] == []
    assert actual["user name"] == "opencode"


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
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
    assert Endpoint("::1", 8080, "u").health_url == "http://[::1]:8080/global/health"
