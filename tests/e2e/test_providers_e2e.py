"""Provider keys end to end: `occ` as a subprocess, the real engine and the real opencode
image.

- a key set the old way (`occ config env set ANTHROPIC_API_KEY=...`) is moved into
  opencode's key store by the next `occ start`, with a message, and leaves the
  configuration and the container's environment;
- bad input (an unknown provider, a key file that is not there) is refused with a hint
  and changes nothing;
- the key survives the container being made again, and a restore of a backup made
  without keys; `occ backup --include-keys` carries it, and restoring that brings it back;
- `occ provider remove` deletes it.
"""

from __future__ import annotations

import json
import secrets
import tarfile
from pathlib import Path
from typing import Any

import pytest

from occ_helpers import docker, run

# Its own instances only: run alongside the rest of the suite (scripts/test.sh).
pytestmark = [pytest.mark.e2e, pytest.mark.alongside]

AUTH_FILE = "/home/opencode/.local/share/opencode/auth.json"
KEYS_ENTRY = "volumes/session/auth.json"


def stored_keys(docker_sdk: Any, container_name: str) -> dict[str, Any]:
    """opencode's key store, read as root inside the container."""
    container = docker_sdk.containers.get(container_name)
    code, output = container.exec_run(["cat", AUTH_FILE], user="0")
    assert code == 0, output
    return dict(json.loads(output))


def listed(env: dict[str, str]) -> list[str]:
    return [entry["id"] for entry in json.loads(run(env, "--json", "provider", "list").stdout)]


def test_keys_move_out_of_the_environment_and_survive(
    occ_env: dict[str, str], instance: Any, docker_sdk: Any, tmp_path: Path
) -> None:
    key = f"sk-ant-{secrets.token_hex(16)}"
    run(occ_env, "config", "env", "set", f"ANTHROPIC_API_KEY={key}")
    started = run(occ_env, "start")
    assert "Moved ANTHROPIC_API_KEY" in started.stderr, started.stderr
    assert "ANTHROPIC_API_KEY" not in run(occ_env, "config", "env", "list").stdout
    container = docker_sdk.containers.get(instance.container_name)
    assert key not in json.dumps(container.attrs)  # its environment, its command
    assert stored_keys(docker_sdk, instance.container_name) == {
        "anthropic": {"type": "api", "key": key}
    }
    assert listed(occ_env) == ["anthropic"]
    text = run(occ_env, "provider", "list").stdout
    assert "anthropic" in text and key not in text

    # Bad input: one line of error with a hint, exit code 2, nothing changed.
    config_file = Path(run(occ_env, "config", "path").stdout.strip())
    before = config_file.read_bytes()
    key_file = tmp_path / "key"
    key_file.write_text("sk-other\n")
    unknown = run(occ_env, "provider", "add", "nope", "--key-file", str(key_file), check=False)
    assert unknown.returncode == 2
    assert "Unknown provider 'nope'" in unknown.stderr and "anthropic" in unknown.stderr
    missing = run(
        occ_env, "provider", "add", "openai", "--key-file", str(tmp_path / "gone"), check=False
    )
    assert missing.returncode == 2 and "Cannot read the key file" in missing.stderr
    assert config_file.read_bytes() == before
    assert listed(occ_env) == ["anthropic"]

    # Made again (a setting that shapes the container changed): the key stays.
    run(occ_env, "config", "env", "set", "TZ=UTC")
    recreated = run(occ_env, "start")
    assert "Re-creating the container" in recreated.stdout + recreated.stderr
    assert stored_keys(docker_sdk, instance.container_name)["anthropic"]["key"] == key

    # Backups leave keys out unless asked; a restore without keys keeps the instance's.
    plain, with_keys = tmp_path / "plain.tar", tmp_path / "keys.tar"
    made = run(occ_env, "backup", str(plain))
    assert "Provider keys are left out" in made.stdout
    run(occ_env, "backup", str(with_keys), "--include-keys")
    with tarfile.open(plain) as tar:
        assert KEYS_ENTRY not in tar.getnames()
    with tarfile.open(with_keys) as tar:
        assert KEYS_ENTRY in tar.getnames()
    run(occ_env, "restore", str(plain), "--yes")
    run(occ_env, "start")
    assert stored_keys(docker_sdk, instance.container_name)["anthropic"]["key"] == key

    # Removed, then brought back by the backup that holds it.
    assert "removed" in run(occ_env, "provider", "remove", "anthropic").stdout
    assert listed(occ_env) == []
    gone = run(occ_env, "provider", "remove", "anthropic", check=False)
    assert gone.returncode == 2 and "No key is stored" in gone.stderr
    run(occ_env, "restore", str(with_keys), "--yes")
    run(occ_env, "start")
    assert listed(occ_env) == ["anthropic"]
    assert stored_keys(docker_sdk, instance.container_name)["anthropic"]["key"] == key


def test_a_link_the_agent_makes_of_the_key_store_is_read_as_the_agent(
    occ_env: dict[str, str], instance: Any, docker_sdk: Any
) -> None:
    # The agent (the runtime user) owns opencode's data folder: its auth.json may be a
    # link to a file only root reads. The list reads it as the agent, so it finds no key
    # there rather than a traceback (or root's file).
    run(occ_env, "start")
    container = docker_sdk.containers.get(instance.container_name)
    code, output = container.exec_run(["ln", "-sf", "/etc/shadow", AUTH_FILE], user="opencode")
    assert code == 0, output
    proc = run(occ_env, "provider", "list", check=False)
    assert proc.returncode == 0, proc.stderr
    assert "(no provider keys stored)" in proc.stdout and "Traceback" not in proc.stderr


def test_a_start_that_does_not_wait_puts_no_key_in_the_container(
    occ_env: dict[str, str], instance: Any, docker_sdk: Any
) -> None:
    key = f"sk-ant-{secrets.token_hex(16)}"
    run(occ_env, "config", "env", "set", f"ANTHROPIC_API_KEY={key}")
    run(occ_env, "start", "--no-wait")
    container = docker_sdk.containers.get(instance.container_name)
    assert key not in json.dumps(container.attrs)  # not in its environment
    # The key stays in the configuration until a start that waits moves it.
    assert "ANTHROPIC_API_KEY" in run(occ_env, "config", "env", "list").stdout


def test_a_key_in_the_env_reaches_no_one_in_team_mode_and_says_how_to_give_it(
    occ_env: dict[str, str], instance: Any, tmp_path: Path
) -> None:
    key = f"sk-ant-{secrets.token_hex(16)}"
    run(occ_env, "config", "env", "set", f"ANTHROPIC_API_KEY={key}")
    enabled = run(occ_env, "team", "enable", "--name", "ada")
    warning = "ANTHROPIC_API_KEY in the configuration's env is given to no one in team mode"
    assert warning in enabled.stderr and "provider add anthropic --user NAME" in enabled.stderr
    started = run(occ_env, "start")
    assert warning in started.stderr
    assert "ANTHROPIC_API_KEY" in run(occ_env, "config", "env", "list").stdout  # kept
    # Nobody's opencode has it: not in their key store, not in their container.
    assert json.loads(run(occ_env, "--json", "provider", "list", "--user", "ada").stdout) == []
    ada = f"opencode-cloud-{instance.name}-user-ada"
    for container in (ada, f"opencode-cloud-{instance.name}-door"):
        inspected = docker("inspect", container)
        assert inspected and key not in inspected, container

    # Given as the message says, then taken out: no more message.
    key_file = tmp_path / "ada.key"
    key_file.write_text(key + "\n")
    run(occ_env, "provider", "add", "anthropic", "--user", "ada", "--key-file", str(key_file))
    run(occ_env, "config", "env", "unset", "ANTHROPIC_API_KEY")
    again = run(occ_env, "start")
    assert "ANTHROPIC_API_KEY" not in again.stderr
    listed = json.loads(run(occ_env, "--json", "provider", "list", "--user", "ada").stdout)
    assert [entry["id"] for entry in listed] == ["anthropic"]
