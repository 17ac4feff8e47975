"""The password file: strong, private from its first byte, reused, rotated atomically."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import bcrypt
import pytest

from opencode_cloud import defaults
from opencode_cloud.access import credentials
from opencode_cloud.config.paths import InstancePaths


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def paths(tmp_path: Path) -> InstancePaths:
    return InstancePaths(tmp_path / "cfg" / "instances" / "x")


def test_created_once_then_reused(paths: InstancePaths) -> None:
    password, created = credentials.load_or_create_password(paths)
    assert created
    assert len(password) >= 32
    assert paths.password_file.read_text().strip() == password
    again, created_again = credentials.load_or_create_password(paths)
    assert (again, created_again) == (password, False)


def test_file_and_directory_are_private(paths: InstancePaths) -> None:
    old_umask = os.umask(0o022)
    try:
        credentials.load_or_create_password(paths)
    finally:
        os.umask(old_umask)
    assert _mode(paths.password_file) == 0o600
    assert _mode(paths.password_file.parent) == 0o700
    # No temporary file is left behind.
    assert [p.name for p in paths.root.iterdir()] == ["password"]


def test_passwords_are_random(tmp_path: Path) -> None:
    seen = {
        credentials.load_or_create_password(InstancePaths(tmp_path / str(i)))[0] for i in range(20)
    }
    assert len(seen) == 20


def test_loosened_file_is_tightened(paths: InstancePaths) -> None:
    password, _ = credentials.load_or_create_password(paths)
    paths.password_file.chmod(0o644)
    assert credentials.load_or_create_password(paths) == (password, False)
    assert _mode(paths.password_file) == 0o600


def test_empty_file_is_replaced(paths: InstancePaths) -> None:
    paths.root.mkdir(parents=True)
    paths.password_file.write_text("\n")
    password, created = credentials.load_or_create_password(paths)
    assert created
    assert password
    assert _mode(paths.password_file) == 0o600


def test_rotate_replaces_atomically(paths: InstancePaths) -> None:
    old, _ = credentials.load_or_create_password(paths)
    inode = paths.password_file.stat().st_ino
    new = credentials.rotate_password(paths)
    assert new != old
    assert credentials.read_password(paths) == new
    assert _mode(paths.password_file) == 0o600
    # os.replace swaps in a new file: a reader holding the old one never sees a mix.
    assert paths.password_file.stat().st_ino != inode
    assert sorted(p.name for p in paths.root.iterdir()) == ["password"]


def test_rotate_without_previous_password(paths: InstancePaths) -> None:
    new = credentials.rotate_password(paths)
    assert credentials.load_or_create_password(paths) == (new, False)


def test_concurrent_first_use_agrees_on_one_password(paths: InstancePaths) -> None:
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(credentials.load_or_create_password(paths))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({password for password, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_read_password_absent(paths: InstancePaths) -> None:
    assert credentials.read_password(paths) is None


def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        paths = InstancePaths(blocker / "sub")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        paths = InstancePaths(locked / "sub")
    with pytest.raises(credentials.CredentialsError) as info:
        credentials.load_or_create_password(paths)
    assert "password file" in info.value.message


def test_container_files_hold_only_the_bcrypt_hash() -> None:
    files = credentials.container_files("s3cret")
    assert list(files) == ["/run/opencode-cloud/password.bcrypt"]
    hashed = files["/run/opencode-cloud/password.bcrypt"].strip()
    assert hashed.startswith(b"$2b$") and b"s3cret" not in hashed
    assert bcrypt.checkpw(b"s3cret", hashed)
    assert credentials.PASSWORD_PATH_IN_CONTAINER == "/run/opencode-cloud/password.bcrypt"
    assert defaults.DEFAULT_USERNAME == "opencode"
    assert defaults.PASSWORD_PATH_IN_CONTAINER == credentials.PASSWORD_PATH_IN_CONTAINER


def test_the_hash_is_kept_for_its_password_and_made_anew_on_rotation(
    paths: InstancePaths,
) -> None:
    """Sessions are tied to the hash: a re-created container must get the same one."""
    password, _ = credentials.load_or_create_password(paths)
    first = credentials.container_files(password, paths)
    assert credentials.container_files(password, paths) == first
    cache = paths.password_file.with_name("password.bcrypt")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    new = credentials.rotate_password(paths)
    second = credentials.container_files(new, paths)
    assert second != first
    assert bcrypt.checkpw(new.encode(), second[credentials.PASSWORD_PATH_IN_CONTAINER].strip())
