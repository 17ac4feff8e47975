"""The archive's format, and the tar plumbing every pass over it shares.

One plain (uncompressed, PAX) tar file: `manifest.json` first, then the configuration
files, then each volume's entries under `volumes/<kind>/`, and `checksums.jsonl` last,
one line per entry (`program.entry_line` writes them, on the host and in a helper
alike). Entries are read and written one at a time, in chunks: a backup never holds a
volume, or even a file, in memory.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from opencode_cloud import __version__
from opencode_cloud.backup.errors import InvalidBackup
from opencode_cloud.docker.volume import SESSION, VOLUME_SPECS
from opencode_cloud.opencode import AUTH_FILE, DATA_DIR

if TYPE_CHECKING:
    from opencode_cloud.docker.progress import ProgressReporter

FORMAT = "opencode-cloud-backup"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
CHECKSUMS_NAME = "checksums.jsonl"
CONFIG_PREFIX = "config/"
CONFIG_MEMBER = "config/config.json"
PASSWORD_MEMBER = "config/password"
VOLUMES_PREFIX = "volumes/"
# opencode's key store: in a backup only when asked for (`occ backup --include-keys`).
KEYS_ENTRY = f"{VOLUMES_PREFIX}{SESSION.kind}/{AUTH_FILE.removeprefix(DATA_DIR + '/')}"
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
    # opencode's key store is in it (`KEYS_ENTRY`, when the instance had one). Backups
    # made before keys could be left out hold it whenever the instance had it.
    keys: bool = True
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
            "provider_keys": KEYS_ENTRY if self.keys else None,
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
                keys=data.get("provider_keys", KEYS_ENTRY) == KEYS_ENTRY,
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


def tar_header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(_TAR_FORMAT, _ENCODING, _ERRORS)


def tar_padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def renamed(info: tarfile.TarInfo, name: str, linkname: str | None = None) -> tarfile.TarInfo:
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


def member_info(name: str, data: bytes, mode: int = FILE_MODE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    info.uid = info.gid = 0
    return info


class ChunkReader(io.RawIOBase):
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


class Throttle:
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


def spool() -> IO[bytes]:
    """A temporary file for checksum lines: in memory up to a few MB, then on disk."""
    return tempfile.SpooledTemporaryFile(max_size=4 << 20, mode="w+b")


def open_stream(fileobj: IO[bytes]) -> tarfile.TarFile:
    return tarfile.open(
        fileobj=fileobj, mode="r|", bufsize=CHUNK, encoding=_ENCODING, errors=_ERRORS
    )


def open_archive(fileobj: IO[bytes]) -> tarfile.TarFile:
    """The archive in a seekable file: headers are read one after the other, and the
    files' contents can be read from the file itself, at their offsets."""
    return tarfile.open(fileobj=fileobj, mode="r:", encoding=_ENCODING, errors=_ERRORS)


def members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The entries of a tar stream, one at a time; tarfile's list of those seen is
    emptied as it goes, so memory does not grow with the number of files."""
    while (member := tar.next()) is not None:
        yield member
        tar.members.clear()  # type: ignore[attr-defined]


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    source = tar.extractfile(member)
    assert source is not None
    data = source.read(member.size)
    if len(data) != member.size:
        raise EOFError
    return data


def member_chunks(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[bytes]:
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


def mismatch(computed: bytes, expected: bytes) -> str:
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
