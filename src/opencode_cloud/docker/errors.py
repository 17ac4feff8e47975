"""Errors of the engine layer. Callers act on the subclasses; users read message and hint."""

from __future__ import annotations

from opencode_cloud.errors import OpencodeCloudError

START_ENGINE_HINT = (
    "Start the Docker engine: `sudo systemctl start docker` "
    "(or `scripts/engine.sh start` on machines without systemd)."
)


class DockerError(OpencodeCloudError):
    """Something went wrong talking to the Docker engine."""


class DockerNotInstalled(DockerError):
    """No Docker client or engine is installed on this machine."""


class DaemonNotRunning(DockerError):
    """The engine's socket is missing or nothing answers on it."""


class DockerPermissionDenied(DockerError):
    """The engine's socket exists but this user may not use it."""


class EngineTooOld(DockerError):
    """The engine's API is older than the features the tool relies on."""


class ContainerAlreadyExists(DockerError):
    """A container with the requested name already exists."""


class ContainerNotFound(DockerError):
    """The named container does not exist."""


class ImageNotFound(DockerError):
    """The image to create a container from is not in the local engine."""


class PortInUse(DockerError):
    """The host port to publish on is held by another process."""


class VolumeInUse(DockerError):
    """A volume cannot be removed because a container uses it."""


class HealthTimeout(DockerError):
    """The service did not answer healthy in time."""


class ContainerExited(DockerError):
    """The container stopped while the tool waited for it to become healthy."""


class BuildFailed(DockerError):
    """An image build failed."""


class PullFailed(DockerError):
    """No registry could serve the image."""
