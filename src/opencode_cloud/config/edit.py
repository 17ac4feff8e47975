"""Read and change single keys, as `occ config get|set|unset` and `occ config env` do.

Every change returns a new, validated `Config`; nothing here touches a file. The changing
functions accept either a `Config` or the raw data of a file (`read_config_data`), so an
invalid file can be repaired key by key through `update_config`:

    update_config(path, lambda data: set_value(data, "port", "8080"))

Values arrive as the strings a user types and are parsed by the key's type: whole
numbers for `port`, a JSON list or a comma-separated list for `registries`, and so on.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from opencode_cloud.config.errors import (
    ConfigError,
    ConfigValidationError,
    Problem,
    RetiredConfigKey,
    UnknownConfigKey,
)
from opencode_cloud.config.schema import (
    KEYS,
    RETIRED_KEYS,
    RULES,
    Config,
    default_value,
)
from opencode_cloud.config.store import config_data, problems_of, show_value, validate_config

ConfigSource = Config | Mapping[str, Any]
"""What the changing functions start from: a `Config`, or a file's raw data."""

_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_NONE_WORDS = frozenset({"", "none", "null"})


@dataclass(frozen=True)
class KeyInfo:
    """What `occ config` can say about one key.

    Attributes:
        name: The key, as in the file.
        kind: `integer`, `string`, `optional string`, `list` or `mapping`.
        default: The default, as JSON data.
        description: What the key does.
        rule: What a value must be.
    """

    name: str
    kind: str
    default: Any
    description: str
    rule: str


def _kind(key: str) -> str:
    annotation = Config.model_fields[key].annotation
    origin = get_origin(annotation)
    if annotation is int:
        return "integer"
    if annotation is str:
        return "string"
    if origin is list:
        return "list"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    if origin in (Union, types.UnionType) and set(get_args(annotation)) == {str, type(None)}:
        return "optional string"
    raise TypeError(f"no parser for the type of {key}: {annotation}")  # pragma: no cover


def key_info(key: str) -> KeyInfo:
    """Description, type, default and rule of one key.

    Raises:
        UnknownConfigKey: `key` is not a configuration key.
    """
    _check_key(key)
    field = Config.model_fields[key]
    return KeyInfo(key, _kind(key), default_value(key), field.description or "", RULES[key])


def list_keys() -> list[KeyInfo]:
    """Every configuration key, in file order."""
    return [key_info(key) for key in KEYS]


def _unknown_key(key: str) -> UnknownConfigKey:
    if key.lower() in ("password", "auth.password", "server_password"):
        return UnknownConfigKey(
            f"Unknown configuration key {key!r}: the password is not kept in the configuration.",
            "It lives in its own file, readable only by you (`password` beside config.json).",
            key=key,
        )
    close = difflib.get_close_matches(key, KEYS, n=1)
    suggestion = f" Did you mean {close[0]!r}?" if close else ""
    return UnknownConfigKey(f"Unknown configuration key {key!r}.{suggestion}", key=key)


def _check_key(key: str) -> None:
    if key not in KEYS:
        raise _unknown_key(key)


def _data(source: ConfigSource) -> dict[str, Any]:
    if isinstance(source, Config):
        return config_data(source)
    return copy.deepcopy(dict(source))


def _bad_value(key: str, value: Any) -> ConfigValidationError:
    return ConfigValidationError(
        [Problem(key, show_value(value), RULES[key])], document=False, example=key
    )


def _parse_list(key: str, raw: str) -> list[str]:
    text = raw.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            raise _bad_value(key, raw) from None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise _bad_value(key, raw)
        items = [item.strip() for item in value]
    else:
        items = [item.strip() for item in text.split(",") if item.strip()]
    if key == "ca_certificates":
        # The file has no working directory to be relative to: store absolute paths.
        items = [os.path.abspath(os.path.expanduser(item)) for item in items]
    if key == "registries":
        items = [item.rstrip("/") for item in items]
    return items


def parse_value(key: str, raw: str) -> Any:
    """Turn the string a user typed into the value `key` holds, and check it.

    Integers must be written in decimal; lists take JSON (`["a", "b"]`) or commas
    (`a,b`; an empty string is an empty list); `env` takes a JSON object; `image`
    takes `none` (or an empty string) to go back to building locally.

    Raises:
        UnknownConfigKey: `key` is not a configuration key.
        RetiredConfigKey: `key` is no longer used (`RETIRED_KEYS`).
        ConfigValidationError: the value breaks the key's rule (`document` is False).
    """
    _check_key(key)
    if key in RETIRED_KEYS:
        raise RetiredConfigKey(key, RETIRED_KEYS[key])
    kind = _kind(key)
    value: Any
    if kind == "integer":
        text = raw.strip()
        if not _INTEGER.match(text):
            raise _bad_value(key, raw)
        value = int(text)
    elif kind == "string":
        value = raw.strip()
    elif kind == "optional string":
        text = raw.strip()
        value = None if text.lower() in _NONE_WORDS else text
    elif kind == "list":
        value = _parse_list(key, raw)
    else:
        try:
            value = json.loads(raw)
        except ValueError:
            raise _bad_value(key, raw) from None
    try:
        Config.model_validate({key: value})
    except ValidationError as exc:
        raise ConfigValidationError(problems_of(exc), document=False, example=key) from None
    return value


def get_value(config: Config, key: str) -> Any:
    """The value of `key` (its default when the file does not set it), as JSON data.

    `env.NAME` reads one environment variable.

    Raises:
        UnknownConfigKey: `key` is not a configuration key, or `env.NAME` is not set.
    """
    if key.startswith("env."):
        name = key.removeprefix("env.")
        if name not in config.env:
            raise UnknownConfigKey(
                f"Environment variable {name} is not set in the configuration.", key=key
            )
        return config.env[name]
    _check_key(key)
    return config.model_dump(mode="json")[key]


def config_values(config: Config) -> dict[str, Any]:
    """Every key with its value, defaults included, as JSON data (unknown keys left out,
    and retired ones unless the file still sets them)."""
    shown = {key for key in KEYS if key not in RETIRED_KEYS or is_set(config, key)}
    return config.model_dump(mode="json", include=shown)


def is_set(config: Config, key: str) -> bool:
    """True when the file sets `key` itself, False when it falls back to the default."""
    return key in config.model_fields_set


def set_value(source: ConfigSource, key: str, raw: str) -> Config:
    """A configuration with `key` set to the parsed `raw` string.

    Raises:
        UnknownConfigKey: `key` is not a configuration key.
        RetiredConfigKey: `key` is no longer used.
        ConfigValidationError: `raw` breaks the key's rule (`document` False), or the
            rest of the configuration is invalid (`document` True).
    """
    if key.startswith("env."):
        return env_set(source, f"{key.removeprefix('env.')}={raw}")
    value = parse_value(key, raw)
    data = _data(source)
    data[key] = value
    return validate_config(data)


def unset_value(source: ConfigSource, key: str) -> Config:
    """A configuration without `key`, which falls back to its default.

    Also removes an unknown key the file carries (a typo, or a key of a newer release),
    and `env.NAME` removes one environment variable.

    Raises:
        UnknownConfigKey: `key` is neither a configuration key nor present in the data.
        ConfigValidationError: the rest of the configuration is invalid.
    """
    if key.startswith("env."):
        return env_unset(source, key.removeprefix("env."))
    data = _data(source)
    if key not in KEYS and key not in data:
        raise _unknown_key(key)
    data.pop(key, None)
    return validate_config(data)


def reset_config() -> Config:
    """A configuration with every key at its default."""
    return Config()


def _env_of(data: Mapping[str, Any]) -> dict[str, Any]:
    env = data.get("env", {})
    return dict(env) if isinstance(env, Mapping) else {}


def env_set(source: ConfigSource, assignment: str) -> Config:
    """A configuration with one environment variable set, from `NAME=VALUE`.

    The value is everything after the first `=` and may be empty.

    Raises:
        ConfigValidationError: no `=`, or the name breaks the naming rule.
    """
    name, sep, value = assignment.partition("=")
    if not sep:
        raise ConfigValidationError(
            [Problem("env assignment", show_value(assignment), "must have the form NAME=VALUE")],
            document=False,
            example="env",
        )
    data = _data(source)
    env = _env_of(data)
    env[name] = value
    try:
        Config.model_validate({"env": {name: value}})
    except ValidationError as exc:
        raise ConfigValidationError(problems_of(exc), document=False, example="env") from None
    data["env"] = env
    return validate_config(data)


def env_unset(source: ConfigSource, name: str, *, missing_ok: bool = False) -> Config:
    """A configuration without the environment variable `name`.

    Raises:
        ConfigError: `name` is not set and `missing_ok` is False.
        ConfigValidationError: the rest of the configuration is invalid.
    """
    data = _data(source)
    env = _env_of(data)
    if name not in env and not missing_ok:
        known = ", ".join(sorted(env)) or "none"
        raise ConfigError(
            f"Environment variable {name} is not set in the configuration.",
            f"Variables set: {known}.",
        )
    env.pop(name, None)
    if env:
        data["env"] = env
    else:
        data.pop("env", None)
    return validate_config(data)


def env_list(config: Config) -> dict[str, str]:
    """The environment variables passed to opencode, sorted by name."""
    return dict(sorted(config.env.items()))


__all__ = [
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
]
