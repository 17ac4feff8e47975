"""Scheduled backups on this machine: a systemd timer where systemd runs, else a line in
the user's crontab, either running `occ backup run` for one instance.

Where systemd runs (`/run/systemd/system` exists) a `.service` and a `.timer` are written
(system units for root, the user's units otherwise) and the timer enabled; else a line
tagged `# <name>` in the user's crontab. Each schedule has a name made from the instance,
its host and the configuration folder, so setting it again replaces it, and `off`
removes exactly what was written. Nothing else is touched, and on an error nothing is
left changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from opencode_cloud.backup.errors import NoScheduler, ScheduleFailed
from opencode_cloud.config.backup_schedule import (
    Schedule,
    now_iso,
    read_schedule,
    remove_schedule,
    write_schedule,
)
from opencode_cloud.config.paths import InstancePaths

SYSTEMD_RUNNING = Path("/run/systemd/system")
SYSTEM_UNITS = Path("/etc/systemd/system")
# When each kind of schedule runs: systemd calendar events, and cron's fields.
ON_CALENDAR = {"hourly": "hourly", "daily": "daily"}
CRON_TAG = "opencode-cloud-backup"


Runner = Callable[[Sequence[str], str | None], subprocess.CompletedProcess[str]]


def run(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)


@dataclass(frozen=True)
class Job:
    """What a schedule runs: `argv` with `env` added, `every` hour or day."""

    name: str  # the units' name, the crontab line's tag
    every: str  # hourly | daily
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    description: str


def schedule_name(instance: str, host: str | None, config_dir: Path) -> str:
    """`opencode-cloud-backup-<instance>-<8 hex>`: the hex tells apart the same instance
    name in another configuration folder or on another host."""
    key = f"{config_dir.resolve()}\0{host or ''}\0{instance}".encode()
    return f"{CRON_TAG}-{instance}-{hashlib.sha256(key).hexdigest()[:8]}"


def detect(
    *, systemd_running: Path = SYSTEMD_RUNNING, which: Callable[[str], str | None] = shutil.which
) -> str:
    """`systemd` or `cron`: what schedules jobs on this machine.

    Raises:
        NoScheduler: neither.
    """
    if systemd_running.is_dir() and which("systemctl"):
        return "systemd"
    if which("crontab"):
        return "cron"
    raise NoScheduler()


# -- systemd ------------------------------------------------------------------------------


def user_units() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def as_user() -> bool:
    """Whether units are the user's (`systemctl --user`), not the system's (root)."""
    return os.geteuid() != 0


def unit_dir() -> Path:
    return user_units() if as_user() else SYSTEM_UNITS


def _systemd_quote(value: str) -> str:
    """One word of an ExecStart= or Environment= line: quoted, with systemd's specifiers
    (`%`) and variables (`$`) escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def unit_files(job: Job) -> dict[str, str]:
    """The `.service` and `.timer` of `job`, by file name."""
    env = "".join(f"Environment={_systemd_quote(f'{k}={v}')}\n" for k, v in job.env)
    service = (
        "[Unit]\n"
        f"Description={job.description}\n"
        "\n[Service]\n"
        "Type=oneshot\n"
        f"{env}"
        f"ExecStart={' '.join(_systemd_quote(a) for a in job.argv)}\n"
    )
    timer = (
        "[Unit]\n"
        f"Description={job.description} ({job.every})\n"
        "\n[Timer]\n"
        f"OnCalendar={ON_CALENDAR[job.every]}\n"
        "Persistent=true\n"
        "RandomizedDelaySec=300\n"
        "\n[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{job.name}.service": service, f"{job.name}.timer": timer}


def install_systemd(job: Job, unit_dir: Path, *, user: bool, runner: Runner = run) -> list[Path]:
    """Write the units into `unit_dir` and enable the timer; returns the files written.

    Raises:
        ScheduleFailed: systemctl refused (the files are removed again).
    """
    systemctl = ["systemctl", *(["--user"] if user else [])]
    unit_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in unit_files(job).items():
        path = unit_dir / name
        path.write_text(text)
        written.append(path)
    for argv in (
        [*systemctl, "daemon-reload"],
        [*systemctl, "enable", "--now", f"{job.name}.timer"],
    ):
        proc = runner(argv, None)
        if proc.returncode != 0:
            for path in written:
                path.unlink(missing_ok=True)
            runner([*systemctl, "daemon-reload"], None)
            raise ScheduleFailed("enable the backup timer", _reason(proc))
    return written


def remove_systemd(name: str, unit_dir: Path, *, user: bool, runner: Runner = run) -> list[Path]:
    """Disable the timer and remove its units; returns the files removed."""
    systemctl = ["systemctl", *(["--user"] if user else [])]
    paths = [unit_dir / f"{name}.timer", unit_dir / f"{name}.service"]
    present = [p for p in paths if p.exists()]
    if not present:
        return []
    runner([*systemctl, "disable", "--now", f"{name}.timer"], None)
    for path in present:
        path.unlink()
    runner([*systemctl, "daemon-reload"], None)
    return present


# -- cron ---------------------------------------------------------------------------------


def cron_line(job: Job) -> str:
    """The crontab line of `job`: at a minute of the hour (and, daily, at 03 h) taken from
    its name, so that several instances do not all start at once."""
    minute = int(hashlib.sha256(job.name.encode()).hexdigest(), 16) % 60
    when = f"{minute} * * * *" if job.every == "hourly" else f"{minute} 3 * * *"
    words = [f"{k}={shlex.quote(v)}" for k, v in job.env] + [shlex.quote(a) for a in job.argv]
    # `%` ends a crontab command (what follows goes to its input): escaped.
    command = " ".join(words).replace("%", "\\%")
    return f"{when} {command} >/dev/null 2>&1 # {job.name}"


def _crontab(runner: Runner) -> str:
    proc = runner(["crontab", "-l"], None)
    if proc.returncode == 0:
        return proc.stdout
    if "no crontab" in proc.stderr.lower():
        return ""
    raise ScheduleFailed("read the crontab", _reason(proc))


def _without(crontab: str, name: str) -> list[str]:
    return [line for line in crontab.splitlines() if not line.endswith(f" # {name}")]


def _write_crontab(lines: list[str], runner: Runner) -> None:
    proc = runner(["crontab", "-"], "".join(f"{line}\n" for line in lines))
    if proc.returncode != 0:
        raise ScheduleFailed("write the crontab", _reason(proc))


def install_cron(job: Job, runner: Runner = run) -> str:
    """Put `job`'s line in the user's crontab, in place of an earlier one of the same
    name; returns it.

    Raises:
        ScheduleFailed: crontab refused (the crontab is left as it was).
    """
    line = cron_line(job)
    _write_crontab([*_without(_crontab(runner), job.name), line], runner)
    return line


def remove_cron(name: str, runner: Runner = run) -> bool:
    """Take `name`'s line out of the user's crontab; False when there was none."""
    if shutil.which("crontab") is None:
        return False
    crontab = _crontab(runner)
    kept = _without(crontab, name)
    if len(kept) == len(crontab.splitlines()):
        return False
    _write_crontab(kept, runner)
    return True


def cron_command(name: str, runner: Runner = run) -> str | None:
    """The command of `name`'s crontab line (what cron hands to `sh -c`), if any."""
    for line in _crontab(runner).splitlines():
        if line.endswith(f" # {name}"):
            return " ".join(line.split(" ")[5:]).replace("\\%", "%")
    return None


def _check_one_line(job: Job) -> None:
    """Refuse a word of `job` that no quoting keeps on its line: a line break starts
    another crontab job, or another directive of a unit (run as root for root's units).

    Raises:
        ScheduleFailed: such a word (nothing was written).
    """
    for word in (*job.argv, *(f"{k}={v}" for k, v in job.env)):
        if any(not c.isprintable() for c in word):
            raise ScheduleFailed(
                "schedule backups",
                f"{word!r} holds a line break or another control character, which a "
                "crontab line or a systemd unit cannot hold",
            )


def _reason(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr or proc.stdout).strip().splitlines()
    return text[-1] if text else f"exit code {proc.returncode}"


def environment(env: Mapping[str, str], config_dir: Path) -> tuple[tuple[str, str], ...]:
    """What a scheduled run needs of this environment: the configuration folder, and the
    engine the docker CLI would choose (no secrets: these name places)."""
    keep = [("OCC_CONFIG_DIR", str(config_dir.resolve()))]
    keep += [
        (k, env[k])
        for k in (
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "DOCKER_CONFIG",
            "DOCKER_CERT_PATH",
            "DOCKER_TLS_VERIFY",
        )
        if env.get(k)
    ]
    return tuple(keep)


def unschedule(paths: InstancePaths, name: str) -> list[str]:
    """Remove the schedule `name` of the instance at `paths` (its units or its crontab
    line, and its records); returns what was removed, in words."""
    record = read_schedule(paths)
    removed: list[str] = []
    if record is None or record.method == "systemd":
        removed += [str(p) for p in remove_systemd(name, unit_dir(), user=as_user())]
    if (record is None or record.method == "cron") and remove_cron(name):
        removed.append(f"the crontab line tagged {name}")
    remove_schedule(paths)
    return removed


def install(paths: InstancePaths, job: Job, folder: Path, keep: int) -> tuple[str, str]:
    """Make `folder`, set `job` up with what this machine has (in place of an earlier
    schedule of the same name, of either kind) and record it for the instance at
    `paths`; returns the method and where it went, in words.

    Raises:
        NoScheduler: nothing here runs jobs (nothing is written).
        ScheduleFailed: systemctl, crontab or the folder refused (nothing is left
            changed).
    """
    _check_one_line(job)
    method = detect()
    made_folder = not folder.exists()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ScheduleFailed(f"make {folder}", (exc.strerror or str(exc)).lower()) from None
    try:
        if method == "systemd":
            written = install_systemd(job, unit_dir(), user=as_user())
            with contextlib.suppress(ScheduleFailed):  # an old line, if cron is here
                remove_cron(job.name)
            where = ", ".join(str(p) for p in written)
        else:
            remove_systemd(job.name, unit_dir(), user=as_user())
            install_cron(job)
            where = f"your crontab (the line tagged {job.name})"
    except BaseException:
        if made_folder:
            folder.rmdir()
        raise
    write_schedule(
        paths,
        Schedule(
            every=job.every,
            keep=keep,
            folder=str(folder),
            method=method,
            name=job.name,
            installed=now_iso(),
        ),
    )
    return method, where
