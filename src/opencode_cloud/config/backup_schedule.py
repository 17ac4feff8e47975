"""The record of an instance's backup schedule and of its last scheduled run, as small
JSON files in the instance's configuration folder.

`occ backup schedule` writes the schedule (`backup-schedule.json`) and removes it with
`off`; every scheduled run writes its outcome (`backup-last.json`). `occ status` and `occ
doctor` read both: a failed or overdue scheduled backup must be seen without looking for
it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from opencode_cloud.config.paths import InstancePaths

EVERY = {"hourly": timedelta(hours=1), "daily": timedelta(days=1)}
# A schedule is overdue when no backup succeeded for twice its interval and an hour: a
# machine that slept or a run that took long is not a problem yet.
OVERDUE_AFTER = 2
OVERDUE_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class Schedule:
    """What `occ backup schedule` installed."""

    every: str  # hourly | daily
    keep: int
    folder: str
    method: str  # systemd | cron
    name: str  # the units' name, or the crontab line's tag
    installed: str  # UTC, ISO 8601


@dataclass(frozen=True)
class LastRun:
    """The outcome of the last scheduled backup."""

    at: str  # UTC, ISO 8601
    ok: bool
    message: str


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _schedule_file(paths: InstancePaths) -> Path:
    return paths.root / "backup-schedule.json"


def _last_file(paths: InstancePaths) -> Path:
    return paths.root / "backup-last.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def read_schedule(paths: InstancePaths) -> Schedule | None:
    data = _read(_schedule_file(paths))
    try:
        return Schedule(**data) if data else None
    except TypeError:
        return None


def write_schedule(paths: InstancePaths, schedule: Schedule) -> None:
    _write(_schedule_file(paths), asdict(schedule))


def remove_schedule(paths: InstancePaths) -> None:
    _schedule_file(paths).unlink(missing_ok=True)
    _last_file(paths).unlink(missing_ok=True)


def read_last_run(paths: InstancePaths) -> LastRun | None:
    data = _read(_last_file(paths))
    try:
        return LastRun(**data) if data else None
    except TypeError:
        return None


def record_run(paths: InstancePaths, *, ok: bool, message: str) -> LastRun:
    """Write the outcome of a scheduled run; a success replaces an earlier failure."""
    last = LastRun(at=now_iso(), ok=ok, message=message)
    _write(_last_file(paths), asdict(last))
    return last


def schedule_problem(paths: InstancePaths, now: datetime | None = None) -> str | None:
    """What is wrong with the scheduled backups, in one sentence: the last run failed, or
    none ran for too long; None when nothing is."""
    schedule = read_schedule(paths)
    last = read_last_run(paths)
    # A failure counts without a schedule too: on machines it cannot set up (Docker
    # Desktop), the machine's own scheduler runs `occ backup run`.
    if last is not None and not last.ok:
        return f"The last scheduled backup failed ({last.at}): {last.message}"
    if schedule is None:
        return None
    since = _parse_time(last.at if last is not None else schedule.installed)
    interval = EVERY.get(schedule.every, EVERY["daily"])
    late = (now or datetime.now(UTC)) - since
    if late > interval * OVERDUE_AFTER + OVERDUE_GRACE:
        what = (
            f"since {last.at}"
            if last is not None
            else f"since it was set up ({since:%Y-%m-%d %H:%M}Z)"
        )
        return f"No scheduled ({schedule.every}) backup has run {what}"
    return None
