"""`occ config set` and the other changing commands keep the file's comments: only the
text of what changed is edited, and what cannot be edited so is written anew with the
old file kept and a warning, never dropped without a word."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import json5
import pytest

from cli_runner import runner
from opencode_cloud.config.jsonc import comments_of, edit_text

# The example of docs/configuration.md.
DOCUMENTED = """\
// ~/.config/opencode-cloud/config.json
{
  "port": 8080,
  "bind_address": "127.0.0.1",
  /* behind the company proxy */
  "ca_certificates": ["/etc/ssl/certs/corp-ca.pem"],
  "env": {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
  },
}
"""


@pytest.fixture
def occ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "cfg"))
    for name in ("OCC_INSTANCE", "OCC_HOST"):
        monkeypatch.delenv(name, raising=False)
    return runner(capsys)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "cfg" / "config.json"
    path.parent.mkdir(parents=True)
    return path


def edited(text: str, change: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> str:
    old = json5.loads(text)
    new = {key: value for key, value in {**old, **(change or {})}.items() if key not in drop}
    result = edit_text(text, old, new)
    assert result is not None, text
    assert json5.loads(result) == new
    for comment in comments_of(text):
        assert comment in result
    return result


# --------------------------------------------------------------------------- the text edits


def test_a_changed_value_is_the_only_change() -> None:
    result = edited(DOCUMENTED, {"port": 9090})
    assert result == DOCUMENTED.replace('"port": 8080', '"port": 9090')


def test_a_new_key_goes_last_in_the_layout_of_the_others() -> None:
    result = edited(DOCUMENTED, {"tls": "off", "host_names": ["a.lan", "b.lan"]})
    assert result.endswith(
        '  "tls": "off",\n  "host_names": [\n    "a.lan",\n    "b.lan"\n  ],\n}\n'
    )
    assert result.startswith(DOCUMENTED[: DOCUMENTED.rindex("}")])


def test_a_new_key_after_a_last_member_without_a_comma() -> None:
    text = '{\n  // the port\n  "port": 8080\n}\n'
    assert edited(text, {"tls": "off"}) == '{\n  // the port\n  "port": 8080,\n  "tls": "off"\n}\n'


def test_a_removed_key_takes_its_line_and_leaves_the_comments() -> None:
    result = edited(DOCUMENTED, drop=("bind_address",))
    assert result == DOCUMENTED.replace('  "bind_address": "127.0.0.1",\n', "")


def test_a_removed_key_with_a_comment_on_its_line_leaves_the_comment() -> None:
    text = '{\n  "port": 8080, // mine\n  "tls": "off"\n}\n'
    result = edited(text, drop=("port",))
    assert "// mine" in result and "port" not in result


def test_a_nested_object_is_edited_inside() -> None:
    text = '{\n  "env": {\n    // for the proxy\n    "A": "1",\n  },\n}\n'
    result = edited(text, {"env": {"A": "1", "B": "2"}})
    assert result == '{\n  "env": {\n    // for the proxy\n    "A": "1",\n    "B": "2",\n  },\n}\n'
    result = edited(text, {"env": {}})
    assert "// for the proxy" in result and '"A"' not in result


def test_one_line_files_and_empty_objects() -> None:
    assert edited('{"port": 8080 /* mine */}', {"tls": "off"}) == (
        '{"port": 8080, "tls": "off" /* mine */}'
    )
    assert edited("// nothing yet\n{}\n", {"port": 1}) == '// nothing yet\n{ "port": 1 }\n'
    assert edited("// nothing yet\n{\n}\n", {"port": 1}) == '// nothing yet\n{\n  "port": 1\n}\n'
    assert edited("{\n  // later\n}\n", {"port": 1}) == '{\n  // later\n  "port": 1\n}\n'


def test_what_looks_like_a_comment_inside_a_string_is_text() -> None:
    text = '{\n  // real\n  "env": {"URL": "http://x/*y*/"},\n  \'port\': 1,\n  tls: "off",\n}\n'
    assert comments_of(text) == ["// real"]
    result = edited(text, {"port": 2, "tls": "auto"})
    assert "'port': 2" in result and 'tls: "auto"' in result


def test_a_comment_inside_a_replaced_list_gives_up_the_edit() -> None:
    text = '{\n  "mounts": [\n    // the app\n    "/a:/b"\n  ]\n}\n'
    assert edit_text(text, json5.loads(text), {"mounts": ["/a:/b", "/c:/d"]}) is None


def test_text_the_scanner_cannot_follow_gives_up_the_edit() -> None:
    assert edit_text('{"port": 1} /* open', {"port": 1}, {"port": 2}) is None
    assert edit_text("[1]", {}, {"port": 2}) is None
    assert edit_text("", {}, {"port": 2}) is None


# --------------------------------------------------------------------------- the commands


def test_config_set_keeps_the_comments(occ, config_file: Path) -> None:
    config_file.write_text(DOCUMENTED)
    result = occ("config", "set", "port", "9090")
    assert result.code == 0, result.err
    assert "Warning" not in result.err
    assert config_file.read_text() == DOCUMENTED.replace("8080", "9090")
    assert occ("config", "env", "set", "TZ=Europe/Paris").code == 0
    assert occ("config", "unset", "bind_address").code == 0
    text = config_file.read_text()
    assert "// ~/.config/opencode-cloud/config.json" in text
    assert "/* behind the company proxy */" in text
    assert json5.loads(text) == {
        "port": 9090,
        "ca_certificates": ["/etc/ssl/certs/corp-ca.pem"],
        "env": {"OPENCODE_DISABLE_AUTOUPDATE": "1", "TZ": "Europe/Paris"},
    }


def test_a_file_without_comments_is_written_as_plain_json(occ, config_file: Path) -> None:
    config_file.write_text("{port: 8080,}")
    assert occ("config", "set", "port", "9090").code == 0
    assert json.loads(config_file.read_text()) == {"port": 9090}


def test_comments_that_cannot_be_kept_are_never_dropped_without_a_word(
    occ, config_file: Path, tmp_path: Path
) -> None:
    old = '{\n  "mounts": [\n    // the app\n    "/srv/a:/srv/b"\n  ]\n}\n'
    config_file.write_text(old)
    result = occ("config", "set", "mounts", "/srv/a:/srv/b,/srv/c:/srv/d")
    assert result.code == 0, result.err
    assert "Warning" in result.err and "comments" in result.err
    backup = tmp_path / "cfg" / "config.json.bak"
    assert str(backup) in result.err
    assert backup.read_text() == old
    assert json.loads(config_file.read_text()) == {"mounts": ["/srv/a:/srv/b", "/srv/c:/srv/d"]}


def test_config_set_help_says_comments_are_kept(occ) -> None:
    assert "comments" in occ("config", "set", "--help").out.lower()
