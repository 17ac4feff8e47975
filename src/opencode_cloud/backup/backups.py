"""What the command line asks of backups, for one instance's `Service`: making one,
checking what a restore would replace, restoring, and the final backup before an
uninstall, each on the service's engine and with a helper image chosen for it.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from opencode_cloud.backup.compression import wants_compression
from opencode_cloud.backup.create import automatic_backup_path, compress_backup, create_backup
from opencode_cloud.backup.errors import BackupExists
from opencode_cloud.backup.restore import inspect_target, restore_backup
from opencode_cloud.docker.helper import helper_image
from opencode_cloud.docker.volume import VOLUME_SPECS
from opencode_cloud.service.image import image_for

if TYPE_CHECKING:
    from pathlib import Path

    from opencode_cloud.backup.create import BackupResult
    from opencode_cloud.backup.restore import RestoreResult, TargetState
    from opencode_cloud.backup.verify import VerifiedBackup
    from opencode_cloud.docker.progress import ProgressReporter
    from opencode_cloud.service.service import Service


class Backups:
    """Backups and restores of one instance's service."""

    def __init__(
        self,
        service: Service,
        *,
        on_step: Callable[[str], None] = lambda _msg: None,
        image_reporter: ProgressReporter | None = None,
    ) -> None:
        """Args:
        on_step: told what is done, a line at a time.
        image_reporter: the progress of building or pulling a sandbox image, when there
            is none to make a helper container from.
        """
        self.service = service
        self.client = service.client
        self.instance = service.instance
        self.paths = service.paths
        self._step = on_step
        self._image_reporter = image_reporter

    def helper_image(self) -> str:
        """A sandbox image for the helper container: the service's own, the configured
        one, any local one; built or pulled (as `occ start` would) when there is none.

        Raises:
            BuildFailed, PullFailed: there was none, and none could be made.
        """
        container = self.service.runtime.state()
        if container is not None and self.client.inspect_image(container.image_id) is not None:
            return container.image_id  # without loading the configuration (pydantic: ~0.1 s)
        configured = self.service.configured_image()
        found = helper_image(self.client, [configured] if configured else [])
        if found:
            return found
        self._step("No sandbox image here yet: making it first ...")
        self.service.ensure_image(reporter=self._image_reporter)
        return image_for(self.service.config)

    def create(
        self,
        target: Path,
        *,
        include_password: bool = False,
        include_keys: bool = False,
        force: bool = False,
        reporter: ProgressReporter | None = None,
    ) -> BackupResult:
        """`create_backup` of the instance into `target` (the progress total asked of the
        engine first when there is a `reporter`).

        Raises:
            BackupExists, BackupWriteFailed, NothingToBackUp, DockerError.
        """
        began = time.monotonic()
        volumes = any(
            self.client.inspect_volume(self.instance.volume_name(spec.kind)) is not None
            for spec in VOLUME_SPECS
        )
        compressed = wants_compression(target)
        if compressed and target.exists() and not force:
            raise BackupExists(target.absolute())
        plain = (
            target.parent / f".{target.name}.{secrets.token_hex(4)}.plain.tar"
            if compressed
            else target
        )
        try:
            result = create_backup(
                self.client,
                self.instance,
                self.paths,
                plain,
                helper_image=self.helper_image() if volumes else None,
                include_password=include_password,
                include_keys=include_keys,
                force=force,
                reporter=reporter,
                estimate=reporter is not None,
            )
            if not compressed:
                return result
            self._step("Compressing it (zstd) ...")
            size = compress_backup(result.path, target.absolute(), force=force)
        finally:
            if compressed:
                plain.unlink(missing_ok=True)
        return dataclasses.replace(
            result,
            path=target.absolute(),
            size_bytes=size,
            compressed=True,
            plain_bytes=result.size_bytes,
            seconds=time.monotonic() - began,
        )

    def final(self, reason: str, reporter: ProgressReporter | None = None) -> BackupResult:
        """A backup the tool makes on its own before it deletes the volumes, into the
        configuration folder's `backups/` (`automatic_backup_path`), with the provider
        keys: the volumes that hold them are about to go."""
        return create_backup(
            self.client,
            self.instance,
            self.paths,
            automatic_backup_path(self.instance, reason),
            helper_image=self.helper_image(),
            include_keys=True,
            reporter=reporter,
        )

    def target_state(self) -> TargetState:
        """What a restore onto this instance would replace."""
        return inspect_target(self.client, self.instance, self.paths)

    def restore(
        self, verified: VerifiedBackup, *, reporter: ProgressReporter | None = None
    ) -> RestoreResult:
        """`restore_backup` of a verified backup onto this instance, which the caller has
        confirmed may be replaced; it is not started again here.

        Raises:
            VolumeInUse, InvalidBackup, RestoreFailed, DockerError.
        """
        # The container goes; its sign-in records (sessions, a second factor) stay for
        # the next start's.
        self.service.hold_edge_state()
        return restore_backup(
            self.client,
            self.instance,
            self.paths,
            verified,
            helper_image=self.helper_image(),
            confirmed=True,
            reporter=reporter,
            on_step=self._step,
        )
