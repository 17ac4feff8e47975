"""`occ config edit` in-process: on a terminal a refused edit is offered again, and
editing again keeps what was typed; an edit that exposes the service needs a yes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import click
import pytest

from cli_runner import runner
from opencode_cloud.cli.output import Output


def _editor(tmp_path: Path, *steps: str) -> Path:
    """An editor that writes `steps[n]` into the file at its n-th run (and counts runs)."""
    for index, text in enumerate(steps):
        (tmp_path / f"step{index}").write_text(text)
    script = tmp_path / "editor"
    script.write_text(
        "#!/bin/sh\n"
        f"n=$(cat {tmp_path}/runs 2>/dev/null || echo 0)\n"
        f'cp {tmp_path}/step$n "$1"\n'
        f"echo $((n + 1)) > {tmp_path}/runs\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("OCC_INSTANCE", raising=False)
    monkeypatch.delenv("VISUAL", raising=False)
    path = tmp_path / "config" / "config.json"
    path.parent.mkdir()
    path.write_text('{"port": 3001}\n')
    return path


def test_on_a_terminal_a_refused_edit_is_offered_again(
    tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    editor = _editor(tmp_path, '{"port": 0}\n', '{"port": 3002}\n')
    monkeypatch.setenv("EDITOR", str(editor))
    monkeypatch.setattr(Output, "interactive", property(lambda self: True))
    asked: list[str] = []

    def confirm(text: str, **_: object) -> bool:
        asked.append(text)
        return True

    monkeypatch.setattr(click, "confirm", confirm)

    result = runner(capsys)("config", "edit")

    assert result.code == 0, result.err
    assert asked == ["Edit again?"]
    assert "port is 0, but must be a whole number" in result.err
    assert "port: 3001 -> 3002" in result.out
    assert json.loads(config_file.read_text()) == {"port": 3002}
    assert (tmp_path / "runs").read_text().strip() == "2"


def test_exposing_the_service_needs_a_yes_and_keeps_the_edit(
    tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    exposed = '{"port": 3001, "bind_address": "0.0.0.0"}\n'
    monkeypatch.setenv("EDITOR", str(_editor(tmp_path, exposed, exposed)))
    before = config_file.read_bytes()

    refused = runner(capsys)("config", "edit")

    assert refused.code == 5
    assert config_file.read_bytes() == before
    draft = refused.err.split("--from ", 1)[1].split(" --yes`", 1)[0]
    assert Path(draft).read_text() == exposed

    saved = runner(capsys)("config", "edit", "--from", draft, "--yes")
    assert saved.code == 0, saved.err
    assert json.loads(config_file.read_text())["bind_address"] == "0.0.0.0"
