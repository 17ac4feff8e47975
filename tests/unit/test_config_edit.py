"""get / set / unset and the environment variables, as `occ config` uses them."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opencode_cloud.cli.hints import hint_for
from opencode_cloud.config.edit import (
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
from opencode_cloud.config.errors import ConfigError, ConfigValidationError, UnknownConfigKey
from opencode_cloud.config.schema import KEYS, RETIRED_KEYS, Config


def test_get_returns_defaults_and_set_values() -> None:
    config = Config()
    assert get_value(config, "port") == 3000
    assert get_value(config, "image") is None
    assert get_value(set_value(config, "port", "8080"), "port") == 8080


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("port", "8080", 8080),
        ("port", " 8080 ", 8080),
        ("bind_address", "0.0.0.0", "0.0.0.0"),
        ("bind_address", "::1", "::1"),
        ("username", "alice", "alice"),
        ("opencode_version", "1.18.32", "1.18.32"),
        ("image", "ghcr.io/acme/sandbox:1", "ghcr.io/acme/sandbox:1"),
        ("image", "none", None),
        ("image", "", None),
        ("registries", "ghcr.io/acme", ["ghcr.io/acme"]),
        (
            "registries",
            "ghcr.io/a, registry.example.com:5000/b/",
            ["ghcr.io/a", "registry.example.com:5000/b"],
        ),
        ("registries", '["ghcr.io/a", "docker.io/b"]', ["ghcr.io/a", "docker.io/b"]),
        ("registries", "", []),
        ("registries", "[]", []),
        ("ca_certificates", "/etc/ssl/a.pem,/etc/ssl/b.pem", ["/etc/ssl/a.pem", "/etc/ssl/b.pem"]),
        ("env", '{"A": "1", "B_2": ""}', {"A": "1", "B_2": ""}),
        ("start_timeout", "30", 30),
        ("stop_timeout", "1", 1),
    ],
)
def test_set_parses_by_key_type(key: str, raw: str, expected: object) -> None:
    config = set_value(Config(), key, raw)
    assert get_value(config, key) == expected
    assert is_set(config, key)


def test_relative_ca_paths_become_absolute(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(str(tmp_path))
    config = set_value(Config(), "ca_certificates", "corp.pem,~/x.pem")
    assert config.ca_certificates == [
        os.path.join(str(tmp_path), "corp.pem"),
        os.path.expanduser("~/x.pem"),
    ]


@pytest.mark.parametrize(
    ("key", "raw", "rule"),
    [
        ("port", "0", "from 1 to 65535"),
        ("port", "65536", "from 1 to 65535"),
        ("port", "abc", "from 1 to 65535"),
        ("port", "80.5", "from 1 to 65535"),
        ("port", "1_000", "from 1 to 65535"),
        ("port", "", "from 1 to 65535"),
        ("bind_address", "localhost", "IP address"),
        ("bind_address", "", "IP address"),
        ("username", "", "letters, digits"),
        ("opencode_version", "v1", "release version"),
        ("image", "sandbox:has space", "image reference"),
        ("image", "https://ghcr.io/a", "image reference"),
        ("registries", "https://ghcr.io", "registry prefixes"),
        ("registries", "[1]", "registry prefixes"),
        ("registries", "[not json", "registry prefixes"),
        ("env", "A=1", "environment variable names"),
        ("env", '{"A B": "1"}', "names must match"),
        ("start_timeout", "0", "1 or more"),
        ("stop_timeout", "-1", "1 or more"),
    ],
)
def test_set_rejects_bad_values_in_one_line(key: str, raw: str, rule: str) -> None:
    with pytest.raises(ConfigValidationError) as info:
        set_value(Config(), key, raw)
    error = info.value
    assert error.document is False
    assert key in error.message
    assert rule in error.message
    assert "\n" not in error.message
    assert hint_for(error).startswith("For example: occ config")


def test_set_of_unknown_key_lists_the_valid_keys() -> None:
    with pytest.raises(UnknownConfigKey) as info:
        set_value(Config(), "prot", "8080")
    assert "'prot'" in info.value.message
    assert "Did you mean 'port'?" in info.value.message
    for key in KEYS:
        if key not in RETIRED_KEYS:
            assert key in hint_for(info.value)


def test_password_is_not_a_key() -> None:
    with pytest.raises(UnknownConfigKey, match="password is not kept"):
        set_value(Config(), "password", "secret")


def test_get_of_unknown_key_errors() -> None:
    with pytest.raises(UnknownConfigKey):
        get_value(Config(), "nope")


def test_unset_goes_back_to_the_default() -> None:
    config = set_value(Config(), "port", "8080")
    config = unset_value(config, "port")
    assert config.port == 3000
    assert not is_set(config, "port")


def test_unset_removes_an_unknown_key_the_file_has() -> None:
    config = Config.model_validate({"prot": 1, "port": 8080})
    assert unset_value(config, "prot").model_extra == {}
    with pytest.raises(UnknownConfigKey):
        unset_value(config, "other")


def test_reset_is_all_defaults() -> None:
    assert reset_config() == Config()
    assert reset_config().model_fields_set == set()


def test_env_set_unset_list() -> None:
    config = env_set(Config(), "B=2")
    config = env_set(config, "A=x=y")
    config = env_set(config, "EMPTY=")
    assert env_list(config) == {"A": "x=y", "B": "2", "EMPTY": ""}
    assert list(env_list(config)) == ["A", "B", "EMPTY"]
    assert get_value(config, "env.A") == "x=y"
    config = env_unset(config, "B")
    assert env_list(config) == {"A": "x=y", "EMPTY": ""}
    config = env_unset(env_unset(config, "A"), "EMPTY")
    assert config.env == {}
    assert not is_set(config, "env")


def test_env_overwrite_keeps_other_variables() -> None:
    config = env_set(env_set(Config(), "A=1"), "B=2")
    assert env_set(config, "A=3").env == {"A": "3", "B": "2"}


@pytest.mark.parametrize(
    "assignment", ["NOEQUALS", "A B=1", "=1", "1A=1", "A-B=1", "OPENCODE_SERVER_PASSWORD=x"]
)
def test_env_set_rejects_bad_assignments(assignment: str) -> None:
    with pytest.raises(ConfigValidationError) as info:
        env_set(Config(), assignment)
    assert "\n" not in info.value.message


def test_env_unset_of_missing_variable() -> None:
    with pytest.raises(ConfigError, match="FOO is not set"):
        env_unset(Config(), "FOO")
    assert env_unset(Config(), "FOO", missing_ok=True) == Config()


def test_dotted_env_keys_work_in_get_set_unset() -> None:
    config = set_value(Config(), "env.TOKEN", "abc")
    assert get_value(config, "env.TOKEN") == "abc"
    assert unset_value(config, "env.TOKEN").env == {}
    with pytest.raises(UnknownConfigKey):
        get_value(config, "env.OTHER")


def test_edits_do_not_mutate_their_input() -> None:
    data = {"env": {"A": "1"}, "registries": ["ghcr.io/a"]}
    env_set(data, "B=2")
    set_value(data, "registries", "docker.io/b")
    assert data == {"env": {"A": "1"}, "registries": ["ghcr.io/a"]}
    config = env_set(Config(), "A=1")
    env_set(config, "B=2")
    assert config.env == {"A": "1"}


def test_config_is_immutable() -> None:
    config = Config()
    with pytest.raises(ValueError):
        config.port = 1


def test_config_values_lists_every_key() -> None:
    """Every key in use; a retired one only while the file still sets it."""
    from opencode_cloud.config.schema import RETIRED_KEYS

    current = [key for key in KEYS if key not in RETIRED_KEYS]
    assert list(config_values(Config.model_validate({"zzz": 1}))) == current
    old = Config.model_validate({"restart_retries": 3})
    assert list(config_values(old)) == list(KEYS)


def test_key_info_describes_every_key() -> None:
    infos = list_keys()
    assert [info.name for info in infos] == list(KEYS)
    for info in infos:
        assert info.description and info.rule.startswith("must")
    assert key_info("port").default == 3000
    assert key_info("port").kind == "integer"
    assert key_info("registries").kind == "list"
    assert key_info("env").kind == "mapping"
    assert key_info("image").kind == "optional string"
    with pytest.raises(UnknownConfigKey):
        key_info("nope")


def test_parse_value_checks_the_rule() -> None:
    assert parse_value("port", "1") == 1
    with pytest.raises(ConfigValidationError):
        parse_value("port", "0")


@given(st.integers(min_value=1, max_value=65535))
def test_port_set_get_round_trip(port: int) -> None:
    assert get_value(set_value(Config(), "port", str(port)), "port") == port


@given(st.ip_addresses())
def test_any_ip_address_is_a_valid_bind_address(address: object) -> None:
    assert get_value(set_value(Config(), "bind_address", str(address)), "bind_address") == str(
        address
    )


@given(st.text(max_size=20))
def test_env_set_never_crashes(value: str) -> None:
    try:
        config = env_set(Config(), f"A={value}")
    except ConfigValidationError as exc:
        assert "\n" not in exc.message
        exc.message.encode("utf-8")
        return
    assert config.env == {"A": value}


@given(st.text(max_size=20))
def test_set_port_never_crashes(raw: str) -> None:
    try:
        config = set_value(Config(), "port", raw)
    except ConfigValidationError:
        return
    assert 1 <= config.port <= 65535
