"""Backups, restores and uninstall on the in-memory engine: the archive's layout and
manifest, checks that refuse truncated, damaged and foreign files before anything is
touched, the pause that always ends, private files, and what uninstall removes or keeps.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backup_helpers import (
    IMAGE,
    SOURCE,
    TARGET,
    VolumeEntry,
    flip_bit,
    make_instance,
    paths_of,
    read_member,
    volume_contents,
)
from fakes import SANDBOX_ENV, FakeEngine
from opencode_cloud.backup.archive import CHECKSUMS_NAME, KEYS_ENTRY, MANIFEST_NAME
from opencode_cloud.backup.create import create_backup
from opencode_cloud.backup.errors import (
    BackupExists,
    ConfirmationNeeded,
    InvalidBackup,
    NothingToBackUp,
)
from opencode_cloud.backup.restore import restore_backup
from opencode_cloud.backup.verify import VerifiedBackup, verify_archive
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.docker.errors import DockerError
from opencode_cloud.docker.image import LABEL_OPENCODE_VERSION
from opencode_cloud.docker.volume import VOLUME_SPECS
from opencode_cloud.instance import Instance
from opencode_cloud.service.uninstall import plan_uninstall, uninstall


@pytest.fixture
def engine() -> FakeEngine:
    engine = FakeEngine()
    engine.add_image(IMAGE, env=SANDBOX_ENV, labels={LABEL_OPENCODE_VERSION: "1.18.33"})
    return engine


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OCC_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


def make_backup(
    engine: FakeEngine,
    tmp_path: Path,
    *,
    include_password: bool = False,
    include_keys: bool = False,
    running: bool = True,
) -> tuple[Path, InstancePaths]:
    make_instance(engine, SOURCE, running=running)
    paths = paths_of(SOURCE, tmp_path / "config")
    paths.config_file.write_text('{"port": 3001}\n')
    paths.password_file.write_text("pw-of-a\n")
    target = tmp_path / "a.tar"
    create_backup(
        engine,
        SOURCE,
        paths,
        target,
        helper_image=IMAGE,
        include_password=include_password,
        include_keys=include_keys,
    )
    return target, paths


# -- the archive ---------------------------------------------------------------------------


def test_archive_layout_manifest_and_privacy(engine: FakeEngine, tmp_path: Path) -> None:
    archive, _ = make_backup(engine, tmp_path)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.loads(read_member(tar, MANIFEST_NAME))
    assert names[0] == MANIFEST_NAME
    assert names[-1] == CHECKSUMS_NAME
    assert "config/config.json" in names
    assert "config/password" not in names  # only on request
    assert "volumes/session/opencode.db" in names
    assert "volumes/home/.ssh/id_ed25519" in names
    assert manifest["format"] == "opencode-cloud-backup"
    assert manifest["format_version"] == 1
    assert manifest["instance"] == SOURCE.name
    assert manifest["opencode_version"] == "1.18.33"
    assert manifest["consistency"] == "paused"
    assert [v["kind"] for v in manifest["volumes"]] == [s.kind for s in VOLUME_SPECS]
    assert manifest["volumes"][1]["mount_point"] == "/home/opencode/.local/share/opencode"
    # The helper container is gone; nothing else stays behind.
    assert set(engine.containers) == {SOURCE.container_name}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_every_entry_has_a_checksum_line(engine: FakeEngine, tmp_path: Path) -> None:
    archive, _ = make_backup(engine, tmp_path)
    with tarfile.open(archive) as tar:
        lines = read_member(tar, CHECKSUMS_NAME).decode().splitlines()
        listed = {json.loads(line)["path"]: json.loads(line) for line in lines[1:]}
        key = read_member(tar, "volumes/home/.ssh/id_ed25519")
        members = [m.name for m in tar.getmembers()][1:-1]
    assert list(listed) == members
    entry = listed["volumes/home/.ssh/id_ed25519"]
    assert entry["mode"] == 0o600 and entry["uid"] == 1000 and entry["size"] == len(key)
    assert listed["volumes/home/latest"] == {**listed["volumes/home/latest"], "type": "symlink"}
    assert json.loads(lines[0])["entries"] == len(members)


def test_the_service_is_paused_for_the_copy_only(engine: FakeEngine, tmp_path: Path) -> None:
    make_backup(engine, tmp_path)
    calls = [c for c, _ in engine.calls]
    pause, unpause = calls.index("pause_container"), calls.index("unpause_container")
    assert calls.index("create_container", 1) < pause < calls.index("get_archive") < unpause
    assert engine.inspect_container(SOURCE.container_name).running


def test_a_stopped_service_is_not_paused(engine: FakeEngine, tmp_path: Path) -> None:
    archive, _ = make_backup(engine, tmp_path, running=False)
    assert "pause_container" not in engine.called("pause_container") + [c for c, _ in engine.calls]
    with tarfile.open(archive) as tar:
        assert json.loads(read_member(tar, MANIFEST_NAME))["consistency"] == "stopped"


def _killed_while_reading(engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kill` (SIGTERM) of this process while the engine sends the volumes."""
    reading = engine.get_archive

    def killed(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        os.kill(os.getpid(), signal.SIGTERM)
        return reading(*args, **kwargs)

    monkeypatch.setattr(engine, "get_archive", killed)


@pytest.mark.parametrize(
    "failure", [DockerError("engine went away"), KeyboardInterrupt(), signal.SIGTERM]
)
def test_the_pause_always_ends_and_no_file_is_left(
    engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: BaseException | signal.Signals,
) -> None:
    """An engine error, Ctrl-C, or `kill` (which acts as Ctrl-C) during the copy: the
    pause ends, and SIGTERM is handled afterwards as it was before."""
    make_instance(engine, SOURCE)
    if isinstance(failure, BaseException):
        engine.archive_failure = failure
    else:
        _killed_while_reading(engine, monkeypatch)
    expected = type(failure) if isinstance(failure, BaseException) else KeyboardInterrupt
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(expected):
        create_backup(
            engine,
            SOURCE,
            paths_of(SOURCE, tmp_path / "config"),
            tmp_path / "a.tar",
            helper_image=IMAGE,
        )
    assert engine.called("unpause_container") == [SOURCE.container_name]
    assert engine.inspect_container(SOURCE.container_name).running
    assert list(tmp_path.glob("*.tar")) == [] and list(tmp_path.glob(".*partial")) == []
    assert set(engine.containers) == {SOURCE.container_name}  # the helper is removed
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_existing_file_is_kept_unless_forced(engine: FakeEngine, tmp_path: Path) -> None:
    archive, paths = make_backup(engine, tmp_path)
    before = archive.read_bytes()
    with pytest.raises(BackupExists):
        create_backup(engine, SOURCE, paths, archive, helper_image=IMAGE)
    assert archive.read_bytes() == before
    archive.chmod(0o644)
    create_backup(engine, SOURCE, paths, archive, helper_image=IMAGE, force=True)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600


def test_password_only_on_request(engine: FakeEngine, tmp_path: Path) -> None:
    archive, _ = make_backup(engine, tmp_path, include_password=True)
    with tarfile.open(archive) as tar:
        assert read_member(tar, "config/password") == b"pw-of-a\n"


def test_provider_keys_only_on_request(engine: FakeEngine, tmp_path: Path) -> None:
    archive, _ = make_backup(engine, tmp_path)
    with tarfile.open(archive) as tar:
        assert KEYS_ENTRY == "volumes/session/auth.json"
        assert KEYS_ENTRY not in tar.getnames()
        assert "volumes/session/opencode.db" in tar.getnames()
        assert json.loads(read_member(tar, MANIFEST_NAME))["provider_keys"] is None
    with verify_archive(archive) as verified:
        assert verified.manifest.keys is False
    archive = tmp_path / "with-keys.tar"
    paths = paths_of(SOURCE, tmp_path / "config")
    create_backup(engine, SOURCE, paths, archive, helper_image=IMAGE, include_keys=True)
    with tarfile.open(archive) as tar:
        assert read_member(tar, KEYS_ENTRY) == b'{"anthropic": "sk-..."}'
        assert json.loads(read_member(tar, MANIFEST_NAME))["provider_keys"] == KEYS_ENTRY


def _restore_onto_target_with_keys(
    engine: FakeEngine, archive: Path, config_dir: Path
) -> dict[str, VolumeEntry]:
    make_instance(engine, TARGET)
    session = TARGET.volume_name("session")
    engine.write_volume_file(session, "auth.json", b'{"openai": "sk-of-b"}', mode=0o600)
    with verify_archive(archive) as verified:
        result = restore_backup(
            engine, TARGET, paths_of(TARGET, config_dir), verified, helper_image=IMAGE,
            confirmed=True,
        )  # fmt: skip
    # What was replaced is saved with the target's keys.
    assert result.safety_backup is not None
    with tarfile.open(result.safety_backup.path) as tar:
        assert read_member(tar, KEYS_ENTRY) == b'{"openai": "sk-of-b"}'
    return volume_contents(engine, TARGET)["session"]


def test_a_restore_without_keys_keeps_the_instances_own(
    engine: FakeEngine, tmp_path: Path, config_dir: Path
) -> None:
    archive, _ = make_backup(engine, tmp_path)
    restored = _restore_onto_target_with_keys(engine, archive, config_dir)
    source = volume_contents(engine, SOURCE)["session"]
    assert restored["auth.json"][1:4] == (0o600, 1000, b'{"openai": "sk-of-b"}')
    assert {k: v for k, v in restored.items() if k != "auth.json"} == {
        k: v for k, v in source.items() if k != "auth.json"
    }


def test_a_restore_with_keys_brings_the_backups(
    engine: FakeEngine, tmp_path: Path, config_dir: Path
) -> None:
    archive, _ = make_backup(engine, tmp_path, include_keys=True)
    restored = _restore_onto_target_with_keys(engine, archive, config_dir)
    assert restored == volume_contents(engine, SOURCE)["session"]


# -- restore -------------------------------------------------------------------------------


def test_restore_into_a_new_instance_is_identical(engine: FakeEngine, tmp_path: Path) -> None:
    archive, _ = make_backup(engine, tmp_path, include_password=True, include_keys=True)
    target_paths = paths_of(TARGET, tmp_path / "config")
    with verify_archive(archive) as verified:
        assert verified.manifest.instance == SOURCE.name
        result = restore_backup(
            engine,
            TARGET,
            target_paths,
            verified,
            helper_image=IMAGE,
            confirmed=False,  # nothing there: no confirmation needed
        )
    assert result.safety_backup is None and result.was_running is False
    assert volume_contents(engine, TARGET) == volume_contents(engine, SOURCE)
    assert target_paths.config_file.read_text() == '{"port": 3001}\n'
    assert target_paths.password_file.read_text() == "pw-of-a\n"
    assert stat.S_IMODE(target_paths.password_file.stat().st_mode) == 0o600
    volumes = [engine.inspect_volume(TARGET.volume_name(s.kind)) for s in VOLUME_SPECS]
    assert all(v and v.labels["io.opencode-cloud.instance"] == TARGET.name for v in volumes)
    assert set(engine.containers) == {SOURCE.container_name}


def test_restore_over_data_needs_confirmation_and_keeps_a_backup(
    engine: FakeEngine, tmp_path: Path, config_dir: Path
) -> None:
    archive, _ = make_backup(engine, tmp_path, include_keys=True)
    make_instance(engine, TARGET)
    engine.write_volume_file(TARGET.volume_name("projects"), "only-in-b.txt", b"b\n")
    target_paths = paths_of(TARGET, config_dir)
    target_paths.config_file.write_text('{"port": 3002}\n')
    with verify_archive(archive) as verified:
        with pytest.raises(ConfirmationNeeded):
            restore_backup(
                engine, TARGET, target_paths, verified, helper_image=IMAGE, confirmed=False
            )
        assert "only-in-b.txt" in engine.volume_files[TARGET.volume_name("projects")]
        result = restore_backup(
            engine,
            TARGET,
            target_paths,
            verified,
            helper_image=IMAGE,
            confirmed=True,
        )
    assert result.was_running is True
    assert result.safety_backup is not None
    assert result.safety_backup.path.parent == config_dir / "backups"
    assert volume_contents(engine, TARGET) == volume_contents(engine, SOURCE)
    assert TARGET.container_name not in engine.containers  # made again by the next start
    # The safety backup holds what was replaced, the password included.
    with tarfile.open(result.safety_backup.path) as tar:
        names = tar.getnames()
        assert read_member(tar, "config/config.json") == b'{"port": 3002}\n'
    assert "volumes/projects/only-in-b.txt" in names


def flip_content_byte(archive: Path, member_name: str) -> None:
    data = bytearray(archive.read_bytes())
    with tarfile.open(archive) as tar:
        member = tar.getmember(member_name)
    data[member.offset_data + 10] ^= 0x40
    archive.write_bytes(data)


def test_an_empty_instance_is_left_empty_when_a_file_differs(
    engine: FakeEngine, tmp_path: Path
) -> None:
    """Its restore checks the contents while unpacking: the layout alone is checked
    first, and what the restore made is removed again when a file does not match."""
    archive, _ = make_backup(engine, tmp_path)
    flip_content_byte(archive, "volumes/projects/big.bin")
    target_paths = paths_of(TARGET, tmp_path / "config")
    with verify_archive(archive, contents=False) as layout:
        assert layout.contents_checked is False
        with pytest.raises(InvalidBackup) as refused:
            restore_backup(engine, TARGET, target_paths, layout, helper_image=IMAGE, confirmed=True)
    assert refused.value.kind == "corrupted"
    assert "volumes/projects/big.bin does not match its checksum" in refused.value.message
    assert "changed while" not in refused.value.message
    assert all(engine.inspect_volume(TARGET.volume_name(s.kind)) is None for s in VOLUME_SPECS)
    assert set(engine.containers) == {SOURCE.container_name}
    assert not target_paths.config_file.exists()


def test_an_unchecked_archive_never_goes_onto_data(engine: FakeEngine, tmp_path: Path) -> None:
    archive, _ = make_backup(engine, tmp_path)
    make_instance(engine, TARGET)
    with verify_archive(archive, contents=False) as layout, pytest.raises(ValueError):
        restore_backup(
            engine,
            TARGET,
            paths_of(TARGET, tmp_path / "config"),
            layout,
            helper_image=IMAGE,
            confirmed=True,
        )
    assert "remove_volume" not in [call for call, _ in engine.calls]


def test_the_layout_check_refuses_what_the_full_check_refuses_but_contents(
    engine: FakeEngine, tmp_path: Path
) -> None:
    archive, _ = make_backup(engine, tmp_path)
    with verify_archive(archive) as full, verify_archive(archive, contents=False) as layout:
        assert fingerprint(layout) == fingerprint(full)  # the archive's own lines
    data = archive.read_bytes()
    with tarfile.open(archive) as tar:
        db = tar.getmember("volumes/session/opencode.db")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: db.offset_data + 100])
    with pytest.raises(InvalidBackup) as refused:
        verify_archive(cut, contents=False)
    assert refused.value.kind == "truncated"


# -- refusing bad archives -----------------------------------------------------------------


def fingerprint(verified: VerifiedBackup) -> bytes:
    return verified.lines.read()


def test_a_flipped_byte_is_refused_or_changes_nothing(engine: FakeEngine, tmp_path: Path) -> None:
    """Every byte that carries something (names, modes, owners, times, content, the
    manifest, the checksums) is covered; a flip elsewhere (padding) changes nothing."""
    archive, _ = make_backup(engine, tmp_path)
    data = archive.read_bytes()
    with verify_archive(archive) as verified:
        original = fingerprint(verified)
    rng = random.Random(7)
    positions = sorted(rng.sample(range(len(data)), 400))
    damaged = tmp_path / "damaged.tar"
    refused = 0
    for position in positions:
        flipped = bytearray(data)
        flipped[position] ^= 1 << rng.randrange(8)
        damaged.write_bytes(flipped)
        try:
            with verify_archive(damaged) as verified:
                assert fingerprint(verified) == original, position
        except InvalidBackup as error:
            refused += 1
            assert error.kind in ("corrupted", "truncated", "foreign"), error.message
    assert refused > 100


def test_a_flipped_byte_in_a_file_names_the_file(engine: FakeEngine, tmp_path: Path) -> None:
    archive, _ = make_backup(engine, tmp_path)
    flip_bit(archive, "volumes/session/opencode.db", 10, 0x40)
    with pytest.raises(InvalidBackup) as refused:
        verify_archive(archive)
    assert refused.value.kind == "corrupted"
    assert "volumes/session/opencode.db does not match its checksum" in refused.value.message


def test_truncated_anywhere_is_refused(engine: FakeEngine, tmp_path: Path) -> None:
    archive, _ = make_backup(engine, tmp_path)
    data = archive.read_bytes()
    with tarfile.open(archive) as tar:
        end = tar.getmember(CHECKSUMS_NAME).offset_data  # the checksum list starts here
    cut = tmp_path / "cut.tar"
    for size in [0, 1, 511, 512, 513, 2048, len(data) // 3, len(data) // 2, end - 1, end + 10]:
        cut.write_bytes(data[:size])
        with pytest.raises(InvalidBackup) as refused:
            verify_archive(cut)
        assert refused.value.kind in ("truncated", "foreign"), (size, refused.value.message)


def tar_of(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "kind", "words"),
    [
        (b"", "truncated", "empty"),
        (b"hello world\n" * 200, "foreign", "not a tar archive"),
        (tar_of(("notes.txt", b"hi")), "foreign", "no manifest.json"),
        (tar_of((MANIFEST_NAME, b'{"format": "something-else"}')), "foreign", "not an"),
        (
            tar_of((MANIFEST_NAME, b'{"format": "opencode-cloud-backup", "format_version": 2}')),
            "version",
            "format version 2",
        ),
    ],
)
def test_foreign_files_are_refused(tmp_path: Path, content: bytes, kind: str, words: str) -> None:
    path = tmp_path / "other.tar"
    path.write_bytes(content)
    with pytest.raises(InvalidBackup) as refused:
        verify_archive(path)
    assert refused.value.kind == kind
    assert words in refused.value.message
    assert "\n" not in refused.value.message


def test_entries_outside_the_layout_are_refused(engine: FakeEngine, tmp_path: Path) -> None:
    """A well-formed archive (right checksums) that names a path outside its volumes."""
    archive, _ = make_backup(engine, tmp_path)
    with tarfile.open(archive) as tar:
        manifest = read_member(tar, MANIFEST_NAME)
    for name in ("volumes/home/../../etc/passwd", "/etc/passwd", "volumes/elsewhere/x"):
        evil = tmp_path / "evil.tar"
        with tarfile.open(evil, "w") as tar:
            for member, content in ((MANIFEST_NAME, manifest), (name, b"x")):
                info = tarfile.TarInfo(member)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        with pytest.raises(InvalidBackup) as refused:
            verify_archive(evil)
        assert refused.value.kind == "corrupted"


def test_nothing_is_touched_before_the_archive_is_verified(
    engine: FakeEngine, tmp_path: Path
) -> None:
    archive, _ = make_backup(engine, tmp_path)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(data)
    engine.calls.clear()
    with pytest.raises(InvalidBackup):
        verify_archive(archive)
    assert engine.calls == []


# -- uninstall -----------------------------------------------------------------------------


def test_uninstall_keeps_volumes_shared_images_and_other_instances(
    engine: FakeEngine, tmp_path: Path
) -> None:
    make_instance(engine, SOURCE)
    make_instance(engine, TARGET)  # the other instance, on the same image
    foreign = engine.add_image("someone/else:1", labels={})
    paths = paths_of(SOURCE, tmp_path / "config")
    paths.config_file.write_text("{}\n")
    plan = plan_uninstall(engine, SOURCE, paths, volumes=False, configured_image="someone/else:1")
    assert plan.containers == [SOURCE.container_name]
    assert plan.images == []  # used by the other instance's container
    assert {k.reason for k in plan.kept_images} == {
        f"used by container {TARGET.container_name}",
        "not an opencode-cloud sandbox image",
    }
    assert plan.volumes == [] and len(plan.kept_volumes) == 5
    result = uninstall(engine, SOURCE, paths, plan)
    assert result.containers == [SOURCE.container_name]
    assert not paths.config_file.exists()
    assert TARGET.container_name in engine.containers
    assert engine.inspect_image(IMAGE) is not None and foreign in engine.images
    assert all(engine.inspect_volume(SOURCE.volume_name(s.kind)) for s in VOLUME_SPECS)


def test_uninstall_with_volumes_removes_the_last_users_image(
    engine: FakeEngine, tmp_path: Path
) -> None:
    make_instance(engine, SOURCE)
    engine.create_volume("opencode-cloud-unit-a-home-copy", {})  # not ours: no labels
    paths = paths_of(SOURCE, tmp_path / "config")
    plan = plan_uninstall(engine, SOURCE, paths, volumes=True, configured_image=IMAGE)
    assert [describe.tags for describe in plan.images] == [(IMAGE,)]
    result = uninstall(engine, SOURCE, paths, plan)
    assert engine.inspect_image(IMAGE) is None
    assert sorted(result.volumes) == sorted(SOURCE.volume_name(s.kind) for s in VOLUME_SPECS)
    assert engine.inspect_volume("opencode-cloud-unit-a-home-copy") is not None
    assert engine.containers == {}


# -- hints ---------------------------------------------------------------------------------


def test_every_backup_error_has_its_hint(tmp_path: Path) -> None:
    from opencode_cloud.backup.errors import (
        BackupWriteFailed,
        NoHelperImage,
        ProgramFailed,
        RestoreFailed,
    )
    from opencode_cloud.cli.hints import hint_for
    from opencode_cloud.instance import command_prefix

    work = Instance("work")
    kept = tmp_path / "kept.tar"
    expected = {
        BackupExists(kept): f"occ --instance work backup {kept} --force",
        BackupWriteFailed(kept, "no space left on device"): "has room",
        InvalidBackup(kept, "it is truncated", "truncated"): "Nothing was changed",
        InvalidBackup(kept, "format 2", "version"): "release that made it",
        ConfirmationNeeded("has data", work, "uninstall --volumes"): (
            "occ --instance work uninstall --volumes --yes"
        ),
        NoHelperImage(): "occ --instance work build",
        NothingToBackUp(work): "occ --instance NAME backup",
        RestoreFailed(work, "disk full", kept): f"occ --instance work restore {kept} --yes",
        RestoreFailed(work, "disk full", None): "run the restore again",
        ProgramFailed("write", "OSError: no space left"): "`occ --instance work backup`",
    }
    for error, words in expected.items():
        assert words in hint_for(error, command_prefix(work)), error
        assert "\n" not in error.message


def test_an_instance_without_anything_is_not_backed_up(engine: FakeEngine, tmp_path: Path) -> None:
    with pytest.raises(NothingToBackUp):
        create_backup(
            engine,
            SOURCE,
            paths_of(SOURCE, tmp_path / "config"),
            tmp_path / "x.tar",
            helper_image=None,
        )
    assert list(tmp_path.glob("*.tar")) == [] and engine.calls == []


def test_uninstall_of_an_unknown_instance_has_nothing_to_do(
    engine: FakeEngine, tmp_path: Path
) -> None:
    paths = paths_of(SOURCE, tmp_path / "config")
    paths.lock_file.write_text("")  # the command's own lock
    assert plan_uninstall(engine, SOURCE, paths, volumes=True).empty
