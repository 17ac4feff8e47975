"""An in-memory Docker engine for the unit tests: an `Engine` (`docker/engine.py`) like
`DockerClient`, held to that interface by mypy.

Containers are kept as the engine's own inspect JSON, built from the create body the way
the engine builds it (the image's environment and labels merged in), and read back
through the real parser: what the tool writes and what it reads meet in the engine's
format, as with a real engine. Errors are the typed errors the real client raises.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import itertools
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opencode_cloud.docker.client import loopback_for
from opencode_cloud.docker.engine import Engine
from opencode_cloud.docker.errors import (
    ContainerAlreadyExists,
    ContainerNotFound,
    ContainerRunning,
    DockerError,
    ImageNotFound,
    PortInUse,
    VolumeInUse,
)
from opencode_cloud.docker.image import EDGE_LABEL, LABEL_EDGE, LABEL_OPENCODE_VERSION
from opencode_cloud.docker.models import (
    ContainerInfo,
    EngineInfo,
    ImageInfo,
    VolumeInfo,
    parse_container,
    parse_image,
    parse_volume,
)
from opencode_cloud.docker.swarm import (
    SwarmEngine,
    SwarmMembership,
    SwarmNode,
    SwarmService,
    SwarmTask,
    pinned_node,
)
from opencode_cloud.instance import LABEL_ROLE

ZERO_TIME = "0001-01-01T00:00:00Z"  # the engine's "never"
# What the sandbox Dockerfile sets (`ENV`), so built and pulled images carry it too.
SANDBOX_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "OPENCODE_DISABLE_AUTOUPDATE=1",
    "OPENCODE_SERVER_USERNAME=opencode",
    "HOME=/home/opencode",
    "LANG=C.UTF-8",
)
VOLUME_BYTES = 4096  # what `volume_sizes` says of every volume
_ACTIVE = ("running", "restarting", "paused")
_ANY_ADDRESS = ("", "0.0.0.0", "::")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _full_ref(ref: str) -> str:
    """`name` means `name:latest`, as for the engine."""
    return ref if ref.startswith("sha256:") or ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"


def _merge_env(own: Sequence[str], image: Sequence[str]) -> list[str]:
    """The engine's merge: the container's variables, then the image's it does not set."""
    names = {entry.split("=", 1)[0] for entry in own}
    return [*own, *(entry for entry in image if entry.split("=", 1)[0] not in names)]


def _has_labels(labels: Mapping[str, str], wanted: Iterable[str]) -> bool:
    for item in wanted:
        key, has_value, value = item.partition("=")
        if key not in labels or (has_value and labels[key] != value):
            return False
    return True


def _container_json(
    name: str, cid: str, body: Mapping[str, Any], image: Mapping[str, Any]
) -> dict[str, Any]:
    """What the engine's inspect shows of a container it made from a create `body`."""
    image_config = image["Config"]
    config: dict[str, Any] = {
        "Hostname": body.get("Hostname") or cid[:12],
        "User": body.get("User", ""),
        "Env": _merge_env(body.get("Env") or [], image_config.get("Env") or []),
        "Image": body["Image"],
        "WorkingDir": body.get("WorkingDir", ""),
        "Labels": {**(image_config.get("Labels") or {}), **(body.get("Labels") or {})},
        "ExposedPorts": copy.deepcopy(body.get("ExposedPorts")),
    }
    for key in ("Entrypoint", "Cmd"):
        if key in body:
            config[key] = list(body[key])
    if "StopTimeout" in body:
        config["StopTimeout"] = body["StopTimeout"]
    state = {"Status": "created", "Running": False, "OOMKilled": False, "ExitCode": 0}
    return {
        "Id": cid,
        "Created": _now(),
        "Name": f"/{name}",
        "RestartCount": 0,
        "Image": image["Id"],
        "State": {**state, "StartedAt": ZERO_TIME, "FinishedAt": ZERO_TIME},
        "Config": config,
        "HostConfig": copy.deepcopy(dict(body.get("HostConfig") or {})),
    }


def _bindings(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    ports = raw["HostConfig"].get("PortBindings") or {}
    return [(b.get("HostIp", ""), b["HostPort"]) for bs in ports.values() for b in bs or []]


def _clash(raw: Mapping[str, Any], other: Mapping[str, Any]) -> int | None:
    """The host port both containers publish on a common address, if any."""
    for ip, port in _bindings(raw):
        for other_ip, other_port in _bindings(other):
            if port == other_port and (ip == other_ip or {ip, other_ip} & set(_ANY_ADDRESS)):
                return int(port)
    return None


def _dir_info(name: str, *, uid: int = 1000) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, 0o755, uid, uid, 0
    return info


class FakeEngine:
    """`DockerClient` over dicts. Scripting: `add_image`, `publish`, `crash_on_start`,
    `vanish`, `set_health`; inspection: `calls`, `files`, `file_modes`, `stop_timeouts`.

    Attributes:
        calls: (method, name) of every call that changes the engine, in order.
        files: what `put_archive` wrote, by container, then by absolute path.
        registry: images a pull can fetch, `registry/repo:tag` -> (env, labels, id).
    """

    def __init__(self, api_version: str = "1.41", timeout: float = 60.0) -> None:
        self.api_version = api_version
        self.timeout = timeout
        self.host = "unix:///fake/docker.sock"
        self.tunnel = None
        self.remote = None
        self.forwards: dict[tuple[str, int], int] = {}  # what `reach` maps, like a tunnel
        self.containers: dict[str, dict[str, Any]] = {}  # name -> inspect JSON
        self.images: dict[str, dict[str, Any]] = {}  # id -> inspect JSON
        self.volumes: dict[str, dict[str, Any]] = {}  # name -> inspect JSON
        self.networks: dict[str, dict[str, Any]] = {}  # name -> {"Labels", "Containers"}
        self.registry: dict[str, tuple[Sequence[str], Mapping[str, str], str]] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        self.file_modes: dict[str, dict[str, tuple[int, int]]] = {}  # (mode, uid)
        self.logs: dict[str, list[str]] = {}
        self.crashes: dict[str, tuple[int, list[str]]] = {}
        self.stop_timeouts: dict[str, int] = {}
        self.execs: list[tuple[str, tuple[str, ...], str, str]] = []  # name, command, user, dir
        self.exec_result: tuple[bytes, int] = (b"", 0)  # what every exec prints and exits with
        self.builds: list[dict[str, str]] = []  # build args of each build
        # What apt finds in a build's `apt-get install`; any other package fails it.
        self.apt_packages: set[str] = {"jq", "build-essential", "gcc"}
        self.calls: list[tuple[str, str]] = []
        self.disk_usage_counts = 0
        self.volume_files: dict[str, dict[str, tuple[tarfile.TarInfo, bytes]]] = {}
        self.archive_failure: BaseException | None = None  # what `get_archive` raises, if set
        self.signals: list[tuple[str, str]] = []  # (container, signal) of `kill_container`
        # Backups stream through the API: the engine is not on the machine of its caller.
        self.is_local = False
        self.closed = False
        self._serial = itertools.count(1)
        # The swarm a manager sees (docker/swarm.py): set them to make this engine one.
        self.membership = SwarmMembership(state="inactive", manager=False)
        self.nodes: list[SwarmNode] = []
        self.services: list[SwarmService] = []
        self.tasks: list[SwarmTask] = []
        self.pushed: list[str] = []  # what `push` sent to a registry
        self.secrets: dict[str, bytes] = {}  # swarm secrets by name
        self.secret_labels: dict[str, dict[str, str]] = {}
        self.service_bodies: list[dict[str, Any]] = []  # each `create_service` body
        # Each service's spec and its version, by name (`service_spec`, `update_service`).
        self.service_specs: dict[str, tuple[int, dict[str, Any]]] = {}
        self.push_error: str | None = None  # the error a push's stream reports, if set
        # How a service that never restarts ends at once: its task's state and error.
        self.one_shot_end: tuple[str, str] = ("complete", "")
        # How one-shot services of a role (their LABEL_ROLE) end instead, if set.
        self.one_shot_ends: dict[str, tuple[str, str]] = {}
        self.node_versions: dict[str, int] = {}

    # -- scripting --------------------------------------------------------------------

    def check_connection(self) -> None:
        """A local engine's connection never drops."""

    def reach(self, address: str, port: int, local_port: int | None = None) -> tuple[str, int]:
        """`forwards` stands in for an SSH tunnel: (address, port) -> local port."""
        if (address, port) in self.forwards:
            return "127.0.0.1", self.forwards[(address, port)]
        return loopback_for(address), port

    def add_image(
        self,
        ref: str,
        *,
        env: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        image_id: str | None = None,
    ) -> str:
        """An image called `ref` (taking the name from any image that had it); its id.

        A new id unless `image_id` names the image (the same content) to tag.
        """
        image_id = image_id or _digest(f"image-{next(self._serial)}")
        config = {"Env": list(env), "Labels": dict(labels or {}) or None}
        self.images.setdefault(image_id, {"Id": image_id, "RepoTags": [], "Config": config})
        self._move_tag(image_id, _full_ref(ref))
        return image_id

    def publish(
        self, ref: str, *, env: Sequence[str] = SANDBOX_ENV, labels: Mapping[str, str] | None = None
    ) -> str:
        """Make `registry/repository:tag` available to `pull`; the id it will have.

        The id follows the content: publishing the same again changes nothing.
        """
        image_id = _digest(json.dumps([ref, list(env), dict(labels or {})], sort_keys=True))
        self.registry[ref] = (env, dict(labels or {}), image_id)
        return image_id

    def crash_on_start(self, name: str, exit_code: int = 1, logs: Sequence[str] = ()) -> None:
        """Every start of `name` from now on ends at once with `exit_code`, printing `logs`."""
        self.crashes[name] = (exit_code, list(logs))

    def vanish(self, name: str) -> None:
        """Remove the container behind the tool's back (no call is recorded)."""
        del self.containers[name]
        self.files.pop(name, None)
        self.file_modes.pop(name, None)

    def set_health(self, name: str, status: str) -> None:
        self._raw(name)["State"]["Health"] = {"Status": status, "FailingStreak": 0, "Log": []}

    def called(self, method: str) -> list[str]:
        """Names passed to `method`, in order."""
        return [name for done, name in self.calls if done == method]

    # -- engine -----------------------------------------------------------------------

    def ping(self) -> bool:
        return True

    def info(self) -> EngineInfo:
        return EngineInfo(
            "20.10.24", self.api_version, 2, 8 << 30, "/var/lib/docker", False, "fake"
        )

    def close(self) -> None:
        self.closed = True

    # -- containers -------------------------------------------------------------------

    def _raw(self, name: str) -> dict[str, Any]:
        if name not in self.containers:
            raise ContainerNotFound(name)
        return self.containers[name]

    def inspect_container(self, name: str) -> ContainerInfo:
        return parse_container(copy.deepcopy(self._raw(name)))

    def find_container(self, name: str) -> ContainerInfo | None:
        return self.inspect_container(name) if name in self.containers else None

    def create_container(self, name: str, body: Mapping[str, Any]) -> str:
        self.calls.append(("create_container", name))
        if name in self.containers:
            raise ContainerAlreadyExists(name)
        image = self._image(str(body.get("Image", "")))
        if image is None:
            raise ImageNotFound(str(body.get("Image", "")))
        for mount in (body.get("HostConfig") or {}).get("Mounts") or []:
            if mount.get("Type") == "volume" and mount["Source"] not in self.volumes:
                self._add_volume(mount["Source"], {})  # the engine makes it, unlabelled
        cid = _digest(f"container-{next(self._serial)}").removeprefix("sha256:")
        self.containers[name] = _container_json(name, cid, body, image)
        return cid

    def _start(self, name: str) -> None:
        raw = self._raw(name)
        state = raw["State"]
        if state["Status"] == "running":
            return
        running = [r for n, r in self.containers.items() if n != name and r["State"]["Running"]]
        taken = next(filter(None, (_clash(raw, other) for other in running)), None)
        if taken is not None:
            raise PortInUse(taken)
        state.update(Status="running", Running=True, ExitCode=0, StartedAt=_now())
        if name in self.crashes:
            exit_code, lines = self.crashes[name]
            self.logs.setdefault(name, []).extend(lines)
            state.update(Status="exited", Running=False, ExitCode=exit_code, FinishedAt=_now())

    def _stop(self, name: str, timeout: int) -> None:
        state = self._raw(name)["State"]
        self.stop_timeouts[name] = timeout
        if state["Status"] in _ACTIVE:
            state.update(Status="exited", Running=False, ExitCode=0, FinishedAt=_now())

    def start_container(self, name: str) -> None:
        self.calls.append(("start_container", name))
        self._start(name)

    def stop_container(self, name: str, timeout: int) -> None:
        self.calls.append(("stop_container", name))
        self._stop(name, timeout)

    def restart_container(self, name: str, timeout: int) -> None:
        self.calls.append(("restart_container", name))
        self._stop(name, timeout)
        self._start(name)

    def rename_container(self, name: str, new_name: str) -> None:
        self.calls.append(("rename_container", name))
        if new_name in self.containers:
            raise ContainerAlreadyExists(new_name)
        old = self._raw(name)["Name"].lstrip("/")
        raw = self.containers.pop(old)
        raw["Name"] = "/" + new_name
        self.containers[new_name] = raw
        # What was written into it goes along.
        if old in self.files:
            self.files[new_name] = self.files.pop(old)
        if old in self.file_modes:
            self.file_modes[new_name] = self.file_modes.pop(old)

    def last_exit_code(self, name: str, since: float) -> int | None:
        state = self._raw(name)["State"]
        code = state.get("ExitCode")
        return int(code) if state.get("FinishedAt", ZERO_TIME) != ZERO_TIME else None

    def wait_container(self, name: str, timeout: float) -> int:
        """A task container (`copy_volumes`) has done its work at once: exit code 0."""
        self.calls.append(("wait_container", name))
        state = self._raw(name)["State"]
        state.update(Status="exited", Running=False)
        return int(state.get("ExitCode") or 0)

    def remove_container(self, name: str, *, force: bool = False) -> None:
        self.calls.append(("remove_container", name))
        if self._raw(name)["State"]["Status"] in _ACTIVE and not force:
            raise ContainerRunning(name)
        self.vanish(name)

    def list_containers(
        self, *, labels: Sequence[str] = (), volume: str | None = None
    ) -> list[str]:
        return [
            name
            for name, raw in self.containers.items()
            if _has_labels(raw["Config"]["Labels"], labels)
            and (
                volume is None
                or volume in (m["Source"] for m in raw["HostConfig"].get("Mounts") or [])
            )
        ]

    def put_archive(self, name: str, directory: str, archive: bytes) -> None:
        self.calls.append(("put_archive", name))
        self._raw(name)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar.getmembers():
                path = f"{directory.rstrip('/')}/{member.name}"
                content = tar.extractfile(member)
                self.files.setdefault(name, {})[path] = content.read() if content else b""
                self.file_modes.setdefault(name, {})[path] = (member.mode, member.uid)

    # -- pause and archive streams (backups) ---------------------------------------------
    # Volume contents live in `volume_files`: volume name -> path inside the volume ->
    # (TarInfo without its name, content). Archive calls read and write them through the
    # container's volume mounts, as the engine does.

    def kill_container(self, name: str, signal: str) -> None:
        self.calls.append(("kill_container", name))
        if self._raw(name)["State"]["Status"] != "running":
            raise DockerError(f"Docker engine error: Container {name} is not running")
        self.signals.append((name, signal))

    def pause_container(self, name: str) -> None:
        self.calls.append(("pause_container", name))
        state = self._raw(name)["State"]
        if state["Status"] != "running":
            raise DockerError(f"Docker engine error: Container {name} is not running")
        state.update(Status="paused", Paused=True)

    def unpause_container(self, name: str) -> None:
        self.calls.append(("unpause_container", name))
        state = self._raw(name)["State"]
        if state["Status"] != "paused":
            raise DockerError(f"Docker engine error: Container {name} is not paused")
        state.update(Status="running", Paused=False)

    def _volume_mounts(self, name: str) -> dict[str, str]:
        """Mount target -> volume name, of the container's volume mounts."""
        mounts = self._raw(name)["HostConfig"].get("Mounts") or []
        return {m["Target"].rstrip("/"): m["Source"] for m in mounts if m["Type"] == "volume"}

    def get_archive(self, name: str, path: str, *, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        from opencode_cloud.docker.errors import MissingPath

        self.calls.append(("get_archive", name))
        path = path.rstrip("/")
        written = self.files.get(name, {})
        if path in written:  # a file `put_archive` wrote into the container itself
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                info = tarfile.TarInfo(path.rsplit("/", 1)[-1])
                info.size = len(written[path])
                tar.addfile(info, io.BytesIO(written[path]))
            yield buffer.getvalue()
            return
        mounts = self._volume_mounts(name)
        inside = {t: v for t, v in mounts.items() if t == path or t.startswith(path + "/")}
        if not inside:
            raise MissingPath(name, path, path)
        if self.archive_failure is not None:
            raise self.archive_failure
        root = path.rsplit("/", 1)[-1]
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            if path not in mounts:
                tar.addfile(_dir_info(root))
            for target, volume in sorted(inside.items()):
                prefix = root + target[len(path) :]
                for rel, (info, content) in sorted(self.volume_files.get(volume, {}).items()):
                    entry = copy.copy(info)
                    entry.name = prefix if rel == "" else f"{prefix}/{rel}"
                    if entry.islnk():
                        entry.linkname = f"{prefix}/{info.linkname}"
                    tar.addfile(entry, io.BytesIO(content) if entry.isreg() else None)
        data = buffer.getvalue()
        for start in range(0, len(data), chunk_size):
            yield data[start : start + chunk_size]

    def put_archive_stream(self, name: str, directory: str, chunks: Iterable[bytes]) -> None:
        self.calls.append(("put_archive_stream", name))
        mounts = self._volume_mounts(name)
        data = b"".join(chunks)  # raises what the stream raises, as the upload does
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                full = f"{directory.rstrip('/')}/{member.name}"
                target = max(
                    (t for t in mounts if full == t or full.startswith(t + "/")),
                    key=len,
                    default=None,
                )
                if target is None:
                    continue  # the container's own file system: not kept
                rel = full[len(target) :].lstrip("/")
                info = copy.copy(member)
                if member.islnk():
                    info.linkname = f"{directory.rstrip('/')}/{member.linkname}"[len(target) + 1 :]
                content = tar.extractfile(member) if member.isreg() else None
                self.volume_files.setdefault(mounts[target], {})[rel] = (
                    info,
                    content.read() if content else b"",
                )

    def write_volume_file(
        self,
        volume: str,
        path: str,
        content: bytes | None = None,
        *,
        mode: int = 0o644,
        uid: int = 1000,
        link: str | None = None,
    ) -> None:
        """Put a file (a folder when `content` is None, a symbolic link with `link`) into
        a volume, as the service would have written it; its parent folders too."""
        files = self.volume_files.setdefault(volume, {})
        files.setdefault("", (_dir_info("", uid=uid), b""))
        parts = path.split("/")
        for depth in range(1, len(parts)):
            files.setdefault("/".join(parts[:depth]), (_dir_info("", uid=uid), b""))
        info = tarfile.TarInfo("")
        info.mode, info.uid, info.gid, info.mtime = mode, uid, uid, 1_700_000_000
        if link is not None:
            info.type, info.linkname = tarfile.SYMTYPE, link
        elif content is None:
            info.type = tarfile.DIRTYPE
        else:
            info.size = len(content)
        files[path] = (info, content or b"")

    def container_logs(
        self,
        name: str,
        *,
        tail: int | None = None,
        follow: bool = False,
        since: int | None = None,
        timestamps: bool = False,
    ) -> Iterator[bytes]:
        self._raw(name)  # like the real stream, this fails on the first chunk
        lines = self.logs.get(name, [])
        lines = lines[-tail:] if tail else lines
        if lines:
            yield ("\n".join(lines) + "\n").encode()

    def follow_output(self, name: str) -> Iterator[bytes]:
        return self.container_logs(name, follow=True)

    def exec_run(
        self,
        name: str,
        command: Sequence[str],
        *,
        user: str,
        workdir: str,
        env: Sequence[str] = (),
    ) -> tuple[Iterator[bytes], Callable[[], int | None]]:
        self.calls.append(("exec_run", name))
        raw = self._raw(name)
        if raw["State"]["Status"] != "running":
            raise DockerError(f"Docker engine error: Container {raw['Id']} is not running")
        self.execs.append((name, tuple(command), user, workdir))
        if tuple(command[:2]) == ("/bin/cat", "--"):
            # A file the tool wrote into the container reads back; any other is missing.
            written = self.files.get(name, {}).get(command[2])
            return iter([written] if written else []), lambda: 0 if written is not None else 1
        output, code = self.exec_result
        return iter([output] if output else []), lambda: code

    # -- images -----------------------------------------------------------------------

    def _image(self, ref: str) -> dict[str, Any] | None:
        ref = _full_ref(ref)
        if ref in self.images:
            return self.images[ref]
        return next((i for i in self.images.values() if ref in i["RepoTags"]), None)

    def _move_tag(self, image_id: str, ref: str) -> None:
        for image in self.images.values():
            if ref in image["RepoTags"]:
                image["RepoTags"].remove(ref)
        self.images[image_id]["RepoTags"].append(ref)

    def inspect_image(self, ref: str) -> ImageInfo | None:
        image = self._image(ref)
        return parse_image(copy.deepcopy(image)) if image else None

    def list_images(
        self, *, labels: Sequence[str] = (), dangling: bool | None = None
    ) -> list[ImageInfo]:
        return [
            parse_image(copy.deepcopy(image))
            for image in self.images.values()
            if _has_labels(image["Config"]["Labels"] or {}, labels)
            and (dangling is None or dangling == (not image["RepoTags"]))
        ]

    def tag_image(self, image: str, repository: str, tag: str) -> None:
        self.calls.append(("tag_image", image))
        found = self._image(image)
        if found is None:
            raise ImageNotFound(image)
        self._move_tag(found["Id"], f"{repository}:{tag}")

    def remove_image(self, ref: str, *, noprune: bool = False, force: bool = False) -> None:
        self.calls.append(("remove_image", ref))
        image = self._image(ref)
        if image is None:
            raise ImageNotFound(ref)
        if _full_ref(ref) in image["RepoTags"]:
            image["RepoTags"].remove(_full_ref(ref))
        used = any(raw["Image"] == image["Id"] for raw in self.containers.values())
        if used and ref == image["Id"] and not force:
            raise DockerError(f"Docker engine error: image {ref} is being used")
        if not image["RepoTags"] and not used:
            del self.images[image["Id"]]

    def build(
        self,
        context: bytes,
        *,
        tag: str,
        buildargs: Mapping[str, str] | None = None,
        no_cache: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        self.calls.append(("build", tag))
        with tarfile.open(fileobj=io.BytesIO(context)) as tar:
            if "Dockerfile" not in tar.getnames():
                yield {"error": "Cannot locate specified Dockerfile: Dockerfile"}
                return
            member = tar.extractfile("Dockerfile")
            dockerfile = member.read().decode() if member else ""
        self.builds.append(dict(buildargs or {}))
        base_ref = dockerfile.split("\n", 1)[0].removeprefix("FROM ")
        base = self._image(base_ref)
        env: Sequence[str] = SANDBOX_ENV
        derived = base is not None and not (buildargs or {}).get("OPENCODE_VERSION")
        if base is not None and derived:
            # A build on a present image (a derived image): it inherits what that one has.
            env = base["Config"]["Env"]
            image_labels = {**(base["Config"]["Labels"] or {}), **(labels or {})}
        else:
            version = (buildargs or {}).get("OPENCODE_VERSION", "")
            own = {LABEL_OPENCODE_VERSION: version, LABEL_EDGE: EDGE_LABEL}  # the Dockerfile's
            image_labels = {**own, **(labels or {})}
        for line in dockerfile.splitlines():
            yield {"stream": f"Step : {line}\n"}
            if derived and "apt-get install" in line:
                words = line.split("--no-install-recommends ", 1)[1].split(" && ", 1)[0]
                for package in words.split():
                    if package not in self.apt_packages:
                        yield {"stream": f"E: Unable to locate package {package}\n"}
                        yield {"error": "The command returned a non-zero code: 100"}
                        return
        # The layer cache: the same context and arguments make the same image.
        inputs = hashlib.sha256(context).hexdigest() + json.dumps(
            [buildargs, labels], sort_keys=True
        )
        image_id = _digest(inputs + (f"-{next(self._serial)}" if no_cache else ""))
        self.add_image(tag, env=env, labels=image_labels, image_id=image_id)
        yield {"aux": {"ID": image_id}}
        yield {"stream": f"Successfully tagged {tag}\n"}

    def pull(self, repository: str, tag: str) -> Iterator[dict[str, Any]]:
        ref = f"{repository}:{tag}"
        self.calls.append(("pull", ref))
        if ref not in self.registry:
            raise ImageNotFound(ref)  # what the client makes of "manifest unknown" (404)
        yield {"status": f"Pulling from {repository}", "id": tag}
        env, labels, image_id = self.registry[ref]
        self.add_image(ref, env=env, labels=labels, image_id=image_id)
        yield {"status": f"Status: Downloaded newer image for {ref}"}

    # -- volumes ----------------------------------------------------------------------

    def _add_volume(self, name: str, labels: Mapping[str, str]) -> None:
        self.volumes[name] = {"Name": name, "Driver": "local", "Labels": dict(labels) or None}

    def inspect_volume(self, name: str) -> VolumeInfo | None:
        return parse_volume(copy.deepcopy(self.volumes[name])) if name in self.volumes else None

    def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        self.calls.append(("create_volume", name))
        if name not in self.volumes:
            self._add_volume(name, labels)

    def remove_volume(self, name: str) -> None:
        self.calls.append(("remove_volume", name))
        if name in self.volumes:
            if self.list_containers(volume=name):
                raise VolumeInUse(name, [])  # the engine names container ids, not names
            del self.volumes[name]
            self.volume_files.pop(name, None)

    def list_volumes(self, *, labels: Sequence[str] = ()) -> list[VolumeInfo]:
        return [
            parse_volume(copy.deepcopy(raw))
            for raw in self.volumes.values()
            if _has_labels(raw["Labels"] or {}, labels)
        ]

    def volume_sizes(self, names: Sequence[str]) -> dict[str, int | None]:
        self.disk_usage_counts += 1  # the engine's slow walk over every volume's files
        return {name: VOLUME_BYTES for name in names if name in self.volumes}

    def memory_in_use(self, name: str) -> int | None:
        return 100 << 20 if name in self.containers else None

    # -- networks ---------------------------------------------------------------------

    def network_exists(self, name: str) -> bool:
        return name in self.networks

    def create_network(self, name: str, labels: Mapping[str, str]) -> None:
        self.calls.append(("create_network", name))
        self.networks.setdefault(name, {"Labels": dict(labels), "Containers": set()})

    def remove_network(self, name: str) -> None:
        self.calls.append(("remove_network", name))
        network = self.networks.get(name)
        if network is not None:
            if network["Containers"] & set(self.containers):
                raise DockerError(
                    f"error while removing network: network {name} has active endpoints"
                )
            del self.networks[name]

    def list_networks(self, *, labels: Sequence[str] = ()) -> list[str]:
        return sorted(n for n, raw in self.networks.items() if _has_labels(raw["Labels"], labels))

    def connect_network(self, network: str, container: str) -> None:
        self.calls.append(("connect_network", f"{network} {container}"))
        if network not in self.networks:
            raise DockerError(f"network {network} not found")
        if container not in self.containers:
            raise ContainerNotFound(container)
        self.networks[network]["Containers"].add(container)

    def disconnect_network(self, network: str, container: str) -> None:
        self.calls.append(("disconnect_network", f"{network} {container}"))
        if network in self.networks:
            self.networks[network]["Containers"].discard(container)

    # -- swarm ------------------------------------------------------------------------

    def swarm_membership(self) -> SwarmMembership:
        return self.membership

    def swarm_nodes(self) -> list[SwarmNode]:
        return sorted(self.nodes, key=lambda node: (node.hostname, node.id))

    def swarm_services(self, *, labels: Sequence[str] = ()) -> list[SwarmService]:
        chosen = [s for s in self.services if _has_labels(s.labels, labels)]
        return sorted(chosen, key=lambda s: s.name)

    def swarm_tasks(self, *, service: str | None = None, ended: bool = False) -> list[SwarmTask]:
        return [
            t
            for t in self.tasks
            if (service is None or t.service_id in (service, f"svc-{service}"))
            and (ended or t.desired_state in ("", "running"))
        ]

    def create_overlay_network(self, name: str, labels: Mapping[str, str]) -> None:
        self.calls.append(("create_overlay_network", name))
        self.networks.setdefault(
            name, {"Labels": dict(labels), "Containers": set(), "Driver": "overlay"}
        )

    def create_secret(self, name: str, data: bytes, labels: Mapping[str, str]) -> str:
        self.calls.append(("create_secret", name))
        self.secrets[name] = data
        self.secret_labels[name] = dict(labels)
        return f"secret-{name}"

    def list_secrets(self, *, labels: Sequence[str] = ()) -> list[str]:
        return sorted(
            name for name, labelled in self.secret_labels.items() if _has_labels(labelled, labels)
        )

    def remove_secret(self, name: str) -> None:
        self.calls.append(("remove_secret", name))
        self.secrets.pop(name, None)
        self.secret_labels.pop(name, None)

    def remove_service(self, name: str) -> bool:
        self.calls.append(("remove_service", name))
        before = len(self.services)
        self.services = [s for s in self.services if s.name != name]
        return len(self.services) < before

    def create_service(self, body: Mapping[str, Any]) -> str:
        """Records the body; the service is placed where its constraint pins it."""
        self.calls.append(("create_service", str(body["Name"])))
        self.service_bodies.append(dict(body))
        task = body["TaskTemplate"]
        service = SwarmService(
            id=f"svc-{body['Name']}",
            name=str(body["Name"]),
            labels=dict(body.get("Labels") or {}),
            constraints=tuple(task["Placement"]["Constraints"]),
            memory_reserved=int(task["Resources"].get("Reservations", {}).get("MemoryBytes", 0)),
        )
        self.services.append(service)
        self.service_specs[service.name] = (1, copy.deepcopy(dict(body)))
        if task.get("RestartPolicy", {}).get("Condition") == "none":
            role = service.labels.get(LABEL_ROLE, "")
            state, error = self.one_shot_ends.get(role, self.one_shot_end)
            node_id = pinned_node(service) or ""
            self.tasks.append(SwarmTask(service.id, node_id, state, "shutdown", error=error))
        return service.id

    def service_spec(self, name: str) -> tuple[int, dict[str, Any]] | None:
        found = self.service_specs.get(name)
        if found is None or not any(s.name == name for s in self.services):
            return None
        return found[0], copy.deepcopy(found[1])

    def update_service(self, name: str, version: int, spec: Mapping[str, Any]) -> None:
        """Keeps the new spec (in `service_bodies` too); the service's task stops, and one
        that runs its image where it is pinned now takes its place (none with no replica)."""
        self.calls.append(("update_service", name))
        found = self.service_specs.get(name)
        if found is None:
            raise DockerError(f"service {name} not found")
        if found[0] != version:
            raise DockerError(f"update out of sequence for {name}")
        body = {**copy.deepcopy(dict(spec)), "Name": name}
        self.service_specs[name] = (version + 1, body)
        self.service_bodies.append(body)
        task = body["TaskTemplate"]
        replicas = int(body["Mode"]["Replicated"]["Replicas"])
        at = next(i for i, s in enumerate(self.services) if s.name == name)
        service = self.services[at] = dataclasses.replace(
            self.services[at],
            labels=dict(body.get("Labels") or {}),
            constraints=tuple(task["Placement"]["Constraints"]),
            memory_reserved=int(task["Resources"].get("Reservations", {}).get("MemoryBytes", 0)),
            replicas=replicas,
        )
        self.tasks = [
            replace(t, state="shutdown", desired_state="shutdown")
            if t.service_id == service.id
            else t
            for t in self.tasks
        ]
        if replicas:
            image = task["ContainerSpec"]["Image"]
            node_id = pinned_node(service) or ""
            self.tasks.append(SwarmTask(service.id, node_id, "running", "running", image=image))

    def node_spec(self, node_id: str) -> tuple[int, dict[str, Any]]:
        node = next(n for n in self.nodes if n.id == node_id)
        spec = {"Role": node.role, "Availability": node.availability, "Labels": {}}
        return self.node_versions.get(node_id, 1), spec

    def update_node(self, node_id: str, version: int, spec: Mapping[str, Any]) -> None:
        self.calls.append(("update_node", f"{node_id} {spec['Availability']}"))
        self.node_versions[node_id] = version + 1
        self.nodes = [
            replace(n, availability=str(spec["Availability"])) if n.id == node_id else n
            for n in self.nodes
        ]

    def push(self, repository: str, tag: str) -> Iterator[dict[str, Any]]:
        ref = f"{repository}:{tag}"
        self.calls.append(("push", ref))
        if self.inspect_image(ref) is None:
            raise ImageNotFound(ref)
        yield {"status": f"The push refers to repository [{repository}]"}
        if self.push_error is not None:
            yield {"error": self.push_error, "errorDetail": {"message": self.push_error}}
            return
        self.pushed.append(ref)
        yield {"status": f"{tag}: digest: sha256:0 size: 1"}


if TYPE_CHECKING:
    # mypy holds the fake to the engine's interface, the one the tool is written against.
    _: Engine = FakeEngine()
    _swarm: SwarmEngine = FakeEngine()
