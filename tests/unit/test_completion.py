"""Shell completion past the command names: configuration keys, instance names, saved
hosts, mount paths and environment variables, as the shell asks for them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.shell_completion import ShellComplete

from opencode_cloud.cli.app import app


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cfg"
    folder.mkdir()
    monkeypatch.setenv("OCC_CONFIG_DIR", str(folder))
    for name in ("OCC_INSTANCE", "OCC_HOST"):
        monkeypatch.delenv(name, raising=False)
    return folder


def complete(*words: str) -> list[str]:
    """What the shell offers after `occ WORDS...`; the last word is the one being typed."""
    *args, incomplete = words
    completer = ShellComplete(app, {}, "occ", "_OCC_COMPLETE")
    return [item.value for item in completer.get_completions(list(args), incomplete)]


def write_config(folder: Path, data: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(data))


def save_hosts(config_dir: Path, *names: str, default: str | None = None) -> None:
    hosts = {name: {"address": f"ssh://me@{name}.example"} for name in names}
    (config_dir / "hosts.json").write_text(json.dumps({"default": default, "hosts": hosts}))


def test_config_keys(config_dir: Path) -> None:
    from opencode_cloud.config.schema import KEYS, RETIRED_KEYS

    assert complete("config", "set", "") == [k for k in KEYS if k not in RETIRED_KEYS]
    assert complete("config", "set", "tls") == ["tls", "tls_cert", "tls_key"]
    assert complete("config", "get", "po") == ["port"]
    assert "restart_retries" not in complete("config", "set", "re")


def test_config_unset_offers_what_the_file_sets_first(config_dir: Path) -> None:
    write_config(config_dir, {"tls": "off", "colour": "blue"})
    offered = complete("config", "unset", "")
    assert offered[:2] == ["tls", "colour"]  # an unknown key too: unset removes it
    assert "port" in offered


def test_environment_variables_of_the_instance(config_dir: Path) -> None:
    write_config(config_dir, {"env": {"TZ": "UTC", "ANTHROPIC_API_KEY": "x"}})
    write_config(config_dir / "instances" / "work", {"env": {"WORK_ONLY": "1"}})
    assert complete("config", "env", "unset", "") == ["ANTHROPIC_API_KEY", "TZ"]
    assert complete("--instance", "work", "config", "env", "unset", "") == ["WORK_ONLY"]


def test_instance_names_from_the_config_folder(config_dir: Path) -> None:
    for name in ("work", "demo"):
        (config_dir / "instances" / name).mkdir(parents=True)
    (config_dir / "hosts" / "cloud" / "instances" / "far").mkdir(parents=True)
    assert complete("--instance", "") == ["default", "demo", "work"]
    assert complete("--instance", "w") == ["work"]
    assert complete("--host", "cloud", "--instance", "") == ["default", "far"]


def test_host_names_from_the_saved_hosts(config_dir: Path) -> None:
    save_hosts(config_dir, "cloud", "lab")
    assert complete("--host", "") == ["cloud", "lab", "local"]
    assert complete("host", "remove", "") == ["cloud", "lab"]
    assert complete("host", "test", "c") == ["cloud"]
    assert complete("host", "default", "l") == ["lab", "local"]


def test_mount_paths_for_mount_remove(config_dir: Path) -> None:
    write_config(
        config_dir,
        {"mounts": ["/home/me/app:/home/opencode/projects/app", "/srv/data:/data:ro"]},
    )
    assert complete("mount", "remove", "") == [
        "/home/me/app",
        "/home/opencode/projects/app",
        "/srv/data",
        "/data",
    ]
    assert complete("mount", "remove", "/s") == ["/srv/data"]


def test_a_broken_file_completes_nothing_rather_than_fail(config_dir: Path) -> None:
    (config_dir / "config.json").write_text("{ not json")
    (config_dir / "hosts.json").write_text("[]")
    assert complete("mount", "remove", "") == []
    assert complete("config", "env", "unset", "") == []
    assert complete("host", "remove", "") == []
    assert complete("--instance", "") == ["default"]


def test_the_completion_functions_alone(config_dir: Path) -> None:
    """Called as click calls them: a context, the parameter, what is typed."""
    import click

    from opencode_cloud.cli import completion_values as values

    save_hosts(config_dir, "cloud")
    write_config(config_dir, {"mounts": ["/a:/b"], "env": {"X": "1"}})
    ctx = click.Context(app, info_name="occ")
    ctx.params = {"instance": "default", "host_name": None}
    param = app.params[0]
    assert [i.value for i in values.host_names(ctx, param, "")] == ["cloud", "local"]
    assert [i.value for i in values.instance_names(ctx, param, "")] == ["default"]
    assert [i.value for i in values.mount_paths(ctx, param, "/")] == ["/a", "/b"]
    assert [i.value for i in values.env_names(ctx, param, "")] == ["X"]
    assert [i.value for i in values.config_keys(ctx, param, "bind")] == ["bind_address"]
