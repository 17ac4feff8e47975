"""`occ kubernetes render`: a team's objects, made from the specs its containers are made
from on Docker (`door.door_spec`, `Team.person_spec` with each person's limits), as YAML.

The cluster differs from Docker in three ways, each made here on the spec itself: the
front door serves plain HTTP behind the Ingress, which holds the certificate; it has no
starter (nothing on a cluster may hold a Docker socket), so it stops nobody's instance
when idle and has no starter's volume; and the people's internal passwords are Secrets,
written only with `with_secrets`, else placeholders.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from opencode_cloud.defaults import CONTAINER_PORT
from opencode_cloud.instance import LABEL_CONFIG_HASH
from opencode_cloud.kubernetes.errors import (
    BadClusterValue,
    NoHostName,
    OutFolderNotEmpty,
    OutFolderUnwritable,
)
from opencode_cloud.kubernetes.manifests import (
    HEADER,
    Cluster,
    Manifest,
    Workload,
    placeholder,
    team_manifests,
)
from opencode_cloud.team.door import door_spec
from opencode_cloud.team.errors import PersonNotFound
from opencode_cloud.team.layout import PERSON_PORT, STARTER_DIR
from opencode_cloud.team.people import internal_password_file

if TYPE_CHECKING:
    from opencode_cloud.docker.spec import ContainerSpec
    from opencode_cloud.team.team import Team

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A name, not an address: its last label is not a number.
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)(?!.*\.[0-9]+$)"
    r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)+$"
)
_QUANTITY = re.compile(r"^[1-9][0-9]*(Ki|Mi|Gi|Ti|Pi)$")


def cluster_settings(
    *,
    namespace: str,
    host_name: str | None,
    known_host_names: Sequence[str],
    volume_size: str,
    image: str | None,
    ingress_namespace: str,
) -> Cluster:
    """The cluster's side, checked: the Ingress answers to `host_name`, else to the first
    DNS name of the configuration's `host_names`.

    Raises:
        NoHostName, BadClusterValue.
    """
    if host_name is None:
        host_name = next((n.lower() for n in known_host_names if _DNS_NAME.match(n.lower())), None)
        if host_name is None:
            raise NoHostName()
    for option, value, rule, pattern in (
        ("namespace", namespace, "a DNS label of up to 63 characters", _DNS_LABEL),
        ("ingress namespace", ingress_namespace, "a DNS label of up to 63 characters", _DNS_LABEL),
        ("host name", host_name, "a DNS name with a dot, in lower case", _DNS_NAME),
        ("volume size", volume_size, "a whole number with Ki, Mi, Gi, Ti or Pi", _QUANTITY),
    ):
        if not pattern.match(value):
            raise BadClusterValue(option, value, rule)
    if image is not None and (not image or any(c.isspace() for c in image)):
        raise BadClusterValue("image", image, "an image reference without spaces")
    return Cluster(
        namespace=namespace,
        host_name=host_name,
        volume_size=volume_size,
        image=image,
        ingress_namespace=ingress_namespace,
    )


def render_team(
    team: Team, cluster: Cluster, *, people: Sequence[str] = (), with_secrets: bool = False
) -> list[Manifest]:
    """The team's objects: its door and `people` (default: everyone).

    Raises:
        InvalidPersonName, PersonNotFound, NotRenderable, DockerError.
    """
    everyone = team.person_names()
    for name in people:
        team.layout.person(name)  # checks the name
        if name not in everyone:
            raise PersonNotFound(name)
    chosen = list(dict.fromkeys(people)) or everyone
    door = Workload(cluster_door(team), CONTAINER_PORT)
    workloads = [
        Workload(
            team.person_spec(name, team.person_limits(name)),
            PERSON_PORT,
            internal_password_file(
                team.internal_password(name)
                if with_secrets
                else placeholder(f"{name}'s internal password (rendered with --with-secrets)")
            ),
        )
        for name in chosen
    ]
    return team_manifests(door, workloads, cluster)


def cluster_door(team: Team) -> ContainerSpec:
    """The front door's spec as on Docker, but for what a cluster does otherwise: TLS
    ends at the Ingress, and no starter stops or starts the people's pods (their
    StatefulSets keep them running)."""
    from opencode_cloud.service.image import image_for

    spec = door_spec(
        team.config, team.layout, image=image_for(team.config), image_id=None, idle_stop_seconds=0
    )
    spec = replace(spec, tls="off", mounts=tuple(m for m in spec.mounts if m.target != STARTER_DIR))
    return replace(spec, labels={**spec.labels, LABEL_CONFIG_HASH: spec.config_hash()})


# -- the text and the files ---------------------------------------------------------------------


def _comment(text: str) -> str:
    return "".join(f"# {line}\n" for line in text.splitlines())


def to_yaml(manifests: Sequence[Manifest]) -> str:
    """Every object in one YAML stream, after the header that says it was not yet run."""
    import yaml

    body = yaml.safe_dump_all(manifests, sort_keys=False, default_flow_style=False, width=100)
    return _comment(HEADER) + "---\n" + body


def file_names(manifests: Sequence[Manifest]) -> list[str]:
    """One file name for each object, numbered in the order they apply in."""
    return [
        f"{index:02d}-{m['kind'].lower()}-{m['metadata']['name']}.yaml"
        for index, m in enumerate(manifests)
    ]


def write_folder(out: Path, manifests: Sequence[Manifest]) -> list[Path]:
    """One YAML file per object in `out`, a folder that does not exist yet or is empty,
    readable by its owner only (Secrets may be in it). All or nothing: the files are
    written beside it first and the folder moved into place.

    Raises:
        OutFolderNotEmpty, OutFolderUnwritable.
    """
    import yaml

    out = Path(os.path.abspath(out))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutFolderNotEmpty(out)
    if not out.parent.is_dir():
        raise OutFolderUnwritable(out, f"{out.parent} is not a folder")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as error:
        raise OutFolderUnwritable(out, error.strerror or str(error)) from None
    try:
        names = file_names(manifests)
        for name, manifest in zip(names, manifests, strict=True):
            text = yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False, width=100)
            path = staging / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(_comment(HEADER) + text)
        os.replace(staging, out)  # onto an empty folder, or where none was
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutFolderUnwritable(out, error.strerror or str(error)) from None
    return [out / name for name in names]
