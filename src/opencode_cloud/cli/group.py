"""The click group class every `occ` command group uses.

Plain click with nothing on top: a wrapper library added tens of milliseconds of imports
to every invocation, and `occ` is called from scripts and shell prompts.
"""

from __future__ import annotations

import click


class OrderedGroup(click.Group):
    """A group whose help lists commands in the order they were added, not A to Z.

    Sub-groups made with `@group.group()` are of this class too.
    """

    group_class = type

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


class DefaultCommandGroup(OrderedGroup):
    """A group that runs its `default` command when the first word names none of its
    commands: `occ backup FILE` is `occ backup create FILE`, while `occ backup list` is
    the `list` command."""

    default = ""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = [self.default, *args]
        return super().parse_args(ctx, args)
