"""The click group class every `occ` command group uses.

Plain click with nothing on top: a wrapper library added tens of milliseconds of imports
to every invocation, and `occ` is called from scripts and shell prompts.
"""

from __future__ import annotations

from typing import Any

import click


class OrderedGroup(click.Group):
    """A group whose help lists commands in the order they were added, not A to Z.

    Sub-groups made with `@group.group()` are of this class too.
    """

    group_class = type

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


class LazyGroup(OrderedGroup):
    """The top-level group: each command's module is imported when that command runs (or
    help lists it), not on every invocation: `occ status` loads no set-up, backup or
    doctor code.

    `lazy` maps each command name, in help order, to `(module, group)`: the module under
    `opencode_cloud.cli.commands`, and the attribute holding that command's group, or
    None when the module's `register(group)` adds its commands (perhaps several).
    """

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str | None]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *(name for name in self.commands if name not in self.lazy)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.load(cmd_name)
        return self.commands.get(cmd_name)

    def load(self, cmd_name: str) -> None:
        """Import the module of command `cmd_name` and add what it defines."""
        module_name, group = self.lazy[cmd_name]
        # The import statement's own path (not importlib's), which `python -X importtime`
        # sees: the tests of what each command loads read that listing.
        module = __import__(f"opencode_cloud.cli.commands.{module_name}", fromlist=["_"])
        if group is None:
            module.register(self)
        else:
            self.add_command(getattr(module, group))


class DefaultCommandGroup(OrderedGroup):
    """A group that runs its `default` command when the first word names none of its
    commands: `occ backup FILE` is `occ backup create FILE`, while `occ backup list` is
    the `list` command."""

    default = ""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = [self.default, *args]
        return super().parse_args(ctx, args)
