"""`occ mount add|list|remove` in-process: what reaches config.json, and every bad input.

A bad input gives one `Error:` line and one `Hint:` line, a non-zero exit, and leaves
config.json byte for byte as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cli_runner import Result, runner
from opencode_cloud.cli.output import ExitCode

RESTART_NOTE = "Applies on the next start: run `occ restart` if the service is running."


@pytest.fixture
def occ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("OCC_INSTANCE", raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.chdir(tmp_path)

    return runner(capsys)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "cfg" / "config.json"


@pytest.fixture
def code(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    return folder


def _stored(config_file: Path) -> list[str]:
    return list(json.loads(config_file.read_text())["mounts"])


def _assert_one_line_error(result: Result) -> None:
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert len([line for line in lines if line.startswith("Error:")]) == 1, result.err
    assert len([line for line in lines if line.startswith("Hint:")]) == 1, result.err
    assert "Traceback" not in result.err


def test_add_list_remove(occ, config_file: Path, code: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()

    added = occ("mount", "add", str(code))
    assert added.code == 0, added.err
    assert added.out.strip() == f"{code} -> /home/opencode/projects/code (read-write) added."
    assert RESTART_NOTE in added.err
    assert occ("mount", "add", "data:/srv/data:ro").code == 0
    assert _stored(config_file) == [f"{code}:/home/opencode/projects/code", f"{data}:/srv/data:ro"]
    assert config_file.stat().st_mode & 0o777 == 0o600

    listed = occ("mount", "list")
    assert listed.code == 0
    lines = listed.out.splitlines()
    assert lines[0].split() == ["HOST", "CONTAINER", "MODE"]
    assert lines[1].split() == [str(code), "/home/opencode/projects/code", "read-write"]
    assert lines[2].split() == [str(data), "/srv/data", "read-only"]

    assert json.loads(occ("mount", "list", "--json").out) == {
        "mounts": [
            {"host": str(code), "container": "/home/opencode/projects/code", "read_only": False},
            {"host": str(data), "container": "/srv/data", "read_only": True},
        ]
    }

    removed = occ("mount", "remove", "/srv/data")
    assert removed.code == 0
    assert removed.out.strip() == f"{data}:/srv/data:ro removed."
    assert RESTART_NOTE in removed.err
    assert _stored(config_file) == [f"{code}:/home/opencode/projects/code"]

    assert occ("mount", "remove", str(code)).code == 0
    # The last mount removed takes the key with it: the file says only what was set.
    assert json.loads(config_file.read_text()) == {}
    assert "no host folders mounted" in occ("mount", "list").out


def test_add_keeps_the_rest_of_the_file(occ, config_file: Path, code: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text('{"port": 8080, "colour": "blue"}')
    result = occ("mount", "add", "code")
    assert result.code == 0
    assert "colour" in result.err  # the unknown key is reported, and kept
    assert json.loads(config_file.read_text()) == {
        "port": 8080,
        "colour": "blue",
        "mounts": [f"{code}:/home/opencode/projects/code"],
    }


def test_add_with_read_only_flag_and_json(occ, config_file: Path, code: Path) -> None:
    result = occ("--json", "mount", "add", "--read-only", "./code:/home/opencode/src")
    assert result.code == 0
    assert json.loads(result.out) == {
        "host": str(code),
        "container": "/home/opencode/src",
        "read_only": True,
    }
    assert _stored(config_file) == [f"{code}:/home/opencode/src:ro"]


def test_add_resolves_home_and_links(
    occ, config_file: Path, code: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "work").symlink_to(code)
    monkeypatch.setenv("HOME", str(home))
    assert occ("mount", "add", "~/work").code == 0
    assert _stored(config_file) == [f"{code}:/home/opencode/projects/code"]


def test_remove_by_relative_host_path(occ, config_file: Path, code: Path) -> None:
    assert occ("mount", "add", str(code)).code == 0
    assert occ("mount", "remove", "./code").code == 0
    assert "mounts" not in json.loads(config_file.read_text())


def test_remove_a_broken_entry_by_its_text(occ, config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text('{"mounts": ["code:/x"]}')
    assert occ("mount", "list").code == ExitCode.CONFIG_INVALID
    assert occ("mount", "remove", "code:/x").code == 0
    assert occ("mount", "list").code == 0


def test_changes_take_the_instance_lock_under_their_own_name(
    occ, code: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opencode_cloud.cli.context import AppContext

    taken: list[str] = []
    original = AppContext.changing

    @contextmanager
    def recording(self: AppContext, command: str) -> Iterator[None]:
        taken.append(command)
        with original(self, command):
            yield

    monkeypatch.setattr(AppContext, "changing", recording)
    assert occ("mount", "add", str(code)).code == 0
    assert occ("mount", "remove", str(code)).code == 0
    assert taken[0] == "mount add"
    assert "mount remove" in taken
    occ("mount", "list")
    assert "mount list" not in taken


def test_duplicate_hint_names_the_remove_command(occ, code: Path) -> None:
    assert occ("mount", "add", str(code)).code == 0
    result = occ("mount", "add", f"{code}:/home/opencode/again")
    _assert_one_line_error(result)
    assert f"`occ mount remove {code}`" in result.err

    result = occ("--instance", "work", "mount", "add", str(code))
    assert result.code == 0
    result = occ("--instance", "work", "mount", "add", str(code))
    assert f"`occ --instance work mount remove {code}`" in result.err


def test_warns_when_the_folder_holds_the_configuration(occ, tmp_path: Path) -> None:
    result = occ("mount", "add", f"{tmp_path}:/home/opencode/all")
    assert result.code == 0
    assert "Warning:" in result.err and "password" in result.err
    assert occ("mount", "remove", str(tmp_path)).code == 0
    result = occ("mount", "add", f"{tmp_path}:/home/opencode/all:ro")
    assert result.code == 0
    assert "Warning:" not in result.err


def test_help_lists_mount(occ) -> None:
    assert "  mount" in occ("--help").out
    result = occ("mount")
    assert result.code == ExitCode.USAGE
    for command in ("add", "list", "remove"):
        assert f"  {command}" in result.out + result.err


BAD_ADDS = [
    ("nope",),  # no such folder
    ("code/file.txt",),  # a file
    ("/",),
    ("/var/run",),
    ("/run",),
    ("code:/home/opencode",),
    ("code:/home/opencode/projects",),
    ("code:/home/opencode/.config",),
    ("code:/home/opencode/.local/share/opencode",),
    ("code:/home",),
    ("code:/usr/local/src",),
    ("code:/etc",),
    ("code:/tmp",),
    ("code:/",),
    ("code:relative",),
    ("code:",),
    ("",),
    ("code:/a:/b",),
    ("code:rw", "--read-only"),
    ("code\x00",),
    ("other",),  # the same folder again, through a link
    ("data:/home/opencode/projects/code",),  # the same container path again
]


@pytest.mark.parametrize("args", BAD_ADDS)
def test_bad_add_changes_nothing(
    occ, config_file: Path, code: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    (code / "file.txt").write_text("x")
    (tmp_path / "other").symlink_to(code)
    (tmp_path / "data").mkdir()
    assert occ("mount", "add", "code").code == 0
    before = config_file.read_bytes()
    result = occ("mount", "add", *args)
    _assert_one_line_error(result)
    assert RESTART_NOTE not in result.err
    assert config_file.read_bytes() == before


@pytest.mark.parametrize("args", [("code:/home/opencode",), ("nope",), ("/var",)])
def test_bad_add_without_a_file_creates_none(occ, config_file: Path, code: Path, args) -> None:
    _assert_one_line_error(occ("mount", "add", *args))
    assert not config_file.exists()


@pytest.mark.parametrize("target", ["/srv/nothing", "nothing", "/home/opencode", ""])
def test_remove_unknown_changes_nothing(occ, config_file: Path, code: Path, target: str) -> None:
    assert occ("mount", "add", "code").code == 0
    before = config_file.read_bytes()
    result = occ("mount", "remove", target)
    _assert_one_line_error(result)
    assert f"{code}:/home/opencode/projects/code" in result.err  # the hint lists what there is
    assert "occ mount list" in result.err
    assert config_file.read_bytes() == before


def test_remove_with_no_mounts(occ, config_file: Path) -> None:
    result = occ("mount", "remove", "/srv/code")
    _assert_one_line_error(result)
    assert "No host folders are mounted." in result.err
    assert not config_file.exists()


def test_invalid_file_is_left_alone(occ, config_file: Path, code: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text('{"port": 70000}')
    before = config_file.read_bytes()
    result = occ("mount", "add", "code")
    _assert_one_line_error(result)
    assert result.code == ExitCode.CONFIG_INVALID
    assert "port" in result.err
    assert config_file.read_bytes() == before


def test_json_error_on_stdout(occ, config_file: Path) -> None:
    result = occ("--json", "mount", "add", "nope")
    assert result.code != 0
    data = json.loads(result.out)
    assert "nope" in data["error"] and data["hint"]
    assert not config_file.exists()
