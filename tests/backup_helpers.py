"""The instances the unit tests of backups and restores work with, on the in-memory engine:
volumes with files of every kind, where their configuration lives, what they hold."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from fakes import FakeEngine
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.docker.volume import VOLUME_SPECS
from opencode_cloud.instance import Instance

IMAGE = "opencode-cloud-sandbox:1.18.33"
SOURCE = Instance("unit-a")
TARGET = Instance("unit-b")


def paths_of(instance: Instance, root: Path) -> InstancePaths:
    paths = InstancePaths(root / "instances" / instance.name)
    paths.root.mkdir(parents=True, exist_ok=True)
    return paths


def make_instance(engine: FakeEngine, instance: Instance, *, running: bool = True) -> None:
    """Volumes with files of each kind, and the service container mounting them."""
    for spec in VOLUME_SPECS:
        engine.create_volume(instance.volume_name(spec.kind), instance.labels("volume"))
    home, session = instance.volume_name("home"), instance.volume_name("session")
    engine.write_volume_file(home, ".gitconfig", b"[user]\n\tname = Ada\n")
    engine.write_volume_file(home, ".ssh", None, mode=0o700)
    engine.write_volume_file(home, ".ssh/id_ed25519", b"secret key", mode=0o600)
    engine.write_volume_file(home, "latest", link=".gitconfig")
    engine.write_volume_file(session, "opencode.db", os.urandom(3000))
    engine.write_volume_file(session, "opencode.db-wal", os.urandom(5000))
    engine.write_volume_file(session, "auth.json", b'{"anthropic": "sk-..."}', mode=0o600)
    engine.write_volume_file(instance.volume_name("projects"), "app/main.py", b"print(1)\n")
    engine.write_volume_file(instance.volume_name("projects"), "big.bin", os.urandom(300_000))
    mounts = [
        {"Type": "volume", "Source": instance.volume_name(s.kind), "Target": s.mount_point}
        for s in VOLUME_SPECS
    ]
    engine.create_container(
        instance.container_name,
        {"Image": IMAGE, "Labels": instance.labels("service"), "HostConfig": {"Mounts": mounts}},
    )
    if running:
        engine.start_container(instance.container_name)


VolumeEntry = tuple[bytes, int, int, bytes, str]  # type, mode, uid, content, link


def volume_contents(engine: FakeEngine, instance: Instance) -> dict[str, dict[str, VolumeEntry]]:
    """Each volume's files as (type, mode, uid, content, link), by kind."""
    return {
        spec.kind: {
            path: (info.type, info.mode & 0o7777, info.uid, content, info.linkname)
            for path, (info, content) in engine.volume_files.get(
                instance.volume_name(spec.kind), {}
            ).items()
        }
        for spec in VOLUME_SPECS
    }


def flip_bit(archive: Path, name: str, offset: int, mask: int) -> None:
    """Corrupt one byte of the archive member `name`, in place: what a bad disk does."""
    data = bytearray(archive.read_bytes())
    with tarfile.open(archive) as tar:
        member = tar.getmember(name)
    data[member.offset_data + offset] ^= mask
    archive.write_bytes(data)


def read_member(tar: tarfile.TarFile, name: str | tarfile.TarInfo) -> bytes:
    """The content of a regular file of an archive."""
    found = tar.extractfile(name)
    assert found is not None, f"{name} is not a regular file of the archive"
    return found.read()
