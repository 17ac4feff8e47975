"""Team mode's starter (sandbox/starter.py), served for real on a unix socket, against a
fake engine: a unix-socket HTTP server in a thread that records every request."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import io
import json
import os
import re
import socket
import socketserver
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote

import pytest

from opencode_cloud.instance import Instance

STARTER_FILE = Path(__file__).resolve().parents[2] / "src/opencode_cloud/sandbox/starter.py"
PREFIX = "opencode-cloud"
INSTANCE = "default"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("occ_starter", STARTER_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


starter = _load()


# --------------------------------------------------------------------------- fake engine


def person_labels(name: str, **changes: str) -> dict[str, str]:
    labels = {
        "io.opencode-cloud.managed": "true",
        "io.opencode-cloud.instance": INSTANCE,
        "io.opencode-cloud.role": "person",
        "io.opencode-cloud.person": name,
    }
    labels.update(changes)
    return labels


class FakeEngine:
    """Containers by name, and every request made (method, path)."""

    def __init__(self) -> None:
        self.containers: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.bodies: dict[tuple[str, str], bytes] = {}  # the last body of each request
        self.volumes: dict[str, dict[str, str]] = {}  # name -> labels
        self.networks: dict[str, list[str]] = {}  # name -> containers connected
        self.files: dict[str, dict[str, tuple[bytes, int, int]]] = {}  # id -> path -> file
        self.fail: str | None = None  # a path fragment the engine refuses (500)

    def add(self, name: str, labels: dict[str, str], *, running: bool = False) -> str:
        cid = os.urandom(32).hex()
        self.containers[name] = {
            "Id": cid,
            "Name": f"/{name}",
            "Config": {"Labels": labels},
            "State": {"Running": running, "Paused": False},
        }
        return cid

    def by_id(self, cid: str) -> dict[str, Any] | None:
        return next((c for c in self.containers.values() if c["Id"] == cid), None)

    def handle(self, method: str, path: str) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path))
        if self.fail and self.fail in path:
            return 500, {"message": "no space left on device"}
        made = self._making(method, path, self.bodies.get((method, path), b""))
        if made is not None:
            return made
        inspect = re.fullmatch(r"/containers/([^/]+)/json", path)
        if method == "GET" and inspect:
            found = self.containers.get(inspect.group(1))
            return (200, found) if found else (404, {"message": "No such container"})
        action = re.fullmatch(r"/containers/([0-9a-f]{64})/(start|stop)(\?t=\d+)?", path)
        if method == "POST" and action:
            container = self.by_id(action.group(1))
            if container is None:
                return 404, {"message": "No such container"}
            state = container["State"]
            if action.group(2) == "start":
                if state["Running"]:
                    return 304, None
                state["Running"] = True
                return 204, None
            if not state["Running"]:
                return 304, None
            state["Running"] = False
            return 204, None
        return 400, {"message": f"unexpected {method} {path}"}

    def _making(self, method: str, path: str, raw: bytes) -> tuple[int, Any] | None:
        """What `create` asks: lists, volumes, networks, a new container, its files."""
        body: Any = json.loads(raw) if raw and method != "PUT" else {}
        if method == "GET" and path.startswith("/containers/json?all=1&filters="):
            filters = json.loads(unquote(path.split("filters=", 1)[1]))
            wanted = dict(label.split("=", 1) for label in filters["label"])
            return 200, [
                {"Id": c["Id"]}
                for c in self.containers.values()
                if all(c["Config"]["Labels"].get(k) == v for k, v in wanted.items())
            ]
        if method == "POST" and path == "/volumes/create":
            self.volumes.setdefault(body["Name"], body["Labels"])
            return 201, {"Name": body["Name"]}
        if match := re.fullmatch(r"/volumes/([^/]+)", path):
            name = unquote(match.group(1))
            if method == "DELETE":
                self.volumes.pop(name, None)
                return 204, None
            return (200, {"Name": name}) if name in self.volumes else (404, {"message": "no"})
        if method == "GET" and (match := re.fullmatch(r"/networks/([^/]+)", path)):
            found = unquote(match.group(1)) in self.networks
            return (200, {}) if found else (404, {"message": "no such network"})
        if method == "POST" and path == "/networks/create":
            self.networks[body["Name"]] = []
            return 201, {"Id": "n"}
        if method == "POST" and (match := re.fullmatch(r"/networks/([^/]+)/connect", path)):
            self.networks[unquote(match.group(1))].append(body["Container"])
            return 200, None
        if method == "POST" and path.startswith("/containers/create?name="):
            name = unquote(path.split("=", 1)[1])
            if name in self.containers:
                return 409, {"message": "Conflict"}
            cid = self.add(name, body["Labels"])
            self.containers[name]["Body"] = body
            return 201, {"Id": cid}
        if method == "PUT" and (
            match := re.fullmatch(r"/containers/([0-9a-f]{64})/archive\?path=(.+)", path)
        ):
            folder = unquote(match.group(2))
            with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
                for member in tar.getmembers():
                    content = tar.extractfile(member)
                    assert content is not None
                    self.files.setdefault(match.group(1), {})[f"{folder}/{member.name}"] = (
                        content.read(),
                        member.mode,
                        member.uid,
                    )
            return 200, None
        if method == "DELETE" and (
            match := re.fullmatch(r"/containers/([0-9a-f]{64})\?force=1", path)
        ):
            self.containers = {
                k: c for k, c in self.containers.items() if c["Id"] != match.group(1)
            }
            return 204, None
        return None

    def actions(self) -> list[tuple[str, str]]:
        """The requests that change something (anything but GET)."""
        return [(m, p) for m, p in self.requests if m != "GET"]


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _handler(engine: FakeEngine) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def address_string(self) -> str:  # a unix socket has no address
            return "engine"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            engine.bodies[(self.command, self.path)] = self.rfile.read(length) if length else b""
            status, body = engine.handle(self.command, self.path)
            raw = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if status not in (204, 304):
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if status not in (204, 304):
                self.wfile.write(raw)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

    return Handler


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder of its own with a short path (a unix socket's path has ~100 bytes)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="occ-st-") as name:
        folder = Path(name)
        folder.chmod(0o755)
        yield folder


@pytest.fixture
def engine(short_dir: Path) -> Iterator[FakeEngine]:
    fake = FakeEngine()
    server = _UnixHTTPServer(str(short_dir / "docker.sock"), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def serve(short_dir: Path, engine: FakeEngine) -> Iterator[Callable[..., Path]]:
    """Start the starter's server (once per test) with the settings given; returns the
    path of its socket."""
    servers: list[Any] = []

    def start(**settings: Any) -> Path:
        folder = short_dir / "starter"
        folder.mkdir(mode=0o755, exist_ok=True)
        path = folder / "starter.sock"
        listener = starter.open_listener(str(path))
        rules = starter.Starter(
            starter.Engine(str(short_dir / "docker.sock"), 5.0),
            PREFIX,
            INSTANCE,
            str(folder / "person.json"),
        )
        server = starter.Server(listener, rules, **settings)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return path

    yield start
    for server in servers:
        server.close()


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(path))
    return sock


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def ask(path: Path, request: Any) -> dict[str, Any]:
    """One request, raw: a JSON line in, a JSON line out, then the starter closes."""
    with connect(path) as sock:
        raw = request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n"
        sock.sendall(raw)
        answer = read_answer(sock)
    assert answer.endswith(b"\n") and answer.count(b"\n") == 1, answer
    decoded: dict[str, Any] = json.loads(answer)
    return decoded


# --------------------------------------------------------------------------- the requests


def test_start_state_and_stop_of_a_persons_container(
    serve: Callable[..., Path], engine: FakeEngine
) -> None:
    cid = engine.add("opencode-cloud-user-alice", person_labels("alice"))
    path = serve()

    assert ask(path, {"op": "state", "name": "alice"}) == {"state": "stopped"}
    assert ask(path, {"op": "start", "name": "alice"}) == {"state": "starting"}
    assert ask(path, {"op": "state", "name": "alice"}) == {"state": "running"}
    assert ask(path, {"op": "start", "name": "alice"}) == {"state": "running"}  # 304
    assert ask(path, {"op": "stop", "name": "alice"}) == {"state": "stopped"}
    assert ask(path, {"op": "stop", "name": "alice"}) == {"state": "stopped"}  # 304
    assert engine.actions() == [
        ("POST", f"/containers/{cid}/start"),
        ("POST", f"/containers/{cid}/start"),
        ("POST", f"/containers/{cid}/stop?t=10"),
        ("POST", f"/containers/{cid}/stop?t=10"),
    ]
    # Every action looked at the container first, by its full name.
    assert ("GET", "/containers/opencode-cloud-user-alice/json") in engine.requests


def test_a_person_without_a_container_is_missing(
    serve: Callable[..., Path], engine: FakeEngine
) -> None:
    path = serve()
    for op in ("start", "stop", "state"):
        assert ask(path, {"op": op, "name": "nobody"}) == {"state": "missing"}
    assert engine.actions() == []


@pytest.mark.parametrize(
    "labels",
    [
        person_labels("alice", **{"io.opencode-cloud.instance": "work"}),
        person_labels("alice", **{"io.opencode-cloud.role": "door"}),
        person_labels("alice", **{"io.opencode-cloud.person": "bob"}),
        person_labels("alice", **{"io.opencode-cloud.managed": "false"}),
        {k: v for k, v in person_labels("alice").items() if k != "io.opencode-cloud.person"},
        {},
    ],
    ids=["other-instance", "other-role", "other-person", "unmanaged", "no-person", "none"],
)
def test_a_container_whose_labels_are_not_the_persons_is_missing_and_never_started(
    serve: Callable[..., Path], engine: FakeEngine, labels: dict[str, str]
) -> None:
    engine.add("opencode-cloud-user-alice", labels)
    path = serve()
    for op in ("start", "stop", "state"):
        assert ask(path, {"op": op, "name": "alice"}) == {"state": "missing"}
    assert engine.actions() == []
    assert engine.containers["opencode-cloud-user-alice"]["State"]["Running"] is False


def test_only_the_persons_own_container_name_is_looked_at(
    serve: Callable[..., Path], engine: FakeEngine
) -> None:
    """Labels alone do not make a container a person's: its name must be theirs too
    (the door of the same instance, say, carries the instance's labels)."""
    engine.add("opencode-cloud-door", person_labels("alice"))
    engine.add("alice", person_labels("alice"))
    path = serve()
    assert ask(path, {"op": "start", "name": "alice"}) == {"state": "missing"}
    assert engine.requests == [("GET", "/containers/opencode-cloud-user-alice/json")]


def test_a_container_answering_under_another_name_is_missing(
    serve: Callable[..., Path], engine: FakeEngine
) -> None:
    cid = engine.add("opencode-cloud-user-alice", person_labels("alice"))
    engine.containers["opencode-cloud-user-alice"]["Name"] = "/opencode-cloud-user-alicex"
    path = serve()
    assert ask(path, {"op": "start", "name": "alice"}) == {"state": "missing"}
    assert ("POST", f"/containers/{cid}/start") not in engine.requests


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Alice",
        "1alice",
        "-alice",
        "alice-",
        "al_ice",
        "al ice",
        "alice\n",
        "../alice",
        "alice/start",
        "a" * 31,
        "al%2fice",
        7,
        None,
        ["alice"],
    ],
)
def test_a_name_that_is_not_a_persons_is_refused_without_asking_the_engine(
    serve: Callable[..., Path], engine: FakeEngine, name: Any
) -> None:
    path = serve()
    answer = ask(path, {"op": "start", "name": name})
    assert set(answer) == {"error"}
    assert engine.requests == []


def test_the_longest_and_shortest_names_are_accepted(
    serve: Callable[..., Path], engine: FakeEngine
) -> None:
    longest = "a" + "b-" * 14 + "c"  # 30 characters
    assert len(longest) == 30
    engine.add(f"opencode-cloud-user-{longest}", person_labels(longest))
    engine.add("opencode-cloud-user-z", person_labels("z"), running=True)
    path = serve()
    assert ask(path, {"op": "start", "name": longest}) == {"state": "starting"}
    assert ask(path, {"op": "state", "name": "z"}) == {"state": "running"}


@pytest.mark.parametrize(
    "request_line",
    [
        b"not json\n",
        b"[1, 2]\n",
        b'"start"\n',
        b'{"op": "restart", "name": "alice"}\n',
        b'{"op": "remove", "name": "alice"}\n',
        b'{"name": "alice"}\n',
        b"\n",
        b"\xff\xfe\n",
    ],
)
def test_a_request_that_is_not_one_of_the_three_is_an_error(
    serve: Callable[..., Path], engine: FakeEngine, request_line: bytes
) -> None:
    engine.add("opencode-cloud-user-alice", person_labels("alice"))
    path = serve()
    assert set(ask(path, request_line)) == {"error"}
    assert engine.actions() == []


def test_a_request_without_a_newline_is_answered_when_the_client_stops_sending(
    serve: Callable[..., Path], engine: FakeEngine
) -> None:
    engine.add("opencode-cloud-user-alice", person_labels("alice"), running=True)
    path = serve()
    with connect(path) as sock:
        sock.sendall(b'{"op": "state", "name": "alice"}')
        sock.shutdown(socket.SHUT_WR)
        assert json.loads(read_answer(sock)) == {"state": "running"}


def test_only_the_first_line_is_read(serve: Callable[..., Path], engine: FakeEngine) -> None:
    engine.add("opencode-cloud-user-alice", person_labels("alice"))
    path = serve()
    two = b'{"op": "state", "name": "alice"}\n{"op": "start", "name": "alice"}\n'
    assert ask(path, two) == {"state": "stopped"}
    assert engine.actions() == []


# --------------------------------------------------------------------------- limits


def test_a_request_of_exactly_the_limit_is_read_and_one_byte_more_is_refused(
    serve: Callable[..., Path], engine: FakeEngine
) -> None:
    engine.add("opencode-cloud-user-alice", person_labels("alice"), running=True)
    path = serve()
    base = b'{"op": "state", "name": "alice"}'
    padded = base[:-1] + b" " * (starter.MAX_REQUEST - len(base)) + b"}"
    assert len(padded) == starter.MAX_REQUEST
    assert ask(path, padded + b"\n") == {"state": "running"}
    answer = ask(path, padded + b" \n")
    assert answer == {"error": "the request is too long"}


def test_an_endless_request_is_cut_off_at_the_limit(
    serve: Callable[..., Path], engine: FakeEngine
) -> None:
    path = serve()
    with connect(path) as sock:
        with contextlib.suppress(OSError):  # the starter may close while we still send
            sock.sendall(b"x" * 100_000)
        assert json.loads(read_answer(sock)) == {"error": "the request is too long"}
    assert engine.requests == []


def test_a_slow_request_gets_its_deadline_however_it_trickles(
    serve: Callable[..., Path], engine: FakeEngine
) -> None:
    """The deadline counts from the connection, not from the last byte."""
    engine.add("opencode-cloud-user-alice", person_labels("alice"))
    path = serve(request_seconds=0.6)
    started = time.monotonic()
    with connect(path) as sock:
        for byte in b'{"op": "start", "name": "alice"}':
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
        answer = read_answer(sock)
    assert json.loads(answer) == {"error": "the request took too long"}
    assert time.monotonic() - started < 3
    assert engine.requests == []


def test_a_silent_client_is_closed_at_the_deadline(
    serve: Callable[..., Path], engine: FakeEngine
) -> None:
    path = serve(request_seconds=0.3)
    started = time.monotonic()
    with connect(path) as sock:
        answer = read_answer(sock)
    assert 0.25 < time.monotonic() - started < 3
    assert json.loads(answer) == {"error": "the request took too long"}


def test_connections_beyond_the_cap_are_told_busy_and_the_starter_goes_on(
    serve: Callable[..., Path], engine: FakeEngine
) -> None:
    engine.add("opencode-cloud-user-alice", person_labels("alice"), running=True)
    path = serve(max_connections=2, request_seconds=2.0)
    held = [connect(path), connect(path)]
    time.sleep(0.3)  # both are being served (waiting for their request)
    try:
        assert ask(path, {"op": "state", "name": "alice"}) == {"error": "busy"}
    finally:
        for sock in held:
            sock.close()
    # The held connections end (their clients closed): the slots come back.
    deadline = time.monotonic() + 5
    while True:
        answer = ask(path, {"op": "state", "name": "alice"})
        if answer != {"error": "busy"} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert answer == {"state": "running"}


def test_requests_are_answered_side_by_side(serve: Callable[..., Path], engine: FakeEngine) -> None:
    """A slow client does not hold up the others: a thread per connection."""
    engine.add("opencode-cloud-user-alice", person_labels("alice"), running=True)
    path = serve()
    with connect(path) as slow:
        slow.sendall(b'{"op": "sta')
        assert ask(path, {"op": "state", "name": "alice"}) == {"state": "running"}
        slow.sendall(b'te", "name": "alice"}\n')
        assert json.loads(read_answer(slow)) == {"state": "running"}


def test_an_engine_that_does_not_answer_is_an_error(
    short_dir: Path, serve: Callable[..., Path]
) -> None:
    path = serve()
    # The fake engine's socket goes away: the next request finds nobody there.
    (short_dir / "docker.sock").unlink()
    answer = ask(path, {"op": "start", "name": "alice"})
    assert set(answer) == {"error"} and "engine" in answer["error"]


def test_an_engine_error_is_passed_on(serve: Callable[..., Path], engine: FakeEngine) -> None:
    engine.add("opencode-cloud-user-alice", person_labels("alice"))
    original = engine.handle

    def refuse_start(method: str, path: str) -> tuple[int, Any]:
        if path.endswith("/start"):
            engine.requests.append((method, path))
            return 500, {"message": "driver failed programming external connectivity"}
        return original(method, path)

    engine.handle = refuse_start  # type: ignore[method-assign]
    path = serve()
    answer = ask(path, {"op": "start", "name": "alice"})
    assert answer == {
        "error": "the engine answered 500: driver failed programming external connectivity"
    }


# --------------------------------------------------------------------------- its socket


def test_the_socket_is_0666_in_its_folder(serve: Callable[..., Path]) -> None:
    path = serve()
    info = os.lstat(path)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o666


def test_a_stale_socket_is_replaced(
    short_dir: Path, serve: Callable[..., Path], engine: FakeEngine
) -> None:
    folder = short_dir / "starter"
    folder.mkdir(mode=0o755)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(folder / "starter.sock"))
    stale.close()  # bound, never listened on, closed: what a starter that ended leaves
    path = serve()
    assert ask(path, {"op": "state", "name": "alice"}) == {"state": "missing"}


def test_a_live_socket_is_not_taken_over(short_dir: Path, serve: Callable[..., Path]) -> None:
    path = serve()
    with pytest.raises(starter.StarterError, match="another starter"):
        starter.open_listener(str(path))
    assert ask(path, {"op": "state", "name": "alice"}) == {"state": "missing"}


@pytest.mark.parametrize("kind", ["symlink", "dangling-symlink", "file", "folder", "fifo"])
def test_a_socket_path_that_is_not_a_socket_is_refused(short_dir: Path, kind: str) -> None:
    folder = short_dir / "starter"
    folder.mkdir(mode=0o755)
    path = folder / "starter.sock"
    target = short_dir / "elsewhere"
    if kind == "symlink":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(target))  # a real (stale) socket at the link's end
        listener.close()
        path.symlink_to(target)
    elif kind == "dangling-symlink":
        path.symlink_to(target)
    elif kind == "file":
        path.write_text("keep me")
    elif kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    before = os.lstat(path)
    with pytest.raises(starter.StarterError, match="refusing"):
        starter.open_listener(str(path))
    after = os.lstat(path)
    assert (before.st_mode, before.st_ino) == (after.st_mode, after.st_ino)
    if kind == "symlink":
        assert stat.S_ISSOCK(os.lstat(target).st_mode)  # the link's target left alone
    assert not (kind == "dangling-symlink" and target.exists())


def test_a_folder_others_may_write_is_refused(short_dir: Path) -> None:
    folder = short_dir / "starter"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(starter.StarterError, match="others"):
        starter.open_listener(str(folder / "starter.sock"))
    assert not (folder / "starter.sock").exists()


def test_a_symlinked_folder_is_refused(short_dir: Path) -> None:
    real = short_dir / "real"
    real.mkdir(mode=0o755)
    (short_dir / "starter").symlink_to(real)
    with pytest.raises(starter.StarterError, match="not a folder"):
        starter.open_listener(str(short_dir / "starter" / "starter.sock"))
    assert list(real.iterdir()) == []


# --------------------------------------------------------------------------- main


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OCC_TEAM_PREFIX": "opencode-cloud"},
        {"OCC_TEAM_INSTANCE": "default"},
        {"OCC_TEAM_PREFIX": "Opencode", "OCC_TEAM_INSTANCE": "default"},
        {"OCC_TEAM_PREFIX": "opencode-cloud", "OCC_TEAM_INSTANCE": "a/b"},
    ],
)
def test_main_refuses_to_start_without_its_names(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    monkeypatch.delenv("OCC_TEAM_PREFIX", raising=False)
    monkeypatch.delenv("OCC_TEAM_INSTANCE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(starter, "SOCKET_PATH", "/nonexistent-occ/starter.sock")
    assert starter.main() == starter.EX_CONFIG


# --------------------------------------------------------------------------- create


PLACEHOLDER = "p0123456789abcdef01234567"
PASSWORD = "ab" * 24


def write_template(folder: Path, *, max_people: int = 50, mode: int = 0o600) -> dict[str, Any]:
    """The tool's own template (team/door.py) of a person's container, where the starter
    finds it; its decoded content."""
    from opencode_cloud.team.door import person_template
    from opencode_cloud.team.layout import TeamLayout
    from opencode_cloud.team.people import PersonLimits, PersonSettings, person_spec

    layout = TeamLayout(Instance())
    settings = PersonSettings("opencode", {"KEY": "value"}, 10, PersonLimits(1 << 30, None, 256))
    spec = person_spec(settings, layout, PLACEHOLDER, image="img:1", image_id=None, nano_cpus=0)
    file = person_template(layout, spec, PLACEHOLDER)
    template: dict[str, Any] = json.loads(file.content)
    template["max_people"] = max_people
    folder.mkdir(mode=0o755, exist_ok=True)
    path = folder / "person.json"
    path.write_text(json.dumps(template))
    path.chmod(mode)
    return template


def test_create_makes_a_persons_volumes_network_and_container_from_the_template(
    short_dir: Path, serve: Callable[..., Path], engine: FakeEngine
) -> None:
    write_template(short_dir / "starter")
    path = serve()
    answer = ask(path, {"op": "create", "name": "carol", "password": PASSWORD})
    assert answer == {"state": "starting", "upstream": "opencode-cloud-user-carol:4096"}

    container = engine.containers["opencode-cloud-user-carol"]
    body = container["Body"]
    assert PLACEHOLDER not in json.dumps(body)
    assert body["Hostname"] == "carol" and body["Image"] == "img:1"
    assert body["HostConfig"]["NetworkMode"] == "opencode-cloud-user-carol-net"
    assert body["Labels"]["io.opencode-cloud.person"] == "carol"
    assert "io.opencode-cloud.config-hash" not in body["Labels"]
    assert "KEY=value" in body["Env"]
    assert body["HostConfig"]["Memory"] == 1 << 30
    mounted = sorted(m["Source"] for m in body["HostConfig"]["Mounts"])
    assert mounted == sorted(engine.volumes) and all("-user-carol-" in v for v in mounted)
    assert all(labels["io.opencode-cloud.person"] == "carol" for labels in engine.volumes.values())
    assert engine.networks == {"opencode-cloud-user-carol-net": ["opencode-cloud-door"]}
    # The internal password: root's file, that nobody else reads.
    files = engine.files[container["Id"]]
    assert files == {"/run/opencode-cloud/internal.password": (PASSWORD.encode(), 0o600, 0)}
    assert container["State"]["Running"] is True

    # Asked again (the door's answer was lost, say): started, never made twice.
    creates = len([r for r in engine.requests if r[1].startswith("/containers/create")])
    answer = ask(path, {"op": "create", "name": "carol", "password": "cd" * 24})
    assert answer == {"state": "running", "upstream": "opencode-cloud-user-carol:4096"}
    assert len([r for r in engine.requests if r[1].startswith("/containers/create")]) == creates
    assert (
        engine.files[container["Id"]]["/run/opencode-cloud/internal.password"][0]
        == PASSWORD.encode()
    )


@pytest.mark.parametrize("password", ["", "AB" * 24, "ab" * 15, "ab" * 65, "x" * 48, None, 7])
def test_create_refuses_a_password_not_of_hex_digits_without_asking_the_engine(
    short_dir: Path, serve: Callable[..., Path], engine: FakeEngine, password: Any
) -> None:
    write_template(short_dir / "starter")
    path = serve()
    answer = ask(path, {"op": "create", "name": "carol", "password": password})
    assert set(answer) == {"error"} and "password" in answer["error"]
    assert engine.requests == []


def test_create_without_the_tools_template_makes_nothing(
    short_dir: Path, serve: Callable[..., Path], engine: FakeEngine
) -> None:
    path = serve()
    answer = ask(path, {"op": "create", "name": "carol", "password": PASSWORD})
    assert set(answer) == {"error"} and "template" in answer["error"]
    assert engine.actions() == []


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o620])
def test_create_refuses_a_template_others_may_read_or_change(
    short_dir: Path, serve: Callable[..., Path], engine: FakeEngine, mode: int
) -> None:
    write_template(short_dir / "starter", mode=mode)
    path = serve()
    answer = ask(path, {"op": "create", "name": "carol", "password": PASSWORD})
    assert set(answer) == {"error"} and "others" in answer["error"]
    assert engine.actions() == []


def test_create_stops_at_the_templates_count_of_people(
    short_dir: Path, serve: Callable[..., Path], engine: FakeEngine
) -> None:
    engine.add("opencode-cloud-user-alice", person_labels("alice"))
    write_template(short_dir / "starter", max_people=2)
    path = serve()
    assert ask(path, {"op": "create", "name": "bob", "password": PASSWORD})["state"] == "starting"
    answer = ask(path, {"op": "create", "name": "carol", "password": PASSWORD})
    assert set(answer) == {"error"} and "2 people" in answer["error"]
    assert "opencode-cloud-user-carol" not in engine.containers
    assert not any("carol" in v for v in engine.volumes)


def test_create_leaves_a_removed_persons_volumes_to_the_administrator(
    short_dir: Path, serve: Callable[..., Path], engine: FakeEngine
) -> None:
    write_template(short_dir / "starter")
    engine.volumes["opencode-cloud-user-carol-projects"] = {}
    path = serve()
    answer = ask(path, {"op": "create", "name": "carol", "password": PASSWORD})
    assert set(answer) == {"error"} and "left from before" in answer["error"]
    assert engine.actions() == []


def test_a_failed_create_takes_back_what_it_made(
    short_dir: Path, serve: Callable[..., Path], engine: FakeEngine
) -> None:
    write_template(short_dir / "starter")
    engine.fail = "/archive"
    path = serve()
    answer = ask(path, {"op": "create", "name": "carol", "password": PASSWORD})
    assert set(answer) == {"error"} and "no space left" in answer["error"]
    assert engine.containers == {} and engine.volumes == {}
    engine.fail = None  # the next ask makes it whole
    assert ask(path, {"op": "create", "name": "carol", "password": PASSWORD})["state"] == "starting"
