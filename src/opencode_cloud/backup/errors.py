"""What can go wrong with a backup or a restore, as data: the command line writes the
hints."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from opencode_cloud.errors import NotConfirmed, OpencodeCloudError

if TYPE_CHECKING:
    from opencode_cloud.instance import Instance


class BackupError(OpencodeCloudError):
    """A backup, restore or uninstall could not be done."""


class BackupExists(BackupError):
    """The backup file is there already; it is never overwritten without `force`."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} exists already; it was not overwritten.")
        self.path = path


class BackupWriteFailed(BackupError):
    """The backup file cannot be written (no room, no permission, ...)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"Cannot write the backup {path}: {reason}. Nothing was kept.")
        self.path = path
        self.reason = reason


class InvalidBackup(BackupError):
    """The file is not a backup this version can restore; nothing was changed.

    Attributes:
        kind: `foreign` (not this tool's format), `version` (a format this version does
            not read), `truncated` (it ends early) or `corrupted` (its content differs
            from its checksums).
    """

    def __init__(self, path: Path, problem: str, kind: str) -> None:
        super().__init__(f"{path} cannot be restored: {problem}.")
        self.path = path
        self.problem = problem
        self.kind = kind


class ConfirmationNeeded(BackupError, NotConfirmed):
    """A command would replace or delete data and was not confirmed.

    Attributes:
        command: the command to run again with `--yes` (`restore FILE`, `uninstall`).
    """

    def __init__(self, message: str, instance: Instance, command: str) -> None:
        NotConfirmed.__init__(self, message, command)
        self.instance = instance


class NothingToBackUp(BackupError):
    """The instance has no volumes and no configuration file."""

    def __init__(self, instance: Instance) -> None:
        super().__init__(
            f"Instance {instance.name!r} has nothing to back up: no volumes, no configuration."
        )
        self.instance = instance


class NoHelperImage(BackupError):
    """No sandbox image is present to make a helper container from."""

    def __init__(self) -> None:
        super().__init__("No opencode-cloud sandbox image is present on this engine.")


class RestoreFailed(BackupError):
    """Writing the volumes failed part-way; what was there before is in `safety_backup`."""

    def __init__(self, instance: Instance, cause: str, safety_backup: Path | None) -> None:
        kept = f" What it replaced is in {safety_backup}." if safety_backup else ""
        super().__init__(f"Restoring instance {instance.name!r} failed: {cause}.{kept}")
        self.instance = instance
        self.cause = cause
        self.safety_backup = safety_backup


class ProgramFailed(OpencodeCloudError):
    """The archive program in the helper container stopped with an error."""

    def __init__(self, action: str, detail: str) -> None:
        what = "reading the volumes" if action == "write" else "writing the volumes"
        super().__init__(f"The helper container failed while {what}: {detail}.")
        self.detail = detail


class NoScheduler(BackupError):
    """This machine has neither a running systemd nor cron."""

    def __init__(self) -> None:
        super().__init__(
            "Cannot schedule backups here: systemd is not running and there is no cron "
            "(no `crontab` command)."
        )


class ScheduleFailed(BackupError):
    """systemctl or crontab refused; whatever was written is taken back."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"Cannot {what}: {reason}.")
        self.reason = reason
