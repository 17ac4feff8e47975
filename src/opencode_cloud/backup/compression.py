"""zstd-compressed backups (`.tar.zst`): the same archive, compressed once it is whole.

The archive is written as a plain tar first (on the local path a helper container
appends the volumes to that file itself), then compressed into the backup's own name; the
plain file is removed. Reading a compressed backup unpacks it into a
private temporary tar first, which every pass (verify, restore) then reads as before.
Plain `.tar` backups stay readable as they are. The `zstandard` package does the work;
without it, backups are plain tar files.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from opencode_cloud.backup.archive import CHUNK, FILE_MODE
from opencode_cloud.backup.errors import BackupError, InvalidBackup

SUFFIX = ".zst"
MAGIC = b"\x28\xb5\x2f\xfd"  # the first bytes of every zstd frame
# zstd's default level: most of the gain of the higher levels at several times their speed.
LEVEL = 3


def available() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def wants_compression(path: Path) -> bool:
    return path.name.endswith(SUFFIX)


def is_compressed(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        raise BackupError(
            "Compressed backups (.tar.zst) need the zstandard package, which is not installed here."
        ) from None
    return zstandard


def compress(source: IO[bytes], write: Callable[[bytes], object]) -> None:
    """Compress everything `source` holds, handing each compressed chunk to `write`."""
    zstd = _zstandard()
    # In this thread: zstd's worker threads cost more than they gave on two CPUs (measured:
    # a third of the speed on data that does not compress, less on text).
    compressor = zstd.ZstdCompressor(level=LEVEL, threads=0)
    chunker = compressor.chunker(chunk_size=CHUNK)
    while data := source.read(CHUNK):
        for out in chunker.compress(data):
            write(out)
    for out in chunker.finish():
        write(out)


def open_plain(path: Path) -> IO[bytes]:
    """A stream of the plain tar in a backup file, compressed or not (for a look at its
    first entries: the manifest)."""
    handle = open(path, "rb")  # noqa: SIM115 (returned open)
    if handle.read(len(MAGIC)) != MAGIC:
        handle.seek(0)
        return handle
    handle.seek(0)
    reader: IO[bytes] = _zstandard().ZstdDecompressor().stream_reader(handle, closefd=True)
    return reader


@contextlib.contextmanager
def plain_archive(path: Path) -> Iterator[Path]:
    """The backup at `path` as a plain tar file: itself, or (compressed) a private
    temporary copy unpacked into `$TMPDIR`, removed afterwards. An `InvalidBackup` about
    that copy is raised about `path`.

    Raises:
        InvalidBackup: the compressed data is damaged or ends early.
    """
    if not is_compressed(path):
        yield path
        return
    zstd = _zstandard()
    fd, name = tempfile.mkstemp(prefix=".occ-restore-", suffix=".tar")
    plain = Path(name)
    try:
        os.fchmod(fd, FILE_MODE)
        with open(path, "rb") as source, os.fdopen(fd, "wb") as target:
            frame = zstd.ZstdDecompressor().decompressobj(write_size=CHUNK)
            try:
                while chunk := source.read(CHUNK):
                    target.write(frame.decompress(chunk))
            except zstd.ZstdError as exc:
                raise InvalidBackup(
                    path, f"its compressed data is damaged ({exc})", "corrupted"
                ) from None
            if not frame.eof:
                raise InvalidBackup(path, "its compressed data ends early", "truncated")
        try:
            yield plain
        except InvalidBackup as exc:
            if exc.path != plain:
                raise
            raise InvalidBackup(path, exc.problem, exc.kind) from None
    finally:
        plain.unlink(missing_ok=True)
