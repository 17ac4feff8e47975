"""The service password: generated once, kept in a 0600 file, handed to the container as a file.

The password never travels in argv, in the container's configured environment or in logs,
and never enters the container at all: the host keeps it in `InstancePaths.password_file`,
and the tool writes only its bcrypt hash into the container at
`PASSWORD_PATH_IN_CONTAINER` through the engine's archive API, where the edge checks
logins against it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.defaults import PASSWORD_PATH_IN_CONTAINER
from opencode_cloud.errors import OpencodeCloudError

# 24 random bytes: 192 bits, 32 URL-safe characters (no quoting trouble anywhere).
PASSWORD_BYTES = 24
FILE_MODE = 0o600
# bcrypt's cost: about 60 ms a check here. The password is 192 random bits, so the
# hash's cost guards user-chosen passwords, if any, rather than the generated ones; the
# edge checks a given credential once and remembers it was right.
BCRYPT_ROUNDS = 10
DIR_MODE = 0o700


class CredentialsError(OpencodeCloudError):
    """The password file cannot be read or written."""


def generate_password() -> str:
    """A new strong random password."""
    import secrets  # (hmac, hashlib): imported only when a password is written

    return secrets.token_urlsafe(PASSWORD_BYTES)


def _ensure_private_dir(directory: Path) -> None:
    created = not directory.exists()
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if created:
        # mkdir's mode is filtered by the umask; a fresh directory must end up 0700.
        directory.chmod(DIR_MODE)


def _write_private_temp(directory: Path, content: str) -> Path:
    """Write `content` to a new file in `directory` that is 0600 from its first byte."""
    import secrets

    for _ in range(100):
        temp = directory / f".password.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return temp
    raise CredentialsError(f"Cannot create a temporary file in {directory}.")  # pragma: no cover


def _read(path: Path) -> str:
    # A file someone loosened (chmod 644, a restore from backup) is tightened again.
    if path.stat().st_mode & 0o077:
        path.chmod(FILE_MODE)
    return path.read_text(encoding="utf-8").strip()


def _install_new_password(target: Path, put: Callable[[Path, Path], None]) -> str:
    """Generate a password, write it whole to a private temporary file, and `put` that
    in place (`os.link`: only if `target` does not exist yet; `os.replace`: over it)."""
    _ensure_private_dir(target.parent)
    password = generate_password()
    temp = _write_private_temp(target.parent, password + "\n")
    try:
        put(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):  # gone once replaced
            temp.unlink()
    return password


def load_or_create_password(paths: InstancePaths) -> tuple[str, bool]:
    """The instance's password, generating and storing one on first use.

    The file is written whole under a temporary name and then linked into place, which
    fails if the file appeared meanwhile: two concurrent first starts agree on one
    password, and no reader ever sees a partly written file.

    Returns:
        (password, created): `created` is True when this call generated it.

    Raises:
        CredentialsError: the file or its directory cannot be read or written.
    """
    target = paths.password_file
    try:
        if target.exists():
            password = _read(target)
            if password:
                return password, False
            # An empty file holds no secret; replace it rather than run without one.
            return rotate_password(paths), True
        try:
            return _install_new_password(target, os.link), True
        except FileExistsError:  # another first start was quicker: use its password
            return _read(target), False
    except OSError as exc:
        raise CredentialsError(
            f"Cannot read or write the password file {target}: {exc.strerror or exc}.",
            f"Check the permissions of {target.parent}.",
        ) from exc


def read_password(paths: InstancePaths) -> str | None:
    """The stored password, or None when there is none yet.

    Raises:
        CredentialsError: the file exists but cannot be read.
    """
    try:
        password = _read(paths.password_file)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(
            f"Cannot read the password file {paths.password_file}: {exc.strerror or exc}."
        ) from exc
    return password or None


def rotate_password(paths: InstancePaths) -> str:
    """Replace the stored password with a new one and return it.

    The new file is complete and 0600 before it atomically replaces the old one. A
    running container keeps the old password until it is given the new file.

    Raises:
        CredentialsError: the file cannot be written.
    """
    target = paths.password_file
    try:
        password = _install_new_password(target, os.replace)
    except OSError as exc:
        raise CredentialsError(
            f"Cannot write the password file {target}: {exc.strerror or exc}.",
            f"Check the permissions of {target.parent}.",
        ) from exc
    return password


def password_hash(paths: InstancePaths, password: str) -> bytes:
    """The bcrypt hash of `password`, the only form of it the container gets.

    Made once per password and kept beside it (`password.bcrypt`, 0600, with a SHA-256
    of the password it belongs to): the edge ties its login sessions to the hash, so the
    same password must give the same hash whenever a container is made again (a new
    salt would sign everyone out). A rotation makes a new one.
    """
    import hashlib

    digest = hashlib.sha256(password.encode("utf-8")).hexdigest()
    cache = paths.password_file.with_name("password.bcrypt")
    try:
        recorded, _, stored = cache.read_text(encoding="utf-8").partition("\n")
        if recorded == digest and stored.strip().startswith("$2"):
            return stored.strip().encode("ascii")
    except (OSError, UnicodeDecodeError):
        pass
    import bcrypt

    hashed = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(BCRYPT_ROUNDS))
    try:
        _ensure_private_dir(cache.parent)
        temp = _write_private_temp(cache.parent, f"{digest}\n{hashed.decode('ascii')}\n")
        os.replace(temp, cache)
    except OSError:
        pass  # only a cache: the next container gets a hash made afresh
    return hashed


def container_files(password: str, paths: InstancePaths | None = None) -> dict[str, bytes]:
    """The files that hand a container its password, by path (see `setup_and_start`):
    its bcrypt hash, which the edge checks logins against."""
    if paths is None:
        import bcrypt

        hashed = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(BCRYPT_ROUNDS))
    else:
        hashed = password_hash(paths, password)
    return {PASSWORD_PATH_IN_CONTAINER: hashed + b"\n"}


__all__ = [
    "PASSWORD_PATH_IN_CONTAINER",
    "CredentialsError",
    "container_files",
    "generate_password",
    "load_or_create_password",
    "password_hash",
    "read_password",
    "rotate_password",
]
