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
