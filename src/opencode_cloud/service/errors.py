"""What can go wrong with an instance's service and its version changes, as data: the
command line writes the hints and picks the exit codes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opencode_cloud.errors import OpencodeCloudError

if TYPE_CHECKING:
    from opencode_cloud.instance import Instance


def _whose(instance: Instance) -> str:
    if instance.person is not None:
        return f"{instance.person}'s opencode (instance {instance.name!r})"
    return f"Instance {instance.name!r}"


class NeverCreated(OpencodeCloudError):
    """The instance has no container: it was never started (or was removed)."""

    def __init__(self, instance: Instance) -> None:
        super().__init__(f"{_whose(instance)} has no container (it was never started).")
        self.instance = instance


class NotRunning(OpencodeCloudError):
    """The instance's container exists but does not run."""

    def __init__(self, instance: Instance) -> None:
        super().__init__(f"{_whose(instance)} is not running.")
        self.instance = instance


class EdgeTooOld(OpencodeCloudError):
    """The container's image has an edge from before sign-in records and second factors."""

    def __init__(self, instance: Instance) -> None:
        super().__init__(
            f"{_whose(instance)} runs an image whose sign-in service keeps no sessions list, "
            "log or second factor."
        )
        self.instance = instance


class EdgeRefused(OpencodeCloudError):
    """The container's sign-in service refused a request of `occ auth` (its own words)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"The sign-in service refused: {message}")
        self.message = message


class VersionChange(OpencodeCloudError):
    """The configuration names another opencode version (or image) than the container runs."""

    def __init__(self, instance: Instance, current: str, wanted: str) -> None:
        super().__init__(
            f"The configuration asks for {wanted}, but instance {instance.name!r} runs "
            f"{current}: a version change goes through `update`."
        )
        self.instance = instance
        self.current = current
        self.wanted = wanted


class UpdateFailed(OpencodeCloudError):
    """The new version did not work; `rolled_back` says whether the old one is back."""

    def __init__(self, target: str, problem: str, *, rolled_back: bool, previous: str) -> None:
        back = f"; {previous} and its data are back" if rolled_back else ""
        super().__init__(f"Updating to {target} failed: {problem.rstrip('.')}{back}.")
        self.target = target
        self.problem = problem
        self.rolled_back = rolled_back
        self.previous = previous


class NothingToRollBack(OpencodeCloudError):
    """No snapshot of an earlier version is kept for this instance."""

    def __init__(self, instance: str) -> None:
        super().__init__(f"Instance {instance!r} has no snapshot of an earlier version.")
        self.instance = instance


class NotUpdatable(OpencodeCloudError):
    """The instance cannot be updated as it is (it was never started, say)."""
