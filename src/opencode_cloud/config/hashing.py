"""Fingerprints of the settings that shape the container, to know when to re-create it.

The container carries two labels: `io.opencode-cloud.config-hash` (a hash of the
settings) and `io.opencode-cloud.config-settings` (the settings themselves, as compact
JSON, with the environment reduced to a digest so no value shows in a label). When the
hash of the current configuration differs from the container's, the container must be
re-created; `changed_settings` says which keys differ so the user can be told why.

Settings that only matter to the image build (`registries`, `ca_certificates`) or to
the commands (`start_timeout`, `stop_timeout`) are left out: changing them does not
re-create anything. With an `image` override, `opencode_version` is left out as well.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping
from typing import Any

from opencode_cloud.config.schema import Config
from opencode_cloud.instance import LABEL_CONFIG_HASH, LABEL_PREFIX

LABEL_CONFIG_SETTINGS = f"{LABEL_PREFIX}.config-settings"

CONTAINER_KEYS = (
    "port",
    "bind_address",
    "username",
    "restart_retries",
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
    """The settings that shape the container, as JSON data fit for a label.

    `env` appears as a digest of the whole mapping, never as values.
    """
    settings: dict[str, Any] = {
        "port": config.port,
        # Canonical form, so `::1` and `0::1` are the same setting.
        "bind_address": str(ipaddress.ip_address(config.bind_address)),
        "username": config.username,
        "restart_retries": config.restart_retries,
        "env": "sha256:" + _digest(dict(config.env))[:32],
    }
    if config.image is not None:
        settings["image"] = config.image
    else:
        settings["opencode_version"] = config.opencode_version
    return settings


def container_settings_label(config: Config) -> str:
    """`container_settings` as the compact JSON text stored in `LABEL_CONFIG_SETTINGS`."""
    return _canonical(container_settings(config))


def container_config_hash(config: Config) -> str:
    """A stable hash (64 hex digits) of the settings that shape the container.

    Equal for equal settings, whatever their order in the file or the process that
    computes it; different as soon as one of `CONTAINER_KEYS` changes.
    """
    return _digest(container_settings(config))


def container_labels(config: Config) -> dict[str, str]:
    """Both labels to put on a container created from `config`."""
    return {
        LABEL_CONFIG_HASH: container_config_hash(config),
        LABEL_CONFIG_SETTINGS: container_settings_label(config),
    }


def _settings_from_label(label: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if label is None:
        return None
    if isinstance(label, Mapping):
        return dict(label)
    try:
        parsed = json.loads(label)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def changed_settings(old: str | Mapping[str, Any] | None, new: Config) -> list[str] | None:
    """Which container settings differ between a container's label and `new`.

    Args:
        old: The container's `LABEL_CONFIG_SETTINGS` label (text, or parsed), or None
            when it has none.
        new: The current configuration.

    Returns:
        The keys that changed, in `CONTAINER_KEYS` order (empty when nothing did), or
        None when `old` is missing or unreadable: the caller only knows, from the hash,
        whether something changed.
    """
    before = _settings_from_label(old)
    if before is None:
        return None
    after = container_settings(new)
    return [key for key in CONTAINER_KEYS if before.get(key) != after.get(key)]


def describe_changes(changed: list[str] | None) -> str:
    """`port and env changed`, for a message such as "re-creating the container because ..."."""
    if not changed:
        return "the configuration changed"
    names = ", ".join(changed[:-1]) + (" and " if len(changed) > 1 else "") + changed[-1]
    return f"{names} changed"
