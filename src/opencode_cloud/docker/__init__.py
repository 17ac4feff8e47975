"""The engine-facing core: volumes, container lifecycle, images. Knows nothing of the CLI.

The names below are loaded on first use (PEP 562), so importing one submodule, or this
package for one function, does not import every other module of the engine layer:
command start-up time matters to the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opencode_cloud.docker.client import DockerClient
    from opencode_cloud.docker.container import (
        CONTAINER_NAME,
        CONTAINER_PORT,
        DEFAULT_BIND_ADDRESS,
        DEFAULT_PORT,
        container_exists,
        container_is_running,
        container_state,
        create_container,
        remove_container,
        setup_and_start,
        start_container,
        stop_container,
    )
    from opencode_cloud.docker.errors import (
        BuildFailed,
        ContainerAlreadyExists,
        ContainerExited,
        ContainerNotFound,
        DaemonNotRunning,
        DockerError,
        DockerNotInstalled,
        DockerPermissionDenied,
        EngineTooOld,
        HealthTimeout,
        ImageNotFound,
        PortInUse,
        PullFailed,
        VolumeInUse,
    )
    from opencode_cloud.docker.health import probe_health, wait_until_healthy
    from opencode_cloud.docker.image import (
        DEFAULT_IMAGE,
        DEFAULT_OPENCODE_VERSION,
        IMAGE_NAME,
        IMAGE_TAG_DEFAULT,
        build_image,
        image_exists,
        image_opencode_version,
        image_ref,
        pull_image,
    )
    from opencode_cloud.docker.volume import (
        MOUNT_CONFIG,
        MOUNT_PROJECTS,
        MOUNT_SESSION,
        MOUNT_STATE,
        VOLUME_CONFIG,
        VOLUME_NAMES,
        VOLUME_PROJECTS,
        VOLUME_SESSION,
        VOLUME_STATE,
        ensure_volumes_exist,
        remove_all_volumes,
        remove_volume,
        volume_exists,
    )
_SOURCES = {
    "BuildFailed": "opencode_cloud.docker.errors",
    "CONTAINER_NAME": "opencode_cloud.docker.container",
    "CONTAINER_PORT": "opencode_cloud.docker.container",
    "ContainerAlreadyExists": "opencode_cloud.docker.errors",
    "ContainerExited": "opencode_cloud.docker.errors",
    "ContainerNotFound": "opencode_cloud.docker.errors",
    "DEFAULT_BIND_ADDRESS": "opencode_cloud.docker.container",
    "DEFAULT_IMAGE": "opencode_cloud.docker.image",
    "DEFAULT_OPENCODE_VERSION": "opencode_cloud.docker.image",
    "DEFAULT_PORT": "opencode_cloud.docker.container",
    "DaemonNotRunning": "opencode_cloud.docker.errors",
    "DockerClient": "opencode_cloud.docker.client",
    "DockerError": "opencode_cloud.docker.errors",
    "DockerNotInstalled": "opencode_cloud.docker.errors",
    "DockerPermissionDenied": "opencode_cloud.docker.errors",
    "EngineTooOld": "opencode_cloud.docker.errors",
    "HealthTimeout": "opencode_cloud.docker.errors",
    "IMAGE_NAME": "opencode_cloud.docker.image",
    "IMAGE_TAG_DEFAULT": "opencode_cloud.docker.image",
    "ImageNotFound": "opencode_cloud.docker.errors",
    "MOUNT_CONFIG": "opencode_cloud.docker.volume",
    "MOUNT_PROJECTS": "opencode_cloud.docker.volume",
    "MOUNT_SESSION": "opencode_cloud.docker.volume",
    "MOUNT_STATE": "opencode_cloud.docker.volume",
    "PortInUse": "opencode_cloud.docker.errors",
    "PullFailed": "opencode_cloud.docker.errors",
    "VOLUME_CONFIG": "opencode_cloud.docker.volume",
    "VOLUME_NAMES": "opencode_cloud.docker.volume",
    "VOLUME_PROJECTS": "opencode_cloud.docker.volume",
    "VOLUME_SESSION": "opencode_cloud.docker.volume",
    "VOLUME_STATE": "opencode_cloud.docker.volume",
    "VolumeInUse": "opencode_cloud.docker.errors",
    "build_image": "opencode_cloud.docker.image",
    "container_exists": "opencode_cloud.docker.container",
    "container_is_running": "opencode_cloud.docker.container",
    "container_state": "opencode_cloud.docker.container",
    "create_container": "opencode_cloud.docker.container",
    "ensure_volumes_exist": "opencode_cloud.docker.volume",
    "image_exists": "opencode_cloud.docker.image",
    "image_opencode_version": "opencode_cloud.docker.image",
    "image_ref": "opencode_cloud.docker.image",
    "probe_health": "opencode_cloud.docker.health",
    "pull_image": "opencode_cloud.docker.image",
    "remove_all_volumes": "opencode_cloud.docker.volume",
    "remove_container": "opencode_cloud.docker.container",
    "remove_volume": "opencode_cloud.docker.volume",
    "setup_and_start": "opencode_cloud.docker.container",
    "start_container": "opencode_cloud.docker.container",
    "stop_container": "opencode_cloud.docker.container",
    "volume_exists": "opencode_cloud.docker.volume",
    "wait_until_healthy": "opencode_cloud.docker.health",
}


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CONTAINER_NAME",
    "CONTAINER_PORT",
    "DEFAULT_BIND_ADDRESS",
    "DEFAULT_IMAGE",
    "DEFAULT_OPENCODE_VERSION",
    "DEFAULT_PORT",
    "IMAGE_NAME",
    "IMAGE_TAG_DEFAULT",
    "MOUNT_CONFIG",
    "MOUNT_PROJECTS",
    "MOUNT_SESSION",
    "MOUNT_STATE",
    "VOLUME_CONFIG",
    "VOLUME_NAMES",
    "VOLUME_PROJECTS",
    "VOLUME_SESSION",
    "VOLUME_STATE",
    "BuildFailed",
    "ContainerAlreadyExists",
    "ContainerExited",
    "ContainerNotFound",
    "DaemonNotRunning",
    "DockerClient",
    "DockerError",
    "DockerNotInstalled",
    "DockerPermissionDenied",
    "EngineTooOld",
    "HealthTimeout",
    "ImageNotFound",
    "PortInUse",
    "PullFailed",
    "VolumeInUse",
    "build_image",
    "container_exists",
    "container_is_running",
    "container_state",
    "create_container",
    "ensure_volumes_exist",
    "image_exists",
    "image_opencode_version",
    "image_ref",
    "probe_health",
    "pull_image",
    "remove_all_volumes",
    "remove_container",
    "remove_volume",
    "setup_and_start",
    "start_container",
    "stop_container",
    "volume_exists",
    "wait_until_healthy",
]
