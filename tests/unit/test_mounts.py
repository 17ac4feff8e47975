"""Host folder mounts: the stored form, the command-line form, and every refusal."""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
from pathlib import Path

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest
from pydantic import ValidationError

from opencode_cloud.config.edit import parse_value
from opencode_cloud.config.errors import ConfigValidationError
from opencode_cloud.config.schema import EXAMPLES, RULES, Config, generate_schema
from opencode_cloud.defaults import EDGE_UID, WORKING_DIR
from opencode_cloud.docker.spec import runtime_owner
from opencode_cloud.mounts import (
    PROTECTED_CONTAINER_PATHS,
    SYSTEM_CONTAINER_PATHS,
    HostMount,
    MountError,
    check_mount,
    check_new_mount,
    default_container_path,
    docker_socket_paths,
    find_mount,
    folder_owner,
    parse_argument,
    resolve_host_path,
)

NO_ENV: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of its own, so `~` and the Docker Desktop sockets are the test's."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    return home


@pytest.fixture
def code(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    return folder


def _refusal(mount: HostMount, existing: list[HostMount] | None = None) -> MountError:
    with pytest.raises(MountError) as caught:
        check_new_mount(mount, existing or [], NO_ENV)
    error = caught.value
    assert "\n" not in error.message
    assert error.hint and "\n" not in error.hint
    return error


# --- the stored form ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "stored"),
    [
        ("/a:/b", HostMount("/a", "/b", False), "/a:/b"),
        ("/a:/b:ro", HostMount("/a", "/b", True), "/a:/b:ro"),
        ("/a:/b:rw", HostMount("/a", "/b", False), "/a:/b"),
        ("/srv/my code:/home/opencode/my code", None, "/srv/my code:/home/opencode/my code"),
        ("/a/:/b/c/", HostMount("/a", "/b/c", False), "/a:/b/c"),
        ("/a/./x/../y:/b//c/..:ro", HostMount("/a/y", "/b", True), "/a/y:/b:ro"),
        ("//a:///b", HostMount("/a", "/b", False), "/a:/b"),
    ],
)
def test_parse_and_stored_form(text: str, expected: HostMount | None, stored: str) -> None:
    mount = HostMount.parse(text)
    if expected is not None:
        assert mount == expected
    assert str(mount) == stored
    assert HostMount.parse(str(mount)) == mount


@pytest.mark.parametrize(
    "text",
    [
        "",
        "/a",
        "/a:",
        ":/b",
        "a:/b",
        "/a:b",
        "~/code:/b",
        "/a:/b:xx",
        "/a:/b:ro:ro",
        "/a:b:/c",
        "/a:/b:RO",
        "/a\x00:/b",
        "/a\udcff:/b",
    ],
)
def test_parse_refuses_what_is_not_a_stored_mount(text: str) -> None:
    with pytest.raises(MountError) as caught:
        HostMount.parse(text)
    assert caught.value.reason in ("syntax", "not-text")


def test_mode_property() -> None:
    assert HostMount.parse("/a:/b:ro").mode == "ro"
    assert HostMount.parse("/a:/b").mode == "rw"


@pytest.mark.parametrize(
    ("host", "container"),
    [
        ("/home/alice/code", "/home/opencode/projects/code"),
        ("/home/alice/code/", "/home/opencode/projects/code"),
        ("/srv/My Project", "/home/opencode/projects/My Project"),
    ],
)
def test_default_container_path_is_beside_the_projects(host: str, container: str) -> None:
    assert default_container_path(host) == container
    assert posixpath.dirname(default_container_path(host)) == WORKING_DIR


# --- the command-line form ------------------------------------------------------------


def test_argument_host_only_goes_to_the_home(code: Path) -> None:
    assert parse_argument(str(code)) == HostMount(str(code), "/home/opencode/projects/code", False)


@pytest.mark.parametrize(
    ("suffix", "read_only", "container", "expected_ro"),
    [
        ("", False, "/home/opencode/projects/code", False),
        (":ro", False, "/home/opencode/projects/code", True),
        (":rw", False, "/home/opencode/projects/code", False),
        ("", True, "/home/opencode/projects/code", True),
        (":ro", True, "/home/opencode/projects/code", True),
        (":/srv/src", False, "/srv/src", False),
        (":/srv/src/:ro", False, "/srv/src", True),
        (":/srv/src:rw", False, "/srv/src", False),
        (":/srv/src", True, "/srv/src", True),
        (":/srv/x/../src", False, "/srv/src", False),
    ],
)
def test_argument_forms(
    code: Path, suffix: str, read_only: bool, container: str, expected_ro: bool
) -> None:
    mount = parse_argument(f"{code}{suffix}", read_only=read_only)
    assert mount == HostMount(str(code), container, expected_ro)


def test_argument_expands_the_home_and_relative_paths(
    _home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (_home / "src").mkdir()
    assert parse_argument("~/src").host == str(_home / "src")
    monkeypatch.chdir(_home)
    assert parse_argument("src:ro") == HostMount(
        str(_home / "src"), "/home/opencode/projects/src", True
    )
    assert parse_argument("./src/../src").host == str(_home / "src")


def test_argument_resolves_symbolic_links(tmp_path: Path, code: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(code)
    mount = parse_argument(str(link))
    assert mount.host == str(code)
    # The default container path follows the real folder's name, not the link's.
    assert mount.container == "/home/opencode/projects/code"
    assert resolve_host_path(str(link) + "/") == str(code)


@pytest.mark.parametrize(
    "text",
    ["", ":/b", ":ro", "/a:/b:/c", "/a:/b:/c:ro", "/a:relative", "/a:"],
)
def test_argument_syntax_errors(text: str) -> None:
    with pytest.raises(MountError) as caught:
        parse_argument(text)
    assert caught.value.reason == "syntax"
    assert caught.value.hint


def test_argument_read_only_flag_contradicts_rw(code: Path) -> None:
    with pytest.raises(MountError, match="--read-only"):
        parse_argument(f"{code}:rw", read_only=True)


def test_argument_with_nul_is_refused_before_touching_the_disk() -> None:
    with pytest.raises(MountError) as caught:
        parse_argument("/a\x00b")
    assert caught.value.reason == "not-text"


# --- refusals -------------------------------------------------------------------------


def test_a_good_mount_passes(code: Path) -> None:
    check_new_mount(HostMount(str(code), "/home/opencode/code"), [], NO_ENV)


def test_missing_host_folder(tmp_path: Path) -> None:
    error = _refusal(HostMount(str(tmp_path / "nope"), "/home/opencode/nope"))
    assert error.reason == "missing"
    assert str(tmp_path / "nope") in error.message


def test_host_file_is_not_a_folder(tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("x")
    error = _refusal(HostMount(str(file), "/home/opencode/notes"))
    assert error.reason == "not-a-folder"
    assert str(tmp_path) in error.hint


def test_duplicate_host_folder(code: Path) -> None:
    existing = [HostMount(str(code), "/home/opencode/code")]
    error = _refusal(HostMount(str(code), "/home/opencode/other"), existing)
    assert error.reason == "duplicate-host"
    assert error.path == str(code)


def test_duplicate_host_folder_through_a_link(tmp_path: Path, code: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(code)
    # A hand-written entry naming the link is the same folder as the resolved one.
    existing = [HostMount(str(link), "/home/opencode/link")]
    error = _refusal(parse_argument(f"{code}:/home/opencode/other"), existing)
    assert error.reason == "duplicate-host"


def test_duplicate_container_path(tmp_path: Path, code: Path) -> None:
    other = tmp_path / "other" / "code"
    other.mkdir(parents=True)
    existing = [HostMount(str(code), "/home/opencode/code")]
    error = _refusal(HostMount(str(other), "/home/opencode/code"), existing)
    assert error.reason == "duplicate-container"
    assert error.path == "/home/opencode/code"
    # The suggestion is a free place, not the taken one.
    assert error.hint.endswith(f"{other}:/home/opencode/projects/code")


def test_protected_paths_are_the_ones_of_the_brief() -> None:
    assert set(PROTECTED_CONTAINER_PATHS) == {
        "/home/opencode",
        "/home/opencode/.local",
        "/home/opencode/.local/share/opencode",
        "/home/opencode/.local/state/opencode",
        "/home/opencode/.config",
        "/home/opencode/projects",
        "/workspace",
        "/run/opencode-cloud",
    }


def test_every_volume_mount_point_is_protected(code: Path) -> None:
    from opencode_cloud.docker.volume import VOLUME_SPECS

    for spec in VOLUME_SPECS:
        assert spec.mount_point in PROTECTED_CONTAINER_PATHS
        assert _refusal(HostMount(str(code), spec.mount_point)).reason == "protected"


@pytest.mark.parametrize(
    "container",
    [
        "/home/opencode",
        "/home/opencode/",
        "/home/opencode/.local",
        "/home/opencode/.local/share",
        "/home/opencode/.local/share/opencode",
        "/home/opencode/.local/state/opencode",
        "/home/opencode/.config",
        "/home/opencode/projects",
        "/home/opencode/code/..",
        "/home",
        "/workspace",
        "/run/opencode-cloud",
    ],
)
def test_container_path_covering_a_volume_or_the_home(code: Path, container: str) -> None:
    error = _refusal(HostMount(str(code), container))
    assert error.reason == "protected"
    assert "hide" in error.message
    # The hint's example is itself accepted.
    example = HostMount.parse(error.hint.rsplit(" ", 1)[1])
    check_new_mount(example, [], NO_ENV)


@pytest.mark.parametrize(
    "container",
    [
        "/",
        "/tmp",
        "/tmp/",
        *SYSTEM_CONTAINER_PATHS,
        "/usr/local/src",
        "/etc/opencode",
        "/var/lib/code",
        "/dev/shm",
        "/proc/x",
        "/run/user",
    ],
)
def test_container_path_in_a_system_folder(code: Path, container: str) -> None:
    # /run holds the password file: that is the reason given for it.
    expected = "protected" if container == "/run" else "system"
    assert _refusal(HostMount(str(code), container)).reason == expected


@pytest.mark.parametrize(
    "container",
    [
        "/home/opencode/code",
        "/home/opencode/projects/app",
        "/home/opencode/.config/extra",
        "/home/opencode/.cache/x",
        "/home/other",
        "/workspace/app",
        "/tmp/scratch",
        "/srv/code",
        "/opt/code",
        "/usr2",
        "/variable",
    ],
)
def test_container_paths_that_are_fine(code: Path, container: str) -> None:
    check_new_mount(HostMount(str(code), container), [], NO_ENV)


def test_host_root_is_refused() -> None:
    error = _refusal(HostMount("/", "/home/opencode/host"))
    assert error.reason == "docker-socket"
    assert error.message.startswith("Refusing to mount / : the whole host file system")


@pytest.mark.parametrize(
    "host", ["/var", "/var/run", "/run", "/var/run/docker.sock", "/run/docker.sock"]
)
def test_folders_holding_the_docker_socket_are_refused(host: str) -> None:
    error = _refusal(HostMount(host, "/home/opencode/x"))
    assert error.reason == "docker-socket"
    assert "Docker socket" in error.message


def test_docker_host_socket_and_its_folders_are_refused(tmp_path: Path, code: Path) -> None:
    sockets = tmp_path / "engine" / "sockets"
    sockets.mkdir(parents=True)
    env = {"DOCKER_HOST": f"unix://{sockets}/docker.sock"}
    for host in (sockets, sockets.parent):
        with pytest.raises(MountError) as caught:
            check_mount(HostMount(str(host), "/home/opencode/x"), env)
        assert caught.value.reason == "docker-socket"
    check_mount(HostMount(str(code), "/home/opencode/code"), env)  # a sibling is fine
    # Without DOCKER_HOST the folder is an ordinary one.
    check_mount(HostMount(str(sockets), "/home/opencode/x"), NO_ENV)


def test_docker_host_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sockets}/docker.sock")
    with pytest.raises(MountError) as caught:
        check_new_mount(HostMount(str(sockets), "/home/opencode/x"), [])
    assert caught.value.reason == "docker-socket"


def test_a_linked_socket_refuses_the_folder_of_its_target(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "docker.sock").write_text("")
    links = tmp_path / "links"
    links.mkdir()
    (links / "docker.sock").symlink_to(real / "docker.sock")
    env = {"DOCKER_HOST": f"unix://{links}/docker.sock"}
    assert str(real / "docker.sock") in docker_socket_paths(env)
    for folder in (real, links):
        with pytest.raises(MountError):
            check_mount(HostMount(str(folder), "/home/opencode/x"), env)


def test_a_link_to_a_socket_folder_is_resolved_before_the_check(tmp_path: Path) -> None:
    link = tmp_path / "innocent"
    link.symlink_to("/run")
    with pytest.raises(MountError) as caught:
        check_new_mount(parse_argument(str(link)), [], NO_ENV)
    assert caught.value.reason == "docker-socket"
    assert caught.value.path == "/run"


def test_docker_desktop_socket_in_the_home_counts_only_when_present(_home: Path) -> None:
    run = _home / ".docker" / "run"
    run.mkdir(parents=True)
    check_mount(HostMount(str(_home), "/home/opencode/me"), NO_ENV)
    (run / "docker.sock").write_text("")
    with pytest.raises(MountError) as caught:
        check_mount(HostMount(str(_home), "/home/opencode/me"), NO_ENV)
    assert caught.value.reason == "docker-socket"


def test_default_socket_paths_include_both_usual_places() -> None:
    paths = docker_socket_paths(NO_ENV)
    assert "/var/run/docker.sock" in paths
    assert "/run/docker.sock" in paths
    assert os.path.realpath("/var/run/docker.sock") in paths


def test_host_path_with_a_colon_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "a:b"
    folder.mkdir()
    link = tmp_path / "plain"
    link.symlink_to(folder)
    with pytest.raises(MountError) as caught:
        check_new_mount(parse_argument(str(link)), [], NO_ENV)
    assert caught.value.reason == "syntax"


# --- finding a mount to remove --------------------------------------------------------


STORED = ["/srv/code:/home/opencode/code", "/srv/data:/data:ro", "broken entry"]


@pytest.mark.parametrize(
    ("target", "index"),
    [
        ("/srv/code", 0),
        ("/srv/code/", 0),
        ("/home/opencode/code", 0),
        ("/data", 1),
        ("/srv/data", 1),
        ("/srv/data:/data", 1),
        ("/srv/data:/data:ro", 1),
        ("broken entry", 2),
    ],
)
def test_find_mount(target: str, index: int) -> None:
    assert find_mount(STORED, target) == index


def test_find_mount_by_relative_host_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_mount([f"{tmp_path}/code:/x"], "code") == 0
    assert find_mount([f"{tmp_path}/code:/x"], "./code/") == 0


@pytest.mark.parametrize(
    "target", ["/srv", "/home/opencode", "/srv/code:/elsewhere", "code", "", " "]
)
def test_find_mount_unknown(target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MountError) as caught:
        find_mount(STORED, target)
    assert caught.value.reason == "unknown"
    assert "/srv/code:/home/opencode/code" in caught.value.hint


def test_find_mount_empty_target_is_not_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for target in ("", " "):
        with pytest.raises(MountError) as caught:
            find_mount([f"{tmp_path}:/x"], target)
        assert caught.value.reason == "unknown"


def test_find_mount_in_an_empty_list() -> None:
    with pytest.raises(MountError) as caught:
        find_mount([], "/srv/code")
    assert caught.value.hint == "No host folders are mounted."


def test_find_mount_ambiguous() -> None:
    stored = ["/home/opencode/x:/srv/x", "/srv/y:/home/opencode/x"]
    with pytest.raises(MountError) as caught:
        find_mount(stored, "/home/opencode/x")
    assert caught.value.reason == "ambiguous"
    assert find_mount(stored, "/srv/y:/home/opencode/x") == 1


# --- the configuration key -------------------------------------------------------------


def test_config_key_defaults_to_an_empty_list() -> None:
    assert Config().mounts == []
    assert "mounts" in RULES and "mounts" in EXAMPLES


@pytest.mark.parametrize(
    "mounts",
    [
        [],
        ["/home/alice/code:/home/opencode/code"],
        ["/a:/b:ro", "/c:/d:rw", "/does/not/exist:/e"],
    ],
)
def test_valid_mounts_pass_the_model_and_the_json_schema(mounts: list[str]) -> None:
    document = {"mounts": mounts}
    assert Config.model_validate(document).mounts == mounts
    jsonschema.validate(document, generate_schema())


@pytest.mark.parametrize(
    ("mounts", "in_json_schema"),
    [
        ("/a:/b", True),
        ([1], True),
        (["relative:/b"], True),
        (["/a:relative"], True),
        (["/a:/b:rx"], True),
        (["/a:/b:/c"], True),
        (["/a"], True),
        (["/a\x00:/b"], False),
        (["/a:/b", "/a/:/c"], False),
        (["/a:/b", "/c:/b/"], False),
    ],
)
def test_invalid_mounts_fail(mounts: object, in_json_schema: bool) -> None:
    document = {"mounts": mounts}
    with pytest.raises(ValidationError):
        Config.model_validate(document)
    if in_json_schema:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(document, generate_schema())


def test_duplicate_rule_names_the_folder() -> None:
    from opencode_cloud.config.store import validate_config

    with pytest.raises(ConfigValidationError) as caught:
        validate_config({"mounts": ["/a:/b", "/a:/c"]})
    assert "must not mount the host folder /a twice" in caught.value.message
    with pytest.raises(ConfigValidationError) as caught:
        validate_config({"mounts": ["/a:/b", "/c:/b"]})
    assert "must not mount two folders at /b" in caught.value.message


def test_example_is_accepted_by_config_set() -> None:
    assert parse_value("mounts", EXAMPLES["mounts"]) == ["/home/alice/code:/home/opencode/code"]
    with pytest.raises(ConfigValidationError) as caught:
        parse_value("mounts", "code:/x")
    assert RULES["mounts"] in caught.value.message


def test_schema_file_lists_mounts() -> None:
    from opencode_cloud.config.schema import SCHEMA_FILE

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["properties"]["mounts"]["type"] == "array"


def test_mounts_module_is_light() -> None:
    code = (
        "import sys\n"
        "import opencode_cloud.mounts\n"
        "heavy = sorted(m for m in ('pydantic', 'docker', 'requests', 'rich', 'click',\n"
        "    'opencode_cloud.config', 'opencode_cloud.docker') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


# --- the first folder's owner becomes the agent's uid and gid ----------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder away needs root")


@needs_root
@pytest.mark.parametrize(
    ("uid", "gid", "refused"),
    [(1234, 0, True), (EDGE_UID, 1234, True), (1234, EDGE_UID, True), (1234, 1234, False)],
)
def test_the_first_folder_may_not_put_the_agent_in_roots_group_or_the_edges(
    code: Path, uid: int, gid: int, refused: bool
) -> None:
    os.chown(code, uid, gid)
    mount = HostMount(str(code), "/home/opencode/code")
    if not refused:
        check_new_mount(mount, [], NO_ENV)
        assert folder_owner(str(code)) == runtime_owner([mount]) == (uid, gid)
        return
    error = _refusal(mount)
    assert error.reason == "owner" and error.path == str(code)
    with pytest.raises(MountError):
        runtime_owner([mount])  # a file edited by hand is refused at start too


@needs_root
def test_roots_own_folder_leaves_the_image_user_and_a_second_folder_is_not_asked(
    code: Path, tmp_path: Path
) -> None:
    os.chown(code, 0, 0)
    assert folder_owner(str(code)) is None
    assert runtime_owner([HostMount(str(code), "/home/opencode/code")]) == (1000, 1000)
    other = tmp_path / "other"
    other.mkdir()
    os.chown(other, 1234, 0)
    # Only the first folder gives the agent its owner: a second one in root's group is fine.
    check_new_mount(
        HostMount(str(other), "/home/opencode/other"), [HostMount(str(code), "/x")], NO_ENV
    )
