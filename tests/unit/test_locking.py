"""The per-instance lock, contended by real processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.locking import (
    LockHolder,
    LockTimeout,
    instance_lock,
    lock_file,
    read_holder,
)

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from opencode_cloud.config.paths import InstancePaths
    from opencode_cloud.locking import instance_lock

    sys.argv = ["occ", "start", "--port", "8080", "config", "TOKEN=secret"]
    with instance_lock(InstancePaths(Path(sys.stdin.readline().strip())), command="occ start"):
        print("locked", flush=True)
        sys.stdin.readline()  # hold until the test says so (or closes stdin)
    print("released", flush=True)
    """
)


def take(paths: InstancePaths, timeout: float) -> None:
    """Take and release the lock as `occ stop` would."""
    with instance_lock(paths, command="occ stop", timeout=timeout):
        pass


@pytest.fixture
def instance_paths(tmp_path: Path) -> InstancePaths:
    return InstancePaths(tmp_path / "occ")


class Holder:
    """Another process holding the instance lock until `release`."""

    def __init__(self, root: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(f"{root}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "locked"

    @property
    def pid(self) -> int:
        return self.process.pid

    def release(self) -> None:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "released"
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def holder(instance_paths: InstancePaths) -> Iterator[Holder]:
    other = Holder(instance_paths.root)
    yield other
    other.close()


def test_lock_creates_a_private_file(instance_paths: InstancePaths) -> None:
    with instance_lock(instance_paths, command="occ start"):
        assert stat.S_IMODE(instance_paths.lock_file.stat().st_mode) == 0o600
        holder = read_holder(instance_paths.lock_file)
        assert holder is not None and holder.command == "occ start"
    assert instance_paths.lock_file.exists()  # never removed: that would race
    assert read_holder(instance_paths.lock_file) is None


def test_second_process_times_out_naming_the_holder(
    instance_paths: InstancePaths, holder: Holder
) -> None:
    started = time.monotonic()
    with pytest.raises(LockTimeout) as info:
        take(instance_paths, timeout=0.5)
    waited = time.monotonic() - started
    assert 0.4 <= waited < 5
    error = info.value
    assert f"pid {holder.pid}" in error.message
    assert "occ start" in error.message
    assert "--port 8080" in error.message
    assert "secret" not in error.message  # NAME=VALUE arguments are masked
    assert "TOKEN=***" in error.message
    assert "\n" not in error.message
    assert error.holder is not None and error.holder.pid == holder.pid
    from opencode_cloud.cli.hints import hint_for

    assert str(holder.pid) in hint_for(error)
    assert "`occ stop` again" in hint_for(error)  # what the waiter wanted to run


def test_proceeds_after_the_holder_releases(instance_paths: InstancePaths, holder: Holder) -> None:
    with pytest.raises(LockTimeout):
        take(instance_paths, timeout=0)
    holder.release()
    with instance_lock(instance_paths, command="occ stop", timeout=0):
        holder_note = read_holder(instance_paths.lock_file)
        assert holder_note is not None and holder_note.command == "occ stop"


def test_waiter_gets_the_lock_when_it_is_released_in_time(
    instance_paths: InstancePaths, holder: Holder
) -> None:
    seen: list[LockHolder | None] = []

    def on_wait(note: LockHolder | None) -> None:
        seen.append(note)
        holder.release()  # the holder finishes while we wait

    with instance_lock(instance_paths, command="occ stop", timeout=10, on_wait=on_wait):
        pass
    assert len(seen) == 1 and seen[0] is not None and seen[0].pid == holder.pid


def test_killed_holder_does_not_leave_a_stale_lock(
    instance_paths: InstancePaths, holder: Holder
) -> None:
    with pytest.raises(LockTimeout):
        take(instance_paths, timeout=0)  # held while the holder lives
    holder.process.kill()
    holder.process.wait(timeout=10)
    # Its note stays in the file (killed, it could not clear it), but the kernel dropped
    # its lock: the next command takes it at the first try, without waiting.
    stale = read_holder(instance_paths.lock_file)
    assert stale is not None and stale.pid == holder.pid
    waited: list[LockHolder | None] = []
    with instance_lock(instance_paths, command="occ stop", timeout=0, on_wait=waited.append):
        note = read_holder(instance_paths.lock_file)
        assert note is not None and (note.pid, note.command) == (os.getpid(), "occ stop")
    assert waited == []


def test_lock_is_reentrant_within_a_process(instance_paths: InstancePaths) -> None:
    with instance_lock(instance_paths, command="occ restart"):
        with instance_lock(instance_paths, command="occ stop", timeout=0):
            pass
        with instance_lock(instance_paths, command="occ start", timeout=0):
            note = read_holder(instance_paths.lock_file)
            assert note is not None and note.command == "occ restart"
    # released for real: another process can take it now
    code = (
        "import sys\nfrom pathlib import Path\nfrom opencode_cloud.locking import lock_file\n"
        "with lock_file(Path(sys.argv[1]), 'x', timeout=0):\n    print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(instance_paths.lock_file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_lock_is_released_when_the_block_raises(instance_paths: InstancePaths) -> None:
    with pytest.raises(RuntimeError), lock_file(instance_paths.lock_file, "occ start"):
        raise RuntimeError("boom")
    with lock_file(instance_paths.lock_file, "occ start", timeout=0):
        pass


def test_unreadable_holder_note_still_gives_a_clear_error(
    instance_paths: InstancePaths, holder: Holder
) -> None:
    instance_paths.lock_file.write_text("not json")
    with pytest.raises(LockTimeout) as info:
        take(instance_paths, timeout=0)
    assert "another opencode-cloud command holds it" in info.value.message
    assert info.value.holder is None


def test_holder_description() -> None:
    note = LockHolder(
        pid=42, command="occ start", argv=["occ", "start"], started_at="2024-01-01T00:00:00+00:00"
    )
    text = note.describe()
    assert text.startswith("`occ start` (pid 42, running for ")
    assert "command line: occ start" in text
