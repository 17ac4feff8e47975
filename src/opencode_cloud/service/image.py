"""The image an instance's service runs: which one, and building or pulling it.

`image_for` names it from the configuration: the user's `image` override, else the
sandbox image of the configured opencode version, built here from the embedded
Dockerfile or pulled from the configured `registries`. With `extra_packages` or
`extra_dockerfile` it is the image derived from that one (`base_image_for`), built here
on top of it and named by what it adds.
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


def base_image_for(config: Config) -> str:
    """The image built or pulled for the configuration: the user's override, else the local
    sandbox tag."""
    return config.image or images.image_ref(config.opencode_version)


def image_for(config: Config) -> str:
    """The image the container runs: the base image, or the image derived from it when
    the configuration adds packages or Dockerfile lines."""
    base = base_image_for(config)
    if not has_extras(config):
        return base
    return images.derived_ref(base, config.extra_packages, config.extra_dockerfile)


def has_extras(config: Config) -> bool:
    """True when the configuration adds packages or Dockerfile lines to the base image."""
    return bool(config.extra_packages or config.extra_dockerfile)


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
    if has_extras(config):
        return _ensure_derived(client, config, build=build, pull=pull, reporter=reporter)
    found = client.inspect_image(image_for(config))
    if found is not None and not (build or pull) and not _without_edge(found):
        return "present"
    return _make_base(client, config, build=build, pull=pull, reporter=reporter)


def _make_base(
    client: Engine,
    config: Config,
    *,
    build: bool,
    pull: bool,
    reporter: ProgressReporter | None,
) -> str:
    """Build or pull the base image; `built` or `pulled`."""
    if pull or (not build and (config.registries or config.image)):
        pull_image(client, config, reporter)
        return "pulled"
    _build_base(client, config, reporter=reporter)
    return "built"


def _ensure_derived(
    client: Engine,
    config: Config,
    *,
    build: bool,
    pull: bool,
    reporter: ProgressReporter | None,
) -> str:
    """The derived image, built on the base as it is now; the base made first if needed.
    Nothing is built when both exist and the derived one was built on this base."""
    base_ref = base_image_for(config)
    base = client.inspect_image(base_ref)
    action = "present"
    if base is None or build or pull or _without_edge(base):
        action = _make_base(client, config, build=build, pull=pull, reporter=reporter)
        base = client.inspect_image(base_ref)
    if images.derived_current(client.inspect_image(image_for(config)), base):
        return action
    images.build_derived(
        client, base_ref, config.extra_packages, config.extra_dockerfile, reporter=reporter
    )
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
    """Build the sandbox image for the configured (or the given) opencode version, and the
    image derived from it when the configuration adds packages or Dockerfile lines.

    Args:
        ca_files: certificates to trust besides the configured `ca_certificates`.

    Raises:
        BuildFailed, InvalidCertificate.
    """
    version = opencode_version or config.opencode_version
    if opencode_version is not None:
        config = config.model_copy(update={"opencode_version": version})
    result = _build_base(client, config, ca_files=ca_files, no_cache=no_cache, reporter=reporter)
    if not has_extras(config):
        return result
    image_id = images.build_derived(
        client,
        result.image,
        config.extra_packages,
        config.extra_dockerfile,
        no_cache=no_cache,
        reporter=reporter,
    )
    return BuildResult(image_for(config), image_id, version)


def _build_base(
    client: Engine,
    config: Config,
    *,
    ca_files: Sequence[str | Path] = (),
    no_cache: bool = False,
    reporter: ProgressReporter | None = None,
) -> BuildResult:
    """Build the sandbox image (the base) of the configuration's opencode version."""
    version = config.opencode_version
    tag = base_image_for(config)
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
    """Pull the base image; returns where it came from. An `image` override comes from the
    registry its reference names; the sandbox image from the configured registries.

    Raises:
        PullFailed: no registry is configured, or none served the image.
    """
    ref = base_image_for(config)
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
