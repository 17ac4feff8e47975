"""`occ build` and `occ pull`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext


@click.command()
@click.option("--no-cache", is_flag=True, help="Rebuild every step.")
@click.option("--opencode-version", help="opencode release to install (default: config).")
@click.pass_obj
def build(app_ctx: AppContext, no_cache: bool, opencode_version: str | None) -> None:
    """Build the sandbox image from the embedded Dockerfile, with progress.

    Extra CA certificates from the `ca_certificates` setting are trusted during the
    build and inside the container (needed behind TLS-inspecting proxies).
    """
    from pathlib import Path

    from opencode_cloud.docker import image as images

    config = app_ctx.config
    version = opencode_version or config.opencode_version
    tag = config.image or images.image_ref(version)
    with app_ctx.changing("build"):
        image_id = images.build_image(
            app_ctx.client,
            tag=tag,
            opencode_version=version,
            ca_files=[Path(p) for p in config.ca_certificates],
            no_cache=no_cache,
            reporter=app_ctx.reporter(),
        )
    app_ctx.out.result(
        {"image": tag, "id": image_id, "opencode_version": version},
        lambda: [f"Built {tag} (opencode {version})."],
    )


@click.command()
@click.pass_obj
def pull(app_ctx: AppContext) -> None:
    """Pull the sandbox image from the configured registries, in order, with failover."""
    from opencode_cloud.docker import image as images
    from opencode_cloud.docker.errors import PullFailed
    from opencode_cloud.service import image_for

    config = app_ctx.config
    if not config.registries:
        raise PullFailed(
            "No registries are configured to pull from.",
            "Add one: occ config set registries ghcr.io/OWNER (or build locally: occ build).",
        )
    tag = image_for(config)
    with app_ctx.changing("pull"):
        source = images.pull_image(
            app_ctx.client, config.registries, tag=tag, reporter=app_ctx.reporter()
        )
    app_ctx.out.result({"image": tag, "source": source}, lambda: [f"Pulled {source} as {tag}."])


def register(group: click.Group) -> None:
    group.add_command(build)
    group.add_command(pull)
