"""`occ user totp` and `Team.totp` on the in-memory engine, with the door's admin requests
applied by the real login service (sandbox/edge.py) to a database in a temporary folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyotp
import pytest

from cli_runner import runner
from fakes import FakeEngine
from opencode_cloud.cli.commands.team import people_lines, totp_lines
from opencode_cloud.cli.output import ExitCode
from opencode_cloud.team import door
from opencode_cloud.team.errors import DoorNotRunning, DoorRefused
from opencode_cloud.team.team import Team
from unit.test_edge import edge
from unit.test_team import team  # noqa: F401  (the fixture)


@pytest.fixture
def people(monkeypatch: pytest.MonkeyPatch, fake: FakeEngine, tmp_path: Path) -> Any:
    """The door's database, changed by edge.py's own `apply_admin`."""
    database = edge.People(tmp_path / "door" / "team.db")

    def admin(client: Any, layout: Any, request: dict[str, Any]) -> dict[str, Any]:
        info = client.find_container(layout.door)
        if info is None or not info.running:
            raise DoorNotRunning(layout.door)
        try:
            return dict(edge.apply_admin(database, request, time.time()))
        except edge.AdminError as exc:
            raise DoorRefused(str(exc)) from None

    monkeypatch.setattr(door, "admin", admin)
    yield database
    database.close()


def test_enrolling_gives_a_uri_and_recovery_codes_and_list_shows_it(
    team: Team,  # noqa: F811
    people: Any,
) -> None:
    team.start()
    team.add("alice")
    team.add("bob")
    enrolled = team.totp("alice")
    secret, uri, codes = enrolled["secret"], enrolled["uri"], enrolled["recovery_codes"]
    assert pyotp.parse_uri(uri).secret == secret
    assert uri.startswith("otpauth://totp/")
    assert len(codes) == 10
    assert {p.name: p.totp for p in team.people()} == {"alice": "pending", "bob": None}
    lines = "\n".join(people_lines(team.people()))
    assert "totp (pending)" in lines
    assert [e for _, n, e, _ in people.events() if n == "alice"][-1] == "totp-on"

    team.totp_off("alice")
    assert {p.name: p.totp for p in team.people()} == {"alice": None, "bob": None}
    with pytest.raises(DoorRefused, match="alice has no TOTP"):
        team.totp_off("alice")


def test_a_named_instance_is_in_the_issuer(team: Team, people: Any) -> None:  # noqa: F811
    team.start()
    team.add("alice")
    issuer = pyotp.parse_uri(team.totp("alice")["uri"]).issuer
    name = team.instance.name
    assert issuer == ("opencode-cloud" if team.instance.is_default else f"opencode-cloud {name}")


def test_the_terminal_shows_a_qr_code_the_key_and_the_codes() -> None:
    secret = pyotp.random_base32(32)
    uri = pyotp.TOTP(secret).provisioning_uri(name="alice", issuer_name="opencode-cloud")
    codes = [f"aaaa-bbbb-cccc-{i:04d}" for i in range(10)]
    lines = totp_lines("alice", {"secret": secret, "uri": uri, "recovery_codes": codes})
    qr = [line for line in lines if set(line) & set("█▀▄")]
    assert len(qr) > 10  # a QR code of half blocks, a line per two rows of modules
    key = next(line for line in lines if line.startswith("Or type this key"))
    assert key.split(": ")[1].replace(" ", "") == secret
    assert all(f"  {code}" in lines for code in codes)


def test_turning_totp_off_needs_a_yes_and_changes_nothing_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("OCC_INSTANCE", raising=False)
    result = runner(capsys)("user", "totp", "alice", "--off")
    assert result.code == ExitCode.USAGE
    assert "TOTP stays on for alice" in result.err
    assert "--yes" in result.err
    assert not any(tmp_path.rglob("team.json"))


def test_totp_outside_team_mode_says_how_to_turn_it_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("OCC_INSTANCE", raising=False)
    result = runner(capsys)("user", "totp", "alice")
    assert result.code == ExitCode.USAGE, result.err
    assert "not in team mode" in result.err and "occ team enable" in result.err
    assert result.out == ""
