"""One changing command at a time per instance, behind an OS file lock.

`instance_lock` takes an exclusive `flock` on the instance's lock file. The kernel drops
the lock when its holder exits, however it exits, so a crashed command never leaves a
stale lock behind, and there is no check-then-create race. The holder writes its pid,
command line and start time into the same file, so a command that gives up waiting can
say who holds the lock.

The lock is re-entrant within one process: a command that runs another command's code
(`restart` running `stop` and `start`) does not wait for itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from opencode_cloud.errors import OpencodeCloudError

DEFAULT_LOCK_TIMEOUT = 10.0
POLL_INTERVAL = 0.1
_MAX_ARGV_CHARS = 200


class HasLockFile(Protocol):
    """Anything with a `lock_file` path, such as `InstancePaths`."""

    @property
    def lock_file(self) -> Path: ...


class LockTimeout(OpencodeCloudError):
    """Another command held the instance's lock for longer than we were willing to wait.

    Attributes:
        holder: What the lock file says about the holder, when it says anything.
        path: The lock file.
        command: What this process wanted to do (the `command` it locked for), to be
            run again once the holder is done.
    """

    def __init__(
        self, message: str, *, path: Path, holder: LockHolder | None, command: str
    ) -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder
        self.command = command


class LockError(OpencodeCloudError):
    """The lock file cannot be created or opened."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock, as its holder wrote it down.

    Attributes:
        pid: The holding process.
        command: The command's name (`start`, `config set`, ...).
        argv: Its command line, with values of `NAME=VALUE` arguments masked.
        started_at: When it took the lock (UTC, ISO 8601).
    """

    pid: int
    command: str
    argv: list[str]
    started_at: str

    def describe(self, now: datetime | None = None) -> str:
        """`occ start (pid 1234, running for 12 s, command line: occ start --port 80)`."""
        parts = [f"pid {self.pid}"]
        try:
            started = datetime.fromisoformat(self.started_at)
            seconds = ((now or datetime.now(UTC)) - started).total_seconds()
            parts.append(f"running for {max(0, round(seconds))} s")
        except ValueError:
            pass
        if self.argv:
            parts.append("command line: " + " ".join(self.argv))
        return f"`{self.command}` ({', '.join(parts)})"


def _masked(argv: Sequence[str]) -> list[str]:
    # `occ config env set TOKEN=secret` must not leak the secret into another command's
    # error message (or a CI log): keep names, hide values.
    shown = []
    for arg in argv:
        name, sep, _ = arg.partition("=")
        shown.append(f"{name}=***" if sep else arg)
    text = " ".join(shown)
    if len(text) > _MAX_ARGV_CHARS:
        return [text[: _MAX_ARGV_CHARS - 3] + "..."]
    return shown


def _program_argv() -> list[str]:
    argv = list(sys.argv) or ["?"]
    argv[0] = os.path.basename(argv[0])
    return argv


def read_holder(path: Path) -> LockHolder | None:
    """What the lock file at `path` says about its holder, or None if it says nothing."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LockHolder(
            pid=int(data["pid"]),
            command=str(data["command"]),
            argv=[str(arg) for arg in data.get("argv", [])],
            started_at=str(data.get("started_at", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


_held: dict[str, tuple[int, int]] = {}
_held_guard = threading.Lock()


def _open_lock_file(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # No O_TRUNC: a waiter opening the file must not wipe the holder's note.
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise LockError(
            f"Cannot open the lock file {path}: {exc.strerror or exc}.",
            f"Check that you own {path.parent}.",
        ) from None


def _write_holder(fd: int, command: str) -> None:
    note = {
        "pid": os.getpid(),
        "command": command,
        "argv": _masked(_program_argv()),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(note) + "\n").encode("utf-8"), 0)
        os.fsync(fd)


def _timeout_error(path: Path, command: str, waited: float) -> LockTimeout:
    holder = read_holder(path)
    who = "another opencode-cloud command holds it"
    if holder is not None:
        who += f": {holder.describe()}"
    return LockTimeout(
        f"Could not start `{command}` after waiting {waited:g} s: {who}.",
        path=path,
        holder=holder,
        command=command,
    )


@contextlib.contextmanager
def lock_file(
    path: Path,
    command: str,
    timeout: float | None = DEFAULT_LOCK_TIMEOUT,
    *,
    on_wait: Callable[[LockHolder | None], None] | None = None,
    poll_interval: float = POLL_INTERVAL,
) -> Iterator[None]:
    """Hold an exclusive lock on the file at `path` for the `with` block.

    Args:
        path: The lock file; it and its directory are created (0600 and 0700) if needed,
            and never removed (removing a lock file races with the next locker).
        command: What this process is doing, as its command line (`occ start`), shown
            to anyone who has to wait.
        timeout: Seconds to wait for another holder; 0 tries once; None waits forever.
        on_wait: Called once, with the holder's note, when the lock is taken by another
            process, before waiting (to print "waiting for `occ start` ...").
        poll_interval: Seconds between attempts while waiting.

    Raises:
        LockTimeout: another process held the lock for longer than `timeout`.
        LockError: the lock file cannot be created or opened.
    """
    key = os.path.realpath(path)
    with _held_guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                fd, depth = _held[key]
                _held[key] = (fd, depth - 1)
        return

    fd = _open_lock_file(path)
    try:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        start = time.monotonic()
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            if not announced and on_wait is not None:
                on_wait(read_holder(path))
            announced = True
            if deadline is not None and time.monotonic() >= deadline:
                raise _timeout_error(path, command, time.monotonic() - start)
            pause = poll_interval
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
    except BaseException:
        os.close(fd)
        raise

    _write_holder(fd, command)
    with _held_guard:
        _held[key] = (fd, 1)
    try:
        yield
    finally:
        with _held_guard:
            _held.pop(key, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        # Closing the descriptor releases the flock.
        os.close(fd)


def instance_lock(
    paths: HasLockFile,
    command: str,
    timeout: float | None = DEFAULT_LOCK_TIMEOUT,
    *,
    on_wait: Callable[[LockHolder | None], None] | None = None,
) -> contextlib.AbstractContextManager[None]:
    """Hold the instance's lock for the `with` block: one changing command at a time.

    Example:
        with instance_lock(instance_paths(instance), command="occ start"):
            ...

    Args:
        paths: The instance's paths (`opencode_cloud.config.paths.instance_paths`).
        command: What this process is doing, shown to anyone who has to wait.
        timeout: Seconds to wait for another holder; 0 tries once; None waits forever.
        on_wait: See `lock_file`.

    Raises:
        LockTimeout: another process held the lock for longer than `timeout`.
        LockError: the lock file cannot be created or opened.
    """
    return lock_file(paths.lock_file, command, timeout, on_wait=on_wait)
