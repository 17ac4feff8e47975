"""Making a backup: the archive of an instance's volumes and configuration, written
while the service is held still (`frozen`), through a helper container.

On a local engine the helper runs the archive program, which appends the volumes to the
file itself (`local.py`); the service is paused only while it copies the SQLite
databases. Elsewhere the Engine API streams the volumes through this process, while the
service stays paused for the whole copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from opencode_cloud import __version__, interrupts
from opencode_cloud.backup.archive import (
    BLOCK,
    CHECKSUMS_NAME,
    CHUNK,
    CONFIG_MEMBER,
    DIR_MODE,
    FILE_MODE,
    FORMAT,
    KEYS_ENTRY,
    MANIFEST_NAME,
    PASSWORD_MEMBER,
    RECORD,
    VOLUMES_PREFIX,
    ChunkReader,
    Manifest,
    Throttle,
    VolumeEntry,
    member_info,
    members,
    open_stream,
    renamed,
    spool,
    tar_header,
    tar_padding,
)
from opencode_cloud.backup.compression import compress
from opencode_cloud.backup.errors import (
    BackupError,
    BackupExists,
    BackupWriteFailed,
    NoHelperImage,
    NothingToBackUp,
)
from opencode_cloud.backup.helpers import HELPER_ROOT, helper_spec
from opencode_cloud.backup.local import ProgramRun, program_spec, progress_of
from opencode_cloud.backup.program import entry_line
from opencode_cloud.config.paths import InstancePaths, config_dir
from opencode_cloud.docker.helper import NotOnThisMachine, helper_container, remove_stale_helpers
from opencode_cloud.docker.image import LABEL_OPENCODE_VERSION
from opencode_cloud.docker.models import ContainerInfo, ContainerStatus
from opencode_cloud.docker.volume import VOLUME_SPECS

if TYPE_CHECKING:
    from opencode_cloud.docker.engine import Engine
    from opencode_cloud.docker.progress import ProgressReporter
    from opencode_cloud.instance import Instance


@dataclass
class BackupResult:
    """What `create_backup` wrote."""

    path: Path
    size_bytes: int
    instance: str
    volumes: list[str]
    entries: int
    data_bytes: int
    # How long the service was frozen (None: it did not run, so it was not paused).
    paused_seconds: float | None
    consistency: str
    include_password: bool
    opencode_version: str | None
    include_keys: bool
    seconds: float
    compressed: bool = False  # zstd (`.tar.zst`)
    plain_bytes: int | None = None  # the archive's size before compression

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def default_backup_name(instance: Instance, now: datetime | None = None) -> str:
    """`opencode-cloud-<instance>-<UTC time>.tar` (`-user-<person>` after the instance for
    a person's instance in team mode)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    person = f"-user-{instance.person}" if instance.person is not None else ""
    return f"opencode-cloud-{instance.name}{person}-{stamp}.tar"


def automatic_backup_path(instance: Instance, reason: str) -> Path:
    """Where the tool keeps a backup it makes on its own (before a restore replaces an
    instance's data, before an uninstall deletes it): `<config dir>/backups/`."""
    directory = config_dir() / "backups"
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    name = default_backup_name(instance).removesuffix(".tar")
    return directory / f"{name}-{reason}.tar"


@dataclass
class _PauseClock:
    paused: bool = False
    seconds: float | None = None


@contextlib.contextmanager
def frozen(client: Engine, info: ContainerInfo | None) -> Iterator[_PauseClock]:
    """Pause the running service container for the block, and always unpause it after:
    on errors, on Ctrl-C, and on SIGTERM or SIGHUP (made to raise for the block's length).
    A container that does not run (or is paused already) is left as it is.
    """
    clock = _PauseClock()
    if info is None or info.status is not ContainerStatus.RUNNING:
        yield clock
        return
    began = time.monotonic()
    with interrupts.terminations_interrupt():
        try:
            with interrupts.held():
                client.pause_container(info.name)
                clock.paused = True
            yield clock
        finally:
            try:
                if clock.paused:
                    with interrupts.held():
                        client.unpause_container(info.name)
            finally:
                clock.seconds = time.monotonic() - began if clock.paused else None


class _Output:
    """The backup file: written under a private temporary name in the target's folder
    (O_CREAT|O_EXCL, mode 0600 from its first byte), and given its name only when whole,
    so a failed or interrupted backup never leaves a file that looks complete."""

    def __init__(self, target: Path, *, force: bool) -> None:
        self.target = target
        self.force = force
        directory = target.parent
        self.temp = directory / f".{target.name}.{secrets.token_hex(4)}.partial"
        try:
            fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except OSError as exc:
            raise BackupWriteFailed(target, (exc.strerror or str(exc)).lower()) from exc
        self.file = os.fdopen(fd, "wb", buffering=CHUNK)
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        try:
            self.file.write(data)
        except OSError as exc:
            raise BackupWriteFailed(self.target, (exc.strerror or str(exc)).lower()) from exc
        self.size += len(data)

    def flush(self) -> None:
        """Everything written so far, in the file (for another writer to append to)."""
        try:
            self.file.flush()
        except OSError as exc:
            raise BackupWriteFailed(self.target, (exc.strerror or str(exc)).lower()) from exc

    def appended_elsewhere(self) -> None:
        """Another writer (a helper container) appended to the file: go on after it."""
        self.size = self.file.seek(0, io.SEEK_END)

    def sidecar(self, suffix: str) -> Path:
        """An empty private file beside the temporary one, for a helper to write into."""
        path = self.temp.with_suffix(f".{suffix}")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        except OSError as exc:
            raise BackupWriteFailed(self.target, (exc.strerror or str(exc)).lower()) from exc
        return path

    def commit(self) -> None:
        """Flush, fsync, and give the file its name (refusing to replace one, unless
        `force`)."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if self.force:
                os.replace(self.temp, self.target)
            else:
                try:
                    os.link(self.temp, self.target)
                except FileExistsError:
                    raise BackupExists(self.target) from None
                except OSError:  # a file system without hard links
                    if self.target.exists():
                        raise BackupExists(self.target) from None
                    os.rename(self.temp, self.target)
        except OSError as exc:
            raise BackupWriteFailed(self.target, (exc.strerror or str(exc)).lower()) from exc
        finally:
            self.discard()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.temp.unlink()


class _TarWriter:
    """Entries into the output file, each hashed on its way; their checksum lines are
    kept in a spooled temporary file (memory up to a few MB, then disk)."""

    def __init__(self, out: _Output) -> None:
        self.out = out
        self.lines = spool()
        self.entries = 0
        self.data_bytes = 0

    def add_bytes(self, info: tarfile.TarInfo, data: bytes, *, indexed: bool = True) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.out.write(tar_header(info))
        self.out.write(data)
        self.out.write(tar_padding(len(data)))
        if indexed:
            self._index(info, digest)
        return digest

    def add_stream(
        self, info: tarfile.TarInfo, source: IO[bytes] | None, progress: Throttle
    ) -> None:
        self.out.write(tar_header(info))
        digest = None
        if info.isreg():
            assert source is not None
            sha = hashlib.sha256()
            remaining = info.size
            while remaining:
                chunk = source.read(min(CHUNK, remaining))
                if not chunk:
                    raise tarfile.ReadError("unexpected end of data")
                sha.update(chunk)
                self.out.write(chunk)
                remaining -= len(chunk)
                progress.add(len(chunk))
            self.out.write(tar_padding(info.size))
            digest = sha.hexdigest()
            self.data_bytes += info.size
        self._index(info, digest)

    def add_lines(self, source: Path, entries: int, data_bytes: int) -> None:
        """Checksum lines of entries another writer appended to the file."""
        with open(source, "rb") as lines:
            while chunk := lines.read(CHUNK):
                self.lines.write(chunk)
        self.entries += entries
        self.data_bytes += data_bytes

    def _index(self, info: tarfile.TarInfo, digest: str | None) -> None:
        self.lines.write(entry_line(info, digest).encode() + b"\n")
        self.entries += 1

    def finish(self, manifest_sha256: str) -> None:
        """The checksum list as the last entry, then the end-of-archive blocks."""
        head = {
            "format": FORMAT,
            "manifest_sha256": manifest_sha256,
            "entries": self.entries,
            "bytes": self.data_bytes,
        }
        first = json.dumps(head, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        self.lines.seek(0, io.SEEK_END)
        info = member_info(CHECKSUMS_NAME, b"")
        info.size = len(first) + self.lines.tell()
        self.out.write(tar_header(info))
        self.out.write(first)
        self.lines.seek(0)
        while chunk := self.lines.read(CHUNK):
            self.out.write(chunk)
        self.out.write(tar_padding(info.size))
        self.out.write(b"\0" * (2 * BLOCK))
        self.out.write(b"\0" * (-self.out.size % RECORD))
        self.lines.close()


def create_backup(
    client: Engine,
    instance: Instance,
    paths: InstancePaths,
    target: Path,
    *,
    helper_image: str | None,
    include_password: bool = False,
    include_keys: bool = False,
    force: bool = False,
    reporter: ProgressReporter | None = None,
    estimate: bool = False,
) -> BackupResult:
    """Write one archive of `instance`'s volumes and configuration to `target`.

    Args:
        helper_image: the image to make the reading container from (a sandbox image);
            None only when the instance has no volumes.
        include_password: put the service password in too.
        include_keys: put opencode's provider keys in too (its auth store, `KEYS_ENTRY`).
        force: replace an existing `target`.
        reporter: gets the bytes read so far (`layer("Backup", kind, done, total)`).
        estimate: ask the engine for the volumes' sizes first, as the progress total.

    Raises:
        BackupExists, BackupWriteFailed, NoHelperImage, DockerError. A failed backup
        leaves no file behind, and the service is never left paused.
    """
    began = time.monotonic()
    target = target.absolute()
    if target.exists() and not force:
        raise BackupExists(target)
    info = client.find_container(instance.container_name)
    present = [
        VolumeEntry(spec.kind, spec.mount_point, instance.volume_name(spec.kind))
        for spec in VOLUME_SPECS
        if client.inspect_volume(instance.volume_name(spec.kind)) is not None
    ]
    if present and helper_image is None:
        raise NoHelperImage()
    config_bytes = _read_optional(paths.config_file)
    if not present and config_bytes is None:
        raise NothingToBackUp(instance)
    password_bytes = _read_optional(paths.password_file) if include_password else None
    running = info is not None and info.status is ContainerStatus.RUNNING
    paused_already = info is not None and info.status is ContainerStatus.PAUSED
    opencode_version = _opencode_version(client, info, helper_image)
    total = None
    if estimate and present:
        sizes = client.volume_sizes([v.name for v in present])
        total = sum(size or 0 for size in sizes.values()) or None
    progress = Throttle(reporter, "Backup", total)
    remove_stale_helpers(client, instance)
    out = _Output(target, force=force)
    lines_file: Path | None = None
    try:
        with contextlib.ExitStack() as helpers:
            helper = None
            if present:
                assert helper_image is not None
                helper, lines_file = _reading_helper(
                    client, instance, helper_image, present, out, helpers, include_keys
                )
            if not (running or paused_already):
                consistency = "stopped"
            elif lines_file is not None:  # the local path pauses for the databases only
                consistency = "databases-paused"
            else:
                consistency = "paused"
            manifest = Manifest(
                instance=instance.name,
                created=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                tool_version=__version__,
                opencode_version=opencode_version,
                volumes=tuple(present),
                config_file=config_bytes is not None,
                password=password_bytes is not None,
                consistency=consistency,
                keys=include_keys,
            )
            writer = _TarWriter(out)
            manifest_bytes = manifest.to_bytes()
            writer.add_bytes(
                member_info(MANIFEST_NAME, manifest_bytes), manifest_bytes, indexed=False
            )
            if config_bytes is not None:
                writer.add_bytes(member_info(CONFIG_MEMBER, config_bytes), config_bytes)
            if password_bytes is not None:
                writer.add_bytes(member_info(PASSWORD_MEMBER, password_bytes), password_bytes)
            pause = _PauseClock()
            if helper is not None and lines_file is not None:
                pause = _copy_volumes_locally(client, helper, info, writer, lines_file, progress)
            elif helper is not None:
                with frozen(client, info) as pause:
                    _copy_volumes(client, helper, present, writer, progress, include_keys)
        writer.finish(hashlib.sha256(manifest_bytes).hexdigest())
        progress.finish()
        out.commit()
    except BaseException:
        out.discard()
        raise
    finally:
        if lines_file is not None:
            lines_file.unlink(missing_ok=True)
        if reporter is not None:
            reporter.done()
    return BackupResult(
        path=target,
        size_bytes=out.size,
        instance=instance.name,
        volumes=[v.kind for v in present],
        entries=writer.entries,
        data_bytes=writer.data_bytes,
        paused_seconds=pause.seconds,
        consistency=consistency,
        include_password=password_bytes is not None,
        opencode_version=opencode_version,
        seconds=time.monotonic() - began,
        include_keys=include_keys,
    )


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BackupError(f"Cannot read {path}: {(exc.strerror or str(exc)).lower()}.") from exc


def _opencode_version(
    client: Engine, info: ContainerInfo | None, helper_image: str | None
) -> str | None:
    for ref in (info.image_id if info else None, helper_image):
        if ref:
            image = client.inspect_image(ref)
            if image is not None and image.labels.get(LABEL_OPENCODE_VERSION):
                return image.labels[LABEL_OPENCODE_VERSION]
    return None


def _copy_volumes(
    client: Engine,
    helper: str,
    volumes: Sequence[VolumeEntry],
    writer: _TarWriter,
    progress: Throttle,
    include_keys: bool,
) -> None:
    """Stream every volume from the engine into the archive, in one archive call (each
    call costs the engine a mount and a process: the pause stays short). The engine
    names the entries `occ-volumes/<kind>/...`; they become `volumes/<kind>/...`."""
    root = HELPER_ROOT.rsplit("/", 1)[-1]
    kinds = {v.kind for v in volumes}
    chunks = client.get_archive(helper, HELPER_ROOT)
    with open_stream(ChunkReader(chunks)) as source:  # type: ignore[arg-type]
        for member in members(source):
            if member.name == root:
                continue
            name = member.name.removeprefix(root + "/")
            kind = name.split("/", 1)[0]
            if not member.name.startswith(root + "/") or kind not in kinds:
                raise BackupError(f"The engine sent an unexpected entry {member.name!r}.")
            linkname = None
            if member.islnk():
                linkname = VOLUMES_PREFIX + member.linkname.removeprefix(root + "/")
            if VOLUMES_PREFIX + name == KEYS_ENTRY and not include_keys:
                continue
            entry = renamed(member, VOLUMES_PREFIX + name, linkname)
            data = source.extractfile(member) if member.isreg() else None
            progress.status = kind
            writer.add_stream(entry, data, progress)


def _reading_helper(
    client: Engine,
    instance: Instance,
    image: str,
    volumes: Sequence[VolumeEntry],
    out: _Output,
    stack: contextlib.ExitStack,
    include_keys: bool,
) -> tuple[str, Path | None]:
    """A helper container that mounts `volumes` read-only, for the rest of `stack`: on a
    local engine one that will run the archive program with the archive file and a
    checksum lines file (returned) mounted too; else one the Engine API streams through
    (None for the lines file)."""
    base = helper_spec(instance, image, [(v.kind, v.name) for v in volumes], read_only=True)
    if client.is_local:
        lines_file = out.sidecar("lines")
        spec = program_spec(
            base,
            "write",
            archive=out.temp,
            lines=lines_file,
            kinds=[v.kind for v in volumes],
            leave_out=() if include_keys else (KEYS_ENTRY,),
        )
        try:
            return stack.enter_context(helper_container(client, spec)), lines_file
        except NotOnThisMachine:
            lines_file.unlink(missing_ok=True)
    return stack.enter_context(helper_container(client, base)), None


def _copy_volumes_locally(
    client: Engine,
    helper: str,
    info: ContainerInfo | None,
    writer: _TarWriter,
    lines_file: Path,
    progress: Throttle,
) -> _PauseClock:
    """Let the helper's program append every volume's entries to the archive file. The
    service is paused only while it copies the SQLite databases (their folders are found
    beforehand, while the service runs), then runs on while the rest is copied."""
    writer.out.flush()
    client.start_container(helper)
    run = ProgramRun(client, helper, "write", progress_of(progress))
    run.until("@ready")
    with frozen(client, info) as pause:
        client.kill_container(helper, "SIGUSR1")
        run.until("@databases")
    report = run.result()
    writer.out.appended_elsewhere()
    writer.add_lines(lines_file, int(report["entries"]), int(report["bytes"]))
    return pause


def compress_backup(plain: Path, target: Path, *, force: bool) -> int:
    """zstd of the plain archive `plain` into `target`, written as privately and whole
    as the archive itself (`_Output`); returns its size. `plain` is left for the caller.

    Raises:
        BackupExists, BackupWriteFailed.
    """
    out = _Output(target, force=force)
    try:
        with open(plain, "rb") as source:
            compress(source, out.write)
        out.commit()
    except BaseException:
        out.discard()
        raise
    return out.size
