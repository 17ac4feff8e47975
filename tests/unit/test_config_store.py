"""Reading, validating and writing the configuration file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencode_cloud.cli.hints import hint_for
from opencode_cloud.config import paths, store
from opencode_cloud.config.edit import env_set, set_value, unset_value
from opencode_cloud.config.errors import (
    ConfigError,
    ConfigReadError,
    ConfigSyntaxError,
    ConfigValidationError,
    ConfigWriteError,
)
from opencode_cloud.config.schema import Config
from opencode_cloud.config.store import (
    load_config,
    parse_config_text,
    read_config_data,
    reset_config_file,
    save_config,
    update_config,
)
from opencode_cloud.errors import OpencodeCloudError
from opencode_cloud.instance import Instance


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "occ"))
    return paths.instance_paths().config_file


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- loading -------------------------------------------------------------------------


def test_missing_file_means_every_default(config_file: Path) -> None:
    loaded = load_config(config_file)
    assert loaded.config == Config()
    assert loaded.exists is False
    assert loaded.warnings == []
    assert loaded.config.port == 3000
    assert loaded.config.bind_address == "127.0.0.1"
    assert loaded.config.username == "opencode"
    assert loaded.config.opencode_version == "1.18.33"
    assert loaded.config.image is None
    assert loaded.config.registries == []
    assert loaded.config.ca_certificates == []
    assert loaded.config.env == {}
    assert loaded.config.restart_retries == 5
    assert loaded.config.start_timeout == 120
    assert loaded.config.stop_timeout == 10


def test_named_instance_has_its_own_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path))
    work = paths.instance_paths(Instance("work")).config_file
    assert work == tmp_path / "instances" / "work" / "config.json"
    save_config(work, set_value(Config(), "port", "4000"))
    assert load_config(work).config.port == 4000
    assert load_config(paths.instance_paths().config_file).config.port == 3000


def test_comments_and_trailing_commas_are_fine(config_file: Path) -> None:
    write(
        config_file,
        """// opencode-cloud
        {
          /* the web UI */
          "port": 8080,
          "env": {"A": "1",},
          "registries": ["ghcr.io/acme",],
        }
        """,
    )
    config = load_config(config_file).config
    assert config.port == 8080
    assert config.env == {"A": "1"}
    assert config.registries == ["ghcr.io/acme"]


def test_empty_file_means_defaults(config_file: Path) -> None:
    write(config_file, "  \n")
    assert load_config(config_file).config == Config()


def test_byte_order_mark_is_accepted(config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_bytes(b'\xef\xbb\xbf{"port": 8081}')
    assert load_config(config_file).config.port == 8081


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("garbage", 1, 1),
        ('{\n  "port": 30 00\n}', 2, 14),
        ('{\n  "port": 3000\n  "bind_address": "127.0.0.1"\n}', 3, 3),
        ('{"port": 3000', 1, 14),
    ],
)
def test_syntax_error_gives_line_and_column(
    config_file: Path, text: str, line: int, column: int
) -> None:
    write(config_file, text)
    with pytest.raises(ConfigSyntaxError) as info:
        load_config(config_file)
    error = info.value
    assert (error.line, error.column) == (line, column)
    assert f"line {line}, column {column}" in error.message
    assert str(config_file) in error.message
    assert "\n" not in error.message
    assert hint_for(error)


def test_top_level_must_be_an_object(config_file: Path) -> None:
    write(config_file, "[1, 2]")
    with pytest.raises(ConfigSyntaxError, match="top level must be an object"):
        load_config(config_file)


def test_duplicate_keys_are_rejected(config_file: Path) -> None:
    write(config_file, '{"port": 1, "port": 2}')
    with pytest.raises(ConfigSyntaxError, match="Duplicate key"):
        load_config(config_file)


def test_non_utf8_file_is_a_clear_error(config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_bytes(b'{"username": "\xff"}')
    with pytest.raises(ConfigSyntaxError, match="not UTF-8"):
        load_config(config_file)


@pytest.mark.parametrize(
    ("content", "key", "shown", "rule"),
    [
        ({"port": 0}, "port", "0", "from 1 to 65535"),
        ({"port": 65536}, "port", "65536", "from 1 to 65535"),
        ({"port": "abc"}, "port", '"abc"', "from 1 to 65535"),
        ({"port": "3000"}, "port", '"3000"', "from 1 to 65535"),
        ({"port": 3000.5}, "port", "3000.5", "from 1 to 65535"),
        ({"port": True}, "port", "true", "from 1 to 65535"),
        ({"port": None}, "port", "null", "from 1 to 65535"),
        ({"bind_address": "localhost"}, "bind_address", '"localhost"', "IP address"),
        ({"bind_address": "300.1.1.1"}, "bind_address", '"300.1.1.1"', "IP address"),
        ({"bind_address": "[::1]"}, "bind_address", '"[::1]"', "IP address"),
        ({"env": {"A=B": "x"}}, "env", '"A=B"', "names must match"),
        ({"env": {"A B": "x"}}, "env", '"A B"', "names must match"),
        ({"env": {"1A": "x"}}, "env", '"1A"', "names must match"),
        ({"env": {"A": 1}}, "env.A", "1", "must be a string"),
        ({"env": ["A=1"]}, "env", '["A=1"]', "object of environment variable names"),
        ({"env": {"OPENCODE_SERVER_PASSWORD": "x"}}, "env", "OPENCODE_SERVER_PASSWORD", "pass"),
        ({"restart_retries": -1}, "restart_retries", "-1", "0 or more"),
        ({"start_timeout": 0}, "start_timeout", "0", "1 or more"),
        ({"stop_timeout": -5}, "stop_timeout", "-5", "1 or more"),
        ({"username": "a b"}, "username", '"a b"', "letters, digits"),
        ({"username": "a:b"}, "username", '"a:b"', "letters, digits"),
        ({"opencode_version": "latest"}, "opencode_version", '"latest"', "release version"),
        ({"image": "Not An Image"}, "image", '"Not An Image"', "image reference"),
        ({"registries": "ghcr.io/acme"}, "registries", '"ghcr.io/acme"', "list of registry"),
        ({"registries": ["https://ghcr.io"]}, "registries[0]", '"https://ghcr.io"', "no scheme"),
        ({"ca_certificates": ["certs/ca.pem"]}, "ca_certificates[0]", "certs/ca.pem", "absolute"),
    ],
)
def test_invalid_value_names_file_key_value_and_rule_in_one_line(
    config_file: Path, content: dict[str, object], key: str, shown: str, rule: str
) -> None:
    write(config_file, json.dumps(content))
    with pytest.raises(ConfigValidationError) as info:
        load_config(config_file)
    error = info.value
    assert isinstance(error, OpencodeCloudError)
    assert str(config_file) in error.message
    assert key in error.message
    assert shown in error.message
    assert rule in error.message
    assert "\n" not in error.message
    assert hint_for(error)
    assert error.problems and error.problems[0].key == key


def test_every_problem_is_reported(config_file: Path) -> None:
    write(config_file, '{"port": 0, "bind_address": "x", "stop_timeout": 0}')
    with pytest.raises(ConfigValidationError) as info:
        load_config(config_file)
    assert [problem.key for problem in info.value.problems] == [
        "port",
        "bind_address",
        "stop_timeout",
    ]


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "0.0.0.0", "192.168.1.20", "::1", "::", "fe80::1", "2001:db8::2"]
)
def test_ip_addresses_are_accepted(config_file: Path, address: str) -> None:
    write(config_file, json.dumps({"bind_address": address}))
    assert load_config(config_file).config.bind_address == address


@pytest.mark.parametrize(
    "image",
    [
        "ubuntu",
        "ubuntu:24.04",
        "ghcr.io/acme/opencode-sandbox:1.18.33",
        "localhost:5000/sandbox",
        "registry.example.com:5000/team/a_b/c-d:v1.0",
        "sandbox@sha256:" + "a" * 64,
    ],
)
def test_image_references_are_accepted(image: str) -> None:
    assert store.validate_config({"image": image}).image == image


def test_unknown_keys_warn_and_do_not_fail(config_file: Path) -> None:
    write(config_file, '{"prot": 8080, "future_key": {"x": 1}, "$schema": "config.schema.json"}')
    loaded = load_config(config_file)
    assert loaded.config.port == 3000
    assert len(loaded.warnings) == 2
    assert "'prot'" in loaded.warnings[0] and "did you mean 'port'" in loaded.warnings[0]
    assert "'future_key'" in loaded.warnings[1]
    assert all(str(config_file) in warning for warning in loaded.warnings)


def test_unknown_keys_survive_a_rewrite(config_file: Path) -> None:
    write(config_file, '{"future_key": {"x": [1, 2]}, "port": 8080}')
    update_config(config_file, lambda data: set_value(data, "bind_address", "0.0.0.0"))
    data = json.loads(config_file.read_text())
    assert data == {"future_key": {"x": [1, 2]}, "port": 8080, "bind_address": "0.0.0.0"}


# --- unreadable files ----------------------------------------------------------------


def test_directory_in_place_of_the_file_is_a_read_error(config_file: Path) -> None:
    config_file.mkdir(parents=True)
    with pytest.raises(ConfigReadError, match="is a directory") as info:
        load_config(config_file)
    assert str(config_file) in info.value.message
    assert info.value.hint


def test_permission_denied_is_a_read_error(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, which reads a mode-000 file anyway: simulate the refusal.
    write(config_file, "{}")
    real_open = open

    def refusing_open(file: object, *args: object, **kwargs: object) -> object:
        if Path(str(file)) == config_file:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", refusing_open)
    with pytest.raises(ConfigReadError, match="permission denied") as info:
        load_config(config_file)
    assert "chmod" in info.value.hint


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_mode_000_file_is_a_read_error(config_file: Path) -> None:
    write(config_file, "{}")
    config_file.chmod(0)
    try:
        with pytest.raises(ConfigReadError, match="permission denied"):
            load_config(config_file)
    finally:
        config_file.chmod(0o600)


# --- writing -------------------------------------------------------------------------


def test_save_creates_directory_and_0600_file(config_file: Path) -> None:
    save_config(config_file, set_value(Config(), "port", "8080"))
    assert mode(config_file) == 0o600
    assert stat.S_IMODE(config_file.parent.stat().st_mode) == 0o700
    assert json.loads(config_file.read_text()) == {"port": 8080}
    assert config_file.read_text().endswith("\n")


def test_save_keeps_the_mode_of_an_existing_file(config_file: Path) -> None:
    write(config_file, "{}")
    config_file.chmod(0o600)
    save_config(config_file, set_value(Config(), "port", "8080"))
    assert mode(config_file) == 0o600
    config_file.chmod(0o640)
    save_config(config_file, set_value(Config(), "port", "8081"))
    assert mode(config_file) == 0o640


def test_save_writes_only_explicit_keys(config_file: Path) -> None:
    config = env_set(set_value(Config(), "port", "8080"), "A=1")
    save_config(config_file, config)
    assert json.loads(config_file.read_text()) == {"port": 8080, "env": {"A": "1"}}
    save_config(config_file, unset_value(config, "port"))
    assert json.loads(config_file.read_text()) == {"env": {"A": "1"}}


def test_save_leaves_no_temporary_files(config_file: Path) -> None:
    for port in ("8080", "8081", "8082"):
        save_config(config_file, set_value(Config(), "port", port))
    assert sorted(p.name for p in config_file.parent.iterdir()) == ["config.json"]


def test_save_follows_a_symlink(config_file: Path, tmp_path: Path) -> None:
    real = write(tmp_path / "dotfiles" / "occ.json", "{}")
    config_file.parent.mkdir(parents=True)
    config_file.symlink_to(real)
    save_config(config_file, set_value(Config(), "port", "8080"))
    assert config_file.is_symlink()
    assert json.loads(real.read_text()) == {"port": 8080}


def test_save_refuses_an_invalid_config_and_keeps_the_file(config_file: Path) -> None:
    write(config_file, '{"port": 8080}')
    before = config_file.read_bytes()
    broken = Config.model_construct(port=0)
    with pytest.raises(ConfigValidationError):
        save_config(config_file, broken)
    assert config_file.read_bytes() == before


def test_failed_write_keeps_the_file(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(config_file, '{"port": 8080}')
    before = config_file.read_bytes()

    def no_space(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(ConfigWriteError, match="no space left on device"):
        save_config(config_file, set_value(Config(), "port", "9090"))
    assert config_file.read_bytes() == before
    assert sorted(p.name for p in config_file.parent.iterdir()) == ["config.json"]


def test_unwritable_target_is_a_write_error(config_file: Path) -> None:
    config_file.mkdir(parents=True)
    with pytest.raises(ConfigWriteError) as info:
        save_config(config_file, Config())
    assert str(config_file) in info.value.message


# --- editing a file ------------------------------------------------------------------


def test_update_config_sets_a_key(config_file: Path) -> None:
    loaded = update_config(config_file, lambda data: set_value(data, "port", "8080"))
    assert loaded.config.port == 8080
    assert load_config(config_file).config.port == 8080
    assert mode(config_file) == 0o600


@pytest.mark.parametrize(
    "original",
    [
        '// mine\n{"port": 8080, /* keep */ "env": {"A": "1"},}\n',
        '{"port": 0}',  # invalid value
        '{"bind_address": "nowhere"}',  # invalid value in another key
        "garbage {",  # not JSON at all
    ],
)
@pytest.mark.parametrize(
    ("key", "raw"),
    [("port", "abc"), ("port", "0"), ("port", "65536"), ("bind_address", "foo"), ("nope", "1")],
)
def test_failed_set_leaves_the_bytes_unchanged(
    config_file: Path, original: str, key: str, raw: str
) -> None:
    write(config_file, original)
    before = config_file.read_bytes()
    with pytest.raises(ConfigError):
        update_config(config_file, lambda data: set_value(data, key, raw))
    assert config_file.read_bytes() == before


def test_failed_env_set_leaves_the_bytes_unchanged(config_file: Path) -> None:
    write(config_file, '{"env": {"A": "1"}}')
    before = config_file.read_bytes()
    for assignment in ("A B=1", "=1", "NOEQUALS", "OPENCODE_SERVER_PASSWORD=x", "A=\udcff"):

        def change(data: dict[str, object], assignment: str = assignment) -> Config:
            return env_set(data, assignment)

        with pytest.raises(ConfigError):
            update_config(config_file, change)
    assert config_file.read_bytes() == before


def test_set_repairs_the_broken_key_of_an_invalid_file(config_file: Path) -> None:
    write(config_file, '{"port": 0, "username": "bob"}')
    update_config(config_file, lambda data: set_value(data, "port", "8080"))
    assert json.loads(config_file.read_text()) == {"port": 8080, "username": "bob"}


def test_set_on_an_invalid_file_names_the_file(config_file: Path) -> None:
    write(config_file, '{"port": 0}')
    with pytest.raises(ConfigValidationError) as info:
        update_config(config_file, lambda data: set_value(data, "username", "bob"))
    assert str(config_file) in info.value.message
    assert "port is 0" in info.value.message


def test_invalid_value_error_does_not_blame_the_file(config_file: Path) -> None:
    write(config_file, '{"port": 8080}')
    with pytest.raises(ConfigValidationError) as info:
        update_config(config_file, lambda data: set_value(data, "port", "abc"))
    assert str(config_file) not in info.value.message
    assert 'port is "abc"' in info.value.message
    assert "occ config set port 8080" in hint_for(info.value)


def test_reset_replaces_even_garbage_and_keeps_a_backup(config_file: Path) -> None:
    write(config_file, "garbage {")
    config_file.chmod(0o640)
    backup = reset_config_file(config_file)
    assert load_config(config_file).config == Config()
    assert backup is not None and backup.read_text() == "garbage {"
    assert mode(backup) == 0o600
    assert mode(config_file) == 0o640


def test_reset_without_a_file(config_file: Path) -> None:
    assert reset_config_file(config_file) is None
    assert json.loads(config_file.read_text()) == {}


def test_read_config_data_skips_validation(config_file: Path) -> None:
    write(config_file, '{"port": 0}')
    assert read_config_data(config_file) == {"port": 0}


# --- properties ----------------------------------------------------------------------


# No deadline: each example writes and syncs a file, which a loaded machine slows.
@settings(
    max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(st.text(max_size=200))
def test_any_text_parses_or_raises_a_syntax_error(text: str) -> None:
    try:
        data = parse_config_text(text, Path("config.json"))
    except ConfigSyntaxError as exc:
        assert "\n" not in exc.message
    else:
        assert isinstance(data, dict)


@settings(
    max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(port=st.integers(min_value=1, max_value=65535))
def test_any_valid_port_round_trips_through_set_save_load(config_file: Path, port: int) -> None:
    update_config(config_file, lambda data: set_value(data, "port", str(port)))
    assert load_config(config_file).config.port == port


@settings(
    max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(port=st.one_of(st.integers(max_value=0), st.integers(min_value=65536)))
def test_any_invalid_port_is_refused(config_file: Path, port: int) -> None:
    with pytest.raises(ConfigValidationError):
        update_config(config_file, lambda data: set_value(data, "port", str(port)))
    assert not config_file.exists()


@settings(
    max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(
    env=st.dictionaries(
        st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,20}\Z").filter(
            lambda name: not name.startswith("OPENCODE_SERVER_")
        ),
        st.text(
            alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]),
            max_size=30,
        ),
        max_size=5,
    )
)
def test_any_valid_env_round_trips(config_file: Path, env: dict[str, str]) -> None:
    save_config(config_file, store.validate_config({"env": env}))
    assert load_config(config_file).config.env == env
