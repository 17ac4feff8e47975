"""The command line run in-process, as the unit tests of commands use it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from opencode_cloud.cli.app import run


@dataclass
class Result:
    """What one `occ` invocation gave: exit code, stdout, stderr."""

    code: int
    out: str
    err: str


def runner(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """A function that runs `occ ARGS...` in this process and captures what it prints."""

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        code = run(list(args))
        captured = capsys.readouterr()
        return Result(int(code), captured.out, captured.err)

    return invoke
