"""Progress as people see it: bars on a terminal (`RichProgress`), plain lines for logs and
CI (`PlainProgress`); `reporter_for` picks one for a stream. Both are `ProgressReporter`s
(`docker.progress`), the interface operations report through. rich is imported only when
bars are drawn: it costs about 50 ms.
"""

from __future__ import annotations

import os
import sys
from typing import IO, TYPE_CHECKING

from opencode_cloud.docker.progress import NullProgress, ProgressReporter, shorten

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


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
