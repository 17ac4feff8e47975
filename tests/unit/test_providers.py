"""Provider keys on the in-memory engine: what reaches opencode's API from inside the
container and how (the key in a file of the edge's, never on a command line), what is
refused before anything changes, the list that never shows a key, the move of keys out of
the configuration's `env`, and the command line's errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli_runner import Result, runner
from fakes import FakeEngine
from opencode_cloud.cli.output import ExitCode
from opencode_cloud.defaults import EDGE_UID
from opencode_cloud.docker.models import ContainerFile
from opencode_cloud.opencode import (
    AUTH_FILE,
    CUSTOM_PROVIDER_PACKAGE,
    GLOBAL_CONFIG_FILES,
    api_key_auth,
)
from opencode_cloud.providers.errors import (
    BadProviderInput,
    ProviderNotSet,
    ProviderStoreFailed,
    UnknownProvider,
)
from opencode_cloud.providers.keys import (
    UNCONFIGURE_PROGRAM,
    add_provider,
    check_key,
    check_provider,
    list_providers,
    remove_provider,
)
from opencode_cloud.providers.migrate import env_keys, without_env_keys
from opencode_cloud.service.errors import NotRunning
from opencode_cloud.service.service import INSIDE_EDGE_DIR, Service
from service_helpers import Make

KEY = "sk-ant-api03-secret"
LLM = "https://llm.example.com/v1"


@pytest.fixture
def running(make: Make, fake: FakeEngine) -> Service:
    service = make()
    service.start()
    fake.exec_result = (b"true\n200", 0)
    return service


def requests(fake: FakeEngine) -> list[tuple[str, str]]:
    """The method and path of each request the tool sent opencode from inside."""
    sent = []
    for _name, command, _user, _workdir in fake.execs:
        if "/usr/bin/curl" in command:
            method = command[command.index("-X") + 1]
            sent.append((method, command[-1].split(":4096", 1)[1]))
    return sent


def bodies(fake: FakeEngine, service: Service) -> dict[str, bytes]:
    """The request files written into the edge's folder, by path."""
    written = fake.files.get(service.name, {})
    return {path: data for path, data in written.items() if path.startswith(INSIDE_EDGE_DIR)}


def test_a_key_goes_in_a_file_only_the_edge_reads_never_on_a_command_line(
    running: Service, fake: FakeEngine
) -> None:
    entry = add_provider(running, "anthropic", KEY)
    assert (entry.id, entry.auth, entry.base_url) == ("anthropic", "api", None)
    assert requests(fake) == [("PUT", "/auth/anthropic"), ("POST", "/global/dispose")]
    for _name, command, user, _workdir in fake.execs:
        assert KEY not in " ".join(command)
        assert user == f"{EDGE_UID}:{EDGE_UID}"
    (path, body), *others = bodies(fake, running).items()
    assert others == []
    assert body == api_key_auth(KEY) and json.loads(body) == {"type": "api", "key": KEY}
    assert fake.file_modes[running.name][path] == (0o600, EDGE_UID)
    # curl reads that file and removes it as it ends.
    (command,) = [c for _n, c, _u, _w in fake.execs if "--data-binary" in " ".join(c)]
    assert command[:2] == ("/bin/sh", "-c") and path in command and 'rm -f "$f"' in command[2]


def test_a_custom_provider_is_configured_without_its_key(
    running: Service, fake: FakeEngine
) -> None:
    entry = add_provider(
        running, "mine", KEY, base_url="https://llm.example.com/v1", models=["llama-3"]
    )
    assert entry.models == ("llama-3",)
    assert requests(fake) == [
        ("PUT", "/auth/mine"),
        ("PATCH", "/global/config"),
        ("POST", "/global/dispose"),
    ]
    configs = [json.loads(b) for b in bodies(fake, running).values() if b"provider" in b]
    assert configs == [
        {
            "provider": {
                "mine": {
                    "npm": CUSTOM_PROVIDER_PACKAGE,
                    "name": "mine",
                    "options": {"baseURL": "https://llm.example.com/v1"},
                    "models": {"llama-3": {"name": "llama-3", "tool_call": True}},
                }
            }
        }
    ]


def test_opencode_refusing_is_reported_without_the_key(running: Service, fake: FakeEngine) -> None:
    fake.exec_result = (f'{{"error": "bad key {KEY}"}}\n400'.encode(), 0)
    with pytest.raises(ProviderStoreFailed) as caught:
        add_provider(running, "anthropic", KEY)
    assert KEY not in str(caught.value) and "HTTP 400" in str(caught.value)
    fake.exec_result = (b"\n000", 7)  # curl: nothing answered
    with pytest.raises(ProviderStoreFailed, match="HTTP -"):
        add_provider(running, "anthropic", KEY)


def test_a_stopped_service_is_refused(running: Service, fake: FakeEngine) -> None:
    running.stop()
    with pytest.raises(NotRunning):
        add_provider(running, "anthropic", KEY)
    assert fake.execs == []


@pytest.mark.parametrize(
    ("name", "base_url", "models", "error", "words"),
    [
        ("nope", None, (), UnknownProvider, "Unknown provider 'nope'"),
        ("Bad Name", None, (), BadProviderInput, "provider name"),
        ("anthropic", "https://x.example/v1", ("m",), BadProviderInput, "built in"),
        ("mine", "ftp://x.example", ("m",), BadProviderInput, "not an http"),
        ("mine", "https://x.example/v1", (), BadProviderInput, "at least one --model"),
        ("mine", "https://x.example/v1", ("a b",), BadProviderInput, "spaces"),
        ("openai", None, ("gpt",), BadProviderInput, "only a custom provider"),
    ],
)
def test_bad_providers_are_refused_before_anything(
    running: Service,
    fake: FakeEngine,
    name: str,
    base_url: str | None,
    models: tuple[str, ...],
    error: type[Exception],
    words: str,
) -> None:
    with pytest.raises(error, match=words):
        check_provider(name, base_url=base_url, models=models)
    with pytest.raises(error, match=words):
        add_provider(running, name, KEY, base_url=base_url, models=models)
    assert fake.execs == []


def test_model_ids_may_have_slashes() -> None:
    check_provider("mine", base_url=LLM, models=("meta-llama/Llama-3.3-70B", "qwen2.5:7b"))


def test_a_key_is_one_line() -> None:
    assert check_key(f"{KEY}\n") == KEY
    for bad in ("", " \n", "two words", "a\nb"):
        with pytest.raises(BadProviderInput):
            check_key(bad)


def test_the_list_shows_providers_never_keys(running: Service, fake: FakeEngine) -> None:
    store = {"anthropic": {"type": "api", "key": KEY}, "mine": {"type": "api", "key": "k2"}}
    running.runtime.put_files({AUTH_FILE: ContainerFile(json.dumps(store).encode(), 0o600, 1000)})
    config = {
        "provider": {
            "mine": {
                "npm": CUSTOM_PROVIDER_PACKAGE,
                "options": {"baseURL": "https://llm.example.com/v1"},
                "models": {"llama-3": {}},
            },
            "spare": {"npm": CUSTOM_PROVIDER_PACKAGE, "options": {"baseURL": "http://s/v1"}},
        }
    }
    fake.exec_result = (json.dumps(config).encode() + b"\n200", 0)
    entries = [entry.to_json() for entry in list_providers(running)]
    assert entries == [
        {"id": "anthropic", "auth": "api", "base_url": None, "models": []},
        {"id": "mine", "auth": "api", "base_url": LLM, "models": ["llama-3"]},
        {"id": "spare", "auth": None, "base_url": "http://s/v1", "models": []},
    ]  # fmt: skip
    assert KEY not in json.dumps(entries)
    with pytest.raises(ProviderNotSet) as caught:
        remove_provider(running, "openai")
    assert caught.value.stored == ("anthropic", "mine")
    assert ("DELETE", "/auth/openai") not in requests(fake)
    assert remove_provider(running, "anthropic").id == "anthropic"
    assert ("DELETE", "/auth/anthropic") in requests(fake)


def test_a_custom_provider_is_taken_out_of_opencodes_configuration(
    running: Service, fake: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {"provider": {"mine": {"npm": CUSTOM_PROVIDER_PACKAGE, "options": {"baseURL": LLM}}}}
    fake.exec_result = (json.dumps(config).encode() + b"\n200", 0)
    ran: list[list[str]] = []

    def run_command(command: list[str]) -> tuple[Any, Any]:
        ran.append(command)
        return iter([b"/home/opencode/.config/opencode/opencode.jsonc\n"]), lambda: 0

    monkeypatch.setattr(running, "run_command", run_command)
    # No key stored: the configuration's entry alone is removed; a file with comments is
    # left as it is and named, after opencode was asked to let go of the rest.
    with pytest.raises(ProviderStoreFailed, match=r"opencode\.jsonc is not plain JSON"):
        remove_provider(running, "mine")
    ((python, flag, script, provider, *files),) = ran
    assert (python, flag, provider) == ("python3", "-c", "mine")
    assert files == list(GLOBAL_CONFIG_FILES) and "del data" in script
    assert ("DELETE", "/auth/mine") not in requests(fake)
    assert requests(fake)[-1] == ("POST", "/global/dispose")


def test_the_program_that_unconfigures_runs_as_given(tmp_path: Path) -> None:
    import subprocess
    import sys

    plain, commented, absent = tmp_path / "a.json", tmp_path / "b.jsonc", tmp_path / "c.json"
    other = {"npm": CUSTOM_PROVIDER_PACKAGE, "options": {"baseURL": LLM}}
    plain.write_text(json.dumps({"model": "x/y", "provider": {"mine": {}, "other": other}}))
    plain.chmod(0o640)
    commented.write_text('{\n  // mine\n  "provider": {"mine": {}}\n}\n')
    done = subprocess.run(
        [sys.executable, "-c", UNCONFIGURE_PROGRAM, "mine",
         str(plain), str(commented), str(absent)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == str(commented)
    assert json.loads(plain.read_text()) == {"model": "x/y", "provider": {"other": other}}
    assert plain.stat().st_mode & 0o777 == 0o640
    assert "// mine" in commented.read_text() and not absent.exists()


def test_keys_in_the_configurations_env_are_found_and_taken_out() -> None:
    env = {"ANTHROPIC_API_KEY": KEY, "OPENAI_API_KEY": " ", "TZ": "UTC", "OTHER_KEY": "x"}
    assert env_keys(env) == {"ANTHROPIC_API_KEY": "anthropic"}
    data = {"port": 3000, "env": env}
    assert without_env_keys(data) == {
        "port": 3000,
        "env": {"OPENAI_API_KEY": " ", "TZ": "UTC", "OTHER_KEY": "x"},
    }
    assert without_env_keys({"env": {"OPENAI_API_KEY": "sk"}}) == {}
    assert data["env"] is env and "ANTHROPIC_API_KEY" in env  # the input is not changed


# -- the command line -----------------------------------------------------------------------


@pytest.fixture
def occ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("OCC_INSTANCE", raising=False)
    # No engine is reached: every case here is refused before.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    return runner(capsys)


def _one_line_error(result: Result, code: ExitCode, words: str) -> None:
    assert result.code == code, result.err
    lines = result.err.strip().splitlines()
    assert [line.startswith("Error:") for line in lines] == [True, False], result.err
    assert lines[1].startswith("Hint:") and words in result.err


def test_cli_bad_input_is_one_error_with_a_hint(occ, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    config_dir = tmp_path / "cfg"
    before = sorted(p.name for p in config_dir.rglob("*")) if config_dir.exists() else []
    result = occ("provider", "add", "nope", "--key-file", str(key_file))
    _one_line_error(result, ExitCode.USAGE, "Known providers: anthropic")
    assert "--base-url URL" in result.err
    result = occ("provider", "add", "openai", "--key-file", str(tmp_path / "missing"))
    _one_line_error(result, ExitCode.USAGE, "Cannot read the key file")
    result = occ("provider", "add", "openai")  # stdin is no terminal here
    _one_line_error(result, ExitCode.USAGE, "--key-file FILE or --key-stdin")
    result = occ("provider", "add", "mine", "--base-url", "x", "--model", "m", "--key-stdin")
    _one_line_error(result, ExitCode.USAGE, "Bad base URL")
    assert KEY not in result.err
    after = sorted(p.name for p in config_dir.rglob("*")) if config_dir.exists() else []
    assert after == before


def test_provider_names_complete() -> None:
    from opencode_cloud.cli.completion_values import provider_names

    found = provider_names(None, None, "open")  # type: ignore[arg-type]
    assert [item.value for item in found] == ["openai", "opencode", "openrouter"]


def test_cli_help_lists_provider(occ) -> None:
    result = occ("--help")
    assert "provider" in result.out
    result = occ("provider", "add", "--help")
    assert "--key-file" in result.out and "--base-url" in result.out and "--user" in result.out


@pytest.fixture
def occ_on_fake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from opencode_cloud.cli.context import AppContext

    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "cfg"))
    for name in ("OCC_INSTANCE", "OCC_HOST", "DOCKER_HOST", "DOCKER_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    engine = FakeEngine()  # no opencode answers for it
    monkeypatch.setattr(AppContext, "connect", lambda self, timeout=None: engine)
    return runner(capsys), engine


def test_a_failed_start_puts_the_keys_back_in_the_configuration(
    occ_on_fake, tmp_path: Path
) -> None:
    occ, engine = occ_on_fake
    assert occ("config", "env", "set", f"ANTHROPIC_API_KEY={KEY}").code == 0
    config_file = tmp_path / "cfg" / "config.json"
    before = config_file.read_bytes()
    # The container is made (without the key in its environment), opencode never answers.
    result = occ("start", "--wait-timeout", "0.5")
    assert "did not become healthy" in result.err and "Moved" not in result.err
    (made,) = engine.containers.values()
    assert KEY not in json.dumps(made)
    assert config_file.read_bytes() == before
