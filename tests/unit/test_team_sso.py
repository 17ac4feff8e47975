"""`occ team sso` and team/sso.py on the in-memory engine, the door's records kept by the
login service's own code (edge.py's apply_admin on a database in tmp_path) as `edge.py
admin` keeps them. The sign-ins themselves: tests/e2e/test_oidc_sign_in.py (a real
provider) and test_oidc_door.py (the real door and Chromium)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli_runner import isolated_runner, one_error
from fakes import FakeEngine
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.config.schema import Config
from opencode_cloud.config.store import save_config
from opencode_cloud.defaults import INTERNAL_PASSWORD_PATH
from opencode_cloud.service.service import Service
from opencode_cloud.team import door, sso
from opencode_cloud.team.errors import DoorRefused, SsoSettingsError
from opencode_cloud.team.team import Team
from service_helpers import INSTANCE
from unit.test_edge import edge
from unit.test_team import answering

PREFIX = INSTANCE.service_prefix
SECRET = "the-client-secret-0123456789"


@pytest.fixture
def people(tmp_path: Path) -> Any:
    return edge.People(tmp_path / "door" / "team.db")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, people: Any) -> list[dict[str, Any]]:
    """Every request the tool sends to the door, applied by the door's own code."""
    requests: list[dict[str, Any]] = []

    def admin(_client: Any, _layout: Any, request: dict[str, Any]) -> dict[str, Any]:
        requests.append(request)
        try:
            return dict(edge.apply_admin(people, request, 1_000_000.0))
        except edge.AdminError as exc:
            raise DoorRefused(str(exc)) from None

    monkeypatch.setattr(door, "admin", admin)
    return requests


@pytest.fixture
def team(fake: FakeEngine, tmp_path: Path) -> Team:
    paths = InstancePaths(tmp_path / INSTANCE.name)
    config = Config(port=43999, start_timeout=5)
    save_config(paths.config_file, config)
    return answering(Team(Service(fake, config, INSTANCE, paths)))


def settings(**changes: Any) -> sso.SsoSettings:
    values: dict[str, Any] = {
        "issuer": "https://id.example.com",
        "client_id": "door",
        "allowed_domains": ["example.com"],
        **changes,
    }
    return sso.SsoSettings(**values)


def test_the_settings_reach_the_door_and_the_secret_never_comes_back(
    team: Team, sent: list[dict[str, Any]], people: Any
) -> None:
    kept = sso.set_up(team, settings(create_people=True), SECRET)
    assert kept["issuer"] == "https://id.example.com" and kept["create_people"] is True
    assert sent[-1]["client_secret"] == SECRET  # in the request file, not argv
    shown = sso.show(team)
    assert shown["settings"] == kept
    assert SECRET not in json.dumps(shown)
    assert people._all("SELECT client_secret FROM oidc_settings") == [(SECRET,)]
    assert [e for _t, _n, e, _a in people.events()] == ["sso-set"]
    sso.turn_off(team)
    assert sso.show(team)["settings"] is None


@pytest.mark.parametrize(
    "changes",
    [
        {"issuer": "http://id.example.com", "allow_http": True},  # http on a public name
        {"issuer": "http://127.0.0.1:9000"},  # http without allow_http
        {"issuer": "ftp://id.example.com"},
        {"allowed_domains": []},  # nobody allowed
    ],
)
def test_refused_settings_send_nothing(
    team: Team, sent: list[dict[str, Any]], changes: dict[str, Any]
) -> None:
    with pytest.raises(SsoSettingsError):
        sso.set_up(team, settings(**changes), SECRET)
    assert sent == []


def test_an_http_issuer_on_a_private_address_is_allowed_when_asked(
    team: Team, sent: list[dict[str, Any]]
) -> None:
    kept = sso.set_up(team, settings(issuer="http://172.18.0.1:9000", allow_http=True), SECRET)
    assert kept["allow_http"] is True


@pytest.mark.parametrize("content", [b"", b"\n", b"one\ntwo\n", b"x" * 2000, b"tab\there"])
def test_a_secret_file_that_is_not_one_line_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    with pytest.raises(SsoSettingsError):
        sso.read_secret(path)


def test_the_secret_is_the_first_line_of_its_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    assert sso.read_secret(path) == SECRET
    with pytest.raises(SsoSettingsError):
        sso.read_secret(tmp_path / "missing")


def test_sync_makes_the_instance_of_a_person_made_at_their_first_sign_in(
    fake: FakeEngine, team: Team, sent: list[dict[str, Any]], people: Any
) -> None:
    team.start()
    team.add("ada")
    # What the door's login service writes at a first sign-in (edge_oidc.Sso._person).
    people._run(
        "INSERT INTO people (name, hash, generation, internal_password, upstream, admin, "
        "email, disabled, created) VALUES ('carol', ?, 'g', '', '', 0, NULL, 0, 1)",
        edge.edge_oidc.NO_PASSWORD,
    )

    assert sso.sync(team) == ["carol"]

    container = f"{PREFIX}-user-carol"
    assert container in fake.containers
    carol = people.get("carol")
    assert carol.upstream == f"{container}:4096"
    written = fake.files[container][INTERNAL_PASSWORD_PATH]
    assert written.decode().strip() == carol.internal_password
    assert sso.sync(team) == []  # everyone has theirs now


@pytest.fixture
def occ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    return isolated_runner(tmp_path, monkeypatch, capsys)


def test_the_command_refuses_bad_settings_with_one_line_before_reaching_the_door(
    occ, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    base = ["team", "sso", "set", "--client-id", "door", "--client-secret-file", str(secret)]
    result = occ(*base, "--issuer", "http://id.example.com", "--allow-domain", "example.com")
    assert result.code != 0 and "https" in one_error(result)
    result = occ(*base, "--issuer", "https://id.example.com")
    assert result.code != 0 and "nobody is allowed" in one_error(result)
    empty = tmp_path / "empty"
    empty.write_text("")
    result = occ(
        *base[:-1], str(empty), "--issuer", "https://id.example.com", "--allow-domain", "x.org"
    )
    assert result.code != 0 and "one line" in one_error(result)
    assert SECRET not in result.err
