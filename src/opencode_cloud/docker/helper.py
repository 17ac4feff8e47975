"""Short-lived helper containers: one description, one hardening.

The tool makes helper containers from a sandbox image to work on an instance's volumes
without its service: copying opencode's data into snapshot volumes and back
(`copy_volumes`), and reading or writing the volumes of a backup (`backup/`).
Each is described by a `HelperSpec`, whose `create_body` gives every one the same
hardening whatever it does: no network, every Linux capability dropped but the few it
names, no new privileges, limits on memory and processes, and the labels of its
instance, its role and `LABEL_HELPER`, by which a helper that a killed command left
behind is found again (`remove_stale_helpers`).
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opencode_cloud import interrupts
from opencode_cloud.docker.errors import DockerError
from opencode_cloud.docker.image import LABEL_OPENCODE_VERSION, LABEL_STAGE
from opencode_cloud.docker.models import Mount
from opencode_cloud.docker.spec import NO_NEW_PRIVILEGES
from opencode_cloud.errors import OpencodeCloudError
from opencode_cloud.instance import LABEL_PREFIX

if TYPE_CHECKING:
    from opencode_cloud.docker.engine import Engine
    from opencode_cloud.instance import Instance

LABEL_HELPER = f"{LABEL_PREFIX}.helper"
# Enough for `cp`, GNU tar, or a Python program hashing on a second CPU; the page cache
# of what they copy is the kernel's to reclaim within the limit.
HELPER_MEMORY_BYTES = 1 << 30
HELPER_PIDS_LIMIT = 256
# The engine's words when a bind mount's source is not on its machine (Docker Desktop:
# not among the folders it shares).
_NOT_HERE = ("bind source path does not exist", "mounts denied")


class NotOnThisMachine(Exception):
    """The engine cannot mount a file of this machine: it does not run here after all.
    Nothing was made."""


@dataclass(frozen=True)
class HelperSpec:
    """A helper container for one task on `instance`'s volumes.

    Attributes:
        role: what it is for (its `io.opencode-cloud.role` label and part of its name).
        entrypoint, args: what it runs (Entrypoint and Cmd); `/bin/true` for a helper
            that is never started (the Engine API reads and writes its mounts).
        mounts: volumes and files of this machine (`bind`) it mounts; a volume is never
            filled from the image's files at its mount point.
        capabilities: the Linux capabilities it keeps (every other one is dropped).
        user: who it runs as inside (`0:0`: root, confined as above).
    """

    instance: Instance
    role: str
    image: str
    entrypoint: tuple[str, ...] = ("/bin/true",)
    args: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    capabilities: tuple[str, ...] = ()
    user: str = "0:0"

    def create_body(self) -> dict[str, Any]:
        """The Engine API's `POST /containers/create` body of this helper."""
        return {
            "Image": self.image,
            "Entrypoint": list(self.entrypoint),
            "Cmd": list(self.args),
            "User": self.user,
            "Labels": {**self.instance.labels(self.role), LABEL_HELPER: "true"},
            "NetworkDisabled": True,
            "HostConfig": {
                "NetworkMode": "none",
                "AutoRemove": False,
                "Mounts": [_mount(m) for m in self.mounts],
                "CapDrop": ["ALL"],
                "CapAdd": list(self.capabilities),
                "SecurityOpt": [NO_NEW_PRIVILEGES],
                "Privileged": False,
                "Memory": HELPER_MEMORY_BYTES,
                "PidsLimit": HELPER_PIDS_LIMIT,
            },
        }


def _mount(mount: Mount) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Type": mount.type,
        "Source": mount.source,
        "Target": mount.target,
        "ReadOnly": mount.read_only,
    }
    if mount.type == "volume":
        body["VolumeOptions"] = {"NoCopy": True}
    return body


def create_helper(client: Engine, spec: HelperSpec) -> str:
    """Create the helper `spec` describes (not started), under a name of its own
    (`<instance prefix>-<role>-<random>`); its name.

    Raises:
        NotOnThisMachine: it mounts a file of this machine, which the engine does not see.
        DockerError.
    """
    name = f"{spec.instance.prefix}-{spec.role}-{secrets.token_hex(3)}"
    try:
        client.create_container(name, spec.create_body())
    except DockerError as exc:
        if any(words in str(exc) for words in _NOT_HERE):
            raise NotOnThisMachine(str(exc)) from exc
        raise
    return name


@contextlib.contextmanager
def helper_container(client: Engine, spec: HelperSpec) -> Iterator[str]:
    """The helper `spec` describes, made for the block and removed after it, whatever
    happens (a running one is killed; Ctrl-C waits for the removal).

    Raises:
        NotOnThisMachine, DockerError: when it cannot be made.
    """
    name = create_helper(client, spec)
    try:
        yield name
    finally:
        with interrupts.held():
            client.remove_container(name, force=True)


def remove_stale_helpers(client: Engine, instance: Instance) -> list[str]:
    """Remove helper containers of `instance` that a killed command left behind (the
    caller holds the instance's lock, so none of them is at work)."""
    names = client.list_containers(labels=[*instance.label_filter(), f"{LABEL_HELPER}=true"])
    for name in names:
        with contextlib.suppress(OpencodeCloudError):
            client.remove_container(name, force=True)
    return names


def helper_image(client: Engine, preferred: Sequence[str] = ()) -> str | None:
    """An image a helper can be made from: the first of `preferred` that is present, else
    any local sandbox image (never the build stage). None when there is none."""
    for ref in preferred:
        if ref and client.inspect_image(ref) is not None:
            return ref
    for image in client.list_images(labels=[LABEL_OPENCODE_VERSION]):
        if LABEL_STAGE not in image.labels:
            return image.tags[0] if image.tags else image.id
    return None


# Seconds a copy between volumes may take (they hold opencode's data, not projects).
COPY_TIMEOUT = 600
COPY_ROLE = "copy-helper"
# Root copies every file whatever its owner, and keeps owners, modes and times.
COPY_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER")


def copy_command(
    pairs: Sequence[tuple[str, str]],
    *,
    replace: bool = False,
    keep: Mapping[str, Sequence[str]] | None = None,
) -> tuple[tuple[str, ...], tuple[Mount, ...]]:
    """What copies each source volume into its destination volume (`copy_volumes`), in a
    container of the sandbox image with `COPY_CAPABILITIES`: its command, and the mounts
    it needs (each source read-only at `/from/N`, each destination at `/to/N`)."""
    steps = []
    mounts = []
    for index, (source, destination) in enumerate(pairs):
        names = (keep or {}).get(destination, ()) if replace else ()
        kept = " ".join(f"! -name {shlex.quote(name)}" for name in names)
        mounts.append(Mount("volume", source, f"/from/{index}", read_only=True))
        mounts.append(Mount("volume", destination, f"/to/{index}"))
        if kept:
            # Entry by entry, so that no kept name is written; links are copied as links.
            steps.append(
                f"find /to/{index} -mindepth 1 -maxdepth 1 {kept} -exec rm -rf {{}} +"
                f" && find /from/{index} -mindepth 1 -maxdepth 1 {kept}"
                f" -exec cp -a {{}} /to/{index}/ \\;"
            )
            continue
        if replace:
            steps.append(f"find /to/{index} -mindepth 1 -delete")
        steps.append(f"cp -a /from/{index}/. /to/{index}/")
    return ("sh", "-c", " && ".join(steps)), tuple(mounts)


def copy_volumes(
    client: Engine,
    instance: Instance,
    pairs: Sequence[tuple[str, str]],
    *,
    image: str,
    replace: bool = False,
    keep: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Copy the files of each source volume into its destination volume, owners, modes
    and times kept, in one helper container of `image` (which needs `sh` and `cp`; the
    sandbox image has them).

    Args:
        pairs: (source, destination) volume names.
        replace: empty each destination first (restoring), rather than adding to it.
        keep: destination volume to the names of its top-level entries that a replacing
            copy leaves as they are (there or absent), whatever the source holds.

    Raises:
        DockerError: the copy failed; its output is in the message.
    """
    command, mounts = copy_command(pairs, replace=replace, keep=keep)
    spec = HelperSpec(
        instance,
        COPY_ROLE,
        image,
        entrypoint=command,
        mounts=mounts,
        capabilities=COPY_CAPABILITIES,
    )
    with helper_container(client, spec) as name:
        client.start_container(name)
        code = client.wait_container(name, COPY_TIMEOUT)
        if code != 0:
            output = b"".join(client.container_logs(name, tail=5)).decode(errors="replace")
            raise DockerError(f"Copying volumes failed (exit code {code}): {output.strip()}")
