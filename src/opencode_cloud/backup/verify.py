"""Checking a backup: the whole archive read once, every entry against its checksum line,
before anything is changed. The files are hashed on every CPU (`_FileHasher`); a restore
onto an empty instance may leave the contents to be checked while it unpacks them
(`contents=False`).
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import re
import tarfile
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from opencode_cloud.backup.archive import (
    BLOCK,
    CHECKSUMS_NAME,
    CHUNK,
    CONFIG_MEMBER,
    FORMAT,
    MANIFEST_NAME,
    PASSWORD_MEMBER,
    SMALL_MEMBER_LIMIT,
    Manifest,
    Throttle,
    members,
    mismatch,
    open_archive,
    read_member,
    spool,
)
from opencode_cloud.backup.errors import BackupError, InvalidBackup
from opencode_cloud.backup.program import entry_line

if TYPE_CHECKING:
    from opencode_cloud.docker.progress import ProgressReporter

# A file's digest in a checksum line, as `verify_archive(contents=False)` sets it aside.
_LISTED_DIGEST = re.compile(rb'"sha256":"[0-9a-f]*"')
_UNREAD_DIGEST = b'"sha256":null'
# Files a check hashes ahead of the entry whose line it writes (bounds the memory).
_HASHES_AHEAD = 64


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
    progress = Throttle(reporter, "Checking", size)
    lines = spool()
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
    path: Path, handle: IO[bytes], lines: IO[bytes], progress: Throttle, *, contents: bool
) -> VerifiedBackup:
    if os.fstat(handle.fileno()).st_size == 0:
        raise InvalidBackup(path, "the file is empty", "truncated")
    last = current = "its start"
    try:
        try:
            # Seekable: headers are read one after the other while the files' contents are
            # hashed on other threads, straight from the file.
            tar = open_archive(handle)  # closed below
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
            manifest_bytes = read_member(tar, first)
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

            for member in members(tar):
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
                        content = read_member(tar, member)
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
    adopted = None if contents else spool()
    for computed in lines:
        expected = listed.readline()
        compared = expected
        if adopted is not None:
            adopted.write(expected)
            if _UNREAD_DIGEST in computed:
                compared = _LISTED_DIGEST.sub(_UNREAD_DIGEST, expected)
        if computed != compared:
            raise InvalidBackup(path, mismatch(computed, compared), "corrupted")
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
