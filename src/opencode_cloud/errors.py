"""The one error type every layer raises: a message for the user and a hint with the fix."""

from __future__ import annotations


class OpencodeCloudError(Exception):
    """Base of every error the tool reports to a user.

    Attributes:
        message: What went wrong, in one line.
        hint: What to do about it, usually a command to run. May be empty.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class NotConfirmed(OpencodeCloudError):
    """A change that needs a yes (`--yes`, or an answer at the prompt) did not get one;
    nothing was changed.

    Attributes:
        command: The command to run again with `--yes` (`config reset`, `uninstall
            --volumes`), without the program name; empty when only the caller knows it.
    """

    def __init__(self, message: str, command: str = "") -> None:
        super().__init__(message)
        self.command = command
