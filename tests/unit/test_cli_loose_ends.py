"""The command line's edges: confirmations, global options, help texts, JSON errors,
retired keys and option names, each as a user meets it in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from cli_runner import Result, isolated_runner, one_error
from fakes import FakeEngine
from opencode_cloud.cli.output import ExitCode
from opencode_cloud.errors import OpencodeCloudError


@pytest.fixture
def occ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    return isolated_runner(tmp_path, monkeypatch, capsys)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "cfg" / "config.json"


def _hint(result: Result) -> str:
    return result.err.split("Hint:", 1)[1].strip()


# --------------------------------------------------------------------------- confirmations


def test_a_refused_config_reset_exits_2(occ, config_file: Path) -> None:
    assert occ("config", "set", "port", "8080").code == 0
    result = occ("config", "reset")
    one_error(result)
    assert result.code == ExitCode.USAGE
    assert "`occ config reset --yes`" in _hint(result)
    assert json.loads(config_file.read_text()) == {"port": 8080}


def test_a_refused_exposure_exits_2(occ, config_file: Path) -> None:
    result = occ("config", "set", "bind_address", "0.0.0.0")
    one_error(result)
    assert result.code == ExitCode.USAGE
    assert "--yes" in _hint(result)
    assert not config_file.exists()


def test_a_refused_uninstall_exits_2(occ, engine: FakeEngine, config_file: Path) -> None:
    assert occ("config", "set", "port", "8080").code == 0
    result = occ("uninstall")
    one_error(result)
    assert result.code == ExitCode.USAGE
    assert "`occ uninstall --yes`" in _hint(result)
    assert config_file.exists()


def test_a_restore_not_confirmed_is_a_usage_exit() -> None:
    from opencode_cloud.backup.errors import ConfirmationNeeded
    from opencode_cloud.cli.failures import exit_code_for
    from opencode_cloud.instance import DEFAULT

    assert exit_code_for(ConfirmationNeeded("has data", DEFAULT, "restore x.tar")) == 2


def test_a_refused_update_to_an_older_release_exits_2(
    occ, engine: FakeEngine, config_file: Path
) -> None:
    _running_release(engine, "9.9.9")
    result = occ("update", "--opencode-version", "1.0.0")
    one_error(result)
    assert result.code == ExitCode.USAGE
    assert "`occ update --opencode-version 1.0.0 --yes`" in _hint(result)
    assert not engine.called("stop_container")


def _running_release(engine: FakeEngine, version: str) -> None:
    from opencode_cloud.docker.image import LABEL_OPENCODE_VERSION

    labels = {LABEL_OPENCODE_VERSION: version}
    image = engine.add_image(f"opencode-cloud-sandbox:{version}", labels=labels)
    engine.create_container("opencode-cloud", {"Image": image, "Labels": labels})


def test_no_at_the_prompt_exits_2_like_a_missing_yes(
    occ, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person who answers no has refused as surely as a script without --yes: exit 2,
    not 1 for some commands and 130 (interrupted) for others."""
    import click

    from opencode_cloud.cli.output import Output

    monkeypatch.setattr(Output, "interactive", property(lambda self: True))
    asked: list[str] = []

    def refuse(text: str, **_: object) -> bool:
        asked.append(text)
        return False

    monkeypatch.setattr(click, "confirm", refuse)
    _running_release(engine, "9.9.9")
    assert occ("config", "set", "port", "8080").code == 0
    for args in (
        ("config", "reset"),
        ("config", "set", "bind_address", "0.0.0.0"),
        ("update", "--opencode-version", "1.0.0"),
        ("uninstall",),
    ):
        result = occ(*args)
        one_error(result)
        assert result.code == ExitCode.USAGE, args
    assert len(asked) == 4


# --------------------------------------------------------------------------- global options


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["shell", "grep", "-v", "x"], ["shell", "grep", "-v", "x"]),
        (["shell", "ls", "--json"], ["shell", "ls", "--json"]),
        (["-q", "shell", "--", "env", "-v"], ["-q", "shell", "--", "env", "-v"]),
        (["--instance", "w", "shell", "-v"], ["--instance", "w", "shell", "-v"]),
        (["shell", "--instance", "w"], ["shell", "--instance", "w"]),
        (["status", "-v", "--instance", "w"], ["-v", "--instance", "w", "status"]),
        (["config", "env", "list", "--json"], ["--json", "config", "env", "list"]),
    ],
)
def test_global_options_are_not_taken_from_a_passed_through_command(
    given: list[str], expected: list[str]
) -> None:
    from opencode_cloud.cli.app import hoist_global_options

    assert hoist_global_options(given) == expected


def test_a_passed_through_command_keeps_its_options_in_a_fresh_process() -> None:
    """As `occ` runs: no command module loaded yet (in this process, earlier tests may
    have loaded `shell`, which the group then knows without being asked)."""
    import subprocess
    import sys

    code = (
        "from opencode_cloud.cli.app import hoist_global_options as h; "
        "print(h(['shell', 'grep', '-v', 'x']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['shell', 'grep', '-v', 'x']"


def test_shell_runs_the_command_as_given(
    occ, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opencode_cloud.cli import app

    monkeypatch.setattr("shutil.which", lambda name: None)  # the API path, no exec
    _running_release(engine, "9.9.9")
    engine.start_container("opencode-cloud")
    result = occ("shell", "grep", "-v", "x")
    assert result.code == 0, result.err
    assert [command for _, command, _, _ in engine.execs] == [("grep", "-v", "x")]
    assert app._STATE["app"].out.verbosity == 0


# --------------------------------------------------------------------------- help texts


def _commands(
    group: click.Group, path: tuple[str, ...] = ("occ",)
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    import click

    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def test_no_short_help_is_cut_at_an_abbreviation() -> None:
    """click's short help ends at the first word ending in a period: `e.g.` cut
    `occ config --help`'s lines to "Print one setting, e.g."."""
    import re

    from opencode_cloud.cli.app import app

    for path, command in _commands(app):
        short = command.get_short_help_str(limit=200)
        assert not re.search(r"\b(e\.g|i\.e|etc|cf|vs)\.$", short), (path, short)


@pytest.mark.parametrize("group", ["config", "mount"])
def test_group_help_lists_whole_first_sentences(occ, group: str) -> None:
    result = occ(group, "--help")
    assert result.code == 0
    commands = result.out.split("Commands:", 1)[1]
    assert "e.g." not in commands


def test_mount_add_help_names_where_the_folder_goes(occ) -> None:
    from opencode_cloud.mounts import default_container_path

    where = default_container_path("/home/alice/app").replace("/app", "/<its name>")
    result = occ("mount", "add", "--help")
    assert where in " ".join(result.out.split())


def test_the_docs_do_not_say_the_agent_can_use_apt() -> None:
    """The service runs as a user without root: `apt` is not the agent's to use."""
    import re

    operations = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    assert not re.search(r"installs[^|.]*`apt`", operations)


# --------------------------------------------------------------------------- timeouts


def test_stop_takes_a_stop_timeout(occ, engine: FakeEngine) -> None:
    _running_release(engine, "9.9.9")
    engine.start_container("opencode-cloud")
    result = occ("stop", "--stop-timeout", "7")
    assert result.code == 0, result.err
    assert engine.stop_timeouts["opencode-cloud"] == 7
    assert result.err == ""


def test_the_old_timeout_spelling_still_works_with_a_warning(occ, engine: FakeEngine) -> None:
    _running_release(engine, "9.9.9")
    engine.start_container("opencode-cloud")
    result = occ("stop", "--timeout", "3")
    assert result.code == 0, result.err
    assert engine.stop_timeouts["opencode-cloud"] == 3
    assert "--stop-timeout" in result.err and "Warning" in result.err


@pytest.mark.parametrize(
    ("command", "name"),
    [("start", "--wait-timeout"), ("restart", "--wait-timeout"), ("update", "--wait-timeout")],
)
def test_the_readiness_timeouts_say_what_they_wait_for(occ, command: str, name: str) -> None:
    shown = occ(command, "--help").out
    assert name in shown
    assert "--timeout" not in shown.replace(name, "")
    result = occ(command, name, "0")
    assert result.code == ExitCode.USAGE
    assert name in result.err


def test_stop_and_restart_name_the_grace_before_the_kill(occ) -> None:
    for command in ("stop", "restart"):
        shown = occ(command, "--help").out
        assert "--stop-timeout" in shown
        assert "--timeout" not in shown.replace("--stop-timeout", "").replace("--wait-timeout", "")


def test_restart_passes_each_timeout_to_its_step(
    occ, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opencode_cloud.service.service import Service

    seen: dict[str, float | None] = {}
    monkeypatch.setattr(Service, "stop", lambda self, timeout=None: seen.update(stop=timeout))

    def start(self, **kwargs):
        seen["start"] = kwargs.get("timeout")
        raise RuntimeError("enough")

    monkeypatch.setattr(Service, "start", start)
    with pytest.raises(RuntimeError):
        occ("restart", "--stop-timeout", "4", "--wait-timeout", "30")
    assert seen == {"stop": 4, "start": 30}


# --------------------------------------------------------------------------- JSON


@pytest.mark.parametrize(
    "args",
    [
        ("--json", "logs", "-n", "-1"),
        ("logs", "--since", "yesterday", "--json"),
        ("--json", "no-such-command"),
        ("--json", "start", "--build", "--pull"),
        ("--json", "config"),
        ("--json", "config", "set", "port"),
    ],
)
def test_usage_errors_with_json_give_an_error_object(occ, args: tuple[str, ...]) -> None:
    result = occ(*args)
    assert result.code == ExitCode.USAGE
    data = json.loads(result.out)
    assert set(data) == {"error", "hint", "details"}
    assert data["error"] and "\n" not in data["error"]
    assert "--help" in data["hint"]
    # What people read stays on stderr: the error line, or a group's help when its
    # command is missing.
    assert "Error:" in result.err or "Commands:" in result.err


def test_usage_errors_without_json_print_nothing_on_stdout(occ) -> None:
    result = occ("logs", "-n", "-1")
    assert result.code == ExitCode.USAGE
    assert result.out == ""


@pytest.mark.parametrize(
    ("args", "wanted"),
    [
        (["--json", "status"], True),
        (["--instance", "w", "--json", "status"], True),
        (["--host=h", "-q", "--json", "status"], True),
        (["shell", "--json"], False),
        (["config", "set", "env.X", "--", "--json"], False),
    ],
)
def test_json_is_asked_for_by_a_global_option_only(args: list[str], wanted: bool) -> None:
    from opencode_cloud.cli.app import _json_requested, hoist_global_options

    assert _json_requested(hoist_global_options(args)) is wanted


def test_mount_list_json_is_an_object_like_the_others(occ, tmp_path: Path) -> None:
    assert json.loads(occ("--json", "mount", "list").out) == {"mounts": []}
    folder = tmp_path / "app"
    folder.mkdir()
    assert occ("mount", "add", str(folder)).code == 0
    listed = json.loads(occ("--json", "mount", "list").out)
    assert [m["host"] for m in listed["mounts"]] == [str(folder)]
    # as `host list` gives its hosts and `doctor` its findings: a named list in an object
    assert set(json.loads(occ("--json", "host", "list").out)) == {"default", "hosts"}


# --------------------------------------------------------------------------- retired keys


def test_a_retired_key_cannot_be_set(occ, config_file: Path) -> None:
    assert occ("config", "set", "port", "8080").code == 0
    before = config_file.read_bytes()
    result = occ("config", "set", "restart_retries", "5")
    assert "restart_retries" in one_error(result)
    assert result.code == ExitCode.CONFIG_INVALID
    assert "`occ config unset restart_retries`" in _hint(result)
    assert config_file.read_bytes() == before


def test_a_file_with_a_retired_key_still_reads_and_can_drop_it(occ, config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text('{"port": 8080, "restart_retries": 3}')
    assert occ("config", "validate").code == 0
    shown = json.loads(occ("--json", "config", "show").out)
    assert shown["restart_retries"] == 3  # what the file holds is shown, not hidden
    assert occ("config", "set", "port", "8081").code == 0  # the rest can still change
    assert occ("config", "unset", "restart_retries").code == 0
    assert json.loads(config_file.read_text()) == {"port": 8081}
    assert "restart_retries" not in json.loads(occ("--json", "config", "show").out)


def test_the_readme_does_not_offer_retired_keys() -> None:
    from opencode_cloud.config.schema import RETIRED_KEYS

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for key in RETIRED_KEYS:
        assert key not in readme
        assert key.replace("_", " ") not in readme


# --------------------------------------------------------------------------- uninstall


@pytest.mark.parametrize("instance", ["default", "work"])
def test_uninstall_leaves_no_file_of_the_instance_behind(
    occ, engine: FakeEngine, tmp_path: Path, instance: str
) -> None:
    """The password's hash (`password.bcrypt`), the configuration's backup and the TLS
    folder (a CA's private key) go with the password and the configuration."""
    from opencode_cloud.access import credentials
    from opencode_cloud.config.paths import instance_paths
    from opencode_cloud.instance import Instance

    paths = instance_paths(Instance(instance))
    flags = ["--instance", instance]
    assert occ(*flags, "config", "set", "port", "8080").code == 0
    assert occ(*flags, "config", "reset", "--yes").code == 0  # leaves config.json.bak
    assert occ(*flags, "config", "set", "port", "8081").code == 0
    password, _ = credentials.load_or_create_password(paths)
    credentials.password_hash(paths, password)
    assert paths.password_hash_file.exists() and paths.config_backup_file.exists()
    # The instance's CA and certificate, the CA's private key included.
    from opencode_cloud.access import tls

    tls.self_signed(paths, ["localhost", "127.0.0.1"], instance)
    assert (paths.root / "tls" / "ca.key").exists()
    result = occ(*flags, "uninstall", "--volumes", "--no-backup", "--yes")
    assert result.code == 0, result.err
    assert str(paths.password_hash_file) in result.out
    left = sorted(p.name for p in paths.root.iterdir()) if paths.root.exists() else []
    assert left == []


# --------------------------------------------------------------------------- hints


def test_config_hints_name_the_instance(occ, tmp_path: Path) -> None:
    result = occ("--instance", "work", "config", "set", "port", "abc")
    assert _hint(result) == "For example: occ --instance work config set port 8080"
    result = occ("--instance", "work", "config", "set", "prot", "1")
    assert "`occ --instance work config env set NAME=VALUE`" in _hint(result)
    folder = tmp_path / "cfg" / "instances" / "work"
    (folder / "config.json").write_text('{"port": 0}')
    result = occ("--instance", "work", "config", "show")
    assert "`occ --instance work config set port VALUE`" in _hint(result)
    assert "`occ --instance work config reset --yes`" in _hint(result)
    (folder / "config.json").write_text("{ nope")
    assert "`occ --instance work config reset --yes`" in _hint(occ("--instance", "work", "status"))


def test_a_command_waiting_for_the_lock_is_named_as_typed(
    occ, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contextlib import contextmanager

    from opencode_cloud import locking

    taken: list[str] = []

    @contextmanager
    def lock(paths, command, timeout=None, **_):
        taken.append(command)
        yield

    monkeypatch.setattr(locking, "instance_lock", lock)
    assert occ("--instance", "work", "config", "set", "port", "8080").code == 0
    assert taken == ["occ --instance work config"]


def test_hints_below_the_command_line_are_worded_for_the_instance_and_host() -> None:
    from opencode_cloud.cli.hints import hint_for
    from opencode_cloud.doctor.checks import Remedy
    from opencode_cloud.hosts import HostList
    from opencode_cloud.locking import LockHolder, LockTimeout
    from opencode_cloud.mounts import remote_mounts_refused

    occ = "occ --host cloud --instance work"
    taken = Remedy("port-taken-by-instance", {"port": 3001, "instance": "other"})
    assert hint_for(taken, occ) == (
        "Stop it (`occ --host cloud --instance other stop`), or choose another port: "
        "`occ --host cloud --instance work config set port 3001`."
    )
    default = Remedy("port-taken-by-instance", {"port": 3001, "instance": "default"})
    assert "(`occ --host cloud stop`)" in hint_for(default, occ)
    assert "`occ --host cloud --instance work shell`" in hint_for(
        remote_mounts_refused("ssh://me@vm"), occ
    )
    holder = LockHolder(42, "occ --host cloud start", [], "")
    waited = LockTimeout("locked", path=Path("/x"), holder=holder, command=f"{occ} stop")
    assert hint_for(waited, occ) == (
        f"Wait for it to finish and run `{occ} stop` again, or stop it (`kill 42`) if it hangs."
    )
    with pytest.raises(OpencodeCloudError) as unknown:
        HostList({}).get("lab")
    assert "`occ host add lab ssh://user@host`" in hint_for(unknown.value, occ)
