"""Scheduled backups end to end: `occ` as a subprocess, the real engine, the real opencode
image and the real crontab (Debian's cron).

- `occ backup schedule` puts one tagged line in the crontab (again: still one); the exact
  command of that line, run the way cron runs it, writes a compressed backup, and the
  retention keeps the newest N of its own and nothing else; `occ backup list` shows them,
  and a compressed one restores into a new instance with its sessions;
- a scheduled run the engine refuses shows in `occ status` and fails `occ doctor`; the
  next run that works clears both; uninstalling the instance removes its schedule;
- a machine with neither systemd nor cron, and bad input: a one-line error with a hint,
  and nothing written (not the crontab, not the folder, not the schedule's record).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from occ_helpers import api, free_port, image_kept, remove_everything_of, run
from opencode_cloud.docker.image import DEFAULT_IMAGE
from opencode_cloud.instance import Instance

pytestmark = pytest.mark.e2e

CRON_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root", "SHELL": "/bin/sh"}


def crontab() -> str:
    proc = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else ""


@pytest.fixture
def user_crontab() -> Iterator[str]:
    """This user's crontab as it was, put back after the test (with a line of its own
    that a schedule must leave alone)."""
    if shutil.which("crontab") is None:
        pytest.skip("needs cron (Debian package `cron`)")
    before = crontab()
    own = f"# kept by the schedule test {os.getpid()}"
    subprocess.run(["crontab", "-"], input=before + own + "\n", text=True, check=True)
    yield own
    if before:
        subprocess.run(["crontab", "-"], input=before, text=True, check=True)
    else:
        subprocess.run(["crontab", "-r"], capture_output=True, check=False)


def tagged(instance: Instance) -> list[str]:
    return [line for line in crontab().splitlines() if f"-backup-{instance.name}-" in line]


def as_cron_runs(line: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """The command of a crontab line, run as cron runs it: `sh -c`, cron's bare
    environment, `\\%` back to `%`."""
    command = " ".join(line.split(" ")[5:]).replace("\\%", "%")
    return subprocess.run(
        ["sh", "-c", command], env={**CRON_ENV, **extra}, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip


def ours(folder: Path, instance: Instance) -> list[str]:
    """The scheduled backups of `instance` in `folder`, oldest first."""
    pattern = re.compile(
        rf"opencode-cloud-{re.escape(instance.name)}-\d{{8}}T\d{{6}}Z-scheduled\.tar\.zst"
    )
    return sorted(p.name for p in folder.iterdir() if pattern.fullmatch(p.name))


@pytest.mark.timeout(600)
def test_cron_schedule_backs_up_keeps_the_newest_and_restores(
    occ_env: dict[str, str], instance: Instance, tmp_path: Path, user_crontab: str
) -> None:
    run(occ_env, "start")
    api(occ_env, "POST", "/session", {"title": "kept by the schedule"})
    folder = tmp_path / "backups"
    made = run(occ_env, "backup", "schedule", "daily", "--keep", "2", "--dir", str(folder))
    assert "crontab" in made.stdout and folder.is_dir()
    run(occ_env, "backup", "schedule", "hourly", "--keep", "2", "--dir", str(folder))
    lines = tagged(instance)
    assert len(lines) == 1 and lines[0].split()[:2][1] == "*"  # replaced: hourly, once
    assert user_crontab in crontab()
    # Files the schedule did not write: another instance's and one made by hand.
    theirs = [
        folder / f"opencode-cloud-{instance.name}-b-20200101T000000Z-scheduled.tar.zst",
        folder / f"opencode-cloud-{instance.name}-20200101T000000Z.tar",
    ]
    for path in theirs:
        path.write_bytes(b"not ours")

    made_names = []
    for _ in range(3):
        proc = as_cron_runs(lines[0])
        assert proc.returncode == 0, proc.stderr
        made_names.append(ours(folder, instance)[-1])
        time.sleep(1.1)  # the names carry the second
    assert ours(folder, instance) == made_names[1:]  # the oldest went
    assert all(path.read_bytes() == b"not ours" for path in theirs)

    listed = json.loads(run(occ_env, "--json", "backup", "list").stdout)  # the schedule's dir
    mine = [b for b in listed["backups"] if b["instance"] == instance.name]
    assert [Path(b["path"]).name for b in mine] == made_names[1:]
    assert all(b["compressed"] and b["scheduled"] for b in mine)
    assert not any(b["password"] or b["provider_keys"] for b in mine)  # neither, unasked
    assert listed["last_scheduled"]["ok"] is True
    human = run(occ_env, "backup", "list").stdout
    assert made_names[-1] in human and "Password" in human

    # A compressed backup restores into a new instance, sessions and all.
    other = f"{instance.name}-r"
    try:
        restored = run(occ_env, "restore", str(folder / made_names[-1]), "--instance", other)
        assert "every checksum matched" in restored.stdout
        other_env = {**occ_env, "OCC_INSTANCE": other}
        run(other_env, "config", "set", "port", str(free_port()))
        run(other_env, "start")
        titles = {s["title"] for s in api(other_env, "GET", "/session")}
        assert "kept by the schedule" in titles
    finally:
        remove_everything_of(other)

    off = run(occ_env, "backup", "schedule", "off")
    assert "off" in off.stdout
    assert tagged(instance) == [] and user_crontab in crontab()
    assert ours(folder, instance) == made_names[1:]  # the backups stay


def test_a_failed_scheduled_backup_shows_until_one_works(
    occ_env: dict[str, str], instance: Instance, tmp_path: Path, user_crontab: str
) -> None:
    run(occ_env, "start")
    folder = tmp_path / "backups"
    run(occ_env, "backup", "schedule", "daily", "--dir", str(folder))
    (line,) = tagged(instance)
    # The engine refuses (its socket is not there): the run fails, and says so.
    refused = as_cron_runs(line, DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    assert refused.returncode != 0
    assert ours(folder, instance) == []
    status = run(occ_env, "status", check=False)
    assert "The last scheduled backup failed" in status.stderr, status.stderr
    assert "no-engine.sock" in status.stderr
    doctor = json.loads(run(occ_env, "--json", "doctor", check=False).stdout)
    finding = next(f for f in doctor["findings"] if f["name"] == "scheduled backup")
    assert finding["status"] == "fail" and "backup run" in finding["fix"]
    assert doctor["ok"] is False

    worked = as_cron_runs(line)
    assert worked.returncode == 0, worked.stderr
    assert len(ours(folder, instance)) == 1
    assert "scheduled backup" not in run(occ_env, "status").stderr
    doctor = json.loads(run(occ_env, "--json", "doctor", check=False).stdout)
    finding = next(f for f in doctor["findings"] if f["name"] == "scheduled backup")
    assert finding["status"] == "ok", finding
    # Uninstalling the instance takes its schedule with it: no timer left to fail.
    with image_kept(DEFAULT_IMAGE):
        gone = run(occ_env, "uninstall", "--yes")
    assert "Removed the backup schedule" in gone.stdout
    assert tagged(instance) == [] and user_crontab in crontab()


def test_no_scheduler_and_bad_input_change_nothing(
    occ_env: dict[str, str], instance: Instance, tmp_path: Path, user_crontab: str
) -> None:
    config = Path(occ_env["OCC_CONFIG_DIR"])
    before = sorted(p.relative_to(config) for p in config.rglob("*"))
    cron_before = crontab()
    folder = tmp_path / "backups"
    # Neither systemd (not running here) nor cron: no `crontab` on the PATH.
    bare = {**occ_env, "PATH": str(tmp_path / "empty")}
    proc = run(bare, "backup", "schedule", "daily", "--dir", str(folder), check=False)
    assert proc.returncode != 0
    assert proc.stderr.startswith("Error: Cannot schedule backups here")
    assert "Hint:" in proc.stderr and "install cron" in proc.stderr.lower()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for args, words in (
        (("--keep", "0"), "--keep"),
        (("--dir", str(a_file)), "is not a folder"),
    ):
        bad = run(occ_env, "backup", "schedule", "daily", *args, check=False)
        assert bad.returncode == 2 and words in bad.stderr, bad.stderr
    assert not folder.exists() and a_file.read_text() == "x"
    assert crontab() == cron_before
    assert sorted(p.relative_to(config) for p in config.rglob("*")) == before
    listed = run(occ_env, "backup", "list", str(a_file), check=False)
    assert listed.returncode == 2 and "is not a folder" in listed.stderr
