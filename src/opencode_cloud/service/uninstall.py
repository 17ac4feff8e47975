"""`occ uninstall`: remove one instance, and only what the tool made for it.

What goes: the instance's containers (the service and any helper a killed backup left),
the sandbox images its container and configuration use when no other container uses
them (with the build stage an earlier release left for them), its volumes only when
asked, and its files in the configuration directory (config.json and its .bak, the
password and its hash, the lock). Every container, image and volume is checked for the
tool's labels (`io.opencode-cloud.*`) before it is touched: anything else is never
removed, whatever its name.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.docker.errors import DockerError
from opencode_cloud.docker.image import (
    LABEL_BASE_ID,
    LABEL_BASE_REF,
    LABEL_OPENCODE_VERSION,
    LABEL_STAGE,
)
from opencode_cloud.docker.models import ImageInfo
from opencode_cloud.docker.volume import VOLUME_SPECS, volume_names
from opencode_cloud.instance import LABEL_INSTANCE, LABEL_MANAGED, Instance
from opencode_cloud.service.snapshots import LABEL_SNAPSHOT_IMAGE

if TYPE_CHECKING:
    from opencode_cloud.docker.engine import Engine


@dataclass
class KeptImage:
    image: str
    reason: str


@dataclass
class UninstallPlan:
    """What `uninstall` removes (and what it keeps, and why)."""

    instance: str
    containers: list[str] = field(default_factory=list)
    images: list[ImageInfo] = field(default_factory=list)
    kept_images: list[KeptImage] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    # Volumes kept: not asked for (`--volumes`), or not labelled as this instance's.
    kept_volumes: list[str] = field(default_factory=list)
    foreign_volumes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)  # team mode's

    @property
    def empty(self) -> bool:
        """Nothing to remove but the lock file (which the command itself holds)."""
        files = [f for f in self.files if f.name != ".lock"]
        return not (self.containers or self.images or self.volumes or files or self.networks)

    def lines(self) -> list[str]:
        """What will go, in words, one thing a line."""
        out = [f"container {name}" for name in self.containers]
        out += [f"image {describe_image(image)}" for image in self.images]
        out += [f"volume {name}" for name in self.volumes]
        out += [f"network {name}" for name in self.networks]
        out += [f"file {path}" for path in self.files]
        return out


@dataclass
class UninstallResult:
    instance: str
    containers: list[str]
    images: list[str]
    kept_images: list[KeptImage]
    volumes: list[str]
    kept_volumes: list[str]
    foreign_volumes: list[str]
    files: list[str]
    backup: dict[str, Any] | None = None
    networks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def describe_image(image: ImageInfo) -> str:
    short = image.id.removeprefix("sha256:")[:12]
    return f"{image.tags[0]} ({short})" if image.tags else short


def _is_tools(labels: dict[str, str] | Any, instance: Instance | None = None) -> bool:
    if (labels or {}).get(LABEL_MANAGED) != "true":
        return False
    return instance is None or labels.get(LABEL_INSTANCE) == instance.name


def plan_uninstall(
    client: Engine,
    instance: Instance,
    paths: InstancePaths,
    *,
    volumes: bool,
    configured_image: str | None = None,
) -> UninstallPlan:
    """Decide what `uninstall` removes; nothing is changed.

    Args:
        volumes: remove the instance's volumes too.
        configured_image: the image the instance's configuration names (its override,
            or the sandbox image of its opencode version).
    """
    plan = UninstallPlan(instance.name)
    plan.containers = client.list_containers(labels=instance.label_filter())
    plan.networks = client.list_networks(labels=instance.label_filter())
    own = {name: client.find_container(name) for name in plan.containers}
    wanted: list[str] = [info.image_id for info in own.values() if info is not None]
    if configured_image:
        wanted.append(configured_image)
    for spec in VOLUME_SPECS:
        name = instance.volume_name(spec.kind)
        info = client.inspect_volume(name)
        if info is None:
            continue
        if not _is_tools(dict(info.labels), instance):
            plan.foreign_volumes.append(name)
        elif volumes:
            plan.volumes.append(name)
        else:
            plan.kept_volumes.append(name)
    # The instance's other volumes: snapshots `occ update` keeps, and their images.
    main = set(volume_names(instance))
    for info in client.list_volumes(labels=instance.label_filter()):
        if info.name in main:
            continue
        (plan.volumes if volumes else plan.kept_volumes).append(info.name)
        if volumes and info.labels.get(LABEL_SNAPSHOT_IMAGE):
            wanted.append(info.labels[LABEL_SNAPSHOT_IMAGE])
    # The base of a derived image (`extra_packages`) goes with it, unless another uses it.
    for ref in list(wanted):
        image = client.inspect_image(ref)
        if image is not None and image.labels.get(LABEL_BASE_REF):
            wanted.append(image.labels[LABEL_BASE_REF])
    _plan_images(client, plan, wanted, set(plan.containers))
    files = (
        paths.config_file,
        paths.config_backup_file,
        paths.password_file,
        paths.password_hash_file,
        paths.team_file,
        paths.edge_state_file,
        paths.lock_file,
    )
    plan.files = [path for path in files if path.exists()]
    # The edge's certificate and the instance's CA, its private key included: a key of a
    # CA someone trusted must not outlive the instance.
    tls_folder = paths.root / "tls"
    if tls_folder.is_dir():
        plan.files += sorted(p for p in tls_folder.iterdir() if p.is_file() or p.is_symlink())
    return plan


def _plan_images(client: Engine, plan: UninstallPlan, wanted: list[str], own: set[str]) -> None:
    """The tool's sandbox images among `wanted` that no other container uses, and the
    build stage of each opencode version that no image left behind still has."""
    used_by: dict[str, str] = {}
    for name in client.list_containers():
        if name in own:
            continue
        info = client.find_container(name)
        if info is not None:
            used_by.setdefault(info.image_id, name)
            # A derived image's container needs its base too (the labels are the image's).
            if info.labels.get(LABEL_BASE_ID):
                used_by.setdefault(info.labels[LABEL_BASE_ID], name)
    seen: set[str] = set()
    for ref in wanted:
        image = client.inspect_image(ref)
        if image is None or image.id in seen:
            continue
        seen.add(image.id)
        if LABEL_OPENCODE_VERSION not in image.labels:
            plan.kept_images.append(KeptImage(ref, "not an opencode-cloud sandbox image"))
        elif image.id in used_by:
            plan.kept_images.append(
                KeptImage(describe_image(image), f"used by container {used_by[image.id]}")
            )
        else:
            plan.images.append(image)
    removed_versions = {i.labels[LABEL_OPENCODE_VERSION] for i in plan.images}
    if not removed_versions:
        return
    remaining = [
        i
        for i in client.list_images(labels=[LABEL_OPENCODE_VERSION])
        if i.id not in seen and LABEL_STAGE not in i.labels
    ]
    still_built = {i.labels.get(LABEL_OPENCODE_VERSION) for i in remaining}
    for stage in client.list_images(labels=[f"{LABEL_STAGE}=build"]):
        version = stage.labels.get(LABEL_OPENCODE_VERSION)
        if version in removed_versions and version not in still_built and stage.id not in seen:
            seen.add(stage.id)
            plan.images.append(stage)


def uninstall(
    client: Engine, instance: Instance, paths: InstancePaths, plan: UninstallPlan
) -> UninstallResult:
    """Remove what `plan` names. An image the engine refuses to remove (a container
    started meanwhile uses it) is kept and said so; nothing else is touched.

    Raises:
        VolumeInUse: a container not removed here mounts one of the volumes (checked
            before anything is removed).
        DockerError.
    """
    from opencode_cloud.docker.errors import VolumeInUse
    from opencode_cloud.docker.helper import remove_stale_helpers

    for name in plan.volumes:
        users = [u for u in client.list_containers(volume=name) if u not in plan.containers]
        if users:
            raise VolumeInUse(name, users)
    removed_containers: list[str] = []
    for name in plan.containers:
        info = client.find_container(name)
        if info is None or not _is_tools(dict(info.labels), instance):
            continue
        client.remove_container(name, force=True)
        removed_containers.append(name)
    remove_stale_helpers(client, instance)
    removed_images: list[str] = []
    kept = list(plan.kept_images)
    for image in plan.images:
        try:
            _remove_image(client, image)
            removed_images.append(describe_image(image))
        except DockerError as exc:
            kept.append(KeptImage(describe_image(image), str(exc)))
    for name in plan.volumes:
        client.remove_volume(name)
    for name in plan.networks:  # their containers are gone
        client.remove_network(name)
    removed_files: list[str] = []
    for path in plan.files:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed_files.append(str(path))
    with contextlib.suppress(OSError):  # only when nothing else is left in it
        (paths.root / "tls").rmdir()
    if not instance.is_default:
        with contextlib.suppress(OSError):  # only when nothing else is left in it
            paths.root.rmdir()
    return UninstallResult(
        instance=instance.name,
        containers=removed_containers,
        images=removed_images,
        kept_images=kept,
        volumes=list(plan.volumes),
        kept_volumes=list(plan.kept_volumes),
        foreign_volumes=list(plan.foreign_volumes),
        files=removed_files,
        networks=list(plan.networks),
    )


def _remove_image(client: Engine, image: ImageInfo) -> None:
    """Remove an image by each of its names (the last one removes the image), or by id
    when it has none. Never forced: the engine refuses while a container uses it."""
    if not image.tags:
        client.remove_image(image.id)
        return
    for tag in image.tags:
        client.remove_image(tag)
