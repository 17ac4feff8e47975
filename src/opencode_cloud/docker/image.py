"""The sandbox image: its canonical local name, and whether the engine has it."""

from __future__ import annotations

from opencode_cloud.docker.client import DockerClient, translate_errors

IMAGE_NAME = "opencode-cloud-sandbox"
# The opencode release the embedded Dockerfile installs unless told otherwise.
DEFAULT_OPENCODE_VERSION = "1.18.33"
IMAGE_TAG_DEFAULT = DEFAULT_OPENCODE_VERSION
DEFAULT_IMAGE = f"{IMAGE_NAME}:{IMAGE_TAG_DEFAULT}"


def image_ref(opencode_version: str = DEFAULT_OPENCODE_VERSION) -> str:
    """Canonical local name of the sandbox image holding `opencode_version`."""
    return f"{IMAGE_NAME}:{opencode_version}"


def image_exists(client: DockerClient, image: str) -> bool:
    """Return True if the local engine has `image` (a name:tag or an id)."""
    import docker.errors

    with translate_errors():
        try:
            client.docker.api.inspect_image(image)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.NotFound:
            return False
    return True
