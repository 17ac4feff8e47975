"""The order of a session: tests marked `last` go to its end (`tests/run_last.py`, applied
by `tests/e2e/conftest.py`), whatever their file names."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from run_last import MARKER, run_last

TESTS = Path(__file__).resolve().parents[1]


@dataclass
class Item:
    name: str
    markers: tuple[str, ...] = field(default=())

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return getattr(pytest.mark, name).mark if name in self.markers else None


def test_marked_tests_move_to_the_end_and_both_parts_keep_their_order() -> None:
    items = [
        Item("e2e/test_a"),
        Item("e2e/test_engine_restart", ("e2e", MARKER)),
        Item("e2e/test_b", ("e2e",)),
        Item("integration/test_c"),
        Item("remote/test_d", (MARKER,)),
        Item("unit/test_e"),
    ]
    assert [item.name for item in run_last(items)] == [
        "e2e/test_a",
        "e2e/test_b",
        "integration/test_c",
        "unit/test_e",
        "e2e/test_engine_restart",
        "remote/test_d",
    ]


def test_a_session_without_marked_tests_keeps_its_order() -> None:
    items = [Item("b"), Item("a"), Item("c")]
    assert run_last(items) == items
    assert run_last([]) == []


def test_the_engine_restart_runs_after_the_tests_collected_after_it() -> None:
    """The marker on the restart of the Docker daemon and the hook of the end-to-end tests'
    conftest, as a session orders them (collected, not run)."""
    restart = TESTS / "e2e" / "test_engine_restart.py"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         str(restart), __file__],
        cwd=TESTS.parent, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    collected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert collected[-1].startswith("tests/e2e/test_engine_restart.py::"), collected
    assert len(collected) > 1
    assert all(line.startswith("tests/unit/test_run_last.py::") for line in collected[:-1])
