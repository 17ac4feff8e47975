"""The command line run in-process, as the unit tests of commands use it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from opencode_cloud.cli import dispatch


@dataclass
class Result:
    """What one `occ` invocation gave: exit code, stdout, stderr."""

    code: int
    out: str
    err: str


def runner(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """A function that runs `occ ARGS...` in this process, as the console script does,
    and captures what it prints."""

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        code = dispatch(list(args))
        captured = capsys.readouterr()
        return Result(int(code), captured.out, captured.err)

    return invoke


def isolated_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Result]:
    """`runner` with its own configuration folder under `tmp_path` (as its working folder),
    and nothing of the caller's instance, host, engine or Docker configuration."""
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "cfg"))
    for name in ("OCC_INSTANCE", "OCC_HOST", "DOCKER_HOST", "DOCKER_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.chdir(tmp_path)
    return runner(capsys)


def one_error(result: Result) -> str:
    """The `Error:` line of a failed command, checking it has one error and one hint and
    no traceback."""
    lines = result.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.err
    assert len([line for line in lines if line.startswith("Hint:")]) == 1, result.err
    assert "Traceback" not in result.err
    return errors[0]
