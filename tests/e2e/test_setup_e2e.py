"""`occ setup` in a real terminal (pexpect) against the real engine and sandbox image: the
first run answers its questions and ends with a service whose URL answers the printed
user name and password; a second run shows those answers as defaults and, when only the
port changes, writes only the port; `--yes` runs for scripts; the engine check is the
real one."""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pexpect
import pytest

from occ_helpers import OCC, run
from opencode_cloud.instance import Instance
from raw_http import session_cookie, sign_in, statuses

# Its own instances only: run alongside the rest of the suite (scripts/test.sh).
pytestmark = [pytest.mark.e2e, pytest.mark.alongside]

START_WAIT = 240  # the first start may build the image


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url + "/global/health")
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


class Tee(io.StringIO):
    """Everything the terminal showed, kept, and shown on stdout when a test fails."""

    def write(self, text: str) -> int:
        sys.stdout.write(text)
        return super().write(text)


def _spawn(env: dict[str, str]) -> tuple[pexpect.spawn, Tee]:
    child = pexpect.spawn(
        OCC[0], [*OCC[1:], "setup"], env=env, encoding="utf-8", timeout=60, dimensions=(40, 200)
    )
    screen = Tee()
    child.logfile_read = screen
    return child, screen


def _inspect(env: dict[str, str]) -> str:
    """`docker inspect` of the instance's container, as anybody on the machine sees it."""
    name = Instance(env["OCC_INSTANCE"]).container_name
    done = subprocess.run(["docker", "inspect", name], capture_output=True, text=True, check=True)
    return done.stdout


def _found(child: pexpect.spawn, pattern: str, timeout: float = 60) -> str:
    """The first group of `pattern`, once the terminal shows it."""
    child.expect(pattern, timeout=timeout)
    match = child.match
    assert isinstance(match, re.Match)
    return str(match.group(1))


def _signed_in(child: pexpect.spawn) -> tuple[str, str, str]:
    """The URL, user name and password the run printed, once it says it runs."""
    url = _found(child, r"opencode is running at (http\S+)", START_WAIT)
    user = _found(child, r"User:\s+(\S+)")
    password = _found(child, r"Password:\s+(\S+)")
    child.expect("sign in with this user name and password")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    return url, user, password


def test_setup_in_a_terminal_then_again_with_only_the_port_changed(
    occ_env: dict[str, str], tmp_path: Path
) -> None:
    config_file = Path(json.loads(run(occ_env, "--json", "config", "path").stdout)["path"])
    code = tmp_path / "code"
    code.mkdir()
    first_port = _port()

    key = "sk-setup-" + secrets.token_hex(16)
    child, screen = _spawn(occ_env)
    child.expect("The Docker engine answers.")
    child.expect(r"Port \[\d+\]: ")
    child.sendline(str(first_port))
    child.expect(r"Reachable from \(local, network\) \[local\]: ")
    child.sendline("")
    child.expect(r"Folder with your code.*: ")
    child.sendline(str(code))
    child.expect(r"AI provider \(Enter to skip\): ", timeout=START_WAIT)
    child.sendline("no-such-provider")
    child.expect("Unknown provider")  # asked again
    child.expect(r"AI provider \(Enter to skip\): ")
    child.sendline("anthropic")
    child.expect(r"API key for anthropic \(not shown\): ")
    child.sendline(key)
    child.expect("Key for anthropic stored")
    url, user, password = _signed_in(child)

    assert key not in screen.getvalue()  # typed without echo
    assert key not in _inspect(occ_env)

    assert url == f"http://127.0.0.1:{first_port}"
    assert _status(url) == 401
    assert _status(url, user, "wrong-password") == 401
    assert _status(url, user, password) == 200
    # The login page a browser opens at that URL takes the same user name and password.
    assert statuses(sign_in(first_port, user, password)) == [303]
    assert session_cookie(sign_in(first_port, user, password))
    assert statuses(sign_in(first_port, user, password + "x")) != [303]
    mounts = json.loads(run(occ_env, "--json", "mount", "list").stdout)["mounts"]
    assert [m["host"] for m in mounts] == [str(code)]
    before = json.loads(config_file.read_text())
    assert before["port"] == first_port

    # Run twice: the answers are the defaults; only the port changes.
    second_port = _port()
    child, screen = _spawn(occ_env)
    child.expect(rf"Port \[{first_port}\]: ")
    child.sendline(str(second_port))
    child.expect(r"Reachable from \(local, network\) \[local\]: ")
    child.sendline("")
    child.expect(rf"Folder with your code, mounted into the container \[{re.escape(str(code))}\]: ")
    child.sendline("")
    child.expect(r"port = \d+")
    child.expect("Provider keys stored: anthropic.", timeout=START_WAIT)
    child.expect(r"AI provider \[anthropic\]: ")
    child.sendline("")
    url, user, again = _signed_in(child)
    assert "API key" not in screen.getvalue()  # the stored key is kept, not asked again

    after = json.loads(config_file.read_text())
    assert {k: v for k, v in after.items() if k != "port"} == {
        k: v for k, v in before.items() if k != "port"
    }
    assert after["port"] == second_port
    assert url == f"http://127.0.0.1:{second_port}"
    assert again == password  # the same sign-in
    assert _status(url, user, password) == 200
    assert _status(f"http://127.0.0.1:{first_port}", user, password) == 0  # moved


def test_setup_for_scripts_with_flags(occ_env: dict[str, str], tmp_path: Path) -> None:
    config_file = Path(json.loads(run(occ_env, "--json", "config", "path").stdout)["path"])
    code = tmp_path / "app"
    code.mkdir()

    # No terminal and no --yes: refused, nothing written.
    before = config_file.read_bytes()
    refused = run(occ_env, "setup", check=False)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert config_file.read_bytes() == before

    # A bad answer: one error, nothing written, nothing started.
    bad = run(occ_env, "setup", "--yes", "--mount", str(tmp_path / "missing"), check=False)
    assert bad.returncode == 5
    assert [line for line in bad.stderr.splitlines() if line.startswith("Error:")]
    assert config_file.read_bytes() == before
    assert run(occ_env, "status", check=False).returncode == 3

    key_file = tmp_path / "anthropic.key"
    key = "sk-setup-" + secrets.token_hex(16)
    key_file.write_text(key + "\n")
    for wrong in (
        ["--provider", "anthropic", "--api-key-file", str(tmp_path / "no-such.key")],
        ["--provider", "no-such-provider", "--api-key-file", str(key_file)],
    ):
        bad = run(occ_env, "setup", "--yes", "--port", str(_port()), *wrong, check=False)
        assert bad.returncode != 0
        assert len([line for line in bad.stderr.splitlines() if line.startswith("Error:")]) == 1
        assert "Hint:" in bad.stderr
        assert config_file.read_bytes() == before
        assert run(occ_env, "status", check=False).returncode == 3

    port = _port()
    flags = ["--port", str(port), "--mount", str(code)]
    provider = ["--provider", "anthropic", "--api-key-file", str(key_file)]
    done = run(occ_env, "setup", "--yes", *flags, *provider)
    assert f"opencode is running at http://127.0.0.1:{port}" in done.stdout
    assert "Key for anthropic stored" in done.stderr
    assert key not in done.stdout + done.stderr + _inspect(occ_env)
    creds = json.loads(run(occ_env, "--json", "auth", "show").stdout)
    assert _status(creds["url"], creds["username"], creds["password"]) == 200
    config = json.loads(config_file.read_text())
    assert config["port"] == port
    assert config["mounts"] == [f"{code}:/home/opencode/projects/app"]

    # Again with the same answers: the file is not touched.
    unchanged = config_file.read_bytes()
    again = run(occ_env, "setup", "--yes", *flags)
    assert "The settings stay as they are." in again.stderr
    assert config_file.read_bytes() == unchanged


def test_setup_checks_the_engine_it_is_pointed_at(occ_env: dict[str, str], tmp_path: Path) -> None:
    """An engine named by DOCKER_HOST that does not answer is not this machine's to
    install or start: one error naming it, exit code 4, nothing written."""
    env = {**occ_env, "DOCKER_HOST": f"unix://{tmp_path}/nothing.sock"}
    config_file = Path(json.loads(run(occ_env, "--json", "config", "path").stdout)["path"])
    before = config_file.read_bytes()
    result = run(env, "setup", "--yes", "--port", str(_port()), check=False)
    assert result.returncode == 4, result.stderr
    assert "DOCKER_HOST" in result.stderr
    assert config_file.read_bytes() == before
