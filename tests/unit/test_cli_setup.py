"""`occ setup` in-process, with the flags scripts use (`--no-start`: the real start is in
tests/e2e/test_setup_e2e.py, and the questions are asked in a real terminal there): what
reaches config.json, only what changed, bad input refused with the file byte for byte as
it was, and the engine step's wiring."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from cli_runner import isolated_runner, one_error
from fakes import FakeEngine
from opencode_cloud.cli.output import ExitCode
from opencode_cloud.docker.errors import DaemonNotRunning, DockerPermissionDenied
from opencode_cloud.doctor import engine_install
from opencode_cloud.doctor.engine_install import Machine

COMMENTED = '// my settings\n{\n  "port": 4100, // the port I like\n  "env": {"TZ": "UTC"}\n}\n'


@pytest.fixture
def occ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    return isolated_runner(tmp_path, monkeypatch, capsys)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "cfg" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text(COMMENTED)
    return path


@pytest.fixture
def code(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    return folder


def test_the_tls_choices_are_the_configurations() -> None:
    from opencode_cloud.cli.commands.setup import TLS_CHOICES
    from opencode_cloud.config.schema import TLS_MODES

    assert TLS_CHOICES == TLS_MODES


def test_without_a_terminal_it_needs_yes(occ, config_file: Path) -> None:
    result = occ("setup")
    assert result.code == ExitCode.USAGE
    assert "flags" in one_error(result)
    assert "`occ setup --yes`" in result.err
    assert config_file.read_text() == COMMENTED


def test_flags_write_only_what_changed_and_keep_comments(occ, config_file: Path, code) -> None:
    result = occ("setup", "--yes", "--no-start", "--port", "4100", "--mount", str(code))
    assert result.code == 0, result.err
    text = config_file.read_text()
    assert "// the port I like" in text and "// my settings" in text
    data = json.loads("\n".join(line.split("//")[0] for line in text.splitlines()))
    assert data == {
        "port": 4100,
        "env": {"TZ": "UTC"},
        "mounts": [f"{code}:/home/opencode/projects/code"],
    }
    assert "port" not in result.err  # the same port: not a change
    assert f"mount {code}" in result.err

    again = occ("setup", "--yes", "--no-start", "--port", "4100", "--mount", str(code))
    assert again.code == 0
    assert "The settings stay as they are." in again.err
    assert config_file.read_text() == text


def test_expose_means_https_and_back(occ, config_file: Path) -> None:
    assert occ("config", "set", "tls", "off").code == 0
    result = occ("setup", "--yes", "--no-start", "--expose", "--host-name", "box.lan")
    assert result.code == 0, result.err
    shown = json.loads(occ("--json", "config", "show").out)
    assert shown["bind_address"] == "0.0.0.0"
    assert shown["tls"] == "auto"  # "over HTTPS": off is turned back to auto
    assert shown["host_names"] == ["box.lan"]

    assert occ("setup", "--yes", "--no-start", "--no-expose").code == 0
    shown = json.loads(occ("--json", "config", "show").out)
    assert shown["bind_address"] == "127.0.0.1"
    assert shown["host_names"] == ["box.lan"]  # kept for the next time


def test_exposing_needs_a_yes(occ, config_file: Path) -> None:
    """Without --yes (a person at a terminal said no): refused, nothing written."""
    from opencode_cloud.cli.commands.setup import Answers, _apply
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.cli.output import Output
    from opencode_cloud.errors import NotConfirmed
    from opencode_cloud.instance import Instance

    ctx = AppContext(instance=Instance("default"), out=Output())
    with pytest.raises(NotConfirmed):
        _apply(ctx, Answers({"bind_address": "0.0.0.0"}), yes=False)
    assert config_file.read_text() == COMMENTED


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--port", "0"], ExitCode.USAGE),
        (["--port", "http"], ExitCode.USAGE),
        (["--host-name", "not a name"], ExitCode.CONFIG_INVALID),
        (["--mount", "missing-folder"], ExitCode.CONFIG_INVALID),
        (["--mount", "/"], ExitCode.CONFIG_INVALID),
        (["--tls", "sometimes"], ExitCode.USAGE),
    ],
    ids=["port-0", "port-word", "host-name", "missing-folder", "root-folder", "tls"],
)
def test_bad_input_changes_nothing(occ, config_file: Path, args: list[str], code: int) -> None:
    result = occ("setup", "--yes", "--no-start", "--port", "4200", *args)
    assert result.code == code, result.err
    assert "Error:" in result.err and "Traceback" not in result.err
    assert config_file.read_text() == COMMENTED


def test_an_invalid_file_is_not_overwritten(occ, config_file: Path) -> None:
    config_file.write_text('{"port": "x"}')
    result = occ("setup", "--yes", "--no-start", "--port", "4200")
    assert result.code == ExitCode.CONFIG_INVALID
    one_error(result)
    assert config_file.read_text() == '{"port": "x"}'


# --------------------------------------------------------------------------- the engine step


class Recorder:
    """`RealActions` stand-in: records the plan's steps; the engine comes up on spawn."""

    def __init__(self, up: list[bool]) -> None:
        self.up = up
        self.ran: list[list[str]] = []

    def run(self, argv: Sequence[str]) -> tuple[int, str]:
        self.ran.append(list(argv))
        return 0, ""

    def spawn_dockerd(self, as_root: Sequence[str]) -> None:
        self.up.append(True)

    def dockerd_runs(self) -> bool:
        return bool(self.up)

    def remove_stale_pid_file(self, as_root: Sequence[str]) -> bool:
        return False


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> tuple[list[bool], list[Recorder]]:
    """No engine answers until the setup's plan started one; this is a Debian machine."""
    from opencode_cloud.cli.context import AppContext

    up: list[bool] = []
    made: list[Recorder] = []
    fake = FakeEngine()

    def connect(self, timeout=None):
        if not up:
            raise DaemonNotRunning("unix:///var/run/docker.sock")
        return fake

    def actions() -> Recorder:
        made.append(Recorder(up))
        return made[-1]

    monkeypatch.setattr(AppContext, "connect", connect)
    monkeypatch.setattr(engine_install, "RealActions", actions)
    monkeypatch.setattr(
        Machine,
        "here",
        classmethod(
            lambda cls: Machine(system="Linux", distro=frozenset({"debian"}), apt=True, root=True)
        ),
    )
    return up, made


def test_yes_installs_and_starts_the_engine_where_the_quick_start_would(
    occ, config_file: Path, no_engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    up, made = no_engine
    from opencode_cloud.cli.commands import setup as command

    started: list[bool] = []
    monkeypatch.setattr(command, "_start", lambda ctx, **_answers: started.append(True))
    result = occ("setup", "--yes", "--port", "4300")
    assert result.code == 0, result.err
    assert up == [True]
    assert [argv[-2:] for argv in made[0].ran] == [["-y", "update"], ["install", "docker.io"]]
    assert "The Docker engine answers." in result.err
    assert started == [True]


def test_where_it_cannot_install_it_says_how_and_changes_nothing(
    occ, config_file: Path, no_engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Machine, "here", classmethod(lambda cls: Machine(system="Darwin")))
    result = occ("setup", "--yes", "--port", "4300")
    assert result.code == ExitCode.DOCKER_UNAVAILABLE
    one_error(result)
    assert "Docker Desktop" in result.err
    assert config_file.read_text() == COMMENTED
    assert no_engine[1] == []


def test_a_socket_it_may_not_use_is_not_installed_over(
    occ, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opencode_cloud.cli.context import AppContext

    def denied(self, timeout=None):
        raise DockerPermissionDenied("unix:///var/run/docker.sock")

    monkeypatch.setattr(AppContext, "connect", denied)
    monkeypatch.setattr(engine_install, "RealActions", lambda: pytest.fail("not to install"))
    result = occ("setup", "--yes")
    assert result.code == ExitCode.DOCKER_UNAVAILABLE
    one_error(result)
    assert config_file.read_text() == COMMENTED


# --------------------------------------------------------------------------- the provider


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--api-key-file", "key.txt"], "--api-key-file needs --provider"),
        (["--provider", "anthropic"], "--provider needs --api-key-file"),
        (["--provider", "anthropic", "--api-key-file", "key.txt", "--no-start"], "--no-start"),
    ],
    ids=["key-without-provider", "provider-without-key", "provider-without-start"],
)
def test_provider_flags_that_do_not_go_together(
    occ, config_file: Path, tmp_path: Path, args: list[str], words: str
) -> None:
    (tmp_path / "key.txt").write_text("sk-test\n")
    result = occ("setup", "--yes", "--port", "4200", *args)
    assert result.code == ExitCode.USAGE
    assert words in result.err
    assert config_file.read_text() == COMMENTED


@pytest.mark.parametrize(
    ("content", "words"),
    [(None, "Cannot read the key file"), ("\n", "key"), ("two words\n", "key")],
    ids=["missing-file", "empty", "spaces"],
)
def test_a_key_file_that_holds_no_key_changes_nothing(
    occ, config_file: Path, tmp_path: Path, content: str | None, words: str
) -> None:
    key_file = tmp_path / "key.txt"
    if content is not None:
        key_file.write_text(content)
    result = occ(
        "setup", "--yes", "--port", "4200", "--provider", "openai", "--api-key-file", str(key_file)
    )
    assert result.code != 0
    assert words in one_error(result)
    assert config_file.read_text() == COMMENTED


def test_an_unknown_provider_changes_nothing(occ, config_file: Path, tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text("sk-test\n")
    result = occ("setup", "--yes", "--provider", "nope", "--api-key-file", "key.txt")
    assert result.code != 0
    assert "nope" in one_error(result)
    assert "anthropic" in result.err  # the hint names the known ones
    assert config_file.read_text() == COMMENTED


# --------------------------------------------------------------------------- the questions
# (answered here through standard input; tests/e2e/test_setup_e2e.py answers them in a real
# terminal)


@pytest.fixture
def answering(monkeypatch: pytest.MonkeyPatch):
    """Make `occ` see a person at a terminal who types `lines`."""
    import io

    from opencode_cloud.cli.output import Output

    monkeypatch.setattr(Output, "interactive", property(lambda self: True))

    def type_in(*lines: str) -> None:
        monkeypatch.setattr("sys.stdin", io.StringIO("".join(line + "\n" for line in lines)))

    return type_in


def test_the_network_answer_and_its_defaults_the_next_time(
    occ, config_file: Path, answering
) -> None:
    answering("http", "4500", "network", "box.lan,10.0.0.5", "", "y")
    first = occ("setup", "--no-start")
    assert first.code == 0, first.err
    assert "Port [4100]: " in first.err
    assert "Reachable from (local, network) [local]: " in first.err
    assert "Error: 'http' is not a valid integer" in first.err  # asked again
    assert "Port" not in first.out  # questions on stderr; stdout holds results
    shown = json.loads(occ("--json", "config", "show").out)
    assert (shown["port"], shown["bind_address"]) == (4500, "0.0.0.0")
    assert shown["host_names"] == ["box.lan", "10.0.0.5"]
    assert shown["tls"] == "auto"
    text = config_file.read_text()

    answering("", "", "", "")
    again = occ("setup", "--no-start")
    assert again.code == 0, again.err
    assert "Port [4500]: " in again.err
    assert "Reachable from (local, network) [network]: " in again.err
    assert "[box.lan,10.0.0.5]: " in again.err
    assert "The settings stay as they are." in again.err
    assert config_file.read_text() == text


def test_a_no_to_exposing_changes_nothing(occ, config_file: Path, answering) -> None:
    answering("", "network", "box.lan", "", "n")
    result = occ("setup", "--no-start")
    assert result.code == ExitCode.USAGE
    assert "Error: Refusing to bind to 0.0.0.0 without confirmation." in result.err
    assert "Hint:" in result.err
    assert config_file.read_text() == COMMENTED


def test_a_folder_that_cannot_be_mounted_is_asked_again(
    occ, config_file: Path, code: Path, answering
) -> None:
    answering("", "local", "/", "does-not-exist", str(code))
    result = occ("setup", "--no-start")
    assert result.code == 0, result.err
    assert result.err.count("Error:") == 2
    assert json.loads(occ("--json", "config", "show").out)["mounts"] == [
        f"{code}:/home/opencode/projects/code"
    ]


def test_a_remote_hosts_engine_is_never_installed_here(
    occ, config_file: Path, no_engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opencode_cloud.cli.context import AppContext

    monkeypatch.setattr(AppContext, "remote_address", property(lambda self: "ssh://cloud"))
    result = occ("setup", "--yes", "--port", "4300")
    assert result.code == ExitCode.DOCKER_UNAVAILABLE
    one_error(result)
    assert no_engine[1] == []  # no plan carried out
    assert config_file.read_text() == COMMENTED


def test_a_failed_install_says_what_apt_said_and_changes_nothing(
    occ, config_file: Path, no_engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(self, argv: Sequence[str]) -> tuple[int, str]:
        return 100, "E: Unable to locate package docker.io"

    monkeypatch.setattr(Recorder, "run", failing)
    result = occ("setup", "--yes", "--port", "4300")
    assert result.code == ExitCode.ERROR
    assert "apt-get update" in one_error(result)
    assert "  E: Unable to locate package docker.io" in result.err
    assert "docs.docker.com/engine/install" in result.err
    assert config_file.read_text() == COMMENTED
