"""Backups of one instance, and restores: every volume and the configuration in one tar file.

What `occ backup` and `occ restore` do (docs/backup.md tells users the same):

- **The archive** is a plain (uncompressed, PAX) tar file, mode 0600, laid out as

      manifest.json          first: format, versions, instance, time, the volumes
      config/config.json     the instance's configuration file, when it has one
      config/password        the service password, only when asked for
      volumes/<kind>/...     each volume's files (home, session, state, projects, config)
      checksums.jsonl        last: one line per entry above (type, mode, owner, time,
                             size and sha256 of each file), and the manifest's sha256

  The checksums come last because they are computed while the data goes through: a
  backup never holds a volume, or even a file, in memory. `verify_archive` reads the
  whole file once (hashing its files on every CPU) and compares every entry with its
  line before anything is changed.

- **Two ways to the volumes.** A helper container, made from the sandbox image, mounts
  each volume at its own folder (`/occ-volumes/<kind>`), side by side: the service's own
  mount points nest the volumes inside the home, with host folders added by `occ mount`
  among them; the helper mounts neither, so no volume is read twice and no host folder
  is ever read.
  - *Local* (the engine runs on this machine, `DockerClient.is_local`): the
    helper also mounts the archive file itself and runs `archive_program`, which copies
    between the volumes and the file directly, hashing on a second CPU (restores unpack
    with GNU tar). No byte goes through the API.
  - *Remote* (any other engine: `tcp://`, `ssh://`, contexts): the helper is never
    started; `GET`/`PUT /containers/{id}/archive` stream the volumes through this
    process.

- **Consistency**: opencode keeps SQLite databases in write-ahead-log mode in the session
  volume. The service container is paused (the kernel's cgroup freezer) while they are
  copied: none of its processes runs, so what is read is exactly what they had written
  when frozen, as after a power cut that loses nothing: a transaction half appended to
  the WAL has no commit frame yet, and SQLite's WAL recovery, when the copy is opened,
  replays the committed transactions and drops the rest. On the local path only the
  SQLite files (`*.db`, `*.sqlite`, `*.sqlite3` and their `-wal`, `-shm`, `-journal`) are
  copied while paused, first, and the rest while the service runs (manifest consistency
  `databases-paused`); on the remote path the pause lasts the whole copy (`paused`). The
  pause always ends (on errors, Ctrl-C and SIGTERM too), and its length is reported.

- **Writing the volumes** (restore): the instance's volumes are emptied by re-creating
  them, and a helper container mounts them; the archive's volume entries are unpacked
  with their owners, modes and times, while their checksum lines are computed again and
  compared with the archive's. An instance that has anything is restored only after
  `verify_archive` read the whole file; onto an empty one the contents are checked in
  that same unpacking pass (`verify_archive(contents=False)` checks the rest first),
  and a file that does not match makes the restore remove all it made.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from opencode_cloud import __version__, interrupts
from opencode_cloud.archive_program import entry_line
from opencode_cloud.backup_local import (
    ARCHIVE_MOUNT,
    LINES_MOUNT,
    NotOnThisMachine,
    ProgramRun,
    create_helper,
    program_body,
)
from opencode_cloud.config.paths import InstancePaths, config_dir
from opencode_cloud.config.store import write_atomically
from opencode_cloud.docker.image import LABEL_OPENCODE_VERSION, LABEL_STAGE
from opencode_cloud.docker.models import ContainerInfo, ContainerStatus
from opencode_cloud.docker.volume import VOLUME_SPECS
from opencode_cloud.errors import NotConfirmed, OpencodeCloudError
from opencode_cloud.instance import LABEL_INSTANCE, LABEL_MANAGED, LABEL_ROLE, Instance

if TYPE_CHECKING:
    from opencode_cloud.docker.engine import Engine
    from opencode_cloud.docker.progress import ProgressReporter

FORMAT = "opencode-cloud-backup"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
CHECKSUMS_NAME = "checksums.jsonl"
CONFIG_PREFIX = "config/"
CONFIG_MEMBER = "config/config.json"
PASSWORD_MEMBER = "config/password"
VOLUMES_PREFIX = "volumes/"
# Where a helper container mounts each volume: side by side, never nested.
HELPER_ROOT = "/occ-volumes"
HELPER_ROLE = "backup-helper"
FILE_MODE = 0o600
DIR_MODE = 0o700
# Bytes read or written at a time; the only buffer that grows with the data.
CHUNK = 1 << 20
# The manifest and the configuration files are read whole; nothing of ours is this big.
SMALL_MEMBER_LIMIT = 1 << 20
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
_TAR_FORMAT: Final = tarfile.PAX_FORMAT
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"
# PAX records tarfile derives from a TarInfo's own fields; the rest (xattrs) are kept.
_DERIVED_PAX = frozenset(
    {"path", "linkpath", "size", "uid", "gid", "mtime", "uname", "gname", "atime", "ctime"}
)
_PROGRESS_EVERY = 8 << 20  # bytes between two progress reports
# A file's digest in a checksum line, as `verify_archive(contents=False)` sets it aside.
_LISTED_DIGEST = re.compile(rb'"sha256":"[0-9a-f]*"')
_UNREAD_DIGEST = b'"sha256":null'
# Files a check hashes ahead of the entry whose line it writes (bounds the memory).
_HASHES_AHEAD = 64


# -- errors -------------------------------------------------------------------------------


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


# -- the manifest -------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeEntry:
    """One volume in a backup: what kind, where the service mounts it, its name there."""

    kind: str
    mount_point: str
    name: str

    @property
    def member(self) -> str:
        return VOLUMES_PREFIX + self.kind


@dataclass(frozen=True)
class Manifest:
    """`manifest.json`: what the archive holds, written before any data."""

    instance: str
    created: str
    tool_version: str
    opencode_version: str | None
    volumes: tuple[VolumeEntry, ...]
    config_file: bool
    password: bool
    # How the data was kept still while it was read: paused | stopped | none.
    consistency: str
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        data = {
            "format": self.format,
            "format_version": self.format_version,
            "tool_version": self.tool_version,
            "opencode_version": self.opencode_version,
            "instance": self.instance,
            "created": self.created,
            "consistency": self.consistency,
            "volumes": [asdict(v) | {"path": v.member} for v in self.volumes],
            "config_file": CONFIG_MEMBER if self.config_file else None,
            "password": PASSWORD_MEMBER if self.password else None,
            "checksums": {"path": CHECKSUMS_NAME, "algorithm": "sha256", "per": "file"},
        }
        return (json.dumps(data, indent=2) + "\n").encode()

    @classmethod
    def parse(cls, raw: bytes, path: Path) -> Manifest:
        """The manifest in `raw`.

        Raises:
            InvalidBackup: not this tool's manifest (`foreign`), or a format version this
                release does not read (`version`).
        """
        try:
            data = json.loads(raw)
        except ValueError:
            raise InvalidBackup(path, "its manifest.json is not valid JSON", "corrupted") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InvalidBackup(path, "it is not an opencode-cloud backup", "foreign")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise InvalidBackup(
                path,
                f"it has backup format version {version!r}, and this release of "
                f"opencode-cloud ({__version__}) reads version {FORMAT_VERSION}",
                "version",
            )
        try:
            known = {spec.kind: spec for spec in VOLUME_SPECS}
            volumes = tuple(
                VolumeEntry(str(v["kind"]), str(v["mount_point"]), str(v["name"]))
                for v in data["volumes"]
            )
            if any(v.kind not in known for v in volumes) or len({v.kind for v in volumes}) != len(
                volumes
            ):
                raise ValueError("unknown or repeated volume kind")
            return cls(
                instance=str(data["instance"]),
                created=str(data["created"]),
                tool_version=str(data["tool_version"]),
                opencode_version=data.get("opencode_version"),
                volumes=volumes,
                config_file=data.get("config_file") == CONFIG_MEMBER,
                password=data.get("password") == PASSWORD_MEMBER,
                consistency=str(data.get("consistency") or "none"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidBackup(
                path, f"its manifest.json is damaged ({exc})", "corrupted"
            ) from None


# -- entries and their checksum lines ----------------------------------------------------


def _describe_line(line: str) -> str:
    try:
        return str(json.loads(line).get("path"))
    except (ValueError, AttributeError):
        return "an entry"


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(_TAR_FORMAT, _ENCODING, _ERRORS)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def _renamed(info: tarfile.TarInfo, name: str, linkname: str | None = None) -> tarfile.TarInfo:
    """A copy of `info` called `name` (a hard link's target renamed too), with the PAX
    records that tarfile derives from the fields dropped so they follow the new ones."""
    copy = tarfile.TarInfo(name)
    copy.size, copy.mode, copy.type = info.size, info.mode & 0o7777, info.type
    copy.uid, copy.gid, copy.mtime = info.uid, info.gid, info.mtime
    copy.uname, copy.gname = info.uname, info.gname
    copy.devmajor, copy.devminor = info.devmajor, info.devminor
    copy.linkname = linkname if linkname is not None else info.linkname
    copy.pax_headers = {k: v for k, v in info.pax_headers.items() if k not in _DERIVED_PAX}
    return copy


def _member_info(name: str, data: bytes, mode: int = FILE_MODE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    info.uid = info.gid = 0
    return info


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (the engine's archive stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def read(self, size: int = -1) -> bytes:
        # tarfile's stream asks for a block size and takes whatever comes back.
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._pending = memoryview(chunk)
        if size < 0 or size >= len(self._pending):
            out, self._pending = bytes(self._pending), memoryview(b"")
            return out
        out = bytes(self._pending[:size])
        self._pending = self._pending[size:]
        return out


class _Throttle:
    """Progress reports at most every few MB: reporters draw, and drawing costs."""

    def __init__(
        self, reporter: ProgressReporter | None, label: str, total: int | None = None
    ) -> None:
        self.reporter = reporter
        self.label = label
        self.total = total
        self.done = 0
        self._reported = 0
        self.status = ""

    def add(self, count: int, status: str | None = None) -> None:
        self.done += count
        if status is not None:
            self.status = status
        if self.reporter is not None and self.done - self._reported >= _PROGRESS_EVERY:
            self._reported = self.done
            total = max(self.total, self.done) if self.total else None
            self.reporter.layer(self.label, self.status, self.done, total)

    def finish(self) -> None:
        if self.reporter is not None and self.done:
            self.reporter.layer(self.label, self.status, self.done, max(self.total or 0, self.done))


def _spool() -> IO[bytes]:
    """A temporary file for checksum lines: in memory up to a few MB, then on disk."""
    return tempfile.SpooledTemporaryFile(max_size=4 << 20, mode="w+b")


def _open_stream(fileobj: IO[bytes]) -> tarfile.TarFile:
    return tarfile.open(
        fileobj=fileobj, mode="r|", bufsize=CHUNK, encoding=_ENCODING, errors=_ERRORS
    )


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The entries of a tar stream, one at a time; tarfile's list of those seen is
    emptied as it goes, so memory does not grow with the number of files."""
    while (member := tar.next()) is not None:
        yield member
        tar.members.clear()  # type: ignore[attr-defined]


# -- making a backup ----------------------------------------------------------------------


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
    seconds: float

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def default_backup_name(instance: Instance, now: datetime | None = None) -> str:
    """`opencode-cloud-<instance>-<UTC time>.tar`."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"opencode-cloud-{instance.name}-{stamp}.tar"


def automatic_backup_path(instance: Instance, reason: str) -> Path:
    """Where the tool keeps a backup it makes on its own (before a restore replaces an
    instance's data, before an uninstall deletes it): `<config dir>/backups/`."""
    directory = config_dir() / "backups"
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    name = default_backup_name(instance).removesuffix(".tar")
    return directory / f"{name}-{reason}.tar"


def helper_body(
    instance: Instance, image: str, volumes: Sequence[tuple[str, str]], *, read_only: bool
) -> dict[str, Any]:
    """The create body of a helper container: `image`, never started, without network,
    each volume (`(kind, volume name)`) mounted at `HELPER_ROOT/<kind>`, side by side.
    `NoCopy`: an empty volume is not filled from the image's files at that path."""
    return {
        "Image": image,
        "Entrypoint": ["/bin/true"],
        "Cmd": [],
        "Labels": instance.labels(HELPER_ROLE),
        "NetworkDisabled": True,
        "HostConfig": {
            "NetworkMode": "none",
            "AutoRemove": False,
            "Mounts": [
                {
                    "Type": "volume",
                    "Source": name,
                    "Target": f"{HELPER_ROOT}/{kind}",
                    "ReadOnly": read_only,
                    "VolumeOptions": {"NoCopy": True},
                }
                for kind, name in volumes
            ],
        },
    }


def find_helper_image(client: Engine, preferred: Sequence[str] = ()) -> str | None:
    """An image a helper container can be made from: the first of `preferred` that is
    present, else any local sandbox image (never the build stage). None when none is."""
    for ref in preferred:
        if ref and client.inspect_image(ref) is not None:
            return ref
    for image in client.list_images(labels=[LABEL_OPENCODE_VERSION]):
        if LABEL_STAGE not in image.labels:
            return image.tags[0] if image.tags else image.id
    return None


def remove_stale_helpers(client: Engine, instance: Instance) -> list[str]:
    """Remove helper containers a killed backup or restore of `instance` left behind."""
    names = client.list_containers(
        labels=[
            f"{LABEL_MANAGED}=true",
            f"{LABEL_INSTANCE}={instance.name}",
            f"{LABEL_ROLE}={HELPER_ROLE}",
        ]
    )
    for name in names:
        with contextlib.suppress(OpencodeCloudError):
            client.remove_container(name, force=True)
    return names


@contextlib.contextmanager
def _helper(client: Engine, instance: Instance, body: Mapping[str, Any]) -> Iterator[str]:
    """A helper container made from `body` for the block, removed after (whatever happens;
    a running one is killed)."""
    name = f"{instance.prefix}-{HELPER_ROLE}-{secrets.token_hex(3)}"
    create_helper(client, name, body)
    try:
        yield name
    finally:
        with interrupts.held():
            client.remove_container(name, force=True)


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
        self.lines = _spool()
        self.entries = 0
        self.data_bytes = 0

    def add_bytes(self, info: tarfile.TarInfo, data: bytes, *, indexed: bool = True) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.out.write(_header(info))
        self.out.write(data)
        self.out.write(_padding(len(data)))
        if indexed:
            self._index(info, digest)
        return digest

    def add_stream(
        self, info: tarfile.TarInfo, source: IO[bytes] | None, progress: _Throttle
    ) -> None:
        self.out.write(_header(info))
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
            self.out.write(_padding(info.size))
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
        info = _member_info(CHECKSUMS_NAME, b"")
        info.size = len(first) + self.lines.tell()
        self.out.write(_header(info))
        self.out.write(first)
        self.lines.seek(0)
        while chunk := self.lines.read(CHUNK):
            self.out.write(chunk)
        self.out.write(_padding(info.size))
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
    force: bool = False,
    reporter: ProgressReporter | None = None,
    estimate: bool = False,
) -> BackupResult:
    """Write one archive of `instance`'s volumes and configuration to `target`.

    Args:
        helper_image: the image to make the reading container from (a sandbox image);
            None only when the instance has no volumes.
        include_password: put the service password in too.
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
    progress = _Throttle(reporter, "Backup", total)
    remove_stale_helpers(client, instance)
    out = _Output(target, force=force)
    lines_file: Path | None = None
    try:
        with contextlib.ExitStack() as helpers:
            helper = None
            if present:
                assert helper_image is not None
                helper, lines_file = _reading_helper(
                    client, instance, helper_image, present, out, helpers
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
            )
            writer = _TarWriter(out)
            manifest_bytes = manifest.to_bytes()
            writer.add_bytes(
                _member_info(MANIFEST_NAME, manifest_bytes), manifest_bytes, indexed=False
            )
            if config_bytes is not None:
                writer.add_bytes(_member_info(CONFIG_MEMBER, config_bytes), config_bytes)
            if password_bytes is not None:
                writer.add_bytes(_member_info(PASSWORD_MEMBER, password_bytes), password_bytes)
            pause = _PauseClock()
            if helper is not None and lines_file is not None:
                pause = _copy_volumes_locally(client, helper, info, writer, lines_file, progress)
            elif helper is not None:
                with frozen(client, info) as pause:
                    _copy_volumes(client, helper, present, writer, progress)
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
    progress: _Throttle,
) -> None:
    """Stream every volume from the engine into the archive, in one archive call (each
    call costs the engine a mount and a process: the pause stays short). The engine
    names the entries `occ-volumes/<kind>/...`; they become `volumes/<kind>/...`."""
    root = HELPER_ROOT.rsplit("/", 1)[-1]
    kinds = {v.kind for v in volumes}
    chunks = client.get_archive(helper, HELPER_ROOT)
    with _open_stream(_ChunkReader(chunks)) as source:  # type: ignore[arg-type]
        for member in _members(source):
            if member.name == root:
                continue
            name = member.name.removeprefix(root + "/")
            kind = name.split("/", 1)[0]
            if not member.name.startswith(root + "/") or kind not in kinds:
                raise BackupError(f"The engine sent an unexpected entry {member.name!r}.")
            linkname = None
            if member.islnk():
                linkname = VOLUMES_PREFIX + member.linkname.removeprefix(root + "/")
            renamed = _renamed(member, VOLUMES_PREFIX + name, linkname)
            data = source.extractfile(member) if member.isreg() else None
            progress.status = kind
            writer.add_stream(renamed, data, progress)


def _reading_helper(
    client: Engine,
    instance: Instance,
    image: str,
    volumes: Sequence[VolumeEntry],
    out: _Output,
    stack: contextlib.ExitStack,
) -> tuple[str, Path | None]:
    """A helper container that mounts `volumes` read-only, for the rest of `stack`: on a
    local engine one that will run the archive program with the archive file and a
    checksum lines file (returned) mounted too; else one the Engine API streams through
    (None for the lines file)."""
    base = helper_body(instance, image, [(v.kind, v.name) for v in volumes], read_only=True)
    if client.is_local:
        lines_file = out.sidecar("lines")
        files = [(out.temp, ARCHIVE_MOUNT), (lines_file, LINES_MOUNT)]
        args = {"root": HELPER_ROOT, "kinds": [v.kind for v in volumes]}
        body = program_body(
            base,
            [(str(path), mount, False) for path, mount in files],
            "write",
            args | {"archive": ARCHIVE_MOUNT, "lines": LINES_MOUNT},
        )
        try:
            return stack.enter_context(_helper(client, instance, body)), lines_file
        except NotOnThisMachine:
            lines_file.unlink(missing_ok=True)
    return stack.enter_context(_helper(client, instance, base)), None


def _copy_volumes_locally(
    client: Engine,
    helper: str,
    info: ContainerInfo | None,
    writer: _TarWriter,
    lines_file: Path,
    progress: _Throttle,
) -> _PauseClock:
    """Let the helper's program append every volume's entries to the archive file. The
    service is paused only while it copies the SQLite databases (their folders are found
    beforehand, while the service runs), then runs on while the rest is copied."""
    writer.out.flush()
    client.start_container(helper)
    run = ProgramRun(client, helper, "write", _progress_of(progress))
    run.until("@ready")
    with frozen(client, info) as pause:
        client.kill_container(helper, "SIGUSR1")
        run.until("@databases")
    report = run.result()
    writer.out.appended_elsewhere()
    writer.add_lines(lines_file, int(report["entries"]), int(report["bytes"]))
    return pause


def _progress_of(progress: _Throttle) -> Callable[[int], None]:
    """A callback for the bytes a helper's program has copied so far."""
    start = progress.done

    def report(done: int) -> None:
        progress.add(start + done - progress.done)

    return report


# -- checking a backup --------------------------------------------------------------------


@dataclass
class VerifiedBackup:
    """A backup whose every entry matched its checksum line (`verify_archive`).

    `lines` holds those lines, in archive order, for the restore to compare against
    again while it writes; close it (or use the object as a context manager) when done.
    """

    path: Path
    manifest: Manifest
    entries: int
    data_bytes: int
    config_bytes: bytes | None
    password_bytes: bytes | None
    lines: IO[bytes]
    volume_bytes: dict[str, int] = field(default_factory=dict)
    # False: only the layout, names, owners, sizes and the checksum list were checked, and
    # `lines` are the archive's own; the files' contents are checked while unpacked.
    contents_checked: bool = True

    def close(self) -> None:
        self.lines.close()

    def __enter__(self) -> VerifiedBackup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_name(path: Path, info: tarfile.TarInfo, kinds: Sequence[str]) -> str | None:
    """The volume kind an entry belongs to (None for a configuration file).

    Raises:
        InvalidBackup: a name outside the layout (or one that climbs out with `..`).
    """
    name = info.name
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "" in parts:
        raise InvalidBackup(path, f"it holds an unsafe entry name {name!r}", "corrupted")
    if name in (CONFIG_MEMBER, PASSWORD_MEMBER):
        if not info.isreg() or info.size > SMALL_MEMBER_LIMIT:
            raise InvalidBackup(path, f"{name} is not a small file", "corrupted")
        return None
    if parts[0] == "volumes" and len(parts) >= 2 and parts[1] in kinds:
        if info.islnk():
            target = info.linkname.split("/")
            if target[:2] != parts[:2] or ".." in target:
                raise InvalidBackup(
                    path, f"the hard link {name} points outside its volume", "corrupted"
                )
        return parts[1]
    raise InvalidBackup(path, f"it holds an unexpected entry {name!r}", "corrupted")


def verify_archive(
    path: Path, reporter: ProgressReporter | None = None, *, contents: bool = True
) -> VerifiedBackup:
    """Read the whole archive once and check it: the manifest first, every entry against
    its checksum line, the checksum list last and whole. Nothing else is touched.

    With `contents=False` the files' contents are not read (their sha256 is taken from the
    list as it is): for a restore that computes them while it unpacks, into volumes it
    made itself and removes again when one does not match.

    Raises:
        InvalidBackup: `foreign`, `version`, `truncated` or `corrupted`; the message
            names the first entry that does not match.
        BackupError: the file cannot be read.
    """
    try:
        handle = open(path, "rb", buffering=0)  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise BackupError(
            f"Cannot read the backup {path}: {(exc.strerror or str(exc)).lower()}."
        ) from exc
    size = os.fstat(handle.fileno()).st_size
    progress = _Throttle(reporter, "Checking", size)
    lines = _spool()
    try:
        with handle:
            result = _verify(path, handle, lines, progress, contents=contents)
        progress.finish()
        lines.seek(0)
        return result
    except BaseException:
        lines.close()
        raise
    finally:
        if reporter is not None:
            reporter.done()


def _verify(
    path: Path, handle: IO[bytes], lines: IO[bytes], progress: _Throttle, *, contents: bool
) -> VerifiedBackup:
    if os.fstat(handle.fileno()).st_size == 0:
        raise InvalidBackup(path, "the file is empty", "truncated")
    last = current = "its start"
    try:
        try:
            # Seekable: headers are read one after the other while the files' contents are
            # hashed on other threads, straight from the file.
            tar = tarfile.open(  # noqa: SIM115 (closed below)
                fileobj=handle, mode="r:", encoding=_ENCODING, errors=_ERRORS
            )
        except tarfile.ReadError:
            raise InvalidBackup(
                path, "it is not an opencode-cloud backup (not a tar archive)", "foreign"
            ) from None
        with tar, _FileHasher(handle.fileno()) as hasher:
            first = tar.next()
            if first is None or first.name != MANIFEST_NAME or not first.isreg():
                raise InvalidBackup(
                    path,
                    "it is not an opencode-cloud backup (no manifest.json at its start)",
                    "foreign",
                )
            if first.size > SMALL_MEMBER_LIMIT:
                raise InvalidBackup(path, "its manifest.json is too large", "foreign")
            manifest_bytes = _read_member(tar, first)
            manifest = Manifest.parse(manifest_bytes, path)
            kinds = [v.kind for v in manifest.volumes]
            entries = data_bytes = 0
            config_bytes = password_bytes = None
            volume_bytes: dict[str, int] = dict.fromkeys(kinds, 0)
            checked = False
            # Entries whose line waits for its digest, in archive order.
            waiting: collections.deque[tuple[tarfile.TarInfo, Future[str] | str | None]]
            waiting = collections.deque()

            def write_lines(keep: int) -> None:
                nonlocal current
                while len(waiting) > keep:
                    member, digest = waiting.popleft()
                    if isinstance(digest, Future):
                        current = member.name  # where an early end shows up
                        digest = digest.result()
                        progress.add(member.size)
                    lines.write(entry_line(member, digest).encode() + b"\n")

            for member in _members(tar):
                if checked:
                    raise InvalidBackup(
                        path, f"it holds {member.name!r} after its checksum list", "corrupted"
                    )
                if member.name == CHECKSUMS_NAME and member.isreg():
                    write_lines(0)
                    _compare_checksums(
                        path, tar, member, lines, manifest_bytes, entries, contents=contents
                    )
                    checked = True
                    continue
                current = member.name
                kind = _check_name(path, member, kinds)
                digest: Future[str] | str | None = None
                if member.isreg():
                    if kind is None:
                        content = _read_member(tar, member)
                        digest = hashlib.sha256(content).hexdigest()
                        if member.name == CONFIG_MEMBER:
                            config_bytes = content
                        else:
                            password_bytes = content
                    else:
                        if contents:
                            digest = hasher.submit(member.offset_data, member.size)
                        volume_bytes[kind] += member.size
                    data_bytes += member.size
                waiting.append((member, digest))
                write_lines(_HASHES_AHEAD)
                entries += 1
                last = member.name
            if not checked:
                raise _ended_early(path, tar, last)
    except (tarfile.TarError, EOFError) as exc:
        if isinstance(exc, EOFError) or "unexpected end of data" in str(exc):
            raise InvalidBackup(
                path, f"it is truncated (it ends in {current})", "truncated"
            ) from None
        raise InvalidBackup(
            path, f"it is damaged (an unreadable entry after {last}: {exc})", "corrupted"
        ) from None
    if manifest.config_file != (config_bytes is not None) or manifest.password != (
        password_bytes is not None
    ):
        raise InvalidBackup(path, "its configuration files differ from its manifest", "corrupted")
    return VerifiedBackup(
        path=path,
        manifest=manifest,
        entries=entries,
        data_bytes=data_bytes,
        config_bytes=config_bytes,
        password_bytes=password_bytes,
        lines=lines,
        volume_bytes=volume_bytes,
        contents_checked=contents,
    )


def _ended_early(path: Path, tar: tarfile.TarFile, last: str) -> InvalidBackup:
    """The archive stopped before its checksum list: cut short (nothing, zeros, or less
    than a header follows), or an entry's header is damaged (tarfile stops there
    quietly)."""
    with open(path, "rb") as again:
        again.seek(tar.offset)
        if len(again.read(BLOCK)) == BLOCK:
            again.seek(tar.offset)
        while block := again.read(CHUNK):
            if block.strip(b"\0"):
                return InvalidBackup(
                    path, f"it is damaged (an unreadable entry after {last})", "corrupted"
                )
    return InvalidBackup(
        path, f"it is truncated (it ends after {last}, before its checksum list)", "truncated"
    )


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    source = tar.extractfile(member)
    assert source is not None
    data = source.read(member.size)
    if len(data) != member.size:
        raise EOFError
    return data


def _member_chunks(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[bytes]:
    """A regular member's bytes, in chunks; EOFError when the archive ends too early."""
    source = tar.extractfile(member)
    assert source is not None
    remaining = member.size
    while remaining:
        chunk = source.read(min(CHUNK, remaining))
        if not chunk:
            raise EOFError
        remaining -= len(chunk)
        yield chunk


class _FileHasher:
    """sha256 of byte ranges of one open file, on worker threads (reads and hashlib let
    go of the GIL), so a check runs at the speed of every CPU rather than one. Small
    ranges are hashed at once: handing them over would cost more than hashing them.

    Raises (from a range's result): EOFError when the file ends before the range does.
    """

    SMALL = 1 << 18

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pool = ThreadPoolExecutor(max(2, min(4, os.cpu_count() or 2)))
        self.buffers = threading.local()

    def submit(self, offset: int, size: int) -> Future[str] | str:
        if size <= self.SMALL:
            return self._hash(offset, size)
        return self.pool.submit(self._hash, offset, size)

    def _hash(self, offset: int, size: int) -> str:
        buffer = getattr(self.buffers, "buffer", None)
        if buffer is None:
            buffer = self.buffers.buffer = bytearray(CHUNK)
        sha = hashlib.sha256()
        while size:
            view = memoryview(buffer)[: min(CHUNK, size)]
            count = os.preadv(self.fd, [view], offset)
            if count == 0:
                raise EOFError
            sha.update(view[:count])
            offset += count
            size -= count
        return sha.hexdigest()

    def __enter__(self) -> _FileHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(cancel_futures=True)


def _compare_checksums(
    path: Path,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    lines: IO[bytes],
    manifest_bytes: bytes,
    entries: int,
    *,
    contents: bool,
) -> None:
    """The archive's checksum list against the lines computed from its entries. Without
    `contents`, the files' lines were computed without a digest: theirs is taken from the
    list, which then replaces the computed lines."""
    listed = tar.extractfile(member)
    assert listed is not None
    try:
        head = json.loads(listed.readline())
    except ValueError:
        raise InvalidBackup(path, "its checksum list is damaged", "corrupted") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise InvalidBackup(path, "its checksum list is damaged", "corrupted")
    if head.get("manifest_sha256") != hashlib.sha256(manifest_bytes).hexdigest():
        raise InvalidBackup(path, "manifest.json does not match its checksum", "corrupted")
    lines.seek(0)
    adopted = None if contents else _spool()
    for computed in lines:
        expected = listed.readline()
        compared = expected
        if adopted is not None:
            adopted.write(expected)
            if _UNREAD_DIGEST in computed:
                compared = _LISTED_DIGEST.sub(_UNREAD_DIGEST, expected)
        if computed != compared:
            raise InvalidBackup(path, _mismatch(computed, compared), "corrupted")
    if listed.readline() or head.get("entries") != entries:
        raise InvalidBackup(path, "its checksum list does not match its entries", "corrupted")
    if adopted is not None:
        adopted.seek(0)
        lines.seek(0)
        lines.truncate()
        while chunk := adopted.read(CHUNK):
            lines.write(chunk)
        adopted.close()
    lines.seek(0, io.SEEK_END)


def _mismatch(computed: bytes, expected: bytes) -> str:
    found = computed.decode(errors="replace")
    try:
        wanted = json.loads(expected)
        have = json.loads(found)
    except ValueError:
        return f"its checksum list is damaged (at {_describe_line(found)})"
    if wanted.get("path") != have.get("path"):
        return f"{have.get('path')} is not the entry its checksum list names next"
    differs = sorted(k for k in set(wanted) | set(have) if wanted.get(k) != have.get(k))
    what = "content" if "sha256" in differs else ", ".join(differs)
    return f"{have.get('path')} does not match its checksum ({what} differs)"


# -- restoring ----------------------------------------------------------------------------


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
    backup has it) password become the backup's.

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
        )
        on_step(f"Saved the instance's current data to {safety.path}.")
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
        progress = _Throttle(reporter, "Restore", verified.data_bytes or None)
        if mounts:
            base = helper_body(instance, helper_image, mounts, read_only=False)
            restored = False
            if client.is_local:
                with contextlib.suppress(NotOnThisMachine):
                    _restore_volumes_locally(client, instance, base, verified, progress)
                    restored = True
            if not restored:
                with _helper(client, instance, base) as helper:
                    feed = _RestoreFeed(verified, progress)
                    client.put_archive_stream(helper, HELPER_ROOT, feed.chunks())
                    feed.check_complete()
        progress.finish()
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
        config_restored=verified.config_bytes is not None,
        password_restored=verified.password_bytes is not None,
        safety_backup=safety,
        was_running=was_running,
        seconds=time.monotonic() - began,
    )


def _restore_volumes_locally(
    client: Engine,
    instance: Instance,
    base: Mapping[str, Any],
    verified: VerifiedBackup,
    progress: _Throttle,
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
        files = [(str(verified.path), ARCHIVE_MOUNT, True), (name, LINES_MOUNT, False)]
        args = {"root": HELPER_ROOT, "kinds": [v.kind for v in verified.manifest.volumes]}
        body = program_body(
            base, files, "read", args | {"archive": ARCHIVE_MOUNT, "lines": LINES_MOUNT}
        )
        with _helper(client, instance, body) as helper:
            client.start_container(helper)
            report = ProgramRun(client, helper, "read", _progress_of(progress)).result()
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
        raise InvalidBackup(verified.path, _mismatch(computed, expected) + late, "corrupted")


class _RestoreFeed:
    """The volumes' entries of a verified archive, read again, as the tar stream the
    engine unpacks into the helper's folders (`volumes/<kind>/x` becomes `<kind>/x`).
    Every entry's checksum line is computed again on the way and compared with the one
    the first reading verified: a file that changed in between stops the upload."""

    def __init__(self, verified: VerifiedBackup, progress: _Throttle) -> None:
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
        with open(self.verified.path, "rb", buffering=0) as handle, _open_stream(handle) as tar:
            for index, member in enumerate(_members(tar)):
                if index == 0:  # the manifest
                    continue
                if member.name == CHECKSUMS_NAME:
                    break
                if not member.name.startswith(VOLUMES_PREFIX):
                    digest = None
                    if member.isreg():
                        digest = hashlib.sha256(_read_member(tar, member)).hexdigest()
                    self._expect(member, digest)
                    continue
                name = member.name.removeprefix(VOLUMES_PREFIX)
                link = member.linkname.removeprefix(VOLUMES_PREFIX) if member.islnk() else None
                renamed = _renamed(member, name, link)
                yield _header(renamed)
                digest = None
                if member.isreg():
                    sha = hashlib.sha256()
                    for chunk in _member_chunks(tar, member):
                        sha.update(chunk)
                        self.progress.add(len(chunk), member.name.split("/")[1])
                        yield chunk
                    digest = sha.hexdigest()
                    if pad := _padding(member.size):
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
