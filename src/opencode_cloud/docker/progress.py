"""Progress of long engine operations (image build, image pull), as events for a reporter.

The engine streams JSON objects; `handle_build_chunk` and `handle_pull_chunk` turn them
into calls on a `ProgressReporter`. Two reporters ship: `RichProgress` draws progress bars
on a terminal, `PlainProgress` writes plain lines for logs and CI. `reporter_for` picks one
for a stream. rich is imported only when bars are drawn: it costs about 50 ms.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

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


def _human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover - the loop always returns


class PlainProgress:
    """Plain lines, no colour or cursor movement: for log files and CI.

    Build: one line per step (`[3/12] RUN ...`); the steps' own output only when
    `verbose`. Pull: one line per layer state change, and download progress at most
    every 25 %.
    """

    def __init__(
        self, stream: IO[str] | None = None, *, verbose: bool = False, width: int = 100
    ) -> None:
        self.stream: IO[str] = stream if stream is not None else sys.stderr
        self.verbose = verbose
        self.width = width
        self._layer_states: dict[str, str] = {}
        self._layer_quarter: dict[str, int] = {}

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def build_step(self, step: int, total: int, message: str) -> None:
        self._write(f"[{step}/{total}] {shorten(message, self.width)}")

    def build_output(self, line: str) -> None:
        if self.verbose:
            self._write(f"    {line}")

    def layer(self, layer_id: str, status: str, current: int | None, total: int | None) -> None:
        short = layer_id[:12]
        if current is not None and total:
            quarter = min(4, current * 4 // total)
            if quarter > self._layer_quarter.get(layer_id, 0):
                self._layer_quarter[layer_id] = quarter
                self._write(
                    f"{short}: {status} {_human_bytes(current)}/{_human_bytes(total)} "
                    f"({quarter * 25}%)"
                )
            self._layer_states[layer_id] = status
            return
        if self._layer_states.get(layer_id) != status:
            self._layer_states[layer_id] = status
            self._write(f"{short}: {status}")

    def status(self, message: str) -> None:
        self._write(message)

    def done(self, message: str = "") -> None:
        if message:
            self._write(message)


class RichProgress:
    """Progress bars on a terminal: step N of M for builds, bytes per layer for pulls."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream: IO[str] = stream if stream is not None else sys.stderr
        self._progress: Progress | None = None
        self._build_task: TaskID | None = None
        self._layers: dict[str, TaskID] = {}

    def _bars(self) -> Progress:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[amount]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._progress.start()
        return self._progress

    def build_step(self, step: int, total: int, message: str) -> None:
        bars = self._bars()
        description = f"Building: {shorten(message, 60)}"
        if self._build_task is None:
            self._build_task = bars.add_task(description, total=total, amount="")
        # Step N has started, so N-1 are complete.
        bars.update(
            self._build_task,
            description=description,
            total=total,
            completed=step - 1,
            amount=f"step {step}/{total}",
        )

    def build_output(self, line: str) -> None:
        return None

    def layer(self, layer_id: str, status: str, current: int | None, total: int | None) -> None:
        bars = self._bars()
        short = layer_id[:12]
        if layer_id not in self._layers:
            self._layers[layer_id] = bars.add_task(f"{short} {status}", total=total, amount="")
        task = self._layers[layer_id]
        if current is not None and total:
            bars.update(
                task,
                description=f"{short} {status}",
                total=total,
                completed=current,
                amount=f"{_human_bytes(current)}/{_human_bytes(total)}",
            )
        elif status in ("Pull complete", "Already exists", "Download complete"):
            task_total = bars.tasks[self._task_index(task)].total or 1
            bars.update(
                task, description=f"{short} {status}", total=task_total, completed=task_total
            )
        else:
            bars.update(task, description=f"{short} {status}")

    def _task_index(self, task: TaskID) -> int:
        assert self._progress is not None
        for index, candidate in enumerate(self._progress.tasks):
            if candidate.id == task:
                return index
        raise KeyError(task)

    def status(self, message: str) -> None:
        self._bars().console.print(message, markup=False, highlight=False)

    def done(self, message: str = "") -> None:
        if self._progress is not None:
            if self._build_task is not None:
                task = self._progress.tasks[self._task_index(self._build_task)]
                if task.total is not None and message:
                    self._progress.update(self._build_task, completed=task.total)
            self._progress.stop()
            if message:
                self._progress.console.print(message, markup=False, highlight=False)
            self._progress = None
        elif message:
            self.stream.write(message + "\n")
            self.stream.flush()


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


def reporter_for(
    stream: IO[str] | None = None, *, verbose: bool = False, quiet: bool = False
) -> ProgressReporter:
    """Bars on an interactive terminal, plain lines elsewhere (pipes, files, CI).

    `TERM=dumb` and `CI` also choose plain lines: a CI log that keeps a terminal still
    gains nothing from redrawn bars. `quiet` reports nothing at all.
    """
    if quiet:
        return NullProgress()
    stream = stream if stream is not None else sys.stderr
    interactive = bool(getattr(stream, "isatty", lambda: False)())
    if (
        interactive
        and os.environ.get("TERM", "") != "dumb"
        and not os.environ.get("CI")
        and not verbose
    ):
        return RichProgress(stream)
    return PlainProgress(stream, verbose=verbose)
