"""Backup, restore and uninstall end to end: `occ` as a subprocess, the real engine and
the real opencode image.

- a backup of a running service holds a consistent opencode.db (SQLite's own integrity
  check, on the host, of the file taken from the archive), and restoring it into a new
  instance brings back the same sessions and byte-identical files;
- truncated, damaged and foreign archives are refused before anything is created;
- restoring over an instance with data needs --yes and keeps a backup of what it replaced;
- uninstall, with and without --volumes, leaves another instance as it was.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backup_helpers import read_member
from occ_helpers import api, docker, run
from opencode_cloud.instance import Instance

pytestmark = pytest.mark.e2e

IMAGE = "opencode-cloud-sandbox:1.18.33"
KINDS = ("home", "session", "state", "projects", "config")


def labelled(kind: str, instance_name: str) -> list[str]:
    """Containers (`ps`) or volumes (`volume`) labelled as `instance_name`'s."""
    label = f"label=io.opencode-cloud.instance={instance_name}"
    if kind == "ps":
        return docker("ps", "-aq", "--filter", label).split()
    return docker("volume", "ls", "-q", "--filter", label).split()


def remove_instance(name: str) -> None:
    containers = labelled("ps", name)
    if containers:
        docker("rm", "-f", "-v", *containers)
    volumes = labelled("volume", name)
    if volumes:
        docker("volume", "rm", "-f", *volumes)


@pytest.fixture
def other(occ_env: dict[str, str], instance: Instance) -> Iterator[dict[str, str]]:
    """A second instance in the same configuration folder, on its own free port; removed
    (container and volumes, by label) afterwards."""
    import socket

    name = f"{instance.name}-b"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**occ_env, "OCC_INSTANCE": name}
    run(env, "config", "set", "port", str(port))
    run(env, "config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
    env["TEST_PORT"] = str(port)
    yield env
    remove_instance(name)


@pytest.fixture
def scratch_instance(instance: Instance) -> Iterator[str]:
    """A name no instance has yet; whatever ends up labelled with it is removed after."""
    name = f"{instance.name}-x{uuid.uuid4().hex[:4]}"
    yield name
    remove_instance(name)


def fill(env: dict[str, str]) -> list[dict[str, Any]]:
    """Sessions, project files and home settings, as a user leaves them."""
    for title in ("first session", "second session"):
        api(env, "POST", "/session", {"title": title})
    run(
        env,
        "shell",
        "--",
        "sh",
        "-c",
        "mkdir -p app/src && head -c 300000 /dev/urandom > app/data.bin "
        "&& printf 'print(42)\\n' > app/src/main.py && chmod 640 app/src/main.py "
        "&& git config --global user.name Ada",
    )
    sessions = api(env, "GET", "/session")
    assert isinstance(sessions, list)
    return sessions


def ids_and_titles(sessions: Any) -> set[tuple[str, str]]:
    return {(s["id"], s["title"]) for s in sessions}


def volume_files(volume: str) -> dict[str, tuple[str, str]]:
    """sha256, mode and owner of every file in a volume, read by a throw-away container."""
    script = (
        "cd /v && find . -type f -exec stat -c '%n %a %u:%g' {} + "
        "&& echo --- && find . -type f -exec sha256sum {} +"
    )
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{volume}:/v:ro",
         "--entrypoint", "sh", IMAGE, "-c", script],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    modes_part, _, sums_part = proc.stdout.partition("---\n")
    modes = {
        line.rsplit(" ", 2)[0][2:]: line.rsplit(" ", 2)[1:] for line in modes_part.splitlines()
    }
    sums = {line.split("  ", 1)[1][2:]: line.split("  ", 1)[0] for line in sums_part.splitlines()}
    return {path: (sums[path], " ".join(modes[path])) for path in sums}


def archive_files(archive: Path, kind: str) -> dict[str, tuple[str, str]]:
    """The same, from the archive's checksum list."""
    with tarfile.open(archive) as tar:
        lines = read_member(tar, "checksums.jsonl").decode().splitlines()
    prefix = f"volumes/{kind}/"
    out = {}
    for line in lines[1:]:
        entry = json.loads(line)
        if entry["type"] == "file" and entry["path"].startswith(prefix):
            owner = f"{entry['mode']:o} {entry['uid']}:{entry['gid']}"
            out[entry["path"][len(prefix) :]] = (entry["sha256"], owner)
    return out


def test_backup_then_restore_into_a_new_instance(
    occ_env: dict[str, str], instance: Instance, other: dict[str, str], tmp_path: Path
) -> None:
    run(occ_env, "start")
    sessions = fill(occ_env)
    archive = tmp_path / "a.tar"
    made = run(occ_env, "backup", str(archive))
    assert f"Backup written to {archive}" in made.stdout
    assert "The service was paused for" in made.stdout
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    report = json.loads(run(occ_env, "--json", "backup", str(tmp_path / "b.tar")).stdout)
    assert report["paused_seconds"] < 30 and report["entries"] > 10
    # The service came back from the pause.
    assert ids_and_titles(api(occ_env, "GET", "/session")) == ids_and_titles(sessions)

    # The database taken while the service ran is consistent (WAL recovery on open).
    extracted = tmp_path / "db"
    extracted.mkdir()
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.name.startswith("volumes/session/opencode.db"):
                target = extracted / Path(member.name).name
                target.write_bytes(read_member(tar, member))
    with sqlite3.connect(extracted / "opencode.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert "session" in tables
        stored = {row[0] for row in db.execute("SELECT id FROM session")}
    assert {s["id"] for s in sessions} <= stored

    # Into a new instance: every file as in the archive, owners and modes included.
    new = other["OCC_INSTANCE"]
    restored = run(occ_env, "restore", str(archive), "--instance", new)
    assert f"Restored instance {new} (backed up from instance {instance.name})" in restored.stdout
    for kind in KINDS:
        assert volume_files(f"opencode-cloud-{new}-{kind}") == archive_files(archive, kind), kind
    assert volume_files(f"opencode-cloud-{new}-projects") == volume_files(
        f"opencode-cloud-{instance.name}-projects"
    )
    # The settings are the backup's: its port too, which the original still uses.
    assert "choose another before starting" in restored.stdout
    run(other, "config", "set", "port", other["TEST_PORT"])
    run(other, "start")
    assert ids_and_titles(api(other, "GET", "/session")) == ids_and_titles(sessions)
    name = run(other, "shell", "--", "git", "config", "--global", "user.name").stdout
    assert name.strip() == "Ada"


def test_truncated_damaged_and_foreign_archives_create_nothing(
    occ_env: dict[str, str], tmp_path: Path, scratch_instance: str
) -> None:
    run(occ_env, "start")
    archive = tmp_path / "good.tar"
    run(occ_env, "backup", str(archive))
    data = archive.read_bytes()
    with tarfile.open(archive) as tar:
        db = tar.getmember("volumes/session/opencode.db")
    flipped = bytearray(data)
    flipped[db.offset_data + db.size // 2] ^= 0x01
    foreign = tmp_path / "foreign-src"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a backup\n")
    subprocess.run(
        ["tar", "-cf", str(tmp_path / "foreign.tar"), "-C", str(foreign), "."], check=True
    )
    bad = {
        "damaged": (bytes(flipped), "volumes/session/opencode.db does not match its checksum"),
        "truncated": (data[: len(data) * 2 // 3], "it is truncated"),
        "foreign": ((tmp_path / "foreign.tar").read_bytes(), "not an opencode-cloud backup"),
    }
    env = {**occ_env, "OCC_INSTANCE": scratch_instance}
    for name, (content, words) in bad.items():
        path = tmp_path / f"{name}.tar"
        path.write_bytes(content)
        proc = run(env, "restore", str(path), "--yes", check=False)
        assert proc.returncode == 1, (name, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and words in errors[0], (name, proc.stderr)
        assert "Nothing was changed" in proc.stderr
        assert labelled("ps", scratch_instance) == [] and labelled("volume", scratch_instance) == []
        assert not (Path(occ_env["OCC_CONFIG_DIR"]) / "instances" / scratch_instance).exists()


def test_restore_over_data_needs_yes_and_keeps_what_it_replaces(
    occ_env: dict[str, str], tmp_path: Path
) -> None:
    run(occ_env, "start")
    api(occ_env, "POST", "/session", {"title": "in the backup"})
    archive = tmp_path / "a.tar"
    run(occ_env, "backup", str(archive))
    api(occ_env, "POST", "/session", {"title": "made after the backup"})

    refused = run(occ_env, "restore", str(archive), check=False)
    assert refused.returncode == 2  # a confirmation not given
    assert "has data" in refused.stderr and "--yes" in refused.stderr
    titles = {s["title"] for s in api(occ_env, "GET", "/session")}
    assert "made after the backup" in titles

    done = run(occ_env, "restore", str(archive), "--yes")
    kept = next(
        Path(line.split(" saved in ", 1)[1].rsplit(" (", 1)[0])
        for line in done.stdout.splitlines()
        if line.startswith("What it replaced is saved in ")
    )
    assert kept.is_file() and stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert kept.parent == Path(occ_env["OCC_CONFIG_DIR"]) / "backups"
    assert "opencode is running again at" in done.stdout  # it was running: started again
    titles = {s["title"] for s in api(occ_env, "GET", "/session")}
    assert "in the backup" in titles and "made after the backup" not in titles
    with tarfile.open(kept) as tar:
        assert "config/password" in tar.getnames()  # a full undo: the password too


def test_uninstall_leaves_another_instance_alone(
    occ_env: dict[str, str], instance: Instance, other: dict[str, str]
) -> None:
    run(occ_env, "start")
    run(other, "start")
    api(other, "POST", "/session", {"title": "the other instance's"})
    config_dir = Path(occ_env["OCC_CONFIG_DIR"])
    before = {
        "containers": labelled("ps", other["OCC_INSTANCE"]),
        "volumes": sorted(labelled("volume", other["OCC_INSTANCE"])),
        "image": docker("image", "inspect", "-f", "{{.Id}}", IMAGE).strip(),
    }

    refused = run(occ_env, "uninstall", check=False)  # not a terminal, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert labelled("ps", instance.name)

    done = run(occ_env, "uninstall", "--yes")
    assert f"Removed container {instance.container_name}." in done.stdout
    assert "Kept image" in done.stdout and "used by container" in done.stdout
    assert "Kept volumes (your data)" in done.stdout
    assert labelled("ps", instance.name) == []
    assert len(labelled("volume", instance.name)) == 5
    assert not (config_dir / "instances" / instance.name / "config.json").exists()
    assert not (config_dir / "instances" / instance.name / "password").exists()

    gone = run(occ_env, "uninstall", "--volumes", "--yes")
    final = next(
        Path(line.split(": ", 1)[1].rsplit(" (", 1)[0])
        for line in gone.stdout.splitlines()
        if line.startswith("Final backup: ")
    )
    assert final.is_file() and stat.S_IMODE(final.stat().st_mode) == 0o600
    assert labelled("volume", instance.name) == []

    after = {
        "containers": labelled("ps", other["OCC_INSTANCE"]),
        "volumes": sorted(labelled("volume", other["OCC_INSTANCE"])),
        "image": docker("image", "inspect", "-f", "{{.Id}}", IMAGE).strip(),
    }
    assert after == before
    assert json.loads(run(other, "status", "--json").stdout)["http_health"] == "healthy"
    assert "the other instance's" in {s["title"] for s in api(other, "GET", "/session")}
    assert (config_dir / "instances" / other["OCC_INSTANCE"] / "config.json").exists()
    assert os.path.exists(config_dir / "instances" / other["OCC_INSTANCE"] / "password")
