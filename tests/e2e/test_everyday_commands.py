"""`occ list`, `occ open`, `occ config edit` and `occ config describe` as a user runs
them, against the real engine and the real opencode image: two instances of one user,
one running and one stopped, a host that does not answer, a browser that records what
it was asked to open, and editors that write broken and good files.
"""

from __future__ import annotations

import hashlib
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from occ_helpers import free_port, remove_everything_of, run

# Its own instances only: run alongside the rest of the suite (scripts/test.sh).
pytestmark = [pytest.mark.e2e, pytest.mark.alongside]


def _script(folder: Path, name: str, body: str) -> Path:
    """An executable shell script (an editor, a browser) in `folder`."""
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def two_instances(occ_env, instance) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """One user's two instances: the first running, the second made and stopped."""
    second = {**occ_env, "OCC_INSTANCE": f"{instance.name}-b"}
    try:
        run(second, "config", "set", "port", str(free_port()))
        run(second, "config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
        run(occ_env, "start")
        run(second, "start")
        run(second, "stop")
        yield occ_env, second
    finally:
        remove_everything_of(second["OCC_INSTANCE"])


def _listed(data: dict, name: str) -> dict:
    local = next(h for h in data["hosts"] if h["name"] == "local")
    return next(i for i in local["instances"] if i["instance"] == name)


def test_list_shows_each_instance_with_state_url_and_version(two_instances) -> None:
    first, second = two_instances
    urls = [json.loads(run(env, "--json", "auth", "show").stdout)["url"] for env in two_instances]

    listed = run(first, "--json", "list")
    data = json.loads(listed.stdout)
    running = _listed(data, first["OCC_INSTANCE"])
    stopped = _listed(data, second["OCC_INSTANCE"])
    assert (running["state"], running["url"], running["opencode_version"]) == (
        "running",
        urls[0],
        "1.18.33",
    )
    assert running["health"] == "healthy"
    assert (stopped["state"], stopped["url"], stopped["opencode_version"]) == (
        "exited",
        urls[1],
        "1.18.33",
    )

    table = run(first, "list").stdout.splitlines()
    assert table[0].split() == ["HOST", "INSTANCE", "STATE", "URL", "OPENCODE"]
    rows = {line.split()[1]: line.split() for line in table[1:] if line.startswith("local ")}
    assert rows[first["OCC_INSTANCE"]][2:5] == ["running", urls[0], "1.18.33"]
    assert rows[second["OCC_INSTANCE"]][2:5] == ["exited", urls[1], "1.18.33"]


def test_list_shows_a_host_that_does_not_answer_and_goes_on(two_instances) -> None:
    first, second = two_instances
    # Nothing listens on port 1 (refused at once); 10.255.255.1 takes no packets (silence).
    run(first, "host", "add", "refused", "ssh://root@127.0.0.1:1", "--no-test")
    run(first, "host", "add", "silent", "ssh://root@10.255.255.1", "--no-test")

    started = time.monotonic()
    listed = run(first, "--json", "list")
    took = time.monotonic() - started
    hosts = {h["name"]: h for h in json.loads(listed.stdout)["hosts"]}

    assert took < 10, took  # the silent host gets a few seconds, not ssh's minutes
    assert hosts["refused"]["reachable"] is False
    assert "refused" in hosts["refused"]["error"].lower()
    assert hosts["silent"]["reachable"] is False
    assert hosts["silent"]["error"].endswith("over SSH: no answer.")
    assert _listed(json.loads(listed.stdout), second["OCC_INSTANCE"])["state"] == "exited"
    table = run(first, "list").stdout
    assert "refused (ssh://root@127.0.0.1:1): unreachable:" in table
    assert first["OCC_INSTANCE"] in table


def test_open_hands_the_url_to_the_browser(two_instances, tmp_path: Path) -> None:
    first, second = two_instances
    asked = tmp_path / "asked"
    browser = _script(tmp_path, "browser", f'printf "%s\\n" "$@" >> {asked}\n')
    creds = json.loads(run(first, "--json", "auth", "show").stdout)

    opened = run({**first, "BROWSER": str(browser)}, "open")
    assert asked.read_text().split() == [creds["url"]]
    assert creds["url"] in opened.stdout
    assert creds["password"] not in opened.stdout + opened.stderr

    shown = run({**first, "BROWSER": str(browser)}, "open", "--show-password")
    assert f"Password: {creds['password']}" in shown.stdout

    # A stopped instance has nothing to open: say how to start it, open nothing.
    refused = run({**second, "BROWSER": str(browser)}, "open", check=False)
    assert refused.returncode == 3
    assert "start" in refused.stderr
    assert len(asked.read_text().split()) == 2


def test_open_without_a_browser_prints_where_to_sign_in(two_instances, tmp_path: Path) -> None:
    first, _ = two_instances
    creds = json.loads(run(first, "--json", "auth", "show").stdout)
    no_browser = {k: v for k, v in first.items() if k not in ("BROWSER", "DISPLAY")}
    no_browser["BROWSER"] = str(_script(tmp_path, "broken-browser", "exit 1\n"))

    opened = run(no_browser, "open")
    assert opened.stdout.splitlines()[0] == creds["url"]
    assert f"sign in as {creds['username']}" in opened.stderr
    assert "auth show" in opened.stderr
    assert creds["password"] not in opened.stdout + opened.stderr


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_config_edit_refuses_bad_edits_and_saves_a_good_one(two_instances, tmp_path) -> None:
    _, second = two_instances  # a made, stopped container: a restart would apply a change
    config = Path(json.loads(run(second, "--json", "config", "path").stdout)["path"])
    port = json.loads(run(second, "--json", "config", "get", "port").stdout)["port"]
    config.write_text("// my notes\n" + config.read_text())
    before = _digest(config)

    broken = _script(tmp_path, "broken", 'printf \'{ "port": 8080,, }\' > "$1"\n')
    refused = run({**second, "EDITOR": str(broken)}, "config", "edit", check=False)
    assert refused.returncode == 5
    error, hint = refused.stderr.strip().splitlines()
    assert error.startswith(f"Error: Not saved, {config} is unchanged: Invalid JSON in ")
    assert hint.startswith("Hint: Go on with your edits: `")
    assert _digest(config) == before

    bad_value = _script(
        tmp_path, "bad-value", 'sed -i "s/\\"port\\": [0-9]*/\\"port\\": 0/" "$1"\n'
    )
    refused = run({**second, "EDITOR": str(bad_value)}, "config", "edit", check=False)
    assert refused.returncode == 5
    assert "port is 0, but must be a whole number from 1 to 65535" in refused.stderr
    assert _digest(config) == before
    # The refused copy is kept, and the next edit can start from it.
    draft = refused.stderr.split("--from ", 1)[1].split("`", 1)[0]
    assert '"port": 0' in Path(draft).read_text()

    new_port = free_port()
    fix = _script(tmp_path, "fix", f'sed -i "s/\\"port\\": 0/\\"port\\": {new_port}/" "$1"\n')
    saved = run({**second, "EDITOR": str(fix)}, "config", "edit", "--from", draft)
    assert f"port: {port} -> {new_port}" in saved.stdout
    assert "Restart to apply (port)" in saved.stdout
    assert not Path(draft).exists()  # saved: the refused copy is not needed any more
    assert config.read_text().startswith("// my notes\n")  # the user's text, comments too
    assert json.loads(run(second, "--json", "config", "get", "port").stdout)["port"] == new_port
    status = json.loads(run(second, "--json", "status", check=False).stdout)
    assert status["pending_restart"] == ["port"]

    unchanged = run({**second, "VISUAL": "true"}, "config", "edit")
    assert unchanged.stdout.strip() == "No changes."


def test_config_edit_without_an_editor_says_how_to_name_one(occ_env, tmp_path: Path) -> None:
    config = Path(json.loads(run(occ_env, "--json", "config", "path").stdout)["path"])
    before = _digest(config)
    env = {k: v for k, v in occ_env.items() if k not in ("EDITOR", "VISUAL")}
    env["PATH"] = str(tmp_path)  # no editor, nano or vi on it
    refused = run(env, "config", "edit", check=False)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "Error: No editor found: $VISUAL and $EDITOR are not set, and none of editor, nano, "
        "vi is installed.",
        "Hint: Name your editor, for example: `EDITOR=nano occ --instance "
        f"{occ_env['OCC_INSTANCE']} config edit`.",
    ]
    assert _digest(config) == before


def test_config_describe(occ_env) -> None:
    port = json.loads(run(occ_env, "--json", "config", "describe", "port").stdout)
    assert port["type"] == "integer"
    assert port["default"] == 3000
    assert port["needs_restart"] is True
    assert port["changes"] == ["port"]
    assert port["rule"] == "must be a whole number from 1 to 65535"

    timeout = json.loads(run(occ_env, "--json", "config", "describe", "start_timeout").stdout)
    assert timeout["needs_restart"] is False
    version = json.loads(run(occ_env, "--json", "config", "describe", "opencode_version").stdout)
    assert version["applies_with"] == "update"

    text = run(occ_env, "config", "describe", "stop_timeout").stdout
    assert "Restart:  yes" in text and "(stop timeout)" in text

    unknown = run(occ_env, "config", "describe", "prot", check=False)
    assert unknown.returncode == 5
    assert unknown.stderr.splitlines()[0] == (
        "Error: Unknown configuration key 'prot'. Did you mean 'port'?"
    )
