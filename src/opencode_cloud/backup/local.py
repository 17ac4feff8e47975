"""The local path of backups and restores: when the engine runs on this machine, a helper
container runs the archive program (`program.py`) with the volumes and the archive file
itself mounted, so the data goes between the volumes and the file with no API stream in
between.

This module makes that helper (`program_spec`), and follows what the program says
(`@ready`, `@databases`, `@progress`, `@done`, `@error`, one line each on its stdout);
`create.py` and `restore.py` decide when the local path is taken and shape the archive
around it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opencode_cloud.backup import program
from opencode_cloud.backup.errors import ProgramFailed
from opencode_cloud.backup.helpers import HELPER_ROOT
from opencode_cloud.docker.models import Mount

if TYPE_CHECKING:
    from opencode_cloud.backup.archive import Throttle
    from opencode_cloud.docker.engine import Engine
    from opencode_cloud.docker.helper import HelperSpec

# Where the program finds the archive and the checksum lines file in its container.
ARCHIVE_MOUNT = "/occ-archive"
LINES_MOUNT = "/occ-lines"
# Root reads every file whatever its owner and gives restored files their owners; nothing
# else: only these capabilities.
_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "MKNOD")


def program_spec(
    base: HelperSpec,
    action: str,
    *,
    archive: Path,
    lines: Path,
    kinds: Sequence[str],
    leave_out: Sequence[str] = (),
) -> HelperSpec:
    """`base` (a helper with the volumes mounted at `HELPER_ROOT/<kind>`) made to run
    `program.py ACTION` as root on the volumes of `kinds`, with the archive file and the
    checksum lines file of this machine mounted too (the archive read-only for `read`);
    `write` leaves the entries named in `leave_out` out."""
    args = {
        "root": HELPER_ROOT,
        "kinds": list(kinds),
        "archive": ARCHIVE_MOUNT,
        "lines": LINES_MOUNT,
        "leave_out": list(leave_out),
    }
    return replace(
        base,
        entrypoint=("python3", "-c", _program_source()),
        args=(action, json.dumps(args)),
        mounts=(
            *base.mounts,
            Mount("bind", str(archive), ARCHIVE_MOUNT, read_only=action == "read"),
            Mount("bind", str(lines), LINES_MOUNT),
        ),
        capabilities=_CAPABILITIES,
    )


@cache
def _program_source() -> str:
    return Path(program.__file__).read_text(encoding="utf-8")


def progress_of(progress: Throttle) -> Callable[[int], None]:
    """A callback for the bytes a helper's program has copied so far."""
    start = progress.done

    def report(done: int) -> None:
        progress.add(start + done - progress.done)

    return report


@dataclass
class ProgramRun:
    """A started helper container's program, read line by line from its output."""

    client: Engine
    name: str
    action: str
    on_progress: Callable[[int], None]

    def __post_init__(self) -> None:
        self._lines = self._read_lines()
        self._said: list[str] = []

    def _read_lines(self) -> Iterator[str]:
        pending = b""
        for chunk in self.client.follow_output(self.name):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.decode(errors="replace")
        if pending:
            yield pending.decode(errors="replace")

    def until(self, word: str) -> str:
        """Read on until the program says `word`; what follows it on that line.

        Raises:
            ProgramFailed: it said `@error`, or ended first.
        """
        for line in self._lines:
            head, _, rest = line.partition(" ")
            if head == word:
                return rest
            if head == "@progress":
                self.on_progress(int(rest))
            elif head == "@error":
                raise ProgramFailed(self.action, rest.rstrip("."))
            elif head not in ("@ready", "@databases"):
                self._said.append(line)
        detail = " / ".join(self._said[-3:]) or "it ended without a word"
        raise ProgramFailed(self.action, detail)

    def result(self) -> dict[str, Any]:
        """The program's `@done` report: its last word, once everything is written and
        synced (the container is then as good as ended; it need not be waited for)."""
        return dict(json.loads(self.until("@done")))
