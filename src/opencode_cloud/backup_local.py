"""The local path of backups and restores: when the engine runs on this machine, a helper
container runs `archive_program` with the volumes and the archive file itself mounted,
so the data goes between the volumes and the file with no API stream in between.

This module starts that program and follows what it says (`@ready`, `@databases`,
`@progress`, `@done`, `@error`, one line each on its stdout); `backup.py` decides when the
local path is taken and shapes the archive around it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opencode_cloud import archive_program
from opencode_cloud.docker.errors import DockerError
from opencode_cloud.errors import OpencodeCloudError

if TYPE_CHECKING:
    from opencode_cloud.docker.engine import Engine

# Where the program finds the archive and the checksum lines file in its container.
ARCHIVE_MOUNT = "/occ-archive"
LINES_MOUNT = "/occ-lines"
# Root reads every file whatever its owner and gives restored files their owners; nothing
# else: no network, no new privileges, only these capabilities.
_CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "MKNOD"]
# The engine's words when a bind mount's source is not on its machine (Docker Desktop:
# not among the folders it shares).
_NOT_HERE = ("bind source path does not exist", "mounts denied")


class NotOnThisMachine(Exception):
    """The engine cannot mount the archive file: it does not run on this machine after
    all. Nothing was written; the Engine API stream is the way."""


class ProgramFailed(OpencodeCloudError):
    """The archive program in the helper container stopped with an error."""

    def __init__(self, action: str, detail: str) -> None:
        what = "reading the volumes" if action == "write" else "writing the volumes"
        super().__init__(f"The helper container failed while {what}: {detail}.")
        self.detail = detail


def program_body(
    base: Mapping[str, Any],
    files: Sequence[tuple[str, str, bool]],
    action: str,
    args: Mapping[str, Any],
) -> dict[str, Any]:
    """A helper container's create body (`base`, with its volume mounts) that runs
    `archive_program ACTION ARGS` as root, with each of `files` (`(path on this machine,
    path in the container, read-only)`) bind-mounted too."""
    body = dict(base)
    host = dict(body["HostConfig"])
    host["Mounts"] = [
        *host["Mounts"],
        *(
            {"Type": "bind", "Source": source, "Target": target, "ReadOnly": read_only}
            for source, target, read_only in files
        ),
    ]
    host["CapDrop"] = ["ALL"]
    host["CapAdd"] = list(_CAPABILITIES)
    host["SecurityOpt"] = ["no-new-privileges"]
    body["HostConfig"] = host
    body["User"] = "0:0"
    body["Entrypoint"] = ["python3", "-c", _program_source()]
    body["Cmd"] = [action, json.dumps(dict(args))]
    return body


@cache
def _program_source() -> str:
    return Path(archive_program.__file__).read_text(encoding="utf-8")


def create_helper(client: Engine, name: str, body: Mapping[str, Any]) -> None:
    """Create a helper container.

    Raises:
        NotOnThisMachine: the engine does not see the files to mount.
    """
    try:
        client.create_container(name, body)
    except DockerError as exc:
        if any(words in str(exc) for words in _NOT_HERE):
            raise NotOnThisMachine(str(exc)) from exc
        raise


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
