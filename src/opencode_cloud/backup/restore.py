"""Restoring a backup: the instance's volumes and configuration become the backup's.

An instance that has data is backed up first (`automatic_backup_path`); its container is
removed (the next start makes it again) and its volumes are re-created empty and filled
by a helper container: on a local engine the archive program unpacks the file with GNU
tar, elsewhere the Engine API takes the entries streamed from this process. Either way
every entry's checksum line is computed again on the way and must be the one checked
before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opencode_cloud.backup.archive import (
    BLOCK,
    CHECKSUMS_NAME,
    DIR_MODE,
    FILE_MODE,
    KEYS_ENTRY,
    VOLUMES_PREFIX,
    Throttle,
    member_chunks,
    members,
    mismatch,
    open_stream,
    read_member,
    renamed,
    tar_header,
    tar_padding,
)
from opencode_cloud.backup.create import BackupResult, automatic_backup_path, create_backup
from opencode_cloud.backup.errors import ConfirmationNeeded, InvalidBackup, RestoreFailed
from opencode_cloud.backup.helpers import HELPER_ROOT, helper_spec
from opencode_cloud.backup.local import ProgramRun, program_spec, progress_of
from opencode_cloud.backup.program import entry_line
from opencode_cloud.backup.verify import VerifiedBackup
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.config.store import write_atomically
from opencode_cloud.docker.helper import NotOnThisMachine, helper_container, remove_stale_helpers
from opencode_cloud.docker.volume import VOLUME_SPECS
from opencode_cloud.errors import OpencodeCloudError

if TYPE_CHECKING:
    from opencode_cloud.docker.engine import Engine
    from opencode_cloud.docker.helper import HelperSpec
    from opencode_cloud.docker.models import ContainerInfo
    from opencode_cloud.docker.progress import ProgressReporter
    from opencode_cloud.instance import Instance


@dataclass
class RestoreResult:
    """What `restore_backup` did."""

    instance: str
    source_instance: str
    volumes: list[str]
    entries: int
    data_bytes: int
    config_restored: bool
    password_restored: bool
    safety_backup: BackupResult | None
    was_running: bool
    seconds: float

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["safety_backup"] = self.safety_backup.to_json() if self.safety_backup else None
        return data


@dataclass
class TargetState:
    """What the instance a backup is restored onto holds now."""

    container: ContainerInfo | None
    volumes_with_data: list[str]
    volumes_present: list[str]
    config_file: bool
    password_file: bool

    @property
    def has_data(self) -> bool:
        """Its volumes exist and are not empty: replacing them needs confirmation."""
        return bool(self.volumes_with_data)

    @property
    def is_empty(self) -> bool:
        """Nothing of it exists: a restore that fails can leave it as it found it by
        removing what it made (so it may check the files' contents while unpacking)."""
        return not (
            self.container or self.volumes_present or self.config_file or self.password_file
        )


def inspect_target(client: Engine, instance: Instance, paths: InstancePaths) -> TargetState:
    """The target instance's container, its volumes (and which hold data), its files."""
    names = [instance.volume_name(spec.kind) for spec in VOLUME_SPECS]
    present = [n for n in names if client.inspect_volume(n) is not None]
    sizes = client.volume_sizes(present) if present else {}
    # A size the engine does not report counts as data: better to ask once too often.
    with_data = [n for n in present if (sizes.get(n) is None) or (sizes.get(n) or 0) > 0]
    return TargetState(
        container=client.find_container(instance.container_name),
        volumes_with_data=with_data,
        volumes_present=present,
        config_file=paths.config_file.exists(),
        password_file=paths.password_file.exists(),
    )


def restore_backup(
    client: Engine,
    instance: Instance,
    paths: InstancePaths,
    verified: VerifiedBackup,
    *,
    helper_image: str,
    confirmed: bool,
    reporter: ProgressReporter | None = None,
    on_step: Callable[[str], None] = lambda _msg: None,
) -> RestoreResult:
    """Put a verified backup onto `instance`: its volumes, configuration and (when the
    backup has it) password become the backup's; a person's instance in team mode takes
    the volumes only (the configuration and password are the service's).

    An instance with data is first backed up itself (with its password) to
    `automatic_backup_path(...)`; its container is stopped and removed (it is made again
    by the next start, volumes kept as restored), and its volumes are re-created empty
    and filled. Nothing is started here: the caller starts the service again when it
    was running (`RestoreResult.was_running`).

    A backup whose contents were not checked yet (`verify_archive(contents=False)`) goes
    only onto an empty instance: its files are checked while they are unpacked, and when
    one does not match, what the restore made is removed again.

    Raises:
        ConfirmationNeeded: the instance has data and `confirmed` is False.
        VolumeInUse: a container other than the service mounts one of its volumes.
        InvalidBackup: (contents not checked before) a file does not match its checksum;
            nothing is left of the restore.
        RestoreFailed: writing failed part-way (the safety backup is named).
        DockerError.
    """
    from opencode_cloud.docker.errors import VolumeInUse

    began = time.monotonic()
    state = inspect_target(client, instance, paths)
    if not verified.contents_checked and not state.is_empty:
        raise ValueError("a backup whose contents are unchecked goes onto an empty instance only")
    if state.has_data and not confirmed:
        raise ConfirmationNeeded(
            f"Instance {instance.name!r} has data ({', '.join(state.volumes_with_data)}); "
            "restoring replaces it.",
            instance,
            f"restore {verified.path}",
        )
    remove_stale_helpers(client, instance)
    for name in state.volumes_present:
        users = [u for u in client.list_containers(volume=name) if u != instance.container_name]
        if users:
            raise VolumeInUse(name, users)
    safety = None
    if state.volumes_present or state.config_file or state.password_file:
        on_step("Backing up what the restore replaces ...")
        safety = create_backup(
            client,
            instance,
            paths,
            automatic_backup_path(instance, "before-restore"),
            helper_image=helper_image,
            include_password=True,
            include_keys=True,
        )
        on_step(f"Saved the instance's current data to {safety.path}.")
    # A backup without provider keys leaves the instance's own in place.
    kept_keys = _keys_in(safety.path) if safety and not verified.manifest.keys else None
    was_running = state.container is not None and state.container.status.active
    if state.container is not None:
        on_step("Stopping and removing the container (the next start makes it again) ...")
        client.remove_container(instance.container_name, force=True)
    kinds = [v.kind for v in verified.manifest.volumes]
    try:
        for name in state.volumes_present:
            client.remove_volume(name)
        for spec in VOLUME_SPECS:
            client.create_volume(
                instance.volume_name(spec.kind), instance.labels(f"volume-{spec.kind}")
            )
        mounts = [(kind, instance.volume_name(kind)) for kind in kinds]
        progress = Throttle(reporter, "Restore", verified.data_bytes or None)
        if mounts:
            base = helper_spec(instance, helper_image, mounts, read_only=False)
            restored = False
            if client.is_local:
                with contextlib.suppress(NotOnThisMachine):
                    _restore_volumes_locally(client, base, verified, progress)
                    restored = True
            if not restored:
                with helper_container(client, base) as helper:
                    feed = _RestoreFeed(verified, progress)
                    client.put_archive_stream(helper, HELPER_ROOT, feed.chunks())
                    feed.check_complete()
        progress.finish()
        if kept_keys is not None:
            _put_keys_back(client, instance, helper_image, kept_keys)
        if instance.person is None:
            _restore_files(paths, verified)
    except BaseException as exc:
        if state.is_empty:  # it had nothing: it is left with nothing
            for spec in VOLUME_SPECS:
                with contextlib.suppress(OpencodeCloudError):
                    client.remove_volume(instance.volume_name(spec.kind))
        if isinstance(exc, InvalidBackup) and not verified.contents_checked:
            raise
        if not isinstance(exc, OpencodeCloudError | OSError | tarfile.TarError | EOFError):
            raise
        raise RestoreFailed(
            instance, str(exc).rstrip("."), safety.path if safety else None
        ) from exc
    finally:
        if reporter is not None:
            reporter.done()
    return RestoreResult(
        instance=instance.name,
        source_instance=verified.manifest.instance,
        volumes=kinds,
        entries=verified.entries,
        data_bytes=verified.data_bytes,
        config_restored=verified.config_bytes is not None and instance.person is None,
        password_restored=verified.password_bytes is not None and instance.person is None,
        safety_backup=safety,
        was_running=was_running,
        seconds=time.monotonic() - began,
    )


def _keys_in(archive: Path) -> tuple[tarfile.TarInfo, bytes] | None:
    """opencode's key store in a backup this restore made (its entry and bytes), if any."""
    with tarfile.open(archive, "r:", encoding="utf-8", errors="surrogateescape") as tar:
        for member in tar:
            if member.name == KEYS_ENTRY and member.isreg():
                handle = tar.extractfile(member)
                return (member, handle.read()) if handle else None
    return None


def _put_keys_back(
    client: Engine, instance: Instance, image: str, kept: tuple[tarfile.TarInfo, bytes]
) -> None:
    """Write the instance's own key store into its restored session volume, with the
    owner and mode it had."""
    import io

    member, content = kept
    kind, inside = KEYS_ENTRY.removeprefix(VOLUMES_PREFIX).split("/", 1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(renamed(member, f"{kind}/{inside}", None), io.BytesIO(content))
    spec = helper_spec(instance, image, [(kind, instance.volume_name(kind))], read_only=False)
    with helper_container(client, spec) as helper:
        client.put_archive_stream(helper, HELPER_ROOT, [buffer.getvalue()])


def _restore_volumes_locally(
    client: Engine, base: HelperSpec, verified: VerifiedBackup, progress: Throttle
) -> None:
    """Let the helper's program unpack the archive file into the volumes, computing every
    entry's checksum line again on the way; they must be the archive's lines.

    Raises:
        NotOnThisMachine: before anything is written. InvalidBackup: a line differs.
    """
    fd, name = tempfile.mkstemp(prefix="occ-restore-", suffix=".lines")
    os.close(fd)
    lines_file = Path(name)
    try:
        kinds = [v.kind for v in verified.manifest.volumes]
        spec = program_spec(base, "read", archive=verified.path, lines=lines_file, kinds=kinds)
        with helper_container(client, spec) as helper:
            client.start_container(helper)
            report = ProgramRun(client, helper, "read", progress_of(progress)).result()
        verified.lines.seek(0)
        with open(lines_file, "rb") as computed_lines:
            for computed in computed_lines:
                _expect_line(verified, computed, verified.lines.readline())
        if report.get("entries") != verified.entries or verified.lines.readline():
            raise InvalidBackup(verified.path, "it changed while it was restored", "corrupted")
    finally:
        lines_file.unlink(missing_ok=True)


def _expect_line(verified: VerifiedBackup, computed: bytes, expected: bytes) -> None:
    """A checksum line computed while restoring, against the line the check gave."""
    if computed != expected:
        late = " (the file changed while it was restored)" if verified.contents_checked else ""
        raise InvalidBackup(verified.path, mismatch(computed, expected) + late, "corrupted")


class _RestoreFeed:
    """The volumes' entries of a verified archive, read again, as the tar stream the
    engine unpacks into the helper's folders (`volumes/<kind>/x` becomes `<kind>/x`).
    Every entry's checksum line is computed again on the way and compared with the one
    the first reading verified: a file that changed in between stops the upload."""

    def __init__(self, verified: VerifiedBackup, progress: Throttle) -> None:
        self.verified = verified
        self.progress = progress
        self.compared = 0
        self.finished = False

    def _expect(self, info: tarfile.TarInfo, digest: str | None) -> None:
        computed = (entry_line(info, digest) + "\n").encode()
        _expect_line(self.verified, computed, self.verified.lines.readline())
        self.compared += 1

    def chunks(self) -> Iterator[bytes]:
        self.verified.lines.seek(0)
        with open(self.verified.path, "rb", buffering=0) as handle, open_stream(handle) as tar:
            for index, member in enumerate(members(tar)):
                if index == 0:  # the manifest
                    continue
                if member.name == CHECKSUMS_NAME:
                    break
                if not member.name.startswith(VOLUMES_PREFIX):
                    digest = None
                    if member.isreg():
                        digest = hashlib.sha256(read_member(tar, member)).hexdigest()
                    self._expect(member, digest)
                    continue
                name = member.name.removeprefix(VOLUMES_PREFIX)
                link = member.linkname.removeprefix(VOLUMES_PREFIX) if member.islnk() else None
                entry = renamed(member, name, link)
                yield tar_header(entry)
                digest = None
                if member.isreg():
                    sha = hashlib.sha256()
                    for chunk in member_chunks(tar, member):
                        sha.update(chunk)
                        self.progress.add(len(chunk), member.name.split("/")[1])
                        yield chunk
                    digest = sha.hexdigest()
                    if pad := tar_padding(member.size):
                        yield pad
                self._expect(member, digest)
        yield b"\0" * (2 * BLOCK)
        self.finished = True

    def check_complete(self) -> None:
        if not self.finished or self.compared != self.verified.entries:
            raise InvalidBackup(self.verified.path, "it changed while it was restored", "corrupted")


def _restore_files(paths: InstancePaths, verified: VerifiedBackup) -> None:
    """The configuration file becomes the backup's (or goes, when the backup had none);
    the password file becomes the backup's only when the backup has one."""
    root = paths.config_file.parent
    root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if verified.config_bytes is not None:
        write_atomically(paths.config_file, verified.config_bytes, FILE_MODE, keep_mode=False)
    else:
        with contextlib.suppress(FileNotFoundError):
            paths.config_file.unlink()
    if verified.password_bytes is not None:
        write_atomically(paths.password_file, verified.password_bytes, FILE_MODE, keep_mode=False)
