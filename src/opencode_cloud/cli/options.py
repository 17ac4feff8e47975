"""Options several commands share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def person_option(function: F) -> F:
    """`--user NAME`: in team mode, act on that person's opencode (docs/team.md)."""
    return click.option(
        "--user",
        "person",
        metavar="NAME",
        help="Team mode: act on this person's opencode.",
    )(function)
