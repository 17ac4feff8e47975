"""Errors of the configuration layer: each names the file, the key, the value and the rule.

They carry data (the file, the problems, the key whose example fits); the command line
words the commands of their hints (`cli/hints.py`). A hint that names no command (fix a
file's permissions, say) is given here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from opencode_cloud.errors import OpencodeCloudError


class ConfigError(OpencodeCloudError):
    """Something is wrong with the configuration file or with a requested change.

    Attributes:
        path: The configuration file concerned, when there is one.
    """

    def __init__(self, message: str, hint: str = "", *, path: Path | None = None) -> None:
        super().__init__(message, hint)
        self.path = path


class ConfigReadError(ConfigError):
    """The configuration file exists but cannot be read (permissions, a directory, ...)."""


class ConfigWriteError(ConfigError):
    """The configuration file cannot be written; the old file is left as it was."""


class ConfigSyntaxError(ConfigError):
    """The file is not valid JSON with comments.

    Attributes:
        line: 1-based line of the problem, when known.
        column: 1-based column of the problem, when known.
        encoding: True when the file is not UTF-8 text at all.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        line: int | None = None,
        column: int | None = None,
        encoding: bool = False,
    ) -> None:
        super().__init__(message, path=path)
        self.line = line
        self.column = column
        self.encoding = encoding


@dataclass(frozen=True)
class Problem:
    """One broken rule: which key, which value, which rule.

    Attributes:
        key: Dotted key (`port`, `env.NAME`, `registries[0]`).
        value: The offending value, as JSON text (shortened when long).
        rule: What the value must be, starting with "must".
        message: The whole sentence, when the key-value-rule form does not fit.
    """

    key: str
    value: str
    rule: str
    message: str | None = None

    def describe(self) -> str:
        """One line: `port is 0, but must be a whole number from 1 to 65535`."""
        return self.message or f"{self.key} is {self.value}, but {self.rule}"


class ConfigValidationError(ConfigError):
    """Values in the configuration break the schema's rules.

    Attributes:
        problems: Every broken rule, in document order.
        document: True when the problems are in the stored document (the file), False
            when they are in a value just given on the command line.
        example: The key whose example value the hint shows (a value given on the
            command line for that key); None for none.
    """

    def __init__(
        self,
        problems: list[Problem],
        *,
        path: Path | None = None,
        document: bool = True,
        example: str | None = None,
    ) -> None:
        self.problems = problems
        self.document = document
        self.example = example
        details = "; ".join(problem.describe() for problem in problems)
        if path is not None:
            message = f"Invalid configuration in {path}: {details}."
        elif document:
            message = f"Invalid configuration: {details}."
        else:
            message = f"Invalid value: {details}."
        super().__init__(message, path=path)

    @property
    def first_key(self) -> str:
        """The top-level key of the first problem (`env` for `env.NAME`), or `KEY`."""
        return self.problems[0].key.split(".")[0].split("[")[0] if self.problems else "KEY"

    def in_file(self, path: Path) -> ConfigValidationError:
        """The same problems, reported as problems of the file at `path`."""
        return ConfigValidationError(self.problems, path=path, document=True)


class UnknownConfigKey(ConfigError):
    """A command named a key the configuration does not have (or, as `env.NAME`, an
    environment variable it does not set).

    Attributes:
        key: The key as given.
    """

    def __init__(self, message: str, hint: str = "", *, key: str) -> None:
        super().__init__(message, hint)
        self.key = key


class RetiredConfigKey(ConfigError):
    """A command tried to set a key that earlier releases used and this one ignores.

    Attributes:
        key: The key as given.
        reason: Why it is no longer used.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key} can no longer be set: it is not used any more ({reason}).")
        self.key = key
        self.reason = reason


class EditNotSaved(ConfigError):
    """`occ config edit` refused the edited file (invalid, or the file changed meanwhile);
    the configuration file is as it was and the edits are kept in `draft`.

    Attributes:
        draft: The edited copy, for `occ config edit --from DRAFT`.
        needs_yes: The edit exposes the service and was not confirmed.
    """

    def __init__(self, reason: str, draft: Path, *, path: Path, needs_yes: bool = False) -> None:
        super().__init__(f"Not saved, {path} is unchanged: {reason}", path=path)
        self.draft = draft
        self.needs_yes = needs_yes


class EditorFailed(OpencodeCloudError):
    """No editor could be run, or the editor failed; nothing was saved.

    Attributes:
        missing: True when no editor was found at all.
    """

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing
