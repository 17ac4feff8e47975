"""Progress of long engine operations (image build, image pull), as events for a reporter.

The engine streams JSON objects; `handle_build_chunk` and `handle_pull_chunk` turn them
into calls on a `ProgressReporter`, the one interface operations report progress through
(backups report bytes with `layer`). `NullProgress` reports nothing, for library callers;
drawing it (bars on a terminal, plain lines elsewhere) is the command line's
(`cli.progress`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

# The classic builder announces each instruction as "Step 3/12 : RUN ...".
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$", re.DOTALL)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@runtime_checkable
class ProgressReporter(Protocol):
    """Receives the progress of a build or a pull. Every method must be cheap."""

    def build_step(self, step: int, total: int, message: str) -> None:
        """The build began instruction `step` of `total` (`message` is the instruction)."""

    def build_output(self, line: str) -> None:
        """One line printed by the instruction that runs now."""

    def layer(self, layer_id: str, status: str, current: int | None, total: int | None) -> None:
        """A pulled layer changed: its status word and bytes done of total, when known."""

    def status(self, message: str) -> None:
        """A line worth showing on its own (a registry tried, an image tagged, ...)."""

    def done(self, message: str = "") -> None:
        """The operation ended (successfully or not); release the display."""


def clean_line(text: str) -> str:
    """Strip colour codes and trailing whitespace from a line of engine output."""
    return _ANSI.sub("", text).rstrip()


def shorten(text: str, width: int) -> str:
    """`text` on one line (whitespace runs collapsed), cut to `width` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(0, width - 3)] + "..."


def stream_error(chunk: Mapping[str, Any], operation: str) -> str | None:
    """The error a build or pull stream object reports, if it reports one."""
    if "error" not in chunk and "errorDetail" not in chunk:
        return None
    detail = chunk.get("errorDetail") or {}
    return str(chunk.get("error") or detail.get("message") or f"unknown {operation} error")


def handle_build_chunk(chunk: Mapping[str, Any], reporter: ProgressReporter) -> str | None:
    """Report one decoded object of `POST /build`'s stream.

    Returns:
        The error text when the chunk reports a failed build, else None.
    """
    error = stream_error(chunk, "build")
    if error is not None:
        return error
    stream = chunk.get("stream")
    if isinstance(stream, str):
        for raw in stream.splitlines():
            line = clean_line(raw)
            if not line:
                continue
            match = _STEP.match(line)
            if match:
                reporter.build_step(int(match[1]), int(match[2]), match[3].strip())
            else:
                reporter.build_output(line)
        return None
    status = chunk.get("status")
    if isinstance(status, str):
        # A FROM that pulls (never with pull=False and a present base) reports layers.
        if chunk.get("id"):
            handle_pull_chunk(chunk, reporter)
        else:
            reporter.status(clean_line(status))
    return None


def handle_pull_chunk(chunk: Mapping[str, Any], reporter: ProgressReporter) -> str | None:
    """Report one decoded object of `POST /images/create`'s (pull) stream.

    Returns:
        The error text when the chunk reports a failed pull, else None.
    """
    error = stream_error(chunk, "pull")
    if error is not None:
        return error
    status = str(chunk.get("status") or "")
    layer_id = chunk.get("id")
    detail = chunk.get("progressDetail") or {}
    # Lines with an id but no byte counts ("Pulling fs layer", "Pull complete") are layer
    # states; a tag's id ("Pulling from x", id = tag) carries no layer, so it is a status.
    if layer_id and not status.startswith("Pulling from"):
        current = detail.get("current")
        total = detail.get("total")
        reporter.layer(
            str(layer_id),
            status,
            int(current) if isinstance(current, int) else None,
            int(total) if isinstance(total, int) and total > 0 else None,
        )
    elif status:
        reporter.status(f"{status} {layer_id}".strip() if layer_id else status)
    return None


class NullProgress:
    """Reports nothing: for library callers that want no output."""

    def build_step(self, step: int, total: int, message: str) -> None:
        return None

    def build_output(self, line: str) -> None:
        return None

    def layer(self, layer_id: str, status: str, current: int | None, total: int | None) -> None:
        return None

    def status(self, message: str) -> None:
        return None

    def done(self, message: str = "") -> None:
        return None
