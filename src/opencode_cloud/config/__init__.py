"""Where the tool keeps its files, the configuration schema, and the config store.

The public names below are imported on first use, so that importing this package (for
`paths`, say) does not load pydantic: `occ --version` and `occ --help` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opencode_cloud.config.edit import (
        ConfigSource,
        KeyInfo,
        config_values,
        env_list,
        env_set,
        env_unset,
        get_value,
        is_set,
        key_info,
        list_keys,
        parse_value,
        reset_config,
        set_value,
        unset_value,
    )
    from opencode_cloud.config.errors import (
        ConfigError,
        ConfigReadError,
        ConfigSyntaxError,
        ConfigValidationError,
        ConfigWriteError,
        Problem,
        UnknownConfigKey,
    )
    from opencode_cloud.config.hashing import (
        container_config_hash,
        container_labels,
        container_settings,
    )
    from opencode_cloud.config.schema import KEYS, Config
    from opencode_cloud.config.store import (
        LoadedConfig,
        load_config,
        read_config_data,
        reset_config_file,
        save_config,
        update_config,
        validate_config,
    )

_EXPORTS = {
    "edit": (
        "ConfigSource",
        "KeyInfo",
        "config_values",
        "env_list",
        "env_set",
        "env_unset",
        "get_value",
        "is_set",
        "key_info",
        "list_keys",
        "parse_value",
        "reset_config",
        "set_value",
        "unset_value",
    ),
    "errors": (
        "ConfigError",
        "ConfigReadError",
        "ConfigSyntaxError",
        "ConfigValidationError",
        "ConfigWriteError",
        "Problem",
        "UnknownConfigKey",
    ),
    "hashing": (
        "container_config_hash",
        "container_labels",
        "container_settings",
    ),
    "schema": ("KEYS", "Config"),
    "store": (
        "LoadedConfig",
        "load_config",
        "read_config_data",
        "reset_config_file",
        "save_config",
        "update_config",
        "validate_config",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "KEYS",
    "Config",
    "ConfigError",
    "ConfigReadError",
    "ConfigSource",
    "ConfigSyntaxError",
    "ConfigValidationError",
    "ConfigWriteError",
    "KeyInfo",
    "LoadedConfig",
    "Problem",
    "UnknownConfigKey",
    "config_values",
    "container_config_hash",
    "container_labels",
    "container_settings",
    "env_list",
    "env_set",
    "env_unset",
    "get_value",
    "is_set",
    "key_info",
    "list_keys",
    "load_config",
    "parse_value",
    "read_config_data",
    "reset_config",
    "reset_config_file",
    "save_config",
    "set_value",
    "unset_value",
    "update_config",
    "validate_config",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
