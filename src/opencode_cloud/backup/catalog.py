"""The backups in a folder: `occ backup list`, and the retention of scheduled backups.

A scheduled backup is named `opencode-cloud-<instance>[-user-<person>]-<UTC time>
-scheduled.tar[.zst]`; retention removes only files with exactly that name for the
instance it runs for, so a file the schedule did not write is never touched.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opencode_cloud.backup.archive import MANIFEST_NAME, SMALL_MEMBER_LIMIT, Manifest
from opencode_cloud.backup.compression import SUFFIX, available, is_compressed, open_plain
from opencode_cloud.backup.errors import BackupError, InvalidBackup
from opencode_cloud.instance import Instance

SCHEDULED_TAG = "scheduled"
_STAMP = r"\d{8}T\d{6}Z"
_NAME = re.compile(
    rf"^opencode-cloud-(?P<rest>.+)-(?P<stamp>{_STAMP})(?:-(?P<reason>[a-z-]+))?\.tar(?:\.zst)?$"
)


def scheduled_backup_name(instance: Instance, now: datetime | None = None) -> str:
    """The name of a scheduled backup of `instance` (compressed when zstd is here)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    person = f"-user-{instance.person}" if instance.person is not None else ""
    suffix = ".tar" + (SUFFIX if available() else "")
    return f"opencode-cloud-{instance.name}{person}-{stamp}-{SCHEDULED_TAG}{suffix}"


def _scheduled_pattern(instance: Instance) -> re.Pattern[str]:
    person = f"-user-{re.escape(instance.person)}" if instance.person is not None else ""
    return re.compile(
        rf"^opencode-cloud-{re.escape(instance.name)}{person}-{_STAMP}-{SCHEDULED_TAG}"
        r"\.tar(?:\.zst)?$"
    )


def prune(folder: Path, instance: Instance, keep: int) -> list[Path]:
    """Remove all but the newest `keep` scheduled backups of `instance` in `folder` (by
    the time in their names); returns what was removed.

    Raises:
        BackupError: a file could not be removed.
    """
    pattern = _scheduled_pattern(instance)
    ours = sorted(
        (p for p in folder.iterdir() if pattern.match(p.name) and p.is_file()),
        key=lambda p: p.name.rsplit("-", 2)[-2],
    )
    removed = []
    for path in ours[: max(len(ours) - keep, 0)]:
        try:
            path.unlink()
        except OSError as exc:
            raise BackupError(
                f"Cannot remove the old backup {path}: {(exc.strerror or str(exc)).lower()}."
            ) from exc
        removed.append(path)
    return removed


@dataclass(frozen=True)
class ListedBackup:
    """One backup file, as its manifest and its name describe it."""

    path: Path
    size_bytes: int
    created: str
    instance: str
    person: str | None
    password: bool
    keys: bool  # opencode's provider keys
    compressed: bool
    scheduled: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "created": self.created,
            "instance": self.instance,
            "user": self.person,
            "password": self.password,
            "provider_keys": self.keys,
            "compressed": self.compressed,
            "scheduled": self.scheduled,
        }


def read_manifest(path: Path) -> Manifest:
    """The manifest of the backup at `path` (its first entry; the rest is not read).

    Raises:
        InvalidBackup: not a backup, or one that cannot be read.
    """
    try:
        with open_plain(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST_NAME or first.size > SMALL_MEMBER_LIMIT:
                raise InvalidBackup(path, "it is not an opencode-cloud backup", "foreign")
            source = tar.extractfile(first)
            assert source is not None
            return Manifest.parse(source.read(first.size), path)
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise InvalidBackup(path, f"it cannot be read ({exc})", "corrupted") from None
    except BackupError:
        raise
    except Exception as exc:  # zstandard's own errors
        raise InvalidBackup(path, f"it cannot be read ({exc})", "corrupted") from None


def list_backups(folder: Path) -> tuple[list[ListedBackup], list[Path]]:
    """The backups in `folder`, oldest first, and the `.tar`/`.tar.zst` files there that
    are not backups this release reads."""
    found: list[ListedBackup] = []
    others: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if not (path.name.endswith(".tar") or path.name.endswith(".tar" + SUFFIX)):
            continue
        try:
            manifest = read_manifest(path)
        except InvalidBackup:
            others.append(path)
            continue
        match = _NAME.match(path.name)
        rest = match.group("rest") if match else ""
        person = None
        prefix = f"{manifest.instance}-user-"
        if rest.startswith(prefix):
            person = rest.removeprefix(prefix)
        found.append(
            ListedBackup(
                path=path,
                size_bytes=path.stat().st_size,
                created=manifest.created,
                instance=manifest.instance,
                person=person,
                password=manifest.password,
                keys=manifest.keys,
                compressed=is_compressed(path),
                scheduled=bool(match and match.group("reason") == SCHEDULED_TAG),
            )
        )
    found.sort(key=lambda b: (b.created, b.path.name))
    return found, others
