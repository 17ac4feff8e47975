"""Remote hosts without a network: the saved list, `--host` resolution, per-host files,
ssh's messages turned into errors, and every bad input of `occ host`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cli_runner import Result, runner
from opencode_cloud.cli.app import run
from opencode_cloud.cli.context import AppContext
from opencode_cloud.cli.hints import hint_for, ssh_login
from opencode_cloud.cli.output import ExitCode, Output
from opencode_cloud.docker import ssh
from opencode_cloud.hosts import Host, HostError, HostList, chosen_host, hosts_file
from opencode_cloud.instance import Instance


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    for name in ("OCC_HOST", "OCC_INSTANCE", "DOCKER_HOST", "DOCKER_CONTEXT", "OCC_SSH_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "cfg"


@pytest.fixture
def occ(cfg: Path, capsys: pytest.CaptureFixture[str]):
    return runner(capsys)


def _one_line_error(result: Result) -> tuple[str, str]:
    lines = result.err.strip().splitlines()
    assert len(lines) == 2, result.err
    assert lines[0].startswith("Error: ") and lines[1].startswith("Hint: "), result.err
    assert "Traceback" not in result.err
    return lines[0], lines[1]


def test_hosts_are_saved_listed_made_default_and_removed(occ, cfg: Path) -> None:
    added = occ("host", "add", "cloud", "ssh://me@vm.example.com:2222", "--no-test")
    assert added.code == ExitCode.OK, added.err
    assert occ("host", "add", "box", "ssh://box", "--socket", "/run/docker.sock", "--no-test")
    data = json.loads(hosts_file().read_text())
    assert data["hosts"]["cloud"] == {"address": "ssh://me@vm.example.com:2222"}
    assert data["hosts"]["box"] == {"address": "ssh://box", "socket": "/run/docker.sock"}
    assert data["default"] is None
    assert (hosts_file().stat().st_mode & 0o777) == 0o600

    listed = json.loads(occ("--json", "host", "list").out)
    assert [h["name"] for h in listed["hosts"]] == ["box", "cloud"]
    assert listed["default"] == "local"

    assert occ("host", "default", "cloud").code == ExitCode.OK
    assert HostList.load().default == "cloud"
    assert "* cloud" in occ("host", "list").out
    assert occ("host", "default").out.strip() == "The default host is cloud."

    removed = occ("host", "remove", "cloud")
    assert removed.code == ExitCode.OK
    assert HostList.load().default is None
    assert list(HostList.load().hosts) == ["box"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("host", "add", "Bad Name", "ssh://x"), "Invalid host name"),
        (("host", "add", "local", "ssh://x"), "means this machine"),
        (("host", "add", "cloud", "tcp://1.2.3.4:2375"), "reached over SSH"),
        (("host", "add", "cloud", "ssh://x/path"), "has no path"),
        (("host", "add", "cloud", "ssh://x:99999"), "port must be a number"),
        (("host", "add", "cloud", "nosuchcontext"), "neither an ssh:// address"),
        (("host", "remove", "nosuch"), "No host named 'nosuch'"),
        (("host", "default", "nosuch"), "No host named 'nosuch'"),
        (("--host", "nosuch", "status"), "No host named 'nosuch'"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(occ, args: tuple[str, ...], words: str) -> None:
    assert occ("host", "add", "keep", "ssh://keep", "--no-test").code == ExitCode.OK
    before = hosts_file().read_bytes()
    result = occ(*args)
    error, _hint = _one_line_error(result)
    assert words in error
    assert result.code == ExitCode.USAGE
    assert hosts_file().read_bytes() == before


def test_a_name_in_use_is_refused(occ) -> None:
    occ("host", "add", "cloud", "ssh://a", "--no-test")
    error, hint = _one_line_error(occ("host", "add", "cloud", "ssh://b", "--no-test"))
    assert "exists already" in error and "occ host remove cloud" in hint


def test_a_docker_context_with_an_ssh_endpoint_is_a_host(occ, tmp_path: Path) -> None:
    meta = tmp_path / "docker" / "contexts" / "meta" / hashlib.sha256(b"vm").hexdigest()
    meta.mkdir(parents=True)
    endpoint = {"Name": "vm", "Endpoints": {"docker": {"Host": "ssh://ada@vm:22"}}}
    (meta / "meta.json").write_text(json.dumps(endpoint))
    assert occ("host", "add", "vm", "vm", "--no-test").code == ExitCode.OK
    target = HostList.load().get("vm").target()
    assert (target.host, target.user, target.port) == ("vm", "ada", 22)


def test_host_choice_flag_then_environment_then_default(
    cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = HostList({"a": Host("a", "ssh://a"), "b": Host("b", "ssh://b")}, default="a")
    hosts.save()
    assert chosen_host(None) == hosts.hosts["a"]
    assert chosen_host("b") == hosts.hosts["b"]
    assert chosen_host("local") is None
    # OCC_HOST is --host's environment variable: it wins over the default
    monkeypatch.setenv("OCC_HOST", "b")
    seen: list[str | None] = []
    monkeypatch.setattr(
        "opencode_cloud.cli.context.AppContext.close",
        lambda self: seen.append(self.host.name if self.host else None),
    )
    run(["host", "list"])
    assert seen == ["b"]


def test_each_host_keeps_its_own_instance_files(cfg: Path) -> None:
    HostList({"cloud": Host("cloud", "ssh://c")}).save()
    local = AppContext(instance=Instance("work"), out=Output())
    remote = AppContext(instance=Instance("work"), out=Output(), host_name="cloud")
    assert local.paths.root == cfg / "instances" / "work"
    assert remote.paths.root == cfg / "hosts" / "cloud" / "instances" / "work"
    assert remote.occ == "occ --host cloud --instance work"


def test_a_context_for_another_instance_stays_on_the_same_host(
    cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`occ --host cloud restore FILE` restores onto the archive's instance on cloud (not
    the default host), and starts it there, through the same connection."""
    hosts = {"cloud": Host("cloud", "ssh://c"), "other": Host("other", "ssh://o")}
    HostList(hosts, "other").save()  # the default: not where this command acts
    connections: list[str | None] = []

    def connect(host: Host | None, timeout: float | None = None) -> object:
        connections.append(host.name if host else None)
        return object()

    monkeypatch.setattr("opencode_cloud.hosts.connect", connect)
    given = AppContext(instance=Instance("work"), out=Output(), host_name="cloud")
    derived = given.for_instance(Instance("copy"))
    assert derived.paths.root == cfg / "hosts" / "cloud" / "instances" / "copy"
    assert derived.client is given.client
    assert connections == ["cloud"]


def test_a_broken_hosts_file_is_an_error_with_a_hint(cfg: Path) -> None:
    cfg.mkdir(parents=True)
    hosts_file().write_text("{not json")
    with pytest.raises(HostError) as caught:
        HostList.load()
    assert "hosts.json" in caught.value.message and caught.value.hint


# --------------------------------------------------------------------------- ssh


def test_ssh_addresses_parse_and_make_a_never_prompting_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = ssh.SshTarget.parse("ssh://ada@vm.example.com:2222")
    assert (target.user, target.host, target.port) == ("ada", "vm.example.com", 2222)
    assert target.url == "ssh://ada@vm.example.com:2222"
    assert target.socket_path == "/var/run/docker.sock"
    command = target.command()
    assert "BatchMode=yes" in command and "-F" not in command
    monkeypatch.setenv("OCC_SSH_CONFIG", "/etc/occ/ssh_config")
    command = ssh.SshTarget.parse("ssh://alias").command()
    assert command[1:3] == ["-F", "/etc/occ/ssh_config"]
    assert "-p" not in command and "-l" not in command  # left to ~/.ssh/config
    for bad in ("http://x", "ssh://", "ssh://x/sock", "ssh://x:0x1"):
        with pytest.raises(ValueError):
            ssh.SshTarget.parse(bad)


TARGET = ssh.SshTarget.parse("ssh://ada@vm:2222")


@pytest.mark.parametrize(
    ("said", "kind"),
    [
        ("ssh: Could not resolve hostname vm: Name or service not known", ssh.HostUnreachable),
        ("ssh: connect to host 10.0.0.9 port 22: Connection timed out", ssh.HostUnreachable),
        ("ssh: connect to host vm port 2222: Connection refused", ssh.HostUnreachable),
        ("ada@vm: Permission denied (publickey).", ssh.AuthenticationRefused),
        (
            "@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
            "Host key verification failed.",
            ssh.HostKeyChanged,
        ),
        (
            "No ED25519 host key is known for [vm]:2222\nHost key verification failed.",
            ssh.HostKeyUnknown,
        ),
    ],
)
def test_what_ssh_says_becomes_the_error_that_names_it(said: str, kind: type) -> None:
    error = ssh.classify(said, TARGET)
    assert type(error) is kind
    hint = hint_for(error, "occ --host vm")
    assert hint and "Traceback" not in hint


def test_ssh_hints_name_the_login_to_try() -> None:
    assert ssh_login("ssh://ada@vm:2222") == "ssh -p 2222 ada@vm"
    assert ssh_login("ssh://alias") == "ssh alias"
    hint = hint_for(ssh.HostKeyChanged("ssh://ada@vm:2222"), "occ")
    assert "ssh-keygen -R vm" in hint
    assert "`ssh -p 2222 ada@vm`" in hint_for(ssh.HostKeyUnknown("ssh://ada@vm:2222"), "occ")
