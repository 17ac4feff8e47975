"""Scheduled backups without an engine: the systemd units (checked by `systemd-analyze
verify`), the crontab line, which scheduler is chosen, retention, the record of the last
run and what `occ status`/`occ doctor` make of it, and `occ backup` routing its words."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opencode_cloud.backup import schedule as scheduler
from opencode_cloud.backup.catalog import list_backups, prune, scheduled_backup_name
from opencode_cloud.backup.compression import plain_archive
from opencode_cloud.backup.errors import InvalidBackup, NoScheduler, ScheduleFailed
from opencode_cloud.cli.hints import hint_for
from opencode_cloud.config import backup_schedule as state
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.doctor.checks import Context, check_scheduled_backup
from opencode_cloud.instance import Instance

RUN = ["backup", "run", "--dir", "/srv/back ups/100%", "--keep", "3"]
JOB = scheduler.Job(
    name="opencode-cloud-backup-work-0123abcd",
    every="daily",
    argv=(sys.executable, "-m", "opencode_cloud", "--instance", "work", *RUN),
    env=(("OCC_CONFIG_DIR", "/home/a b/.config/opencode-cloud"),),
    description="opencode-cloud backup of instance work",
)


class Recorder:
    """systemctl/crontab as a list of calls, answering with `codes` in turn (0 after)."""

    def __init__(self, *codes: int, stdout: str = "", stderr: str = "") -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.codes = list(codes)
        self.stdout, self.stderr = stdout, stderr

    def __call__(self, argv: Sequence[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
        self.calls.append((list(argv), stdin))
        code = self.codes.pop(0) if self.codes else 0
        return subprocess.CompletedProcess(argv, code, self.stdout, self.stderr)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    written = scheduler.install_systemd(JOB, tmp_path, user=False, runner=Recorder())
    assert sorted(p.name for p in written) == [f"{JOB.name}.service", f"{JOB.name}.timer"]
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, written)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    service = (tmp_path / f"{JOB.name}.service").read_text()
    # The folder's space and % survive systemd's quoting and specifiers.
    assert '"/srv/back ups/100%%"' in service
    assert 'Environment="OCC_CONFIG_DIR=/home/a b/.config/opencode-cloud"' in service
    assert "OnCalendar=daily" in (tmp_path / f"{JOB.name}.timer").read_text()


def test_systemd_enables_the_timer_and_takes_it_back_when_refused(tmp_path: Path) -> None:
    ok = Recorder()
    scheduler.install_systemd(JOB, tmp_path, user=True, runner=ok)
    assert [argv for argv, _ in ok.calls] == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", f"{JOB.name}.timer"],
    ]
    refused = Recorder(0, 1, stderr="Failed to connect to bus\n")
    with pytest.raises(ScheduleFailed, match="Failed to connect to bus"):
        scheduler.install_systemd(JOB, tmp_path / "other", user=True, runner=refused)
    assert list((tmp_path / "other").iterdir()) == []
    gone = Recorder()
    assert len(scheduler.remove_systemd(JOB.name, tmp_path, user=True, runner=gone)) == 2
    assert list(tmp_path.glob("*.timer")) == []
    assert ["systemctl", "--user", "disable", "--now", f"{JOB.name}.timer"] in [
        argv for argv, _ in gone.calls
    ]


def test_the_crontab_line_replaces_its_own_and_keeps_the_rest() -> None:
    line = scheduler.cron_line(JOB)
    assert line.endswith(f" # {JOB.name}") and line.split()[1] == "3"
    assert "100\\%" in line  # cron would cut the command at a bare %
    hourly = scheduler.cron_line(scheduler.Job(**{**JOB.__dict__, "every": "hourly"}))
    assert hourly.split()[1] == "*"
    before = f"MAILTO=me\n0 1 * * * other-job\n{line}\n"
    cron = Recorder(stdout=before)
    scheduler.install_cron(JOB, runner=cron)
    argv, written = cron.calls[-1]
    assert argv == ["crontab", "-"]
    assert written == f"MAILTO=me\n0 1 * * * other-job\n{line}\n"
    # The command cron hands to sh -c, with its % back.
    command = scheduler.cron_command(JOB.name, runner=Recorder(stdout=before))
    assert command is not None and "'/srv/back ups/100%'" in command


def test_detect_prefers_a_running_systemd_then_cron(tmp_path: Path) -> None:
    def which(*present: str) -> Callable[[str], str | None]:
        return lambda name: f"/usr/bin/{name}" if name in present else None

    running = tmp_path / "system"
    running.mkdir()
    both = which("systemctl", "crontab")
    assert scheduler.detect(systemd_running=running, which=both) == "systemd"
    assert scheduler.detect(systemd_running=tmp_path / "no", which=both) == "cron"
    with pytest.raises(NoScheduler) as caught:
        scheduler.detect(systemd_running=running, which=which())
    assert "install cron" in hint_for(caught.value).lower()


def test_schedule_names_tell_apart_folders_and_hosts(tmp_path: Path) -> None:
    one = scheduler.schedule_name("work", None, tmp_path / "a")
    assert one == scheduler.schedule_name("work", None, tmp_path / "a")
    assert one != scheduler.schedule_name("work", None, tmp_path / "b")
    assert one != scheduler.schedule_name("work", "box", tmp_path / "a")


def _archive(path: Path, instance: str, *, password: bool = False) -> None:
    import json

    manifest = json.dumps(
        {
            "format": "opencode-cloud-backup",
            "format_version": 1,
            "tool_version": "0",
            "opencode_version": None,
            "instance": instance,
            "created": "2026-01-01T00:00:00Z",
            "consistency": "stopped",
            "volumes": [],
            "config_file": None,
            "password": "config/password" if password else None,
            "provider_keys": None,
        }
    ).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))


def test_retention_removes_only_the_oldest_of_its_own(tmp_path: Path) -> None:
    work = Instance("work")
    base = datetime(2026, 1, 1, tzinfo=UTC)
    ours = [tmp_path / scheduled_backup_name(work, base + timedelta(hours=h)) for h in range(4)]
    theirs = [
        tmp_path / scheduled_backup_name(Instance("work-b"), base),
        tmp_path / scheduled_backup_name(work.for_person("ann"), base),
        tmp_path / "opencode-cloud-work-20250101T000000Z.tar",  # made by hand
        tmp_path / "notes.txt",
    ]
    for path in [*ours, *theirs]:
        path.write_bytes(b"x")
    assert prune(tmp_path, work, 2) == ours[:2]
    assert sorted(tmp_path.iterdir()) == sorted([*ours[2:], *theirs])
    assert prune(tmp_path, work.for_person("ann"), 1) == []


def test_list_reads_manifests_of_plain_and_compressed_backups(tmp_path: Path) -> None:
    pytest.importorskip("zstandard")
    import zstandard

    plain = tmp_path / "opencode-cloud-work-user-ann-20260101T000000Z-scheduled.tar"
    _archive(plain, "work", password=True)
    packed = tmp_path / "copy.tar.zst"
    packed.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    (tmp_path / "foreign.tar").write_bytes(b"not a tar" * 100)
    found, others = list_backups(tmp_path)
    assert [
        (b.path.name, b.person, b.password, b.keys, b.compressed, b.scheduled) for b in found
    ] == [
        (packed.name, None, True, False, True, False),
        (plain.name, "ann", True, False, False, True),
    ]
    assert others == [tmp_path / "foreign.tar"]
    with plain_archive(packed) as unpacked:
        assert unpacked.read_bytes() == plain.read_bytes()
    assert not unpacked.exists()
    broken = tmp_path / "broken.tar.zst"
    broken.write_bytes(packed.read_bytes()[:4] + b"\0" * 64)
    with pytest.raises(InvalidBackup) as caught, plain_archive(broken):
        pass
    assert caught.value.path == broken


def test_a_failed_or_overdue_schedule_is_a_problem_until_a_success(tmp_path: Path) -> None:
    paths = InstancePaths(tmp_path)
    assert state.schedule_problem(paths) is None  # nothing scheduled
    installed = datetime(2026, 1, 1, tzinfo=UTC)
    state.write_schedule(
        paths, state.Schedule("daily", 7, "/b", "cron", "n", "2026-01-01T00:00:00Z")
    )
    assert state.schedule_problem(paths, installed + timedelta(hours=30)) is None
    late = state.schedule_problem(paths, installed + timedelta(days=3))
    assert late is not None and "No scheduled (daily) backup has run" in late
    state.record_run(paths, ok=False, message="Cannot connect to the Docker daemon")
    failed = state.schedule_problem(paths)
    assert failed is not None and "failed" in failed and "Docker daemon" in failed

    ctx = Context(Instance("work"), paths, lambda: None, lambda p: None, hint_for, {})  # type: ignore[arg-type, return-value]
    finding = check_scheduled_backup(ctx)
    assert finding.status == "fail" and "backup run" in finding.fix
    state.record_run(paths, ok=True, message="1 backup into /b")
    assert state.schedule_problem(paths) is None
    assert check_scheduled_backup(ctx).status == "ok"
    state.remove_schedule(paths)
    assert list(tmp_path.iterdir()) == []
    # Run by another scheduler (Docker Desktop), with no schedule recorded: a failure
    # still shows.
    state.record_run(paths, ok=False, message="No space left on device")
    assert check_scheduled_backup(ctx).status == "fail"


def test_backup_routes_a_file_to_create_and_names_its_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cli_runner import runner

    occ = runner(capsys)
    help_text = occ("backup", "--help").out
    for command in ("create", "schedule", "run", "list"):
        assert command in help_text
    # A word that is no command is the file of `occ backup create`.
    assert "Replace FILE when it exists" in occ("backup", "x.tar", "--help").out
    bad = occ("backup", "schedule", "weekly")
    assert bad.code == 2 and "weekly" in bad.err


INJECTED = "/srv/backups\n* * * * * touch /tmp/owned #"


@pytest.mark.parametrize(
    "job",
    [
        scheduler.Job(**{**JOB.__dict__, "argv": (*JOB.argv[:-3], INJECTED, "--keep", "3")}),
        scheduler.Job(**{**JOB.__dict__, "env": (("DOCKER_HOST", "unix:///x\rExecStartPre=id"),)}),
    ],
)
def test_a_line_break_in_what_a_schedule_runs_is_refused_before_anything_is_written(
    job: scheduler.Job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In a crontab a line break starts a job of its own, in a unit file a directive of
    # its own (run as root for root's units): neither quoting holds one.
    installed: list[str] = []
    monkeypatch.setattr(scheduler, "detect", lambda: "cron")
    monkeypatch.setattr(scheduler, "install_cron", lambda job: installed.append(job.name))
    monkeypatch.setattr(scheduler, "remove_systemd", lambda *a, **k: [])
    paths = InstancePaths(tmp_path / "cfg")
    folder = tmp_path / "backups"
    with pytest.raises(ScheduleFailed, match="line break") as refused:
        scheduler.install(paths, job, folder, 3)
    assert "\n" not in str(refused.value) and "\r" not in str(refused.value)
    assert installed == [] and not folder.exists()
    assert state.read_schedule(paths) is None
