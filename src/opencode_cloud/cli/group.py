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
