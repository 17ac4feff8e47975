"""The image an instance's service runs: which one, and building or pulling it.

`image_for` names it from the configuration: the user's `image` override, else the
sandbox image of the configured opencode version, built here from the embedded
Dockerfile or pulled from the configured `registries`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from opencode_cloud.docker import image as images
from opencode_cloud.docker.errors import PullFailed

if TYPE_CHECKING:
    from opencode_cloud.config.schema import Config
    from opencode_cloud.docker.engine import Engine
    from opencode_cloud.docker.models import ImageInfo
    from opencode_cloud.docker.progress import ProgressReporter


@dataclass
class BuildResult:
    """What `build` made."""

    image: str
    id: str
    opencode_version: str


def image_for(config: Config) -> str:
    """The image the container runs: the user's override, else the local sandbox tag."""
    return config.image or images.image_ref(config.opencode_version)


def ensure_image(
    client: Engine,
    config: Config,
    *,
    build: bool = False,
    pull: bool = False,
    reporter: ProgressReporter | None = None,
) -> str:
    """Make sure the image exists; build or pull it when asked or when it is missing.

    Returns:
        `present`, `built` or `pulled`.

    Raises:
        ImageNotFound: a configured image override is missing and cannot be pulled.
        PullFailed: no registry is configured, or none served the image.
        BuildFailed.
    """
    found = client.inspect_image(image_for(config))
    if found is not None and not (build or pull) and not _without_edge(found):
        return "present"
    if pull or (not build and (config.registries or config.image)):
        pull_image(client, config, reporter)
        return "pulled"
    build_image(client, config, reporter=reporter)
    return "built"


def build_image(
    client: Engine,
    config: Config,
    *,
    opencode_version: str | None = None,
    ca_files: Sequence[str | Path] = (),
    no_cache: bool = False,
    reporter: ProgressReporter | None = None,
) -> BuildResult:
    """Build the sandbox image for the configured (or the given) opencode version.

    Args:
        ca_files: certificates to trust besides the configured `ca_certificates`.

    Raises:
        BuildFailed, InvalidCertificate.
    """
    version = opencode_version or config.opencode_version
    tag = config.image or images.image_ref(version)
    image_id = images.build_image(
        client,
        tag=tag,
        opencode_version=version,
        ca_files=[*config.ca_certificates, *ca_files],
        no_cache=no_cache,
        reporter=reporter,
    )
    return BuildResult(tag, image_id, version)


def pull_image(client: Engine, config: Config, reporter: ProgressReporter | None = None) -> str:
    """Pull the image; returns where it came from. An `image` override comes from the
    registry its reference names; the sandbox image from the configured registries.

    Raises:
        PullFailed: no registry is configured, or none served the image.
    """
    ref = image_for(config)
    if config.image:
        return images.pull_reference(client, ref, reporter=reporter)
    if not config.registries:
        raise PullFailed(ref)
    return images.pull_image(client, config.registries, tag=ref, reporter=reporter)


def _without_edge(image: ImageInfo) -> bool:
    """A sandbox image built by an earlier release: before the edge (its entrypoint would
    serve opencode directly and take the password's hash for the password), or with the
    edge running as the agent's own user (edge label 1)."""
    labels = image.labels
    edge = labels.get(images.LABEL_EDGE, "")
    built_here = bool(labels.get(images.LABEL_OPENCODE_VERSION))
    return built_here and (not edge or edge < images.EDGE_LABEL)
