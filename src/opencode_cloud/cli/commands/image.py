"""`occ build` and `occ pull`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext


@click.command()
@click.option("--no-cache", is_flag=True, help="Rebuild every step.")
@click.option("--opencode-version", help="opencode release to install (default: config).")
@click.option(
    "--ca-file",
    "ca_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Extra CA certificate (PEM) to trust, besides `ca_certificates`; repeatable.",
)
@click.pass_obj
def build(
    app_ctx: AppContext, no_cache: bool, opencode_version: str | None, ca_files: tuple[str, ...]
) -> None:
    """Build the sandbox image from the embedded Dockerfile, with progress, and the image
    derived from it that adds `extra_packages` and `extra_dockerfile`, when set.

    Extra CA certificates (the `ca_certificates` setting and --ca-file) are trusted
    during the build and inside the container: needed behind TLS-inspecting proxies.
    """
    with app_ctx.changing("build"):
        result = app_ctx.service().build(
            opencode_version=opencode_version,
            ca_files=ca_files,
            no_cache=no_cache,
            reporter=app_ctx.reporter(),
        )
    app_ctx.out.result(
        {"image": result.image, "id": result.id, "opencode_version": result.opencode_version},
        lambda: [f"Built {result.image} (opencode {result.opencode_version})."],
    )


@click.command()
@click.pass_obj
def pull(app_ctx: AppContext) -> None:
    """Pull the sandbox image from the configured registries, in order, with failover."""
    from opencode_cloud.service.image import base_image_for

    with app_ctx.changing("pull"):
        service = app_ctx.service()
        source = service.pull(app_ctx.reporter())
    tag = base_image_for(service.config)
    app_ctx.out.result({"image": tag, "source": source}, lambda: [f"Pulled {source} as {tag}."])


def register(group: click.Group) -> None:
    group.add_command(build)
    group.add_command(pull)
