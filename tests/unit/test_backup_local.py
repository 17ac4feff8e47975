"""The local path of backups and restores, on an in-memory engine that runs the helper
container's program as a process on this machine (its volumes as folders): the archive
it writes is one `verify_archive` accepts, with the same lines the Engine API path gives;
the service is paused only while the SQLite files are copied; a restore unpacks every file
as it was, and refuses an archive that changed after it was checked.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from backup_helpers import (
    IMAGE,
    SOURCE,
    TARGET,
    flip_bit,
    make_instance,
    paths_of,
    read_member,
    volume_contents,
)
from fakes import SANDBOX_ENV, FakeEngine
from opencode_cloud.backup.archive import CHECKSUMS_NAME, KEYS_ENTRY, MANIFEST_NAME
from opencode_cloud.backup.create import create_backup
from opencode_cloud.backup.errors import InvalidBackup, ProgramFailed, RestoreFailed
from opencode_cloud.backup.restore import restore_backup
from opencode_cloud.backup.verify import verify_archive
from opencode_cloud.docker.image import LABEL_OPENCODE_VERSION
from opencode_cloud.instance import Instance

AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not AS_ROOT or shutil.which("tar") is None, reason="unpacking with owners needs root"
)


class MachineEngine(FakeEngine):
    """A fake engine on this machine: a helper container that runs a program runs it here,
    with each volume mount made a folder (from `volume_files`, and back after a restore)
    and each bind mount the very file."""

    def __init__(self, disk: Path) -> None:
        super().__init__()
        self.is_local = True
        self.disk = disk
        self.programs: dict[str, subprocess.Popen[bytes]] = {}
        self.events: list[str] = []  # what the program said, between the engine's calls

    def _mounts(self, name: str) -> list[dict[str, Any]]:
        return list(self._raw(name)["HostConfig"].get("Mounts") or [])

    def start_container(self, name: str) -> None:
        body = self._raw(name)
        entrypoint = body["Config"].get("Entrypoint") or []
        if entrypoint[:1] != ["python3"]:
            return super().start_container(name)
        self.calls.append(("start_container", name))
        root = self.disk / name
        root.mkdir(parents=True)
        where = {}
        for mount in self._mounts(name):
            if mount["Type"] == "volume":
                folder = root / mount["Target"].rsplit("/", 1)[-1]
                self._to_folder(mount["Source"], folder)
                where[mount["Target"].rsplit("/", 1)[0]] = str(root)
            else:
                where[mount["Target"]] = mount["Source"]
        action, raw_args = body["Config"]["Cmd"]
        args = {
            key: where.get(value, value) if isinstance(value, str) else value
            for key, value in json.loads(raw_args).items()
        }
        self.programs[name] = subprocess.Popen(
            [sys.executable, *entrypoint[1:], action, json.dumps(args)],
            stdout=subprocess.PIPE,
        )
        self._raw(name)["State"].update(Status="running", Running=True)

    def _to_folder(self, volume: str, folder: Path) -> None:
        folder.mkdir()
        files = self.volume_files.get(volume, {})
        with tarfile.open(self.disk / f"{volume}.tar", "w") as tar:
            for rel, (info, content) in sorted(files.items()):
                entry = tarfile.TarInfo(rel or ".")
                for field in ("type", "mode", "uid", "gid", "mtime", "size", "linkname"):
                    setattr(entry, field, getattr(info, field))
                tar.addfile(entry, io.BytesIO(content) if info.isreg() else None)
        with tarfile.open(self.disk / f"{volume}.tar") as tar:
            tar.extractall(folder, filter="fully_trusted")

    def _from_folder(self, volume: str, folder: Path) -> None:
        files: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
        with tarfile.open(os.devnull, "w") as reader:
            for path in [folder, *sorted(folder.rglob("*"))]:
                rel = "" if path == folder else str(path.relative_to(folder))
                info = reader.gettarinfo(str(path), rel)
                content = path.read_bytes() if info.isreg() else b""
                files[rel] = (info, content)
        self.volume_files[volume] = files

    def follow_output(self, name: str) -> Iterator[bytes]:
        stdout = self.programs[name].stdout
        assert stdout is not None
        for line in stdout:
            self.events.append(line.decode().split(" ", 1)[0].strip())
            yield line

    def kill_container(self, name: str, signal_name: str) -> None:
        super().kill_container(name, signal_name)
        self.programs[name].send_signal(getattr(signal, signal_name))

    def remove_container(self, name: str, *, force: bool = False) -> None:
        program = self.programs.pop(name, None)
        if program is not None:
            try:
                program.wait(timeout=10)  # its last word said, it ends by itself
            except subprocess.TimeoutExpired:
                program.kill()
                program.wait()
            for mount in self._mounts(name):
                if mount["Type"] == "volume" and not mount["ReadOnly"]:
                    folder = self.disk / name / mount["Target"].rsplit("/", 1)[-1]
                    self._from_folder(mount["Source"], folder)
        super().remove_container(name, force=True)


@pytest.fixture
def engine(tmp_path: Path) -> MachineEngine:
    engine = MachineEngine(tmp_path / "engine")
    engine.add_image(IMAGE, env=SANDBOX_ENV, labels={LABEL_OPENCODE_VERSION: "1.18.33"})
    return engine


def backed_up(
    engine: FakeEngine, tmp_path: Path, name: str = "a.tar", *, include_keys: bool = False
) -> Path:
    paths = paths_of(SOURCE, tmp_path / "config")
    paths.config_file.write_text('{"port": 3001}\n')
    target = tmp_path / name
    create_backup(engine, SOURCE, paths, target, helper_image=IMAGE, include_keys=include_keys)
    return target


def checksum_lines(archive: Path) -> list[dict[str, Any]]:
    with tarfile.open(archive) as tar:
        listed = tar.extractfile(CHECKSUMS_NAME)
        assert listed is not None
        return [json.loads(line) for line in listed.read().decode().splitlines()[1:]]


def test_the_archive_verifies_and_lists_what_the_api_path_lists(
    engine: MachineEngine, tmp_path: Path
) -> None:
    make_instance(engine, SOURCE)
    engine.write_volume_file(SOURCE.volume_name("projects"), "a/b/c/deep.txt", b"deep\n")
    local = backed_up(engine, tmp_path, "local.tar")
    engine.is_local = False
    streamed = backed_up(engine, tmp_path, "streamed.tar")

    with verify_archive(local) as verified:
        assert verified.entries == len(checksum_lines(local))
    with tarfile.open(local) as tar:
        names = tar.getnames()
        manifest = json.loads(read_member(tar, MANIFEST_NAME))
    assert names[0] == MANIFEST_NAME and names[-1] == CHECKSUMS_NAME
    assert manifest["consistency"] == "databases-paused"
    # opencode's key store stays out unless asked for, on both paths.
    assert KEYS_ENTRY not in names and "volumes/session/opencode.db" in names
    with tarfile.open(backed_up(engine, tmp_path, "keys.tar", include_keys=True)) as tar:
        assert KEYS_ENTRY in tar.getnames()
    engine.is_local = True
    with tarfile.open(backed_up(engine, tmp_path, "keys-local.tar", include_keys=True)) as tar:
        assert KEYS_ENTRY in tar.getnames()
    assert (local.stat().st_mode & 0o777) == 0o600

    def by_path(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # Times (and, unless root, owners) are the folders' own on disk; the in-memory
        # engine's links have no mode of their own and its empty volumes no root entry.
        owners = {} if AS_ROOT else {"uid": 0, "gid": 0}
        return {
            line["path"]: {**line, "mtime": 0, **owners}
            | ({"mode": 0o777} if line["type"] == "symlink" else {})
            for line in lines
        }

    listed, streamed_listed = by_path(checksum_lines(local)), by_path(checksum_lines(streamed))
    assert {path: listed[path] for path in streamed_listed} == streamed_listed
    assert set(listed) - set(streamed_listed) == {"volumes/state", "volumes/config"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers
    assert set(engine.containers) == {SOURCE.container_name}


def test_the_service_is_paused_only_while_the_databases_are_copied(
    engine: MachineEngine, tmp_path: Path
) -> None:
    make_instance(engine, SOURCE)
    archive = backed_up(engine, tmp_path)
    calls = [call for call, _ in engine.calls]
    pause, unpause = calls.index("pause_container"), calls.index("unpause_container")
    assert pause < calls.index("kill_container") < unpause
    # The databases, and the folders leading to them, come first.
    names = [line["path"] for line in checksum_lines(archive)]
    volumes = [n for n in names if n.startswith("volumes/")]
    assert volumes[:3] == [
        "volumes/session",
        "volumes/session/opencode.db",
        "volumes/session/opencode.db-wal",
    ]
    assert engine.inspect_container(SOURCE.container_name).running


def test_a_failing_program_leaves_no_file_and_the_service_running(
    engine: MachineEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_instance(engine, SOURCE)
    original = engine.start_container

    def broken(name: str) -> None:
        body = engine._raw(name)["Config"]
        if body.get("Cmd"):
            action, raw = body["Cmd"]
            body["Cmd"] = [action, json.dumps({**json.loads(raw), "archive": "/nonexistent/a.tar"})]
        original(name)

    monkeypatch.setattr(engine, "start_container", broken)
    with pytest.raises(ProgramFailed):
        backed_up(engine, tmp_path)
    assert list(tmp_path.glob("*.tar")) == [] and not list(tmp_path.glob(".a.tar*"))
    assert engine.inspect_container(SOURCE.container_name).running
    assert set(engine.containers) == {SOURCE.container_name}


@needs_root
def test_restore_unpacks_every_file_as_it_was(engine: MachineEngine, tmp_path: Path) -> None:
    make_instance(engine, SOURCE)
    archive = backed_up(engine, tmp_path, include_keys=True)
    target_paths = paths_of(TARGET, tmp_path / "config")
    with verify_archive(archive) as verified:
        result = restore_backup(
            engine, TARGET, target_paths, verified, helper_image=IMAGE, confirmed=True
        )
    assert result.entries == verified.entries

    def on_disk(instance: Instance) -> dict[str, dict[str, tuple[Any, ...]]]:
        # As files on disk are: links have no mode of their own, a volume has its root.
        return {
            kind: {
                path: (kind_, 0o777 if kind_ == tarfile.SYMTYPE else mode, *rest)
                for path, (kind_, mode, *rest) in files.items()
            }
            | ({} if files else {"": (tarfile.DIRTYPE, 0o755, 0, b"", "")})
            for kind, files in volume_contents(engine, instance).items()
        }

    assert on_disk(TARGET) == on_disk(SOURCE)
    assert target_paths.config_file.read_text() == '{"port": 3001}\n'


@needs_root
def test_an_archive_changed_after_its_check_is_refused(
    engine: MachineEngine, tmp_path: Path
) -> None:
    make_instance(engine, SOURCE)
    archive = backed_up(engine, tmp_path)
    with verify_archive(archive) as verified:
        flip_bit(archive, "volumes/projects/big.bin", 5, 0x01)
        with pytest.raises(RestoreFailed) as failed:
            restore_backup(
                engine,
                Instance("unit-c"),
                paths_of(Instance("unit-c"), tmp_path / "config"),
                verified,
                helper_image=IMAGE,
                confirmed=True,
            )
    assert isinstance(failed.value.__cause__, InvalidBackup)
    assert "changed while it was restored" in failed.value.message


def test_an_engine_elsewhere_falls_back_to_the_api(
    engine: MachineEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket that is local but leads to another machine: the archive file cannot be
    mounted there, so the backup streams through the API (nothing half written)."""
    from opencode_cloud.docker.errors import DockerError

    make_instance(engine, SOURCE)
    original = engine.create_container

    def elsewhere(name: str, body: Mapping[str, Any]) -> str:
        if any(m["Type"] == "bind" for m in body["HostConfig"]["Mounts"]):
            raise DockerError(
                'Docker engine error: invalid mount config for type "bind": bind source '
                "path does not exist: /somewhere"
            )
        return original(name, body)

    monkeypatch.setattr(engine, "create_container", elsewhere)
    archive = backed_up(engine, tmp_path)
    assert "get_archive" in [call for call, _ in engine.calls]
    with verify_archive(archive) as verified:
        assert verified.manifest.consistency == "paused"


@needs_root
def test_an_empty_instance_is_restored_in_one_pass_or_left_empty(
    engine: MachineEngine, tmp_path: Path
) -> None:
    make_instance(engine, SOURCE)
    archive = backed_up(engine, tmp_path)
    target_paths = paths_of(TARGET, tmp_path / "config")
    with verify_archive(archive, contents=False) as layout:
        restore_backup(engine, TARGET, target_paths, layout, helper_image=IMAGE, confirmed=True)
    assert (
        volume_contents(engine, TARGET)["projects"] == volume_contents(engine, SOURCE)["projects"]
    )

    damaged = tmp_path / "damaged.tar"
    data = bytearray(archive.read_bytes())
    with tarfile.open(archive) as tar:
        member = tar.getmember("volumes/session/opencode.db")
    data[member.offset_data + 7] ^= 0x10
    damaged.write_bytes(data)
    other = Instance("unit-c")
    with (
        verify_archive(damaged, contents=False) as layout,
        pytest.raises(InvalidBackup) as refused,
    ):
        restore_backup(
            engine,
            other,
            paths_of(other, tmp_path / "config"),
            layout,
            helper_image=IMAGE,
            confirmed=True,
        )
    assert "volumes/session/opencode.db does not match its checksum" in refused.value.message
    assert engine.list_volumes(labels=[f"io.opencode-cloud.instance={other.name}"]) == []
    assert not [name for name in engine.containers if name.startswith(other.prefix)]
