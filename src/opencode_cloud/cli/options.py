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


def log_limit_option(function: F) -> F:
    """`--limit N`: how many of a sign-in log's newest lines (`occ auth log`, `occ team
    log`)."""
    return click.option(
        "--limit",
        type=click.IntRange(1, 10000),
        default=100,
        show_default=True,
        help="How many of the newest lines.",
    )(function)
