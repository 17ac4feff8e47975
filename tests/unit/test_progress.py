"""Turning the engine's build and pull streams into progress events, and rendering them."""

from __future__ import annotations

import io
from typing import Any

import pytest

from opencode_cloud.cli.progress import PlainProgress, RichProgress, reporter_for
from opencode_cloud.docker.progress import (
    NullProgress,
    ProgressReporter,
    handle_build_chunk,
    handle_pull_chunk,
    shorten,
)


class Recorder:
    """A reporter that keeps every event."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def build_step(self, step: int, total: int, message: str) -> None:
        self.events.append(("step", step, total, message))

    def build_output(self, line: str) -> None:
        self.events.append(("output", line))

    def layer(self, layer_id: str, status: str, current: int | None, total: int | None) -> None:
        self.events.append(("layer", layer_id, status, current, total))

    def status(self, message: str) -> None:
        self.events.append(("status", message))

    def done(self, message: str = "") -> None:
        self.events.append(("done", message))


BUILD_STREAM: list[dict[str, Any]] = [
    {"stream": "Step 1/3 : FROM debian:bookworm-slim"},
    {"stream": "\n"},
    {"stream": " ---> 6db5cb3430db\n"},
    {"stream": "Step 2/3 : RUN echo hi\n"},
    {"stream": " ---> Running in 1234\n"},
    {"stream": "\x1b[91mhi\n\x1b[0m"},
    {"stream": 'Step 3/3 : CMD ["sh"]\n'},
    {"aux": {"ID": "sha256:abc"}},
    {"stream": "Successfully built abc\n"},
]


def test_recorder_is_a_reporter() -> None:
    assert isinstance(Recorder(), ProgressReporter)
    assert isinstance(PlainProgress(io.StringIO()), ProgressReporter)
    assert isinstance(RichProgress(io.StringIO()), ProgressReporter)
    assert isinstance(NullProgress(), ProgressReporter)


def test_build_steps_are_parsed() -> None:
    recorder = Recorder()
    for chunk in BUILD_STREAM:
        assert handle_build_chunk(chunk, recorder) is None
    steps = [e for e in recorder.events if e[0] == "step"]
    assert steps == [
        ("step", 1, 3, "FROM debian:bookworm-slim"),
        ("step", 2, 3, "RUN echo hi"),
        ("step", 3, 3, 'CMD ["sh"]'),
    ]
    outputs = [e[1] for e in recorder.events if e[0] == "output"]
    # Colour codes are stripped, blank lines dropped.
    assert "hi" in outputs
    assert "" not in outputs
    assert "Successfully built abc" in outputs


def test_build_error_is_returned() -> None:
    recorder = Recorder()
    error = handle_build_chunk(
        {
            "errorDetail": {"code": 1, "message": "The command '/bin/sh -c false' returned 1"},
            "error": "The command '/bin/sh -c false' returned a non-zero code: 1",
        },
        recorder,
    )
    assert error == "The command '/bin/sh -c false' returned a non-zero code: 1"
    assert handle_build_chunk({"errorDetail": {"message": "boom"}}, recorder) == "boom"


PULL_STREAM: list[dict[str, Any]] = [
    {"status": "Pulling from opencode-cloud-sandbox", "id": "1.18.33"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "aaaa1111bbbb2222"},
    {
        "status": "Downloading",
        "progressDetail": {"current": 500, "total": 1000},
        "progress": "[=====>     ]",
        "id": "aaaa1111bbbb2222",
    },
    {
        "status": "Downloading",
        "progressDetail": {"current": 1000, "total": 1000},
        "id": "aaaa1111bbbb2222",
    },
    {"status": "Download complete", "progressDetail": {}, "id": "aaaa1111bbbb2222"},
    {"status": "Pull complete", "progressDetail": {}, "id": "aaaa1111bbbb2222"},
    {"status": "Digest: sha256:0123"},
    {"status": "Status: Downloaded newer image for x:1"},
]


def test_pull_layers_and_bytes_are_parsed() -> None:
    recorder = Recorder()
    for chunk in PULL_STREAM:
        assert handle_pull_chunk(chunk, recorder) is None
    layers = [e for e in recorder.events if e[0] == "layer"]
    assert ("layer", "aaaa1111bbbb2222", "Downloading", 500, 1000) in layers
    assert ("layer", "aaaa1111bbbb2222", "Pulling fs layer", None, None) in layers
    assert layers[-1] == ("layer", "aaaa1111bbbb2222", "Pull complete", None, None)
    statuses = [e[1] for e in recorder.events if e[0] == "status"]
    assert statuses[0] == "Pulling from opencode-cloud-sandbox 1.18.33"
    assert "Status: Downloaded newer image for x:1" in statuses


def test_pull_error_is_returned() -> None:
    error = handle_pull_chunk(
        {"error": "manifest unknown", "errorDetail": {"message": "manifest unknown"}}, Recorder()
    )
    assert error == "manifest unknown"


def test_plain_build_rendering() -> None:
    out = io.StringIO()
    reporter = PlainProgress(out)
    for chunk in BUILD_STREAM:
        handle_build_chunk(chunk, reporter)
    reporter.done("Built x")
    text = out.getvalue()
    assert text.splitlines() == [
        "[1/3] FROM debian:bookworm-slim",
        "[2/3] RUN echo hi",
        '[3/3] CMD ["sh"]',
        "Built x",
    ]
    assert "\x1b" not in text


def test_plain_verbose_shows_step_output() -> None:
    out = io.StringIO()
    reporter = PlainProgress(out, verbose=True)
    for chunk in BUILD_STREAM:
        handle_build_chunk(chunk, reporter)
    assert "    hi" in out.getvalue().splitlines()


def test_plain_long_step_is_shortened_to_one_line() -> None:
    out = io.StringIO()
    PlainProgress(out, width=40).build_step(
        9, 28, "RUN npm install -g  opencode-ai \\\n  && something long " + "x" * 100
    )
    line = out.getvalue().rstrip("\n")
    assert "\n" not in line
    assert line.startswith("[9/28] RUN npm install -g opencode-ai")
    assert line.endswith("...")
    assert len(line) == len("[9/28] ") + 40


def test_plain_pull_rendering_is_throttled() -> None:
    out = io.StringIO()
    reporter = PlainProgress(out)
    reporter.layer("aaaa1111bbbb2222", "Pulling fs layer", None, None)
    for current in range(0, 1001, 10):
        reporter.layer("aaaa1111bbbb2222", "Downloading", current, 1000)
    reporter.layer("aaaa1111bbbb2222", "Pull complete", None, None)
    lines = out.getvalue().splitlines()
    assert lines[0] == "aaaa1111bbbb: Pulling fs layer"
    assert lines[-1] == "aaaa1111bbbb: Pull complete"
    downloads = [line for line in lines if "Downloading" in line]
    # Quarters only: 25, 50, 75, 100 %.
    assert [line.rsplit("(", 1)[1] for line in downloads] == ["25%)", "50%)", "75%)", "100%)"]
    assert "1.0 kB/1.0 kB" in downloads[-1]


def test_rich_progress_renders_without_a_terminal() -> None:
    out = io.StringIO()
    reporter = RichProgress(out)
    for chunk in BUILD_STREAM:
        handle_build_chunk(chunk, reporter)
    for chunk in PULL_STREAM:
        handle_pull_chunk(chunk, reporter)
    reporter.done("Built x")
    text = out.getvalue()
    assert "step 3/3" in text
    assert "Built x" in text


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_reporter_for_chooses_by_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert isinstance(reporter_for(io.StringIO()), PlainProgress)
    assert isinstance(reporter_for(FakeTty()), RichProgress)
    assert isinstance(reporter_for(FakeTty(), quiet=True), NullProgress)
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(reporter_for(FakeTty()), PlainProgress)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("CI", "true")
    assert isinstance(reporter_for(FakeTty()), PlainProgress)


def test_shorten() -> None:
    assert shorten("a  b\n c", 10) == "a b c"
    assert shorten("abcdefghijk", 5) == "ab..."
