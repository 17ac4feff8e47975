"""`occ doctor`: run the checks of `opencode_cloud.doctor.checks` and show what they found."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

import click

from opencode_cloud.cli.options import person_option
from opencode_cloud.cli.output import ExitCode

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext
    from opencode_cloud.doctor.checks import Finding

HEADER = ("CHECK", "RESULT", "DETAIL", "FIX")
GAP = "  "
DEFAULT_WIDTH = 120
MIN_TEXT_WIDTH = 24
NO_BREAK = "\u00a0"  # textwrap breaks only at ASCII whitespace
_COLORS = {"ok": "32", "warn": "33", "fail": "31", "skip": "2"}


def render_table(findings: Sequence[Finding], width: int, *, color: bool = False) -> list[str]:
    """The findings as plain aligned columns, the detail and fix wrapped to `width`."""
    name_width = max(len(HEADER[0]), *(len(f.name) for f in findings))
    status_width = max(len(HEADER[1]), *(len(f.status) for f in findings))
    room = max(2 * MIN_TEXT_WIDTH, width - name_width - status_width - 3 * len(GAP))
    longest_detail = max(len(HEADER[2]), *(len(f.detail) for f in findings))
    longest_fix = max(len(HEADER[3]), *(len(f.fix) for f in findings))
    if longest_detail + longest_fix <= room:
        detail_width, fix_width = longest_detail, longest_fix
    else:
        detail_width = max(MIN_TEXT_WIDTH, min(longest_detail, room * 11 // 20))
        fix_width = max(MIN_TEXT_WIDTH, room - detail_width)

    def row(name: str, status: str, detail: str, fix: str, paint: str = "") -> list[str]:
        # Without a fix, the detail may use the fix column's room too.
        wrap_at = detail_width if fix else detail_width + len(GAP) + fix_width
        details = _wrap(detail, wrap_at) or [""]
        # The fix is the last column: a long command may run past the edge, unbroken.
        fixes = _wrap(fix, fix_width, break_long_words=False) or [""]
        lines = []
        for index in range(max(len(details), len(fixes))):
            first = index == 0
            shown = status.ljust(status_width) if first else " " * status_width
            if first and paint:
                shown = f"\033[{paint}m{shown}\033[0m"
            cells = [
                (name if first else "").ljust(name_width),
                shown,
                (details[index] if index < len(details) else "").ljust(detail_width if fix else 0),
                fixes[index] if index < len(fixes) else "",
            ]
            lines.append(GAP.join(cells).rstrip())
        return lines

    lines = row(*HEADER)
    for finding in findings:
        paint = _COLORS.get(finding.status, "") if color else ""
        lines += row(finding.name, finding.status, finding.detail, finding.fix, paint)
    return lines


def _wrap(text: str, width: int, *, break_long_words: bool = True) -> list[str]:
    """Lines of at most `width`, never breaking a `command` in backquotes (so it can be
    copied whole) unless it is longer than a line."""
    import textwrap  # here, like shutil below: every `occ` command loads this module

    keep = re.sub(r"`[^`]*`", lambda m: m.group(0).replace(" ", NO_BREAK), text)
    lines = textwrap.wrap(keep, width, break_on_hyphens=False, break_long_words=break_long_words)
    return [line.replace(NO_BREAK, " ") for line in lines]


def summary(findings: Sequence[Finding]) -> str:
    failed = sum(f.status == "fail" for f in findings)
    warned = sum(f.status == "warn" for f in findings)
    if not failed and not warned:
        return "Everything checked is fine."
    parts = []
    if failed:
        parts.append(f"{failed} check{'s' if failed != 1 else ''} failed")
    if warned:
        parts.append(f"{warned} warning{'s' if warned != 1 else ''}")
    return ", ".join(parts) + "."


@click.command()
@person_option
@click.pass_obj
def doctor(app_ctx: AppContext, person: str | None) -> None:
    """Check everything the service needs, and say what to fix.

    The checks: the Docker engine, disk space, the configuration, the password file, the
    CA certificates, the port, the image, the container, opencode's HTTP and session
    APIs, and settings waiting for a restart.

    Prints each check's result (ok, warn, fail, skip) with what it saw and the fix. Exit
    code 0 when no check fails (warnings are fine), 1 when one does. With --json, an
    object with `ok` and the list of `findings`.
    """
    app_ctx = app_ctx.for_person(person)
    from opencode_cloud.cli.hints import hint_for
    from opencode_cloud.doctor.checks import ENGINE_TIMEOUT, all_ok, report, run_checks

    with app_ctx.spinner("Checking ..."):
        findings = run_checks(
            instance=app_ctx.instance,
            paths=app_ctx.paths,
            client_factory=lambda: app_ctx.connect(timeout=ENGINE_TIMEOUT),
            hint=lambda error: hint_for(error, app_ctx.occ),
        )
    out = app_ctx.out
    color = _isatty(out.stdout) and not os.environ.get("NO_COLOR")
    import shutil

    width = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns

    def human() -> list[str]:
        return [*render_table(findings, width, color=color), "", summary(findings)]

    out.result(report(findings), human)
    if not all_ok(findings):
        raise click.exceptions.Exit(ExitCode.ERROR)


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def register(group: click.Group) -> None:
    group.add_command(doctor)
