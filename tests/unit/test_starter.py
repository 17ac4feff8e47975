"""Team mode's starter (sandbox/starter.py), served for real on a unix socket, against a
fake engine: a unix-socket HTTP server in a thread that records every request."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import os
import re
import socket
import socketserver
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

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
            if length:
                self.rfile.read(length)
            status, body = engine.handle(self.command, self.path)
            raw = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if status not in (204, 304):
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if status not in (204, 304):
                self.wfile.write(raw)

        do_GET = do_POST = _answer

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
            starter.Engine(str(short_dir / "docker.sock"), 5.0), PREFIX, INSTANCE
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
