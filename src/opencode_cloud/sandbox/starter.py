"""Team mode's starter: starts and stops people's opencode containers for the front door.

The one part of team mode with the engine's socket (docs/team.md). The front door's
login service asks it, over a unix socket, to start a person's instance when they sign
in and it does not answer, to stop one that has been idle, and to make the instance of a
person made by their first single sign-on (`create`, below). It can do nothing else:
it acts only on the container named `OCC_TEAM_PREFIX-user-NAME` whose labels say
`io.opencode-cloud.managed=true`, `io.opencode-cloud.instance=OCC_TEAM_INSTANCE`,
`io.opencode-cloud.role=person` and `io.opencode-cloud.person=NAME`; for any other
container (or none) the answer is `missing`, and the engine is asked nothing more.

Protocol: one JSON line per connection, at most `MAX_REQUEST` bytes, within
`REQUEST_SECONDS` of connecting; one JSON line back, then the connection closes.

- request `{"op": "start" | "stop" | "state", "name": NAME}`, NAME matching `NAME_RULE`
- answer `{"state": "running" | "starting" | "stopped" | "missing"}` or
  `{"error": "..."}`
- request `{"op": "create", "name": NAME, "password": HEX}`: as `start`, and when NAME has
  no container yet, first make it (below); the answer adds `"upstream": "HOST:PORT"`,
  where the door reaches their opencode

`start` answers `starting` when the engine started the container now (opencode inside
needs a few seconds more) and `running` when it was running already; `stop` gives the
container `STOP_SECONDS` to end before the engine kills it and answers `stopped`;
`state` answers `running`, `stopped` or `missing`.

`create` makes the instance of a person made by their first single sign-on, as
`occ user add` would, from the template the tool writes at each `occ team start`
(`TEMPLATE_PATH`, root's, 0600: the door can neither read nor change it): a person's
container body, volumes and network, for a placeholder name that is replaced by NAME.
The door chooses the name and the internal password (hex digits, put in the container as
root's file) and nothing else. It is refused when the team has the template's
`max_people` people's containers already, and when any of NAME's volumes exists (left
from a removed person: the administrator decides, with `occ team sso sync`).

It listens on `/run/opencode-cloud/starter/starter.sock`, mode 0666: the folder is a
volume that only the front door and the starter mount, and the door's Caddy and login
service (uid 61000) must connect. A socket left there by an earlier run is replaced;
a symbolic link or any other file is refused, and so is a folder others could write.
One thread per connection, at most `MAX_CONNECTIONS` at once (more get `busy`). One log
line per action, on stderr.

It runs as root with every capability dropped, no network, a read-only root file system
and no new privileges: root only so that it can use the engine's socket (root's, 0660)
without a capability. The tool creates its container from the sandbox image, like:

    docker run -d --name opencode-cloud-door-starter --restart unless-stopped \\
      --label io.opencode-cloud.managed=true --label io.opencode-cloud.instance=default \\
      --label io.opencode-cloud.role=starter \\
      --user 0:0 --cap-drop ALL --security-opt no-new-privileges --network none \\
      --read-only --pids-limit 64 \\
      -e OCC_TEAM_PREFIX=opencode-cloud -e OCC_TEAM_INSTANCE=default \\
      -v /var/run/docker.sock:/var/run/docker.sock \\
      -v opencode-cloud-door-starter:/run/opencode-cloud/starter \\
      --entrypoint /usr/bin/python3 opencode-cloud-sandbox:VERSION \\
      -I /usr/local/lib/opencode-cloud/starter.py

Only Python's standard library, run as `python3 -I`. The engine is spoken to with
`http.client` over its unix socket, on the unversioned API paths (the engine's own
version).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import stat
import sys
import threading
import time
from typing import Any
from urllib.parse import quote

SOCKET_PATH = "/run/opencode-cloud/starter/starter.sock"
TEMPLATE_PATH = "/run/opencode-cloud/starter/person.json"
MAX_TEMPLATE = 256 * 1024
ENGINE_SOCKET = "/var/run/docker.sock"
MAX_REQUEST = 1024  # bytes of the request line, its newline not counted
REQUEST_SECONDS = 5.0  # to send the whole request, however slowly
MAX_CONNECTIONS = 8
# Connections beyond MAX_CONNECTIONS that get a `busy` answer (a thread each, briefly);
# any more are closed at once.
MAX_REFUSALS = 16
# After the answer: how long what the client still sends is read and dropped, so that
# closing does not reset the connection (and lose the answer) on a client that sent more.
LINGER_SECONDS = 1.0
LINGER_BYTES = 256 * 1024
STOP_SECONDS = 10
# A stop takes up to STOP_SECONDS, and then the kill.
ENGINE_SECONDS = STOP_SECONDS + 20.0
MAX_ENGINE_ANSWER = 4 << 20  # a container's description is some kilobytes
# Exit code when the configuration is wrong (EX_CONFIG): starting again will not help.
EX_CONFIG = 78

# A person's name (docs/team.md); fullmatch, so that no trailing newline slips through.
NAME_RULE = re.compile(r"[a-z](?:[a-z0-9-]{0,28}[a-z0-9])?")
# OCC_TEAM_PREFIX and OCC_TEAM_INSTANCE: parts of Docker names.
PART_RULE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
# The internal password the door chose for a person's new instance.
PASSWORD_RULE = re.compile(r"[0-9a-f]{32,128}")
OPS = ("start", "stop", "state", "create")

LABEL_MANAGED = "io.opencode-cloud.managed"
LABEL_INSTANCE = "io.opencode-cloud.instance"
LABEL_ROLE = "io.opencode-cloud.role"
LABEL_PERSON = "io.opencode-cloud.person"


def log(message: str) -> None:
    print(f"opencode-cloud-starter: {message}", file=sys.stderr, flush=True)


class StarterError(Exception):
    """What the starter cannot do; its message goes into the `error` answer or the log."""


# --------------------------------------------------------------------------- the engine


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 to a unix socket (the engine's)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Engine:
    """The Docker engine's API, one short connection per call."""

    def __init__(self, socket_path: str = ENGINE_SOCKET, timeout: float = ENGINE_SECONDS) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def call(
        self, method: str, path: str, body: Any = None, *, tar: bytes | None = None
    ) -> tuple[int, Any]:
        """(status, decoded JSON answer or None); `body` is sent as JSON, `tar` as an
        archive."""
        connection = _UnixConnection(self.socket_path, self.timeout)
        headers = {}
        data = None
        if tar is not None:
            data, headers = tar, {"Content-Type": "application/x-tar"}
        elif body is not None:
            data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        try:
            connection.request(method, path, body=data, headers=headers)
            answer = connection.getresponse()
            raw = answer.read(MAX_ENGINE_ANSWER + 1)
            status = answer.status
        except (OSError, http.client.HTTPException) as exc:
            raise StarterError(f"the engine does not answer ({type(exc).__name__})") from exc
        finally:
            connection.close()
        if len(raw) > MAX_ENGINE_ANSWER:
            raise StarterError("the engine's answer is too long")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return status, body


# --------------------------------------------------------------------------- the rules


class Starter:
    """What the starter does for a request, given the engine and the team's names."""

    def __init__(
        self, engine: Engine, prefix: str, instance: str, template: str = TEMPLATE_PATH
    ) -> None:
        self.engine = engine
        self.prefix = prefix
        self.instance = instance
        self.template = template
        # One creation at a time: the count of people's containers holds while it is made.
        self._creating = threading.Lock()

    def container_name(self, name: str) -> str:
        return f"{self.prefix}-user-{name}"

    def person_container(self, name: str) -> dict[str, Any] | None:
        """The engine's description of `name`'s container, or None when there is none
        or it is not a person's container of this team (name and labels)."""
        wanted = self.container_name(name)
        status, info = self.engine.call("GET", f"/containers/{quote(wanted, safe='')}/json")
        if status == 404:
            return None
        if status != 200 or not isinstance(info, dict):
            raise StarterError(f"the engine answered {status}")
        config = info.get("Config")
        labels = config.get("Labels") if isinstance(config, dict) else None
        expected = {
            LABEL_MANAGED: "true",
            LABEL_INSTANCE: self.instance,
            LABEL_ROLE: "person",
            LABEL_PERSON: name,
        }
        if info.get("Name") != f"/{wanted}" or not isinstance(labels, dict):
            return None
        if any(labels.get(key) != value for key, value in expected.items()):
            return None
        if not isinstance(info.get("Id"), str) or not _CONTAINER_ID.fullmatch(info["Id"]):
            return None
        return info

    def answer(self, request: Any) -> dict[str, str]:
        """The answer to one decoded request."""
        if not isinstance(request, dict):
            return {"error": "the request is not a JSON object"}
        op, name = request.get("op"), request.get("name")
        if op not in OPS:
            return {"error": f"op must be one of {', '.join(OPS)}"}
        if not isinstance(name, str) or not NAME_RULE.fullmatch(name):
            return {"error": "not a person's name"}
        if op == "create":
            password = request.get("password")
            if not isinstance(password, str) or not PASSWORD_RULE.fullmatch(password):
                return {"error": "password: 32 to 128 hex digits"}
            with self._creating:
                if self.person_container(name) is None:
                    self.create(name, password)
            answer = self.answer({"op": "start", "name": name})
            return {**answer, "upstream": f"{self.container_name(name)}:{self._port()}"}
        info = self.person_container(name)
        if info is None:
            return {"state": "missing"}
        if op == "state":
            state = info.get("State")
            running = (
                isinstance(state, dict)
                and state.get("Running") is True
                and state.get("Paused") is not True
            )
            return {"state": "running" if running else "stopped"}
        # The id the checks were made on: a container made under the name since is not
        # acted on.
        cid = info["Id"]
        if op == "start":
            status, body = self.engine.call("POST", f"/containers/{cid}/start")
            if status == 204:
                return {"state": "starting"}
            if status == 304:
                return {"state": "running"}
        else:
            status, body = self.engine.call("POST", f"/containers/{cid}/stop?t={STOP_SECONDS}")
            if status in (204, 304):
                return {"state": "stopped"}
        if status == 404:
            return {"state": "missing"}
        message = body.get("message") if isinstance(body, dict) else None
        detail = f": {message}" if isinstance(message, str) else ""
        return {"error": f"the engine answered {status}{detail}"[:300]}

    # -- a person's new instance ---------------------------------------------------------

    def load_template(self) -> dict[str, Any]:
        """The tool's template of a person's instance: a regular file of this process's
        user that nobody else may read or change."""
        try:
            fd = os.open(self.template, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise StarterError(
                "no template of a person's instance: the team was started by an older tool"
            ) from exc
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                raise StarterError("the template is not a file of the starter's user")
            if info.st_mode & 0o077:
                raise StarterError("the template may be read or changed by others")
            raw = handle.read(MAX_TEMPLATE + 1)
        try:
            template = json.loads(raw) if len(raw) <= MAX_TEMPLATE else None
        except ValueError:
            template = None
        keys = ("placeholder", "body", "volumes", "network", "door", "port", "password_path")
        if not isinstance(template, dict) or any(key not in template for key in keys):
            raise StarterError("the template is not one of the tool's")
        if not NAME_RULE.fullmatch(str(template["placeholder"])):
            raise StarterError("the template's placeholder is not a name")
        return template

    def _port(self) -> int:
        port = self.load_template()["port"]
        if not isinstance(port, int) or not 0 < port < 65536:
            raise StarterError("the template's port is not a port")
        return port

    def _people_count(self) -> int:
        filters = json.dumps(
            {"label": [f"{LABEL_INSTANCE}={self.instance}", f"{LABEL_ROLE}=person"]}
        )
        status, found = self.engine.call("GET", f"/containers/json?all=1&filters={quote(filters)}")
        if status != 200 or not isinstance(found, list):
            raise StarterError(f"the engine answered {status}")
        return len(found)

    def _expect(self, status: int, body: Any, wanted: tuple[int, ...], what: str) -> None:
        if status not in wanted:
            message = body.get("message") if isinstance(body, dict) else None
            detail = f": {message}" if isinstance(message, str) else ""
            raise StarterError(f"{what}: the engine answered {status}{detail}"[:300])

    def create(self, name: str, password: str) -> None:
        """Make `name`'s volumes, network and container from the template, hand the
        container its internal password, and put the door on the network; what was made
        goes again when a step fails."""
        template = self.load_template()
        wanted = _replaced(template, str(template["placeholder"]), name)
        body = wanted["body"]
        labels = body.get("Labels") if isinstance(body, dict) else None
        expected = {
            LABEL_MANAGED: "true",
            LABEL_INSTANCE: self.instance,
            LABEL_ROLE: "person",
            LABEL_PERSON: name,
        }
        if not isinstance(labels, dict) or any(labels.get(k) != v for k, v in expected.items()):
            raise StarterError("the template does not make a person's container of this team")
        limit = template.get("max_people")
        if not isinstance(limit, int) or self._people_count() >= limit:
            raise StarterError(f"the team has {limit} people's instances: no more at sign-in")
        volumes = [v for v in wanted["volumes"] if isinstance(v, dict)]
        for volume in volumes:
            status, _ = self.engine.call("GET", f"/volumes/{quote(str(volume['Name']), safe='')}")
            if status != 404:
                raise StarterError(
                    f"{name}'s volumes are left from before: the administrator decides"
                )
        made: list[str] = []
        cid = None
        try:
            for volume in volumes:
                status, answer = self.engine.call(
                    "POST",
                    "/volumes/create",
                    {"Name": volume["Name"], "Driver": "local", "Labels": volume["Labels"]},
                )
                self._expect(status, answer, (200, 201), "a volume")
                made.append(str(volume["Name"]))
            network = wanted["network"]
            status, _ = self.engine.call("GET", f"/networks/{quote(network['Name'], safe='')}")
            if status == 404:
                status, answer = self.engine.call(
                    "POST",
                    "/networks/create",
                    {**network, "Driver": "bridge", "CheckDuplicate": True},
                )
                self._expect(status, answer, (200, 201), "the network")
            status, answer = self.engine.call(
                "POST", f"/containers/create?name={quote(self.container_name(name))}", body
            )
            self._expect(status, answer, (201,), "the container")
            cid = answer.get("Id") if isinstance(answer, dict) else None
            if not isinstance(cid, str) or not _CONTAINER_ID.fullmatch(cid):
                raise StarterError("the engine gave the container no id")
            folder, _, filename = str(template["password_path"]).rpartition("/")
            status, answer = self.engine.call(
                "PUT",
                f"/containers/{cid}/archive?path={quote(folder or '/')}",
                tar=_root_file(filename, password.encode()),
            )
            self._expect(status, answer, (200,), "the internal password")
            status, answer = self.engine.call(
                "POST",
                f"/networks/{quote(network['Name'], safe='')}/connect",
                {"Container": template["door"]},
            )
            if not (status == 403 and "already exists" in str(answer)):
                self._expect(status, answer, (200,), "the door on the network")
        except StarterError:
            if cid is not None:
                self.engine.call("DELETE", f"/containers/{cid}?force=1")
            for volume_name in made:
                self.engine.call("DELETE", f"/volumes/{quote(volume_name, safe='')}")
            raise
        log(f"made {name}'s instance")


def _replaced(value: Any, placeholder: str, name: str) -> Any:
    """`value` with `placeholder` replaced by `name` in every string it holds."""
    if isinstance(value, str):
        return value.replace(placeholder, name)
    if isinstance(value, list):
        return [_replaced(item, placeholder, name) for item in value]
    if isinstance(value, dict):
        return {key: _replaced(item, placeholder, name) for key, item in value.items()}
    return value


def _root_file(name: str, content: bytes) -> bytes:
    """A tar archive of one file of root's, 0600."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uid, info.gid = len(content), 0o600, 0, 0
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


# --------------------------------------------------------------------------- the server


def _check_folder(folder: str) -> None:
    """The socket's folder: a real folder that nobody but its owner may change."""
    try:
        info = os.lstat(folder)
    except OSError as exc:
        raise StarterError(f"{folder}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise StarterError(f"{folder} is not a folder")
    if info.st_mode & 0o022 or info.st_uid != os.geteuid():
        raise StarterError(f"{folder} may be changed by others than this process's user")


def open_listener(path: str = SOCKET_PATH) -> socket.socket:
    """A listening unix socket at `path`, mode 0666. A socket already there that nobody
    listens on is replaced; a live one, a symbolic link or any other file is refused."""
    _check_folder(os.path.dirname(path) or ".")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(info.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a socket"
            raise StarterError(f"{path} is {kind}: refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: left by a starter that ended
        else:
            raise StarterError(f"another starter listens on {path}")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        # The folder is writable by this user only: the name is still the socket made.
        os.chmod(path, 0o666)
        listener.listen(16)
    except OSError:
        listener.close()
        raise
    return listener


def _peer_uid(conn: socket.socket) -> int | None:
    with contextlib.suppress(OSError, AttributeError):
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        return int.from_bytes(creds[4:8], sys.byteorder)
    return None


def read_request(conn: socket.socket, deadline: float) -> bytes:
    """The request line (without its newline): at most MAX_REQUEST bytes, ended by a
    newline or by the client's end of sending, before `deadline` (time.monotonic)."""
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StarterError("the request took too long")
        conn.settimeout(left)
        try:
            chunk = conn.recv(MAX_REQUEST + 1 - len(data))
        except TimeoutError as exc:
            raise StarterError("the request took too long") from exc
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST and b"\n" not in data:
            raise StarterError("the request is too long")
    return data.split(b"\n", 1)[0]


class Server:
    """Accepts connections and answers each in a thread of its own."""

    def __init__(
        self,
        listener: socket.socket,
        starter: Starter,
        max_connections: int = MAX_CONNECTIONS,
        request_seconds: float = REQUEST_SECONDS,
    ) -> None:
        self.listener = listener
        self.starter = starter
        self.request_seconds = request_seconds
        self.slots = threading.BoundedSemaphore(max_connections)
        self.refusals = threading.BoundedSemaphore(MAX_REFUSALS)
        self.stopped = threading.Event()

    def serve_forever(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopped.is_set():
                    break
                raise
            if self.slots.acquire(blocking=False):
                threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()
            elif self.refusals.acquire(blocking=False):
                threading.Thread(target=self._refuse, args=(conn,), daemon=True).start()
            else:
                conn.close()

    def stop(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        self.stop()
        self.listener.close()

    @staticmethod
    def _send(conn: socket.socket, answer: dict[str, str]) -> None:
        """Send the answer and close the connection: what the client still sends is read
        (for LINGER_SECONDS at most) and dropped first."""
        try:
            conn.settimeout(2.0)
            conn.sendall(json.dumps(answer).encode() + b"\n")
            conn.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            dropped = 0
            while dropped < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                conn.settimeout(left)
                chunk = conn.recv(65536)
                if not chunk:
                    break
                dropped += len(chunk)
        except OSError:
            pass
        finally:
            conn.close()

    def _refuse(self, conn: socket.socket) -> None:
        try:
            log("busy: a connection refused")
            self._send(conn, {"error": "busy"})
        finally:
            self.refusals.release()

    def _serve_one(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + self.request_seconds
        peer = _peer_uid(conn)
        what = "?"
        try:
            try:
                line = read_request(conn, deadline)
                try:
                    request = json.loads(line)
                except ValueError:
                    raise StarterError("the request is not JSON") from None
                if isinstance(request, dict):
                    what = f"{str(request.get('op'))[:10]!r} {str(request.get('name'))[:40]!r}"
                answer = self.starter.answer(request)
            except StarterError as exc:
                answer = {"error": str(exc)}
            except Exception as exc:  # a thread's end must not go unsaid
                answer = {"error": f"unexpected: {type(exc).__name__}"}
            log(f"{what} (uid {peer}): {json.dumps(answer)}")
            self._send(conn, answer)
        finally:
            conn.close()
            self.slots.release()


def main() -> int:
    prefix = os.environ.get("OCC_TEAM_PREFIX", "")
    instance = os.environ.get("OCC_TEAM_INSTANCE", "")
    for variable, value in (("OCC_TEAM_PREFIX", prefix), ("OCC_TEAM_INSTANCE", instance)):
        if not PART_RULE.fullmatch(value):
            log(f"{variable} must be lower-case letters, digits and dashes (got {value!r}).")
            return EX_CONFIG
    try:
        listener = open_listener(SOCKET_PATH)
    except (StarterError, OSError) as exc:
        log(f"cannot listen: {exc}")
        return EX_CONFIG
    server = Server(listener, Starter(Engine(), prefix, instance))
    # PID 1 of its container: a signal without a handler would be ignored.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: server.stop())
    log(f"listening on {SOCKET_PATH} for {prefix}-user-* of instance {instance}")
    try:
        server.serve_forever()
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(SOCKET_PATH)
    return 0


if __name__ == "__main__":
    sys.exit(main())
