"""The CLI in-process: global options, config commands, and every bad-input case.

Each bad input must give a one-line error with a hint, a non-zero exit, and change
nothing on disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cli_runner import Result, runner
from opencode_cloud import __version__
from opencode_cloud.cli.output import ExitCode


@pytest.fixture
def occ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("OCC_INSTANCE", raising=False)

    return runner(capsys)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "cfg" / "config.json"


def _assert_one_line_error(result: Result) -> None:
    assert result.code != 0
    lines = result.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    hints = [line for line in lines if line.startswith("Hint:")]
    assert len(errors) == 1, result.err
    assert len(hints) == 1, result.err
    assert "Traceback" not in result.err


def test_version(occ) -> None:
    result = occ("--version")
    assert result.code == 0
    assert result.out.strip() == f"opencode-cloud {__version__}"


def test_help_lists_every_command(occ) -> None:
    result = occ("--help")
    assert result.code == 0
    for command in (
        "start",
        "stop",
        "restart",
        "status",
        "logs",
        "build",
        "pull",
        "config",
        "auth",
    ):
        assert f"  {command}" in result.out


def test_config_set_get_show_roundtrip(occ, config_file: Path) -> None:
    assert occ("config", "set", "port", "8080").code == 0
    assert json.loads(occ("--json", "config", "get", "port").out) == {"port": 8080}
    shown = json.loads(occ("--json", "config", "show").out)
    assert shown["port"] == 8080 and shown["bind_address"] == "127.0.0.1"
    assert config_file.stat().st_mode & 0o777 == 0o600
    assert occ("config", "unset", "port").code == 0
    assert json.loads(occ("--json", "config", "get", "port").out) == {"port": 3000}


def test_config_path_follows_occ_config_dir(occ, config_file: Path) -> None:
    assert occ("config", "path").out.strip() == str(config_file)


def test_named_instance_has_its_own_config(occ, tmp_path: Path) -> None:
    assert occ("--instance", "work", "config", "set", "port", "4000").code == 0
    assert json.loads(occ("--json", "config", "get", "port").out) == {"port": 3000}
    assert (tmp_path / "cfg" / "instances" / "work" / "config.json").exists()


def test_env_set_list_unset(occ) -> None:
    assert occ("config", "env", "set", "TZ=Europe/Paris").code == 0
    assert occ("config", "env", "set", "EMPTY=").code == 0
    assert json.loads(occ("--json", "config", "env", "list").out) == {
        "TZ": "Europe/Paris",
        "EMPTY": "",
    }
    assert occ("config", "env", "unset", "TZ").code == 0
    assert json.loads(occ("--json", "config", "env", "list").out) == {"EMPTY": ""}


@pytest.mark.parametrize(
    "args",
    [
        ("config", "set", "port", "0"),
        ("config", "set", "port", "65536"),
        ("config", "set", "port", "abc"),
        ("config", "set", "bind_address", "not-an-ip"),
        ("config", "set", "bind_address", "300.1.1.1"),
        ("config", "env", "set", "BAD KEY=1"),
        ("config", "env", "set", "=value"),
        ("config", "env", "set", "NOEQUALS"),
        ("config", "env", "unset", "A=B"),
        ("config", "set", "no_such_key", "1"),
    ],
)
def test_bad_config_input_changes_nothing(occ, config_file: Path, args: tuple[str, ...]) -> None:
    assert occ("config", "set", "port", "4321").code == 0
    before = config_file.read_bytes()
    result = occ(*args)
    _assert_one_line_error(result)
    assert config_file.read_bytes() == before


@pytest.mark.parametrize("port", ["0", "65536", "abc"])
def test_start_with_bad_port_is_refused_before_docker(occ, config_file: Path, port: str) -> None:
    result = occ("start", "--port", port)
    assert result.code != 0
    assert "Traceback" not in result.err
    assert not config_file.exists()


def test_trailing_comma_and_comments_are_fine(occ, config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text('{\n  // my port\n  "port": 8080,\n}\n')
    assert json.loads(occ("--json", "config", "get", "port").out) == {"port": 8080}
    assert occ("config", "validate").code == 0


def test_garbage_config_gives_line_and_column(occ, config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text('{\n  "port": 8080\n  garbage here\n}\n')
    before = config_file.read_bytes()
    result = occ("config", "validate")
    _assert_one_line_error(result)
    assert result.code == ExitCode.CONFIG_INVALID
    assert str(config_file) in result.err
    assert "line 3" in result.err
    assert config_file.read_bytes() == before


def test_invalid_value_in_file_names_file_key_value_rule(occ, config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text('{"port": 70000}')
    result = occ("config", "show")
    _assert_one_line_error(result)
    assert str(config_file) in result.err
    assert "port" in result.err and "70000" in result.err and "65535" in result.err


def test_unknown_key_in_file_warns_but_works(occ, config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text('{"port": 8080, "colour": "blue"}')
    result = occ("--json", "config", "get", "port")
    assert result.code == 0
    assert json.loads(result.out) == {"port": 8080}
    assert "colour" in result.err and "Warning" in result.err


def test_unreadable_config_file(occ, config_file: Path) -> None:
    # Tests run as root, where chmod 000 does not stop reads: a directory in the file's
    # place fails the same way an unreadable file does.
    config_file.mkdir(parents=True)
    result = occ("config", "show")
    _assert_one_line_error(result)
    assert result.code == ExitCode.CONFIG_INVALID
    assert config_file.is_dir()


@pytest.mark.parametrize(
    "name",
    # ... and names of another instance's team: the default's person bob, work's door.
    ["a/b", "has space", "UPPER", "x" * 41, "-lead", "user-bob", "work-user-bob", "work-door"],
)
def test_bad_instance_names(occ, tmp_path: Path, name: str) -> None:
    result = occ("--instance", name, "config", "show")
    _assert_one_line_error(result)
    assert result.code == ExitCode.USAGE
    assert not (tmp_path / "cfg").exists()


@pytest.mark.parametrize("name", ["power-user", "doorman", "users-bob", "work"])
def test_instance_names_near_the_reserved_parts_are_fine(name: str) -> None:
    from opencode_cloud.instance import validate_instance_name

    assert validate_instance_name(name) == name


def test_bad_instance_name_from_environment(occ, monkeypatch) -> None:
    monkeypatch.setenv("OCC_INSTANCE", "Not/Ok")
    _assert_one_line_error(occ("config", "show"))


def test_exposing_needs_yes_when_not_interactive(occ, config_file: Path) -> None:
    result = occ("config", "set", "bind_address", "0.0.0.0")
    _assert_one_line_error(result)
    assert "--yes" in result.err
    assert not config_file.exists()
    result = occ("config", "set", "bind_address", "0.0.0.0", "--yes")
    assert result.code == 0
    assert "Warning" in result.err
    assert json.loads(config_file.read_text())["bind_address"] == "0.0.0.0"
    # A password exists before the service can ever listen on the network.
    password = config_file.parent / "password"
    assert password.exists() and password.stat().st_mode & 0o777 == 0o600


def test_json_errors_go_to_stdout_as_json(occ) -> None:
    result = occ("--json", "config", "set", "port", "abc")
    assert result.code == ExitCode.CONFIG_INVALID
    data = json.loads(result.out)
    assert "port" in data["error"] and data["hint"]


def test_docker_down_gives_the_command_that_starts_it(occ, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/dead.sock")
    result = occ("status")
    _assert_one_line_error(result)
    assert result.code == ExitCode.DOCKER_UNAVAILABLE
    assert "not running" in result.err
    assert "start" in result.err.split("Hint:")[1]


@pytest.mark.parametrize(
    ("quick", "through_click"),
    [
        (["status"], ["status", "-v"]),
        (["status", "--json"], ["--json", "-v", "status"]),
        (["--json", "status"], ["--json", "status", "-q"]),
    ],
)
def test_the_quick_status_fails_as_the_command_through_click_does(
    occ, monkeypatch, tmp_path: Path, quick: list[str], through_click: list[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/dead.sock")
    for instance in ("work", "Not-a-name"):
        monkeypatch.setenv("OCC_INSTANCE", instance)
        fast, slow = occ(*quick), occ(*through_click)
        assert (fast.code, fast.out, fast.err) == (slow.code, slow.out, slow.err)
        assert fast.code in (ExitCode.DOCKER_UNAVAILABLE, ExitCode.USAGE)
        assert fast.err.startswith("Error: ") and fast.err.count("Hint: ") == 1


def test_config_reset_needs_yes_and_keeps_a_backup(occ, config_file: Path) -> None:
    assert occ("config", "set", "port", "8080").code == 0
    _assert_one_line_error(occ("config", "reset"))
    assert json.loads(config_file.read_text())["port"] == 8080
    assert occ("config", "reset", "--yes").code == 0
    assert json.loads(occ("--json", "config", "get", "port").out) == {"port": 3000}
    assert Path(str(config_file) + ".bak").exists()


def test_no_colour_when_not_a_terminal(occ) -> None:
    result = occ("config", "set", "port", "abc")
    assert "\033[" not in result.err


def test_quiet_hides_progress_not_results(occ) -> None:
    result = occ("-q", "config", "set", "port", "8081")
    assert result.code == 0
    assert "port = 8081" in result.out
    assert result.err == ""


def test_subprocess_entry_point(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "OCC_CONFIG_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "opencode_cloud", "config", "set", "port", "x"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == ExitCode.CONFIG_INVALID
    assert proc.stdout == ""
    assert proc.stderr.startswith("Error:")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["status", "--json"], ["--json", "status"]),
        (["stop", "-q", "--instance", "w"], ["-q", "--instance", "w", "stop"]),
        (["--instance=w", "logs", "-f"], ["--instance=w", "logs", "-f"]),
        (["config", "env", "set", "A=--json"], ["config", "env", "set", "A=--json"]),
        (["logs", "--", "--json"], ["logs", "--", "--json"]),
    ],
)
def test_global_options_may_follow_the_command(given: list[str], expected: list[str]) -> None:
    from opencode_cloud.cli.app import hoist_global_options

    assert hoist_global_options(given) == expected


def test_json_flag_after_the_command(occ) -> None:
    assert occ("config", "set", "port", "8080").code == 0
    assert json.loads(occ("config", "get", "port", "--json").out) == {"port": 8080}


def test_completion_script_for_bash(occ) -> None:
    result = occ("completion", "bash")
    assert result.code == 0
    assert "_OCC_COMPLETE" in result.out
    assert "_occ_completion" in result.out


def test_completion_needs_a_known_shell(occ, monkeypatch: pytest.MonkeyPatch) -> None:
    assert occ("completion", "tcsh").code == ExitCode.USAGE
    monkeypatch.setenv("SHELL", "/bin/zsh")
    result = occ("completion")
    assert result.code == 0
    assert "#compdef occ" in result.out


def test_usage_errors_exit_2_with_the_usage_line(occ) -> None:
    result = occ("logs", "-n", "-1")
    assert result.code == ExitCode.USAGE
    assert result.err.startswith("Usage: occ logs")
    assert "Traceback" not in result.err
    assert occ("start", "--build", "--pull").code == ExitCode.USAGE
    assert occ("no-such-command").code == ExitCode.USAGE


def test_groups_without_a_command_show_help(occ) -> None:
    for args in ((), ("config",), ("config", "env"), ("auth",)):
        result = occ(*args)
        assert result.code == ExitCode.USAGE
        assert "Usage: occ" in result.out + result.err
        assert "Commands:" in result.out + result.err


def test_logs_since_accepts_relative_absolute_and_iso_times() -> None:
    import time

    import click

    from opencode_cloud.cli.commands.logs import parse_since

    now = int(time.time())
    assert abs(parse_since("10m") - (now - 600)) <= 2
    assert abs(parse_since("2h") - (now - 7200)) <= 2
    assert parse_since("1700000000") == 1700000000
    assert parse_since("2026-01-31T12:00:00+00:00") == 1769860800
    with pytest.raises(click.BadParameter):
        parse_since("yesterday")


def test_logs_with_a_bad_since_is_a_usage_error(occ) -> None:
    result = occ("logs", "--since", "yesterday")
    assert result.code == ExitCode.USAGE
    assert "10m" in result.err


# --------------------------------------------------------------------------- team mode


@pytest.mark.parametrize(
    "args",
    [
        ("user", "list"),
        ("user", "add", "alice"),
        ("user", "disable", "alice"),
        ("logs", "--user", "alice"),
        ("shell", "--user", "alice", "--", "true"),
        ("backup", "--all"),
    ],
)
def test_people_commands_outside_team_mode_say_how_to_turn_it_on(occ, args) -> None:
    result = occ(*args)
    assert result.code == ExitCode.USAGE, result.err
    _assert_one_line_error(result)
    assert "not in team mode" in result.err and "occ team enable" in result.err


@pytest.mark.parametrize("name", ["Alice", "1bob", "-x", "a" * 31, "ann/../bob", "bob_"])
def test_a_bad_person_name_is_one_line_and_changes_nothing(occ, tmp_path: Path, name) -> None:
    result = occ("logs", "--user", name)
    assert result.code == ExitCode.USAGE, result.err
    _assert_one_line_error(result)
    assert "Invalid name" in result.err
    assert not (tmp_path / "cfg" / "team.json").exists()


def test_team_status_outside_team_mode(occ) -> None:
    result = occ("--json", "team", "status")
    assert result.code == 0
    assert json.loads(result.out) == {"team": False}
