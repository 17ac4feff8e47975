"""Host folders, the runtime user and the home volume, end to end: `occ` as a subprocess
against the real engine and the real opencode image.

- files the agent writes in a mounted folder keep the folder's owner on the host;
- opencode's own file API (what the web UI's "Open project" dialog calls) lists the
  mounted folder under what opencode takes for its home;
- the home (git, SSH, shell history, tools in ~/.local) survives a new container and a
  change of opencode version;
- an instance made by the previous release (projects at /workspace, no home volume)
  moves to the new layout and keeps its sessions and files;
- dangerous mounts are refused, by `occ mount add` and again by `occ start`.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from occ_helpers import api, docker, run, session_titles
from opencode_cloud.access.credentials import PASSWORD_PATH_IN_CONTAINER, container_files
from opencode_cloud.defaults import EDGE_UID
from opencode_cloud.docker.container import put_file
from opencode_cloud.docker.health import health_url, wait_until_healthy
from opencode_cloud.docker.image import DEFAULT_IMAGE
from opencode_cloud.instance import LABEL_CONFIG_HASH

pytestmark = pytest.mark.e2e

PROJECTS = "/home/opencode/projects"
OWNER = 1234  # a uid/gid that is neither root nor the image's own user (1000)


def shell(env: dict[str, str], *command: str, check: bool = True) -> subprocess.CompletedProcess:
    """`occ shell -- COMMAND`: run in the container as the runtime user."""
    return run(env, "shell", "--", *command, check=check)


def instance_containers(instance: Any) -> list[str]:
    return docker(
        "ps", "-aq", "--filter", f"label=io.opencode-cloud.instance={instance.name}"
    ).split()


def instance_volumes(instance: Any) -> list[str]:
    return docker(
        "volume", "ls", "-q", "--filter", f"label=io.opencode-cloud.instance={instance.name}"
    ).split()


@pytest.fixture
def owned_folder(tmp_path: Path) -> Path:
    """A host folder owned by uid/gid 1234, as a user's code checkout would be."""
    folder = tmp_path / "ada-app"
    folder.mkdir()
    (folder / "README.md").write_text("# Ada's app\n")
    for path in (folder, folder / "README.md"):
        os.chown(path, OWNER, OWNER)
    return folder


# -- host folders and their owner -------------------------------------------------------


def test_files_written_in_a_mounted_folder_keep_its_owner(occ_env, instance, owned_folder) -> None:
    # A file of someone else's in the folder: the start hands the home to uid 1234 but
    # never re-owns anything in the user's folders.
    foreign = owned_folder / "someone-elses.txt"
    foreign.write_text("keep my owner\n")
    os.chown(foreign, 4321, 4321)
    added = run(occ_env, "mount", "add", str(owned_folder))
    assert f"-> {PROJECTS}/ada-app (read-write)" in added.stdout
    run(occ_env, "start")

    assert shell(occ_env, "id", "-u").stdout.strip() == str(OWNER)
    assert shell(occ_env, "id", "-g").stdout.strip() == str(OWNER)
    shell(occ_env, "sh", "-c", f"cd {PROJECTS}/ada-app && echo x > made.txt && mkdir made-dir")

    for made in (owned_folder / "made.txt", owned_folder / "made-dir"):
        info = made.stat()
        assert (info.st_uid, info.st_gid) == (OWNER, OWNER), made
    assert (owned_folder / "made.txt").read_text() == "x\n"
    # Nothing that was there was re-owned; `occ shell` passes the exit code on.
    assert (owned_folder.stat().st_uid, owned_folder.stat().st_gid) == (OWNER, OWNER)
    assert (foreign.stat().st_uid, foreign.stat().st_gid) == (4321, 4321)
    assert shell(occ_env, "sh", "-c", "exit 7", check=False).returncode == 7
    # opencode itself runs as that user too, not as root; the edge as its own user.
    top = docker("top", instance.container_name, "-eo", "uid,pid,args")
    assert top, "docker top gave nothing"
    for line in top.splitlines()[1:]:
        uid, _pid, program = line.split()[:3]
        expected = OWNER if program == "/usr/local/bin/opencode" else EDGE_UID
        assert uid in (str(OWNER), str(EDGE_UID)) and (
            uid == str(expected) or program not in ("/usr/local/bin/opencode", "/usr/bin/caddy")
        ), line


def test_opencode_lists_and_finds_the_mounted_folder(occ_env, owned_folder) -> None:
    """The calls the web UI's "Open project" dialog makes, answered by opencode itself."""
    run(occ_env, "mount", "add", str(owned_folder))
    run(occ_env, "start")
    projects = urllib.parse.quote(PROJECTS)

    # opencode's home is the projects folder (OPENCODE_TEST_HOME); $HOME is unchanged.
    paths = api(occ_env, "GET", f"/path?directory={projects}")
    assert isinstance(paths, dict)
    assert paths["home"] == PROJECTS
    assert shell(occ_env, "sh", "-c", 'echo "$HOME"').stdout.strip() == "/home/opencode"

    listing = api(occ_env, "GET", f"/file?path=&directory={projects}")
    assert isinstance(listing, list)
    entries = {entry["name"]: entry for entry in listing}
    assert "ada-app" in entries, listing
    assert entries["ada-app"]["type"] == "directory"
    assert entries["ada-app"]["absolute"] == f"{PROJECTS}/ada-app"

    found = api(occ_env, "GET", f"/find/file?query=ada-app&dirs=true&limit=50&directory={projects}")
    assert isinstance(found, list)
    assert "ada-app/" in found, found


@pytest.mark.xfail(
    strict=True,
    reason="opencode 1.18.33 builds its folder search from the files ripgrep lists, once "
    "per directory: a folder without files is never listed by the Open project dialog "
    "nor found by its search",
)
def test_an_empty_mounted_folder_is_found_by_the_dialog_search(occ_env, tmp_path) -> None:
    empty = tmp_path / "empty-app"
    empty.mkdir()
    run(occ_env, "mount", "add", str(empty))
    run(occ_env, "start")
    projects = urllib.parse.quote(PROJECTS)
    listing = api(occ_env, "GET", f"/file?path=&directory={projects}")
    assert isinstance(listing, list)
    assert "empty-app" in {entry["name"] for entry in listing}  # it is there
    # What the dialog shows without typing, and after typing the name.
    for query in ("", "empty-app"):
        found = api(
            occ_env, "GET", f"/find/file?query={query}&dirs=true&limit=50&directory={projects}"
        )
        assert isinstance(found, list)
        assert "empty-app/" in found, (query, found)


# -- the home volume --------------------------------------------------------------------

KNOWN_HOST = (
    "git.example.org ssh-ed25519 "
    "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
)
HISTORY_LINE = "echo remembered-by-the-history"
TOOL = "/home/opencode/.local/bin/occ-test-tool"

# One shell call that prints everything the home should keep.
HOME_REPORT = """
set -e
echo "git-name=$(git config --global user.name)"
echo "key=$(sha256sum < ~/.ssh/id_ed25519)"
echo "pub=$(sha256sum < ~/.ssh/id_ed25519.pub)"
echo "key-mode=$(stat -c %a ~/.ssh/id_ed25519)"
echo "known-hosts=$(cat ~/.ssh/known_hosts)"
echo "history=$(grep -c remembered-by-the-history ~/.bash_history)"
echo "tool=$(command -v occ-test-tool) says $(occ-test-tool)"
echo "pip-user=$PIP_USER"
echo "local=$(test -d ~/.local && echo present)"
"""


def set_up_home(env: dict[str, str]) -> dict[str, str]:
    """What a user sets up once inside; returns the home's report."""
    shell(env, "git", "config", "--global", "user.name", "Ada")
    shell(
        env, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/home/opencode/.ssh/id_ed25519"
    )
    shell(
        env,
        "sh",
        "-c",
        f"echo '{KNOWN_HOST}' >> ~/.ssh/known_hosts"
        f" && echo '{HISTORY_LINE}' >> ~/.bash_history"
        f" && printf '#!/bin/sh\\necho tool-ok\\n' > {TOOL} && chmod +x {TOOL}",
    )
    report = home_report(env)
    assert report["git-name"] == "Ada"
    assert report["known-hosts"] == KNOWN_HOST
    assert report["history"] == "1"
    assert report["tool"] == f"{TOOL} says tool-ok"  # ~/.local/bin is on PATH
    assert report["pip-user"] == "1"  # pip install goes to ~/.local
    assert report["local"] == "present"
    assert report["key-mode"] == "600"
    return report


def home_report(env: dict[str, str]) -> dict[str, str]:
    out = shell(env, "sh", "-c", HOME_REPORT).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_home_survives_a_new_container(occ_env, instance) -> None:
    run(occ_env, "start")
    before = set_up_home(occ_env)

    subprocess.run(["docker", "rm", "-f", instance.container_name], check=True, capture_output=True)
    started = run(occ_env, "start")
    assert "Creating the container." in started.stderr
    assert home_report(occ_env) == before


def test_home_survives_a_change_of_opencode_version(occ_env, host_ca, older_release) -> None:
    """There and back with `occ update`: its snapshots hold opencode's data, not the
    home, so what is in the home after each switch is what the volume kept."""
    run(occ_env, "start")
    before = set_up_home(occ_env)
    assert json.loads(run(occ_env, "status", "--json").stdout)["opencode_version"] == "1.18.33"

    for ca in host_ca:  # the build fetches opencode from npm, through the host's proxy
        run(occ_env, "config", "set", "ca_certificates", str(ca))
    run(occ_env, "config", "set", "opencode_version", older_release)
    run(occ_env, "update", "--yes")  # --yes: an older release
    assert json.loads(run(occ_env, "status", "--json").stdout)["opencode_version"] == older_release
    assert home_report(occ_env) == before

    run(occ_env, "config", "unset", "opencode_version")  # back to the default
    run(occ_env, "update")
    assert json.loads(run(occ_env, "status", "--json").stdout)["opencode_version"] == "1.18.33"
    assert home_report(occ_env) == before


# -- an instance of the previous release ------------------------------------------------

OLD_KINDS = {  # the previous release's volumes and where it mounted them
    "session": "/home/opencode/.local/share/opencode",
    "state": "/home/opencode/.local/state/opencode",
    "projects": "/workspace",
    "config": "/home/opencode/.config",
}


def create_old_layout_container(
    sdk: Any, instance: Any, *, port: int, env: list[str], password: str, client: Any
) -> None:
    """The container the previous release made: projects at /workspace, no home volume,
    no OCC_UID/OCC_GID, the image's user (1000) from the start, no config-file label."""
    from docker.types import Mount

    for kind in OLD_KINDS:
        sdk.volumes.create(instance.volume_name(kind), labels=instance.labels(f"volume-{kind}"))
    labels = {**instance.labels("service"), LABEL_CONFIG_HASH: "0" * 64}
    host_config = sdk.api.create_host_config(
        port_bindings={3000: ("127.0.0.1", port)},
        mounts=[
            Mount(target, instance.volume_name(kind), type="volume")
            for kind, target in OLD_KINDS.items()
        ],
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 5},
        security_opt=["no-new-privileges:true"],
        cap_drop=["ALL"],
        privileged=False,
    )
    sdk.api.create_container(
        DEFAULT_IMAGE,  # today's image, run the way the previous one ran
        name=instance.container_name,
        hostname="opencode-cloud",
        working_dir="/workspace",
        user="1000:1000",  # the old image had USER opencode: the entrypoint skips its root part
        environment=["OPENCODE_SERVER_USERNAME=opencode", *env],
        labels=labels,
        ports=[3000],
        stop_signal="SIGTERM",
        stop_timeout=10,
        host_config=host_config,
    )
    hashed = container_files(password)[PASSWORD_PATH_IN_CONTAINER]
    # As that release wrote it: readable by the runtime user the container starts as.
    put_file(client, instance.container_name, PASSWORD_PATH_IN_CONTAINER, hashed, uid=1000)
    sdk.api.start(instance.container_name)
    wait_until_healthy(
        client,
        instance.container_name,
        health_url(port=port),
        "opencode",
        password,
        timeout=60,
    )


def test_instance_of_the_previous_layout_moves_to_the_home_volume(
    occ_env, instance, docker_sdk, docker_client
) -> None:
    password = json.loads(run(occ_env, "--json", "auth", "show").stdout)["password"]
    port = int(run(occ_env, "config", "get", "port").stdout.strip())
    create_old_layout_container(
        docker_sdk,
        instance,
        port=port,
        env=["OPENCODE_DISABLE_MODELS_FETCH=1"],
        password=password,
        client=docker_client,
    )
    assert instance.volume_name("home") not in instance_volumes(instance)
    api(occ_env, "POST", "/session", {"title": "made by the previous release"})
    old = docker_sdk.containers.get(instance.container_name)
    code, output = old.exec_run(
        ["sh", "-c", "echo kept > /workspace/old-notes.txt"], user="1000:1000"
    )
    assert code == 0, output
    old.stop(timeout=10)

    started = run(occ_env, "start")
    reasons = [line for line in started.stderr.splitlines() if "Re-creating" in line]
    assert reasons and "mounts" in reasons[0], started.stderr

    assert "made by the previous release" in session_titles(occ_env)
    assert shell(occ_env, "cat", f"{PROJECTS}/old-notes.txt").stdout == "kept\n"
    assert shell(occ_env, "cat", "/workspace/old-notes.txt").stdout == "kept\n"
    assert instance.volume_name("home") in instance_volumes(instance)
    status = json.loads(run(occ_env, "status", "--json").stdout)
    mounted = {v["name"]: v for v in status["volumes"]}
    assert mounted[instance.volume_name("home")]["exists"] is True
    assert status["pending_restart"] == []
    inspect = json.loads(docker("inspect", instance.container_name))[0]
    targets = {m["Destination"]: m.get("Name") for m in inspect["Mounts"]}
    assert targets["/home/opencode"] == instance.volume_name("home")
    assert targets[PROJECTS] == instance.volume_name("projects")
    assert "/workspace" not in targets
    # The entrypoint starts as root again and drops to the image's user; the new home
    # starts from the image's (its npm prefix file is there).
    assert inspect["Config"]["User"] == ""
    assert shell(occ_env, "id", "-u").stdout.strip() == "1000"
    assert shell(occ_env, "cat", "/home/opencode/.npmrc").stdout.startswith("prefix=")


# -- refused mounts ---------------------------------------------------------------------


def test_dangerous_mounts_are_refused_and_leave_the_file_alone(occ_env, instance, tmp_path) -> None:
    config_file = Path(occ_env["OCC_CONFIG_DIR"], "instances", instance.name, "config.json")
    original = config_file.read_bytes()
    folder = tmp_path / "code"
    folder.mkdir()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder\n")
    refused = {
        "missing": str(tmp_path / "no-such-folder"),
        "a file": str(a_file),
        "the Docker socket's folder": "/var/run",
        "the config volume": f"{folder}:/home/opencode/.config",
    }
    for case, spec in refused.items():
        proc = run(occ_env, "mount", "add", spec, check=False)
        assert proc.returncode == 5, (case, proc.stderr)
        assert proc.stderr.startswith("Error: "), (case, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert config_file.read_bytes() == original, case
    assert json.loads(run(occ_env, "--json", "mount", "list").stdout) == {"mounts": []}

    # `config set` checks only the form; `occ start` checks the folder and refuses.
    run(occ_env, "config", "set", "mounts", '["/var/run:/home/opencode/projects/x"]')
    started = run(occ_env, "start", check=False)
    assert started.returncode == 5, started.stderr
    assert "Docker socket" in started.stderr
    assert instance_containers(instance) == []
    assert instance_volumes(instance) == []
