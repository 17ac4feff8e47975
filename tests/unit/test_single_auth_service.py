"""`Service.ask_edge`, `revoke_sessions`, `enrol_totp` and the move of the login
service's state into a re-created container, on the in-memory engine."""

from __future__ import annotations

import io
import json
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cli_runner import Result, runner
from fake_opencode import FakeOpencode
from fakes import FakeEngine
from opencode_cloud.access import credentials
from opencode_cloud.cli.output import ExitCode
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.defaults import EDGE_STATE_DIR, EDGE_UID
from opencode_cloud.docker.image import LABEL_EDGE
from opencode_cloud.service.errors import EdgeRefused, EdgeTooOld, NotRunning
from opencode_cloud.service.service import Service
from service_helpers import NAME, Make

ANSWER = json.dumps({"ok": True, "sessions": [{"id": "0123456789ab"}]}).encode()


def single_admin_requests(fake: FakeEngine) -> list[dict[str, object]]:
    """The requests the tool handed to `edge.py single-admin`, in order."""
    found = []
    for name, command, user, workdir in fake.execs:
        if "single-admin" in command:
            assert (name, user, workdir) == (NAME, f"{EDGE_UID}:{EDGE_UID}", "/")
            assert command[:3] == (
                "/usr/bin/python3",
                "-I",
                "/usr/local/lib/opencode-cloud/edge.py",
            )
            path = command[-1]
            assert path.startswith("/run/opencode-cloud/edge/admin-")
            assert fake.file_modes[NAME][path] == (0o600, EDGE_UID)
            found.append(json.loads(fake.files[NAME][path]))
    return found


def test_a_request_reaches_the_edge_in_a_file_of_its_own_and_its_answer_comes_back(
    make: Make, fake: FakeEngine
) -> None:
    service = make()
    service.start()
    fake.exec_result = (b"noise\n" + ANSWER + b"\n", 0)
    assert service.ask_edge({"op": "sessions"})["sessions"] == [{"id": "0123456789ab"}]
    assert single_admin_requests(fake) == [{"op": "sessions"}]


def test_the_edges_refusal_is_an_error_with_its_words(make: Make, fake: FakeEngine) -> None:
    service = make()
    service.start()
    fake.exec_result = (json.dumps({"error": "no such session: 0123456789ab"}).encode(), 1)
    with pytest.raises(EdgeRefused) as caught:
        service.revoke_sessions("0123456789ab")
    assert caught.value.message == "no such session: 0123456789ab"
    fake.exec_result = (b"Traceback ...\nsomething broke", 1)
    with pytest.raises(EdgeRefused, match="something broke"):
        service.ask_edge({"op": "log"})


def test_an_older_image_or_a_stopped_container_is_not_asked(make: Make, fake: FakeEngine) -> None:
    service = make()
    service.start()
    labels = fake._raw(NAME)["Config"]["Labels"]
    labels[LABEL_EDGE] = "3"
    with pytest.raises(EdgeTooOld):
        service.ask_edge({"op": "sessions"})
    labels[LABEL_EDGE] = "4"
    service.stop()
    with pytest.raises(NotRunning):
        service.ask_edge({"op": "sessions"})
    assert single_admin_requests(fake) == []


def test_enrolling_totp_names_the_user_and_the_instance(make: Make, fake: FakeEngine) -> None:
    service = make(username="dev@example")
    service.start()
    enrolled = {
        "ok": True,
        "totp": "pending",
        "secret": "S",
        "uri": "otpauth://x",
        "recovery_codes": ["c"],
    }
    fake.exec_result = (json.dumps(enrolled).encode(), 0)
    answer = service.enrol_totp()
    assert answer == {"secret": "S", "uri": "otpauth://x", "recovery_codes": ["c"]}
    (request,) = single_admin_requests(fake)
    assert request == {"op": "totp", "issuer": "opencode-cloud unit", "label": "dev@example"}
    # Every browser was signed out: Caddy started afresh, closing what they held open.
    assert ("kill_container", NAME) in fake.calls


def edge_folder(content: bytes) -> bytes:
    """A tar of the login service's folder as the engine gives it (here one file)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(EDGE_STATE_DIR.rsplit("/", 1)[-1])
        info.size, info.uid, info.mode = len(content), EDGE_UID, 0o600
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_a_re_created_container_gets_the_login_services_state_before_it_starts(
    make: Make, fake: FakeEngine, serve: Callable[[], FakeOpencode]
) -> None:
    make().start()
    fake.put_archive(NAME, "/var/lib", edge_folder(b"sessions, log, totp"))
    other = serve()
    fake.calls.clear()
    result = make(port=other.port).start()
    assert result.recreated_because == ["port"]
    assert fake.files[NAME][EDGE_STATE_DIR] == b"sessions, log, totp"
    calls = [call for call, _ in fake.calls]
    assert calls.index("get_archive") < calls.index("remove_container")
    put = max(i for i, call in enumerate(calls) if call == "put_archive")
    assert calls.index("create_container") < put < calls.index("start_container")


def test_a_container_without_that_folder_is_re_created_all_the_same(
    make: Make, fake: FakeEngine, serve: Callable[[], FakeOpencode]
) -> None:
    make().start()
    other = serve()
    assert make(port=other.port).start().recreated_because == ["port"]
    assert EDGE_STATE_DIR not in fake.files[NAME]


def test_state_held_for_a_restore_goes_into_the_next_container_and_off_the_disk(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    service = make()
    service.start()
    fake.put_archive(NAME, "/var/lib", edge_folder(b"totp key"))
    service.hold_edge_state()
    assert stat.S_IMODE(paths.edge_state_file.stat().st_mode) == 0o600
    fake.remove_container(NAME, force=True)  # what a restore does
    make().start()
    assert fake.files[NAME][EDGE_STATE_DIR] == b"totp key"
    assert not paths.edge_state_file.exists()


# --------------------------------------------------------------------------- the commands


@pytest.fixture
def occ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Result]:
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("OCC_INSTANCE", raising=False)
    return runner(capsys)


@pytest.mark.parametrize("which", ["0123", "ZZZZZZZZZZZZ", "0123456789abc", "../all"])
def test_revoking_something_that_is_no_id_is_a_usage_error(
    occ: Callable[..., Result], which: str
) -> None:
    result = occ("auth", "sessions", "--revoke", which)
    assert result.code == ExitCode.USAGE
    assert "12 hex digits" in result.err and result.out == ""


def test_turning_totp_off_needs_a_yes(occ: Callable[..., Result], tmp_path: Path) -> None:
    result = occ("auth", "totp", "--off")
    assert result.code == ExitCode.USAGE
    assert "TOTP stays on." in result.err and "--yes" in result.err


def test_with_a_second_factor_the_tools_checks_read_the_sessions_from_inside(
    make: Make, fake: FakeEngine, opencode: FakeOpencode
) -> None:
    opencode.second_factor = True
    fake.exec_result = (json.dumps([{"id": "ses_1"}]).encode(), 0)
    service = make()
    assert service.start().healthy is True
    inside = [c for _, c, _, _ in fake.execs if c[-1].endswith("/session")]
    assert inside and inside[0][0] == "/usr/bin/curl"
    status = service.status(service_password(service))
    assert (status.http_health, status.session_api) == ("healthy", "ok")
    # What opencode answers inside decides: no list there is a failing session API.
    fake.exec_result = (b"", 22)
    status = service.status(service_password(service))
    assert status.session_api not in (None, "ok") and status.http_health == "unhealthy"


def service_password(service: Service) -> str:
    password = credentials.read_password(service.paths)
    assert password is not None
    return password


@pytest.mark.parametrize(
    "command", [("auth", "sessions"), ("auth", "log"), ("auth", "totp", "--status")]
)
def test_team_mode_sends_the_admin_to_its_own_commands(
    occ: Callable[..., Result], command: tuple[str, ...]
) -> None:
    from opencode_cloud.config.paths import instance_paths

    team_file = instance_paths().team_file
    team_file.parent.mkdir(parents=True, exist_ok=True)
    team_file.write_text(json.dumps({"enabled": True, "first": "ada"}))
    result = occ(*command)
    assert result.code == ExitCode.USAGE
    assert "team mode already" in result.err and "occ team status" in result.err
