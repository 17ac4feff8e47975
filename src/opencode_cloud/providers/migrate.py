"""Keys set with `occ config env` (ANTHROPIC_API_KEY=...) moved into opencode's auth store
once: out of the configuration file first, so the container made next has no key in its
environment, then stored through `keys.add_provider` once the service runs. The command
line orders the steps (`occ start`) and puts the file back when a step fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opencode_cloud.opencode import KNOWN_PROVIDERS
from opencode_cloud.providers.keys import add_provider

if TYPE_CHECKING:
    from opencode_cloud.service.service import Service

# The variable of each built-in provider, to the provider's id.
KEY_VARIABLES: Mapping[str, str] = {var: pid for pid, var in KNOWN_PROVIDERS.items()}


def env_keys(env: Mapping[str, Any]) -> dict[str, str]:
    """The variables of `env` that hold a built-in provider's key, to its provider id."""
    return {
        name: KEY_VARIABLES[name]
        for name, value in env.items()
        if name in KEY_VARIABLES and isinstance(value, str) and value.strip()
    }


def without_env_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration's raw data without the provider keys of its `env`."""
    env = data.get("env")
    if not isinstance(env, dict):
        return dict(data)
    kept = {name: value for name, value in env.items() if name not in env_keys(env)}
    new = dict(data)
    if kept:
        new["env"] = kept
    else:
        new.pop("env", None)
    return new


def store_env_keys(service: Service, found: Mapping[str, tuple[str, str]]) -> list[str]:
    """Store each key of `found` (variable to provider id and key) in the running
    service's auth store; the variables stored.

    Raises:
        as `keys.add_provider`.
    """
    for provider_id, key in found.values():
        add_provider(service, provider_id, key)
    return sorted(found)
