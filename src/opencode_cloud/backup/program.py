"""The program a helper container runs to copy an instance's volumes into a backup, and
out of one, with direct access to the files (the local path of `occ backup` and `occ
restore`; `local.py` starts it, `create.py` and `restore.py` decide when).

It is standalone, the standard library only, because its source is handed to the sandbox
image's `python3 -c`. The host imports this module too, for `entry_line`: both sides
describe an archive entry with the same function, so the checksum lines it writes are the
lines `verify_archive` computes.

    write  append the volumes' entries to the archive file mounted at `archive`, and
           their checksum lines to the file mounted at `lines`; SQLite databases first,
           in a phase of their own between `@ready` and `@databases`, while the host
           holds the service paused
    read   unpack the volumes' entries of the archive mounted at `archive` into the
           volumes (GNU tar), while computing every entry's checksum line again, into
           the file mounted at `lines`

Both take one JSON argument and speak to the host in lines on stdout: `@ready`,
`@databases`, `@progress BYTES`, `@done JSON` and `@error MESSAGE`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tarfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

VOLUMES_PREFIX = "volumes/"
MANIFEST_NAME = "manifest.json"
CHECKSUMS_NAME = "checksums.jsonl"
BLOCK = tarfile.BLOCKSIZE
# Bytes read, hashed and written at a time; two such buffers are all the data held.
CHUNK = 1 << 20
# Files up to this size are hashed at once; larger ones chunk by chunk on a second thread.
SMALL_FILE = 1 << 16
PROGRESS_EVERY = 32 << 20
# Bytes of the archive handed to the disk at a time while the copy goes on, so that the
# final fsync has little left to write (the disk works while the files are read).
WRITEBACK_EVERY = 32 << 20
# How long `write` waits for the host's go (SIGUSR1) before giving up.
GO_TIMEOUT = 300.0
# SQLite databases, with the files SQLite keeps beside them (write-ahead log, shared
# memory index, rollback journal): what the service must not change while it is copied.
SQLITE_FILE = re.compile(r"\.(db|sqlite|sqlite3)(-wal|-shm|-journal)?$")
_LINE_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


def kind_of(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    return _KINDS.get(info.type, "other")


def entry_line(info: tarfile.TarInfo, sha256: str | None) -> str:
    """The checksum line of one archive entry: everything a restore gives the file."""
    entry: dict[str, Any] = {
        "path": info.name,
        "type": kind_of(info),
        "mode": info.mode & 0o7777,
        "uid": info.uid,
        "gid": info.gid,
        "mtime": int(info.mtime),
    }
    if info.isreg():
        entry["size"] = info.size
        entry["sha256"] = sha256
    if info.issym() or info.islnk():
        entry["link"] = info.linkname
    if info.ischr() or info.isblk():
        entry["device"] = [info.devmajor, info.devminor]
    return _LINE_ENCODER.encode(entry)


def header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def say(*words: object) -> None:
    print(*words, flush=True)


class Progress:
    def __init__(self) -> None:
        self.done = 0
        self._said = 0

    def add(self, count: int) -> None:
        self.done += count
        if self.done - self._said >= PROGRESS_EVERY:
            self._said = self.done
            say("@progress", self.done)


# -- write: volumes into the archive -------------------------------------------------------


class Output:
    """The archive file (appended to) and the checksum lines file. Small pieces gather in a
    buffer; a large file's chunks go straight to the file while a second thread hashes
    them, so reading, hashing and writing overlap on two CPUs."""

    def __init__(self, archive: str, lines: str, progress: Progress) -> None:
        self.fd = os.open(archive, os.O_WRONLY | os.O_APPEND)
        self.lines = open(lines, "w", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        self.small = bytearray()
        self.hasher = ThreadPoolExecutor(1)
        # Checksum lines whose digest is still being computed, in archive order.
        self.pending: deque[tuple[tarfile.TarInfo, Future[str] | str | None]] = deque()
        self.buffers = [bytearray(CHUNK), bytearray(CHUNK)]
        self.hashed: list[Future[None] | None] = [None, None]
        self.progress = progress
        self.entries = 0
        self.data_bytes = 0
        self.position = self.written_back = os.lseek(self.fd, 0, os.SEEK_END)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.position += len(data)
        if self.position - self.written_back >= WRITEBACK_EVERY:
            start_writeback(self.fd, self.written_back, self.position - self.written_back)
            self.written_back = self.position

    def _flush_small(self) -> None:
        if self.small:
            self._write(self.small)
            self.small.clear()

    def _add_small(self, data: bytes) -> None:
        self.small += data
        if len(self.small) >= CHUNK:
            self._flush_small()

    def add(self, info: tarfile.TarInfo, source: int | None = None) -> None:
        """One entry: its header, and for a regular file `info.size` bytes of `source` (an
        open file; zeros where it turns out shorter, as the header promised)."""
        self._add_small(header(info))
        digest: Future[str] | str | None = None
        if info.isreg():
            assert source is not None
            if info.size <= SMALL_FILE:
                data = _read_exactly(source, info.size)
                digest = hashlib.sha256(data).hexdigest()
                self._add_small(data)
            else:
                digest = self._copy_large(source, info.size)
            self._add_small(b"\0" * (-info.size % BLOCK))
            self.data_bytes += info.size
            self.progress.add(info.size)
        self.pending.append((info, digest))
        self.entries += 1
        if len(self.pending) > 256:
            self._write_lines(128)

    def _copy_large(self, source: int, size: int) -> Future[str]:
        self._flush_small()
        sha = hashlib.sha256()
        remaining, turn = size, 0
        while remaining:
            buffer = self.buffers[turn]
            previous = self.hashed[turn]
            if previous is not None:
                previous.result()  # the hasher is done with this buffer
            count = _read_into(source, memoryview(buffer)[: min(CHUNK, remaining)])
            view = memoryview(buffer)[:count]
            self.hashed[turn] = self.hasher.submit(sha.update, view)
            self._write(view)
            remaining -= count
            turn ^= 1
        # The hasher runs its tasks in order: this digest follows the last update.
        return self.hasher.submit(sha.hexdigest)

    def _write_lines(self, count: int | None = None) -> None:
        while self.pending and (count is None or count > 0):
            info, digest = self.pending.popleft()
            value = digest.result() if isinstance(digest, Future) else digest
            self.lines.write(entry_line(info, value) + "\n")
            if count is not None:
                count -= 1

    def close(self) -> None:
        self._flush_small()
        self._write_lines()
        self.hasher.shutdown()
        self.lines.close()
        os.fsync(self.fd)
        os.close(self.fd)


def start_writeback(fd: int, offset: int, size: int) -> None:
    """Ask the kernel to start writing a range of the file to disk, without waiting
    (Linux's sync_file_range with SYNC_FILE_RANGE_WRITE); a hint, so it may be missing:
    the fsync at the end is what makes the file durable."""
    function = _sync_file_range()
    if function is not None:
        function(fd, offset, size, 2)  # SYNC_FILE_RANGE_WRITE


@functools.cache
def _sync_file_range() -> Callable[..., int] | None:
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return cast(Callable[..., int], function)


def _read_into(source: int, view: memoryview) -> int:
    """Fill `view` from `source`; zeros past its end (a file that shrank while read)."""
    filled = 0
    while filled < len(view):
        count = os.readv(source, [view[filled:]])
        if count == 0:
            view[filled:] = bytes(len(view) - filled)
            return len(view)
        filled += count
    return filled


def _read_exactly(source: int, size: int) -> bytes:
    buffer = bytearray(size)
    _read_into(source, memoryview(buffer))
    return bytes(buffer)


class VolumeWalker:
    """Entries of the volumes mounted at `root/<kind>`, named `volumes/<kind>/...`, each
    added once (hard links as links to the first name seen)."""

    def __init__(self, root: str, output: Output, leave_out: tuple[str, ...] = ()) -> None:
        self.root = root
        self.output = output
        # Names never added (opencode's key store, unless the backup is to hold it).
        self.added: set[str] = set(leave_out)
        self.inodes: dict[tuple[int, int], str] = {}

    def add(self, path: str, name: str) -> None:
        if name in self.added:
            return
        self.added.add(name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:  # removed since it was listed
            return
        info = tarfile.TarInfo(name)
        info.mode, info.uid, info.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        info.mtime = int(st.st_mtime)
        info.uname = info.gname = ""
        source = None
        if stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.inodes:
                info.type, info.linkname = tarfile.LNKTYPE, self.inodes[key]
            else:
                try:  # not blocking: it may have become a pipe since it was listed
                    source = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                except OSError:  # removed, or replaced by a link, since it was listed
                    return
                st = os.fstat(source)
                if not stat.S_ISREG(st.st_mode):
                    os.close(source)
                    return
                info.size = st.st_size
                if st.st_nlink > 1:
                    self.inodes[key] = name
        elif stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        elif stat.S_ISFIFO(st.st_mode):
            info.type = tarfile.FIFOTYPE
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        else:  # sockets: they mean nothing once their process is gone
            return
        try:
            self.output.add(info, source)
        finally:
            if source is not None:
                os.close(source)

    def add_tree(self, kind: str) -> None:
        """The volume's root, then everything in it, each folder before its content."""
        stack = [(os.path.join(self.root, kind), VOLUMES_PREFIX + kind)]
        while stack:
            path, name = stack.pop()
            self.add(path, name)
            try:
                children = sorted(os.scandir(path), key=lambda e: e.name)
            except (NotADirectoryError, FileNotFoundError):
                continue
            folders = []
            for child in children:
                if child.is_dir(follow_symlinks=False):
                    folders.append((child.path, f"{name}/{child.name}"))
                else:
                    self.add(child.path, f"{name}/{child.name}")
            stack.extend(reversed(folders))

    def add_databases(self, folders: list[tuple[str, str]]) -> None:
        """The SQLite files in `folders` (`(kind, folder inside the volume)`), after the
        folders leading to them."""
        for kind, folder in folders:
            parts = [p for p in folder.split("/") if p]
            for depth in range(len(parts) + 1):
                inside = "/".join(parts[:depth])
                self.add(
                    os.path.join(self.root, kind, inside),
                    VOLUMES_PREFIX + kind + (f"/{inside}" if inside else ""),
                )
            directory = os.path.join(self.root, kind, folder)
            try:
                names = sorted(e.name for e in os.scandir(directory) if SQLITE_FILE.search(e.name))
            except FileNotFoundError:
                continue
            prefix = VOLUMES_PREFIX + kind + (f"/{folder}" if folder else "")
            for name in names:
                self.add(os.path.join(directory, name), f"{prefix}/{name}")


def database_folders(root: str, kinds: list[str]) -> list[tuple[str, str]]:
    """The folders (`(kind, folder inside the volume)`) that hold SQLite files."""
    found = []
    for kind in kinds:
        top = os.path.join(root, kind)
        for folder, _dirs, files in os.walk(top):
            if any(SQLITE_FILE.search(name) for name in files):
                inside = os.path.relpath(folder, top)
                found.append((kind, "" if inside == "." else inside))
    return found


def _wait_for_go() -> None:
    """Block until the host sends SIGUSR1 (it has paused the service), or time out."""
    if signal.sigtimedwait({signal.SIGUSR1}, GO_TIMEOUT) is None:
        raise TimeoutError("the host never said to go on")


def write(args: dict[str, Any]) -> dict[str, Any]:
    root, kinds = args["root"], list(args["kinds"])
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    progress = Progress()
    output = Output(args["archive"], args["lines"], progress)
    walker = VolumeWalker(root, output, tuple(args.get("leave_out", ())))
    folders = database_folders(root, kinds)
    say("@ready")
    _wait_for_go()
    began = time.monotonic()
    walker.add_databases(folders)  # read whole when it returns: the service may go on
    say("@databases", f"{time.monotonic() - began:.3f}")
    for kind in kinds:
        walker.add_tree(kind)
    output.close()
    return {"entries": output.entries, "bytes": output.data_bytes}


# -- read: the archive into the volumes -----------------------------------------------------


def _entries(path: str) -> Iterator[tarfile.TarInfo]:
    with tarfile.open(path, "r:", encoding="utf-8", errors="surrogateescape") as tar:
        while (member := tar.next()) is not None:
            yield member
            tar.members.clear()  # type: ignore[attr-defined]


def _hash_range(fd: int, offset: int, size: int, buffer: bytearray, progress: Progress) -> str:
    sha = hashlib.sha256()
    while size:
        view = memoryview(buffer)[: min(len(buffer), size)]
        count = os.preadv(fd, [view], offset)
        if count == 0:
            raise EOFError("the archive ends early")
        sha.update(view[:count])
        offset += count
        size -= count
        progress.add(count)
    return sha.hexdigest()


def read(args: dict[str, Any]) -> dict[str, Any]:
    root, archive = args["root"], args["archive"]
    # GNU tar unpacks (owners, modes, times, links) while this process computes the
    # checksum lines again from the same file, on the other CPU.
    unpack = subprocess.Popen(
        ["tar", "-x", "-f", archive, "-C", root, "--strip-components=1", "--numeric-owner",
         "--same-owner", "--same-permissions", "--delay-directory-restore", "volumes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    progress = Progress()
    entries = 0
    buffer = bytearray(CHUNK)
    fd = os.open(archive, os.O_RDONLY)
    try:
        with open(args["lines"], "w", encoding="utf-8", errors="surrogateescape") as lines:
            for index, member in enumerate(_entries(archive)):
                if index == 0 and member.name == MANIFEST_NAME:
                    continue
                if member.name == CHECKSUMS_NAME:
                    break
                digest = None
                if member.isreg():
                    digest = _hash_range(fd, member.offset_data, member.size, buffer, progress)
                lines.write(entry_line(member, digest) + "\n")
                entries += 1
    finally:
        os.close(fd)
        _, errors = unpack.communicate()
    if unpack.returncode != 0:
        raise RuntimeError("tar: " + errors.decode(errors="replace").strip()[-500:])
    # The restored files are on disk before the host reports them restored (syncfs).
    volumes = [os.path.join(root, kind) for kind in args["kinds"]]
    subprocess.run(["sync", "-f", *volumes], check=False)
    return {"entries": entries, "bytes": progress.done}


def main(argv: list[str]) -> int:
    action, args = argv[1], json.loads(argv[2])
    try:
        result = write(args) if action == "write" else read(args)
    except Exception as exc:
        say("@error", f"{type(exc).__name__}: {exc}".replace("\n", " "))
        return 1
    say("@done", json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
