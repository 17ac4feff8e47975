"""A fingerprint of the settings that shape the container.

The container carries it as the label `io.opencode-cloud.config-hash`, so people and
scripts can tell containers made from the same settings apart
(`docker ps --filter label=io.opencode-cloud.config-hash=...`). Whether to re-create a
container is decided elsewhere (`opencode_cloud.service`), by comparing the
configuration with what the engine reports, which also catches changes made to the
container behind the tool's back.

Settings that only matter to the image build (`registries`, `ca_certificates`) or to
the commands (`start_timeout`) are left out. With an `image` override,
`opencode_version` is left out as well.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from typing import Any

from opencode_cloud.config.schema import Config
from opencode_cloud.instance import LABEL_CONFIG_HASH

CONTAINER_KEYS = (
    "port",
    "bind_address",
    "username",
    "restart_retries",
    "stop_timeout",
    "env",
    "image",
    "opencode_version",
)
"""Keys whose change means re-creating the container."""


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode("utf-8")).hexdigest()


def container_settings(config: Config) -> dict[str, Any]:
    """The settings that shape the container, as JSON data.

    `env` appears as a digest of the whole mapping, never as values.
    """
    settings: dict[str, Any] = {
        "port": config.port,
        # Canonical form, so `::1` and `0::1` are the same setting.
        "bind_address": str(ipaddress.ip_address(config.bind_address)),
        "username": config.username,
        "restart_retries": config.restart_retries,
        "stop_timeout": config.stop_timeout,
        "env": "sha256:" + _digest(dict(config.env))[:32],
    }
    if config.image is not None:
        settings["image"] = config.image
    else:
        settings["opencode_version"] = config.opencode_version
    return settings


def container_config_hash(config: Config) -> str:
    """A stable hash (64 hex digits) of the settings that shape the container.

    Equal for equal settings, whatever their order in the file or the process that
    computes it; different as soon as one of `CONTAINER_KEYS` changes.
    """
    return _digest(container_settings(config))


def container_labels(config: Config) -> dict[str, str]:
    """The label to put on a container created from `config`."""
    return {LABEL_CONFIG_HASH: container_config_hash(config)}
