"""The errors of provider keys; their hints are in `cli/hints.py`."""

from __future__ import annotations

from opencode_cloud.errors import OpencodeCloudError


class ProviderError(OpencodeCloudError):
    """Any error of provider keys."""


class UnknownProvider(ProviderError):
    """A provider name opencode does not know, without a base URL that would make it a
    custom one."""

    def __init__(self, provider_id: str, known: tuple[str, ...]) -> None:
        super().__init__(f"Unknown provider {provider_id!r}.")
        self.provider_id = provider_id
        self.known = known


class BadProviderInput(ProviderError):
    """A provider's name, key, base URL or models that cannot be stored."""

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(f"Bad {what}: {problem}.")
        self.what = what
        self.problem = problem


class ProviderStoreFailed(ProviderError):
    """opencode did not take the change (its answer, never the key)."""

    def __init__(self, action: str, provider_id: str, answer: str) -> None:
        super().__init__(f"opencode did not {action} provider {provider_id!r}: {answer}.")
        self.action = action
        self.provider_id = provider_id
        self.answer = answer


class ProviderNotSet(ProviderError):
    """`remove` of a provider that has no key stored."""

    def __init__(self, provider_id: str, stored: tuple[str, ...]) -> None:
        super().__init__(f"No key is stored for provider {provider_id!r}.")
        self.provider_id = provider_id
        self.stored = stored


class KeyNotGiven(ProviderError):
    """No key: neither a file, standard input, nor a terminal to type it on; or a file
    that cannot be read (`path` and `reason` then say which and why)."""

    def __init__(self, path: str | None = None, reason: str = "") -> None:
        if path is None:
            super().__init__("No key given.")
        else:
            super().__init__(f"Cannot read the key file {path}: {reason}.")
        self.path = path
        self.reason = reason
