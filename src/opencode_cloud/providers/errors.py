"""The errors of provider keys; their hints are in `cli/hints.py`."""

from __future__ import annotations

from opencode_cloud.errors import OpencodeCloudError


class UnknownProvider(OpencodeCloudError):
    """A provider name opencode does not know, without a base URL that would make it a
    custom one."""

    def __init__(self, provider_id: str, known: tuple[str, ...]) -> None:
        super().__init__(f"Unknown provider {provider_id!r}.")
        self.provider_id = provider_id
        self.known = known


class BadProviderInput(OpencodeCloudError):
    """A provider's name, key, base URL or models that cannot be stored."""

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(f"Bad {what}: {problem}.")
        self.what = what
        self.problem = problem


class ProviderStoreFailed(OpencodeCloudError):
    """opencode did not take the change (its answer, never the key)."""

    def __init__(self, action: str, provider_id: str, answer: str) -> None:
        super().__init__(f"opencode did not {action} provider {provider_id!r}: {answer}.")
        self.action = action
        self.provider_id = provider_id
        self.answer = answer


class ProviderNotSet(OpencodeCloudError):
    """`remove` of a provider that has no key stored."""

    def __init__(self, provider_id: str, stored: tuple[str, ...]) -> None:
        super().__init__(f"No key is stored for provider {provider_id!r}.")
        self.provider_id = provider_id
        self.stored = stored
