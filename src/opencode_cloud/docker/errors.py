"""Errors of the engine layer. They carry data (which container, port, image, log tail);
the command line turns that data into the `Hint:` line a user reads (`cli/hints.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from opencode_cloud.errors import OpencodeCloudError


class DockerError(OpencodeCloudError):
    """Something went wrong talking to the Docker engine."""


class EngineUnavailable(DockerError):
    """The engine cannot be used at all; `host` says which one was tried."""

    def __init__(self, message: str, host: str) -> None:
        super().__init__(message)
        self.host = host


class DockerNotInstalled(EngineUnavailable):
    """No Docker client or engine is installed on this machine."""

    def __init__(self, host: str) -> None:
        super().__init__("Docker is not installed.", host)


class DaemonNotRunning(EngineUnavailable):
    """The engine's socket is missing or nothing answers on it.

    Attributes:
        chosen_by: The setting that named this engine: `DOCKER_HOST`, `DOCKER_CONTEXT`,
            `docker context use`; None for the default socket (or one given in code).
        context: The Docker context that named it, if one did.
    """

    def __init__(
        self, host: str, *, chosen_by: str | None = None, context: str | None = None
    ) -> None:
        super().__init__(f"Cannot connect to the Docker daemon at {host}: it is not running.", host)
        self.chosen_by = chosen_by
        self.context = context


class UnknownContext(EngineUnavailable):
    """The Docker context to use does not exist (the docker CLI refuses it too).

    Attributes:
        name: The context's name.
        chosen_by: What named it: `DOCKER_CONTEXT`, or `docker context use` (the
            docker CLI's configuration file).
    """

    def __init__(self, name: str, chosen_by: str) -> None:
        super().__init__(
            f"There is no Docker context {name!r} (named by {chosen_by}).",
            f"the Docker context {name!r}",
        )
        self.name = name
        self.chosen_by = chosen_by


class DockerPermissionDenied(EngineUnavailable):
    """The engine's socket exists but this user may not use it."""

    def __init__(self, host: str) -> None:
        super().__init__(f"Permission denied on the Docker socket ({host}).", host)


class EngineTooOld(EngineUnavailable):
    """The engine's API is older than the features the tool relies on."""

    def __init__(self, host: str, api_version: str, minimum: str) -> None:
        super().__init__(
            f"The Docker engine speaks API {api_version}; opencode-cloud needs {minimum} or "
            "newer (Docker 19.03+).",
            host,
        )
        self.api_version = api_version
        self.minimum = minimum


class IncompleteAnswer(DockerError):
    """The engine's connection closed in the middle of an answer: what came is not all of
    it, and is not used."""

    def __init__(self, host: str) -> None:
        super().__init__(
            f"The Docker engine at {host} closed the connection before the end of its answer."
        )
        self.host = host


class ContainerAlreadyExists(DockerError):
    """A container with the requested name already exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"Container {name} already exists.")
        self.name = name


class ContainerNotFound(DockerError):
    """The named container does not exist."""

    def __init__(self, name: str, *, while_waiting: bool = False) -> None:
        what = " disappeared while waiting for it to become healthy" if while_waiting else ""
        super().__init__(f"Container {name}{what or ' does not exist'}.")
        self.name = name


class ImageNotFound(DockerError):
    """An image is not in the local engine (and could not be fetched)."""

    def __init__(self, image: str) -> None:
        super().__init__(f"Image {image} not found.")
        self.image = image


class PortInUse(DockerError):
    """The host port to publish on is held by another process."""

    def __init__(self, port: int | None) -> None:
        super().__init__(f"{f'Port {port}' if port else 'The port'} is already in use.")
        self.port = port


class VolumeInUse(DockerError):
    """A volume cannot be removed because a container uses it."""

    def __init__(self, volume: str, users: Sequence[str]) -> None:
        by = f" by container {', '.join(users)}" if users else ""
        super().__init__(f"Volume {volume} is in use{by}.")
        self.volume = volume
        self.users = list(users)


class ContainerRunning(DockerError):
    """The container runs, and the operation needs it stopped."""

    def __init__(self, name: str) -> None:
        super().__init__(f"Container {name} is running.")
        self.name = name


class MissingPath(DockerError):
    """A file cannot be written into a container: its folder is not in the image."""

    def __init__(self, name: str, path: str, directory: str) -> None:
        super().__init__(
            f"Cannot write {path} into container {name}: its image has no {directory}."
        )
        self.name = name
        self.path = path


class HealthTimeout(DockerError):
    """The service did not answer healthy in time."""

    def __init__(
        self,
        name: str,
        timeout: float,
        last_answer: str,
        *,
        refused: bool,
        log_tail: Sequence[str] = (),
    ) -> None:
        super().__init__(
            f"{name} did not become healthy within {timeout:g} s (last answer: {last_answer})."
        )
        self.name = name
        self.timeout = timeout
        # The edge answered 401 (it holds another password's hash) or 429 (locked out).
        self.refused = refused
        self.log_tail = list(log_tail)


class ContainerExited(DockerError):
    """The container stopped, or keeps restarting, while the tool waited for it."""

    def __init__(
        self,
        name: str,
        exit_code: int | None,
        *,
        restarting: bool,
        oom_killed: bool = False,
        log_tail: Sequence[str] = (),
    ) -> None:
        what = "keeps restarting" if restarting else "exited"
        why = "killed: out of memory" if oom_killed else f"exit code {exit_code}"
        super().__init__(f"Container {name} {what} ({why}) before it was healthy.")
        self.name = name
        self.exit_code = exit_code
        self.restarting = restarting
        self.oom_killed = oom_killed
        self.log_tail = list(log_tail)


class SessionsFailing(DockerError):
    """opencode answers its health check, but cannot read its sessions (its database)."""

    def __init__(self, name: str, detail: str, version: str | None = None) -> None:
        running = f"opencode {version}" if version else "opencode"
        super().__init__(
            f"{running} in {name} answers its health check, but its session API fails ({detail})."
        )
        self.name = name
        self.detail = detail
        self.version = version


BuildCause = Literal["base-image", "certificate", "packages"]


class BuildFailed(DockerError):
    """An image build failed."""

    def __init__(
        self,
        message: str,
        *,
        tag: str = "",
        output_tail: Sequence[str] = (),
        cause: BuildCause | None = None,
        instruction: str = "",
    ) -> None:
        super().__init__(message)
        self.tag = tag
        self.output_tail = list(output_tail)
        self.cause = cause
        self.instruction = instruction


class InvalidCertificate(BuildFailed):
    """A file named as an extra CA certificate cannot be read or holds no PEM certificate."""

    def __init__(self, path: str, problem: str, *, unreadable: bool) -> None:
        super().__init__(problem)
        self.path = path
        self.unreadable = unreadable


class PullFailed(DockerError):
    """No registry could serve the image."""

    def __init__(self, image: str, failures: Sequence[str] = ()) -> None:
        if failures:
            message = f"Could not pull {image} from any registry ({'; '.join(failures)})."
        else:
            message = f"No registry to pull {image} from."
        super().__init__(message)
        self.image = image
        self.failures = list(failures)
