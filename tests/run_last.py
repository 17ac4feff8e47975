"""Tests marked `last` run after every other test of the session, whatever their file
names: a test that disturbs what all the others use (a restart of the Docker daemon)
must not run before any of them. `tests/e2e/conftest.py` applies it to the session."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

MARKER = "last"


class Marked(Protocol):
    """What of a collected test the order needs (`pytest.Item` has it)."""

    def get_closest_marker(self, name: str) -> Any: ...


T = TypeVar("T", bound=Marked)


def run_last(items: Sequence[T]) -> list[T]:
    """`items` with those marked `last` moved to the end; each part keeps its order."""
    marked = [item.get_closest_marker(MARKER) is not None for item in items]
    first = [item for item, last in zip(items, marked, strict=True) if not last]
    return first + [item for item, last in zip(items, marked, strict=True) if last]
