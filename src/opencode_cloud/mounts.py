"""Host folders mounted into the container: how they are written, and which are refused.

The configuration stores each mount as `HOST_PATH:CONTAINER_PATH` or
`HOST_PATH:CONTAINER_PATH:ro`, both absolute. `occ mount add` resolves the host path
(`~`, relative paths and symbolic links) before checking and storing it, and
`check_new_mount` refuses what would break the sandbox or give the agent more than the
folder: the Docker socket (root on the host), the volumes opencode keeps its data in,
and the system folders of the image.

Pure: no engine code, no pydantic. The configuration schema, the engine layer and the
CLI all import it.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opencode_cloud.defaults import PASSWORD_PATH_IN_CONTAINER, RUNTIME_HOME, WORKING_DIR
from opencode_cloud.errors import OpencodeCloudError
from opencode_cloud.opencode import CONFIG_DIR, DATA_DIR, STATE_DIR

READ_ONLY = "ro"
READ_WRITE = "rw"
MODES = frozenset({READ_ONLY, READ_WRITE})

# Container paths a mount must not cover (be equal to, or a parent of): the volumes and
# the runtime user's home would be hidden behind the host folder, and with them the
# sessions, credentials and projects. A folder *inside* the home is fine (the default).
PROTECTED_CONTAINER_PATHS: dict[str, str] = {
    RUNTIME_HOME: "the runtime user's home (a volume)",
    f"{RUNTIME_HOME}/.local": "opencode's data and state volumes",
    DATA_DIR: "opencode's sessions and credentials (a volume)",
    STATE_DIR: "opencode's prompt history (a volume)",
    CONFIG_DIR: "opencode's configuration (a volume)",
    WORKING_DIR: "the projects volume",
    # The image links /workspace to the projects folder, and Docker follows links in a
    # mount point: a mount there would land on the projects volume.
    "/workspace": "the projects volume (/workspace links to it)",
    posixpath.dirname(PASSWORD_PATH_IN_CONTAINER): "the password file",
}
# System folders of the image: a mount at or inside one would replace programs,
# libraries, devices or kernel interfaces the sandbox runs on. /lib32 and /libx32 lead
# into /usr on merged-/usr systems, as /bin, /lib and /sbin do.
SYSTEM_CONTAINER_PATHS: tuple[str, ...] = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var",
)
# Refused only as themselves. `/tmp` is the world-writable temporary folder git, pip,
# compilers and opencode write to; a host folder in its place (read-only, or owned by
# the host user) breaks them. A folder below it (/tmp/scratch) leaves it working.
EXACT_CONTAINER_PATHS: dict[str, str] = {
    "/": "the container's whole file system",
    "/tmp": "the temporary folder programs in the sandbox write to",
}

# Where the Docker engine listens on this machine. A mount of the socket, or of a
# folder holding it, lets the agent start a privileged container: root on the host.
DOCKER_SOCKETS: tuple[str, ...] = ("/var/run/docker.sock", "/run/docker.sock")
# Sockets in the user's own folders (rootless Docker, Docker Desktop), refused when
# present: checked always, they would forbid mounting the home on every machine.
_USER_SOCKETS: tuple[str, ...] = ("~/.docker/run/docker.sock", "~/.docker/desktop/docker.sock")


class MountError(OpencodeCloudError):
    """A mount that cannot be written or would be refused.

    Attributes:
        reason: `syntax`, `not-text`, `missing`, `not-a-folder`, `docker-socket`,
            `protected`, `system`, `duplicate-host`, `duplicate-container`, `unknown`,
            `ambiguous`, `remote` or `owner`.
        path: The path concerned (host or container), or the text given; for a
            duplicate, the side of the existing mount that is the same.
    """

    def __init__(self, message: str, hint: str = "", *, reason: str, path: str = "") -> None:
        super().__init__(message, hint)
        self.reason = reason
        self.path = path


def remote_mounts_refused(host: str) -> MountError:
    """Host folders are checked (and their owner read) on this machine; a remote host's
    folders cannot be, so they are refused rather than mounted unchecked."""
    return MountError(
        f"Host folders cannot be mounted on a remote host ({host}): they are checked on "
        "this machine.",
        reason="remote",  # the command line words the hint
    )


@dataclass(frozen=True)
class HostMount:
    """One host folder mounted into the container.

    Attributes:
        host: Absolute path on the host (resolved when added with `occ mount add`).
        container: Absolute, normalised path in the container.
        read_only: True for `:ro`: the agent can read the folder but not change it.
    """

    host: str
    container: str
    read_only: bool = False

    @classmethod
    def parse(cls, text: str) -> HostMount:
        """The mount of a stored `HOST_PATH:CONTAINER_PATH[:ro|:rw]` string.

        Both paths must be absolute; they are normalised (`..`, `.`, doubled and
        trailing slashes), as the engine does. Nothing is looked up on disk.

        Raises:
            MountError: not of that form (`reason` "syntax" or "not-text").
        """
        _check_text(text)
        parts = text.split(":")
        mode = READ_WRITE
        if len(parts) == 3 and parts[2] in MODES:
            mode = parts.pop()
        if len(parts) != 2:
            raise MountError(
                f"Invalid mount {text!r}: expected HOST_PATH:CONTAINER_PATH, optionally "
                "followed by :ro (paths cannot contain ':').",
                f"For example: /home/alice/code:{WORKING_DIR}/code:ro",
                reason="syntax",
                path=text,
            )
        host, container = parts
        _require_absolute(text, "host", host, f"/home/alice/code:{WORKING_DIR}/code")
        _require_absolute(text, "container", container, f"/home/alice/code:{WORKING_DIR}/code")
        return cls(_clean(host), _clean(container), mode == READ_ONLY)

    @property
    def mode(self) -> str:
        """`ro` or `rw`."""
        return READ_ONLY if self.read_only else READ_WRITE

    def __str__(self) -> str:
        """The stored form: `HOST:CONTAINER`, with `:ro` when read-only."""
        suffix = f":{READ_ONLY}" if self.read_only else ""
        return f"{self.host}:{self.container}{suffix}"


def _require_absolute(text: str, which: str, path: str, example: str) -> None:
    if not path.startswith("/"):
        raise MountError(
            f"Invalid mount {text!r}: the {which} path {path!r} is not absolute.",
            f"For example: {example}",
            reason="syntax",
            path=text,
        )


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path)
    # POSIX keeps exactly two leading slashes; they mean nothing on Linux.
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _check_text(text: str) -> None:
    # The same rule as the configuration's `is_text`: a file (and the engine) must hold it.
    ok = "\x00" not in text
    if ok:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            ok = False
    if not ok:
        raise MountError(
            f"Invalid mount {text.encode('utf-8', 'backslashreplace').decode()!r}: "
            "paths must be UTF-8 text without NUL characters.",
            "Rename the folder, or mount a folder above it.",
            reason="not-text",
            path=text,
        )


def _within(path: str, folder: str) -> bool:
    """True when `path` is `folder` or inside it (both absolute and normalised)."""
    return path == folder or folder == "/" or path.startswith(folder + "/")


def resolve_host_path(path: str) -> str:
    """`path` made absolute, with `~` expanded and symbolic links resolved."""
    _check_text(path)
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def default_container_path(host: str) -> str:
    """Where a host folder goes unless told otherwise: `/home/opencode/projects/<its name>`.

    Beside the projects in the projects volume, where the web UI's "Open project"
    dialog starts: it is listed there, and found by its name in the dialog's search.
    """
    return posixpath.join(WORKING_DIR, posixpath.basename(_clean(host)))


def parse_argument(text: str, *, read_only: bool = False) -> HostMount:
    """The mount a user typed: `HOST_PATH[:CONTAINER_PATH][:ro|:rw]`.

    The host path comes first and may be relative or start with `~`; it is resolved.
    When the last part is `ro` or `rw` it is the mode. Without a container path the
    folder goes to `default_container_path`. `read_only` (the `--read-only` flag) is the
    same as `:ro`.

    Raises:
        MountError: not of that form, a relative container path, or `--read-only`
            with `:rw`.
    """
    _check_text(text)
    parts = text.split(":")
    mode = None
    if len(parts) >= 2 and parts[-1] in MODES:
        mode = parts.pop()
    example = f"For example: ~/code, ~/code:{RUNTIME_HOME}/code or ~/code:ro"
    if len(parts) > 2 or not parts[0]:
        raise MountError(
            f"Invalid mount {text!r}: expected HOST_PATH[:CONTAINER_PATH][:ro] "
            "(paths cannot contain ':').",
            example,
            reason="syntax",
            path=text,
        )
    if read_only and mode == READ_WRITE:
        raise MountError(
            f"Invalid mount {text!r}: it says :rw, but --read-only was given too.",
            "Keep one of them: :ro (or --read-only) for read-only, :rw for read-write.",
            reason="syntax",
            path=text,
        )
    host = resolve_host_path(parts[0])
    if len(parts) == 2:
        container = parts[1]
        example = f"{parts[0]}:{WORKING_DIR}/{container.strip('/') or 'code'}"
        _require_absolute(text, "container", container, example)
        container = _clean(container)
    else:
        container = default_container_path(host)
    return HostMount(host, container, read_only or mode == READ_ONLY)


def docker_socket_paths(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every path at which this machine's Docker socket may be reached.

    The usual places, `DOCKER_HOST`'s unix socket, and the sockets of rootless Docker
    and Docker Desktop that exist; each as written and with links resolved (/var/run
    is usually a link to /run).
    """
    env = os.environ if environ is None else environ
    candidates = list(DOCKER_SOCKETS)
    docker_host = env.get("DOCKER_HOST", "")
    if docker_host.startswith("unix://"):
        candidates.append(docker_host.removeprefix("unix://"))
    optional = [os.path.expanduser(path) for path in _USER_SOCKETS]
    if env.get("XDG_RUNTIME_DIR"):
        optional.append(posixpath.join(env["XDG_RUNTIME_DIR"], "docker.sock"))
    candidates.extend(path for path in optional if os.path.exists(path))
    paths: list[str] = []
    for candidate in candidates:
        if not candidate.startswith("/"):
            continue
        for path in (_clean(candidate), os.path.realpath(candidate)):
            if path not in paths:
                paths.append(path)
    return paths


def _suggestion(mount: HostMount) -> str:
    name = posixpath.basename(mount.host) or "code"
    for container in (default_container_path(mount.host), f"{WORKING_DIR}/host-{name}"):
        if container != mount.container and _container_problem(container) is None:
            return f"{mount.host}:{container}"
    return f"{mount.host}:{WORKING_DIR}/code"


def _container_problem(container: str) -> tuple[str, str] | None:
    """(reason, what it would hide or break), or None when the path is fine."""
    if container in EXACT_CONTAINER_PATHS:
        return "system", EXACT_CONTAINER_PATHS[container]
    for protected, what in PROTECTED_CONTAINER_PATHS.items():
        if _within(protected, container):
            return "protected", what
    for system in SYSTEM_CONTAINER_PATHS:
        if _within(container, system):
            return "system", f"{system}, a system folder of the sandbox"
    return None


def check_mount(mount: HostMount, environ: Mapping[str, str] | None = None) -> None:
    """Refuse a mount that breaks the sandbox or hands the agent the host.

    What `check_new_mount` checks except duplicates: also for mounts already in a
    file, which may have been edited by hand.

    Raises:
        MountError: the host path is `/`, is or holds the Docker socket, does not exist
            or is not a folder; or the container path covers a volume, the home or the
            password, or is (in) a system folder.
    """
    _check_text(mount.host)
    _check_text(mount.container)
    host = resolve_host_path(mount.host)
    advice = "Mount the folder of your project instead, such as ~/code."
    if host == "/":
        raise MountError(
            "Refusing to mount / : the whole host file system, the Docker socket "
            "included, would give the agent root on this machine.",
            advice,
            reason="docker-socket",
            path=host,
        )
    for socket in docker_socket_paths(environ):
        if _within(socket, host):
            what = "is the Docker socket" if socket == host else f"holds the Docker socket {socket}"
            raise MountError(
                f"Refusing to mount {host}: it {what}, which would give the agent root "
                "on this machine.",
                advice,
                reason="docker-socket",
                path=host,
            )
    if not os.path.exists(host):
        raise MountError(
            f"Cannot mount {host}: no such folder on this machine.",
            "Check the path (`~` and relative paths are fine), or create the folder first.",
            reason="missing",
            path=host,
        )
    if not os.path.isdir(host):
        raise MountError(
            f"Cannot mount {host}: it is a file, not a folder.",
            f"Mount the folder that holds it: {posixpath.dirname(host)}",
            reason="not-a-folder",
            path=host,
        )
    if ":" in host:
        raise MountError(
            f"Cannot mount {host}: paths with ':' cannot be mounted.",
            "Rename the folder, or mount a folder above it.",
            reason="syntax",
            path=host,
        )
    problem = _container_problem(_clean(mount.container))
    if problem is not None:
        reason, what = problem
        effect = "hide" if reason == "protected" else "replace"
        raise MountError(
            f"Cannot mount at {mount.container}: it would {effect} {what}.",
            f"Choose another container folder, for example {_suggestion(mount)}",
            reason=reason,
            path=mount.container,
        )


def folder_owner(host: str) -> tuple[int, int] | None:
    """The uid and gid the agent runs as when `host` is the first mounted folder: its
    owner's, so that what the agent writes there is theirs; None for a folder of root's
    (the agent then keeps the image's own user) or one that cannot be read.

    Raises:
        MountError: the folder belongs to a person but to root's group (the agent would
            run in group 0), or to the edge's own uid or gid (`reason` "owner").
    """
    from opencode_cloud.defaults import EDGE_UID

    try:
        info = os.stat(host)
    except OSError:
        return None
    if info.st_uid == 0:
        return None
    if info.st_gid == 0:
        raise MountError(
            f"Refusing to run the agent as the owner of {host}: its group is root's (gid 0), "
            "and the agent would run in that group.",
            f'Give the folder your own group (chgrp "$(id -g)" {host}), or mount '
            "another folder first.",
            reason="owner",
            path=host,
        )
    if EDGE_UID in (info.st_uid, info.st_gid):
        raise MountError(
            f"Refusing to run the agent as the owner of {host}: uid or gid {EDGE_UID} is "
            "the sandbox's edge user.",
            "Give the folder another owner, or mount another folder first.",
            reason="owner",
            path=host,
        )
    return info.st_uid, info.st_gid


def check_new_mount(
    mount: HostMount,
    existing: Sequence[HostMount],
    environ: Mapping[str, str] | None = None,
) -> None:
    """Refuse a mount to add next to `existing`: `check_mount`'s rules, and duplicates.

    Raises:
        MountError: see `check_mount`; or the host folder is already mounted, or the
            container path is already a mount point (`reason` "duplicate-host",
            "duplicate-container").
    """
    check_mount(mount, environ)
    host = resolve_host_path(mount.host)
    if not existing:
        folder_owner(host)  # the first folder gives the agent its owner
    container = _clean(mount.container)
    for other in existing:
        if host in (other.host, resolve_host_path(other.host)):
            raise MountError(
                f"{host} is already mounted, at {other.container}.",
                "Remove that mount first to mount it elsewhere or with another mode.",
                reason="duplicate-host",
                path=other.host,
            )
        if container == other.container:
            raise MountError(
                f"{container} is already where {other.host} is mounted.",
                f"Choose another container folder, for example {_suggestion(mount)}",
                reason="duplicate-container",
                path=other.container,
            )


def find_mount(stored: Sequence[object], target: str) -> int:
    """The index of the stored mount that `target` names: its host path (resolved as
    `occ mount add` resolves it), its container path, or its stored text.

    Entries that do not parse match only their exact text, so a broken entry can be
    removed by naming it.

    Raises:
        MountError: nothing matches (`reason` "unknown"), or two mounts do (`ambiguous`).
    """
    _check_text(target)
    if not target.strip():
        raise MountError(
            "Name the mount to remove by its host or container path.",
            f"Mounts: {', '.join(map(str, stored))}." if stored else "No host folders are mounted.",
            reason="unknown",
            path=target,
        )
    try:
        whole: HostMount | None = HostMount.parse(target)
    except MountError:
        whole = None
    hosts = {_clean(os.path.abspath(os.path.expanduser(target))), resolve_host_path(target)}
    container = _clean(target) if target.startswith("/") else None
    matches: list[int] = []
    for index, text in enumerate(stored):
        if not isinstance(text, str):
            continue
        try:
            mount: HostMount | None = HostMount.parse(text)
        except MountError:
            mount = None
        if mount is None:
            named = text == target
        elif whole is not None:
            named = (whole.host, whole.container) == (mount.host, mount.container)
        else:
            named = mount.host in hosts or mount.container == container
        if named:
            matches.append(index)
    if not matches:
        raise MountError(
            f"No mount has the host or container path {target}.",
            f"Mounts: {', '.join(map(str, stored))}." if stored else "No host folders are mounted.",
            reason="unknown",
            path=target,
        )
    if len(matches) > 1:
        raise MountError(
            f"{target} names {len(matches)} mounts: "
            + ", ".join(str(stored[index]) for index in matches)
            + ".",
            "Name the one to remove by its whole HOST:CONTAINER text.",
            reason="ambiguous",
            path=target,
        )
    return matches[0]
