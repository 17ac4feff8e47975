"""`occ kubernetes render`: the team as Kubernetes manifests (docs/kubernetes.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from opencode_cloud.cli.group import OrderedGroup

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext


@click.group("kubernetes", cls=OrderedGroup, no_args_is_help=True)
def kubernetes_group() -> None:
    """The team as Kubernetes objects, on paper: checked against the API's schemas, not
    yet run on a cluster."""


@kubernetes_group.command("render")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    metavar="DIR",
    help="Write one YAML file per object into this new (or empty) folder; "
    "default: all of them to standard output.",
)
@click.option("--namespace", metavar="NS", help="The namespace (default: the instance's name).")
@click.option(
    "--host-name",
    metavar="NAME",
    help="The name the Ingress answers to (default: the first of the `host_names` setting).",
)
@click.option(
    "--user",
    "people",
    multiple=True,
    metavar="NAME",
    help="Only this person's objects (with the door's); again for more. Default: everyone.",
)
@click.option("--image", metavar="REF", help="The image as the cluster pulls it (a registry's).")
@click.option(
    "--volume-size",
    default="10Gi",
    show_default=True,
    metavar="SIZE",
    help="The size each volume claims (Ki, Mi, Gi, Ti).",
)
@click.option(
    "--ingress-namespace",
    default="ingress-nginx",
    show_default=True,
    metavar="NS",
    help="Where the Ingress controller runs: the only pods let in to the front door.",
)
@click.option(
    "--with-secrets",
    is_flag=True,
    help="Put the people's real internal passwords into the Secrets (default: placeholders).",
)
@click.pass_obj
def render(
    app_ctx: AppContext,
    out: Path | None,
    namespace: str | None,
    host_name: str | None,
    people: tuple[str, ...],
    image: str | None,
    volume_size: str,
    ingress_namespace: str,
    with_secrets: bool,
) -> None:
    """Write the team's Kubernetes manifests: a StatefulSet per person and one for the
    front door, their volume claims, Services, Secrets, NetworkPolicies and an Ingress,
    made from the same specs as the team's containers. Changes nothing here."""
    from opencode_cloud.kubernetes.render import (
        cluster_settings,
        render_team,
        to_yaml,
        write_folder,
    )

    team = app_ctx.team()
    cluster = cluster_settings(
        namespace=namespace or app_ctx.instance.service_prefix,
        host_name=host_name,
        known_host_names=app_ctx.config.host_names,
        volume_size=volume_size,
        image=image,
        ingress_namespace=ingress_namespace,
    )
    manifests = render_team(team, cluster, people=people, with_secrets=with_secrets)
    if out is None:
        app_ctx.out.result({"objects": manifests}, lambda: to_yaml(manifests).splitlines())
        return
    paths = write_folder(out, manifests)
    secrets = "the people's internal passwords" if with_secrets else "placeholders"
    app_ctx.out.result(
        {"out": str(paths[0].parent), "files": [str(p) for p in paths], "secrets": with_secrets},
        lambda: [
            f"Wrote {len(paths)} manifests to {paths[0].parent} (not yet run on a cluster).",
            f"  Its Secrets hold {secrets}; the Ingress's certificate is a placeholder.",
            f"  Apply with `kubectl apply -f {paths[0].parent}` once they are filled in.",
        ],
    )
