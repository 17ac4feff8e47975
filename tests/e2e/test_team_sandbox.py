"""Team mode's parts of the real sandbox image (docs/team.md), on the real engine.

Two people's containers (`OCC_ROLE=person`), each alone on a network of its own, with the
internal password written through the archive API before the first start; the front door
(`OCC_ROLE=door`) on its own network and on theirs; the starter with the engine's socket,
no network and no capability. The login service's team mode is not part of this image's
test: the door runs a stand-in for it (`STUB_EDGE`), which answers Caddy's question the
way docs/team.md says, for fixed people. Besides the two people's real opencode, two
stand-ins for an instance (`ECHO`) say what reached them: `carol`, a person on a third
network, and `evil`, a container on alice's network that a client names in a forged
header.

Every container, network and volume made here is named `occ-test-teamsbx-...` and
removed at the end of the module.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import secrets
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

NAME_PREFIX = "occ-test-teamsbx-"
EDGE_UID = 61000
RUNTIME_USER = "1000:1000"
LIB = "/usr/local/lib/opencode-cloud"
INTERNAL_PASSWORD_PATH = "/run/opencode-cloud/internal.password"
STARTER_DIR = "/run/opencode-cloud/starter"
# What the tool gives every sandbox container (docker/spec.py, HARDENING).
CAP_ADD = ["CHOWN", "DAC_OVERRIDE", "KILL", "SETGID", "SETUID"]
HEALTH_TIMEOUT = 90.0
SECOND = 1_000_000_000  # the engine's durations are nanoseconds

# The login service, as far as Caddy sees it: /__occ/verify answers 200 with the three
# headers for a person (HTTP Basic, user = name), 401 otherwise; and a few people who
# show what Caddy does with a wrong answer. /__occ/seen lists the headers each verify
# request came with; any other /__occ/ page echoes its request. PEOPLE is filled in.
STUB_EDGE = r"""
import base64, http.server, json, os, socketserver
PEOPLE = json.loads(PEOPLE_JSON)
PREFIX = PREFIX_VALUE
SEEN = []

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self):
        return "caddy"

    def log_message(self, *args):
        pass

    def send(self, status, headers=(), body=b""):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        route = self.path.split("?", 1)[0]
        if route == "/__occ/verify":
            SEEN.append(dict(self.headers.items()))
            try:
                user, password = base64.b64decode(
                    self.headers.get("Authorization", "").split(" ", 1)[1]
                ).decode().split(":", 1)
            except Exception:
                user = password = ""
            person = PEOPLE.get(user)
            if not person or person["password"] != password:
                return self.send(401, [("WWW-Authenticate", 'Basic realm="stub"')])
            inner = "Basic " + base64.b64encode(
                ("opencode:" + person["internal"]).encode()
            ).decode()
            upstream = person.get("upstream", f"{PREFIX}-user-{user}:4096")
            headers = {
                "X-Occ-Person": user,
                "X-Occ-Upstream": upstream,
                "X-Occ-Upstream-Auth": inner,
            }
            for name in person.get("omit", []):
                del headers[name]
            return self.send(200, list(headers.items()))
        if route == "/__occ/seen":
            return self.send(200, [("Content-Type", "application/json")], json.dumps(SEEN).encode())
        body = json.dumps({"path": self.path, "headers": dict(self.headers.items())}).encode()
        return self.send(200, [("Content-Type", "application/json")], body)

    do_POST = do_GET

class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

Server(os.environ["OCC_EDGE_LISTEN"].removeprefix("unix:"), Handler).serve_forever()
"""

# A stand-in for a person's opencode on port 4096: says its name, the path and the
# headers it got; logs every request.
ECHO = r"""
import http.server, json, os, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_GET(self):
        print("HIT", self.path, flush=True)
        body = json.dumps({"name": os.environ["ECHO_NAME"], "path": self.path,
                           "headers": [[k, v] for k, v in self.headers.items()]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
"""

# Every process of the container, as the runtime user sees them in /proc: pid, name, the
# four uids (real, effective, saved, file system) and the effective capabilities.
PROCESS_SCAN = r"""
import json, os
seen = []
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    try:
        status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    except OSError:
        continue
    seen.append({"pid": int(pid), "name": status["Name"].strip(),
                 "uids": [int(u) for u in status["Uid"].split()],
                 "caps": int(status["CapEff"].strip(), 16)})
print(json.dumps(seen))
"""

# Ask the starter (as the door's edge would): one JSON line in, one out.
STARTER_CLIENT = r"""
import json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(40)
sock.connect("/run/opencode-cloud/starter/starter.sock")
sock.sendall(sys.argv[1].encode() + b"\n")
data = b""
while chunk := sock.recv(4096):
    data += chunk
print(data.decode().strip())
"""


def _tar(files: dict[str, tuple[bytes, int, int]], links: dict[str, str] | None = None) -> bytes:
    """An archive of files (name -> content, mode, uid) and symbolic links (name -> target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (content, mode, uid) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(content), mode, uid, uid
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def _put(container: Any, folder: str, files: dict[str, tuple[bytes, int, int]]) -> None:
    assert container.put_archive(folder, _tar(files))


def _exec(container: Any, command: list[str], user: str = RUNTIME_USER) -> tuple[int, str]:
    code, output = container.exec_run(command, user=user)
    return int(code), bytes(output).decode(errors="replace")


def _python(container: Any, code: str, *args: str, user: str = RUNTIME_USER) -> tuple[int, str]:
    return _exec(container, ["/usr/bin/python3", "-I", "-c", code, *args], user=user)


def _wait_healthy(container: Any, timeout: float = HEALTH_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        state = container.attrs["State"]
        health = (state.get("Health") or {}).get("Status")
        if health == "healthy":
            return
        if not state["Running"] or time.monotonic() > deadline:
            log = bytes(container.logs()).decode(errors="replace")[-2000:]
            checks = (state.get("Health") or {}).get("Log")
            pytest.fail(f"{container.name}: {state['Status']}, health {health}: {checks}\n{log}")
        time.sleep(0.5)


@dataclass
class Team:
    sdk: Any
    image: str
    tag: str
    internal: dict[str, str] = field(default_factory=dict)  # person -> internal password
    containers: dict[str, Any] = field(default_factory=dict)
    networks: dict[str, Any] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return f"{NAME_PREFIX}{self.tag}"

    @property
    def instance(self) -> str:
        return f"teamsbx-{self.tag}"

    def labels(self, role: str, person: str | None = None) -> dict[str, str]:
        labels = {
            "io.opencode-cloud.managed": "true",
            "io.opencode-cloud.instance": self.instance,
            "io.opencode-cloud.role": role,
        }
        if person:
            labels["io.opencode-cloud.person"] = person
        return labels

    def healthcheck(self) -> dict[str, Any]:
        """The image's own health check, asked every 2 s rather than every 2 minutes."""
        test = self.sdk.api.inspect_image(self.image)["Config"]["Healthcheck"]["Test"]
        return {"test": test, "interval": 2 * SECOND, "timeout": 5 * SECOND, "retries": 2}

    def network(self, key: str) -> Any:
        if key not in self.networks:
            self.networks[key] = self.sdk.networks.create(
                f"{self.prefix}-{key}", driver="bridge", labels=self.labels("network")
            )
        return self.networks[key]

    def create(self, name: str, *, network: str, **options: Any) -> Any:
        options.setdefault("cap_drop", ["ALL"])
        options.setdefault("security_opt", ["no-new-privileges:true"])
        container = self.sdk.containers.create(
            self.image, name=name, network=self.network(network).name, detach=True, **options
        )
        self.containers[name] = container
        return container

    def person(self, name: str, network: str, *, password: bytes | None = None) -> Any:
        """A person's container on `network`, with its internal password (none, when
        `password` is empty), not started."""
        container = self.create(
            f"{self.prefix}-user-{name}",
            network=network,
            environment={"OCC_ROLE": "person", "OPENCODE_DISABLE_MODELS_FETCH": "1"},
            labels=self.labels("person", name),
            cap_add=CAP_ADD,
            healthcheck=self.healthcheck(),
        )
        if password is None:
            self.internal[name] = secrets.token_urlsafe(24)
            password = self.internal[name].encode() + b"\n"
        if password:
            _put(container, "/run/opencode-cloud", {"internal.password": (password, 0o644, 1000)})
        return container

    def echo(
        self, name: str, network: str, port: int = 4096, labels: dict[str, str] | None = None
    ) -> Any:
        container = self.create(
            name,
            network=network,
            entrypoint=["/usr/bin/python3", "-I", "-c", ECHO, str(port)],
            environment={"ECHO_NAME": name},
            user="65534:65534",
            labels=labels or {},
        )
        container.start()
        return container


@pytest.fixture(scope="module")
def team(docker_sdk: Any, sandbox_image: str) -> Iterator[Team]:
    # The image as built for this session, by id: another build may move the tag later.
    team = Team(docker_sdk, docker_sdk.images.get(sandbox_image).id, secrets.token_hex(3))
    try:
        yield team
    finally:
        for container in docker_sdk.containers.list(all=True, filters={"name": team.prefix}):
            if container.name.startswith(team.prefix):
                container.remove(force=True, v=True)
        for network in docker_sdk.networks.list(names=[]):
            if network.name.startswith(team.prefix):
                network.remove()
        for volume in docker_sdk.volumes.list():
            if volume.name.startswith(team.prefix):
                volume.remove(force=True)


@pytest.fixture(scope="module")
def people(team: Team) -> dict[str, Any]:
    """alice on network a, bob on network b: started, healthy."""
    started = {"alice": team.person("alice", "a"), "bob": team.person("bob", "b")}
    for container in started.values():
        container.start()
    for container in started.values():
        _wait_healthy(container)
    return started


@dataclass
class Door:
    container: Any
    port: int

    def request(
        self,
        method: str,
        path: str,
        *,
        user: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        all_headers = dict(headers or {})
        if user:
            all_headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
        try:
            connection.request(method, path, headers=all_headers)
            answer = connection.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            connection.close()

    def echoed(self, path: str, **options: Any) -> dict[str, Any]:
        status, _, body = self.request("GET", path, **options)
        assert status == 200, body
        answer: dict[str, Any] = json.loads(body)
        return answer


@pytest.fixture(scope="module")
def door(team: Team, people: dict[str, Any]) -> Door:
    """The front door (TLS off) with the stand-in login service, on its own network with
    a published loopback port, and on the networks of alice, bob and carol; the starter's
    volume mounted. carol is an echo on network c; evil an echo on alice's network."""
    team.echo(f"{team.prefix}-user-carol", "c", labels=team.labels("person", "carol"))
    team.echo(f"{team.prefix}-evil", "a", port=1)
    stub_people = {
        "alice": {"password": "pw-alice", "internal": team.internal["alice"]},
        "bob": {"password": "pw-bob", "internal": team.internal["bob"]},
        "carol": {"password": "pw-carol", "internal": "internal-carol"},
        # Wrong answers of a login service: no headers, no password, a foreign upstream.
        "blank": {
            "password": "x",
            "internal": "x",
            "omit": ["X-Occ-Upstream", "X-Occ-Upstream-Auth"],
        },
        "nopass": {"password": "x", "internal": "x", "omit": ["X-Occ-Upstream-Auth"]},
        "foreign": {"password": "x", "internal": "x", "upstream": f"{team.prefix}-evil:1"},
    }
    stub = STUB_EDGE.replace("PEOPLE_JSON", repr(json.dumps(stub_people))).replace(
        "PREFIX_VALUE", repr(team.prefix)
    )
    starter_volume = team.sdk.volumes.create(
        f"{team.prefix}-starter", labels=team.labels("starter")
    )
    container = team.create(
        f"{team.prefix}-door",
        network="door",
        environment={"OCC_ROLE": "door", "OCC_TEAM_PREFIX": team.prefix, "OCC_TLS": "off"},
        labels=team.labels("door"),
        cap_add=CAP_ADD,
        healthcheck=team.healthcheck(),
        ports={"3000/tcp": ("127.0.0.1", None)},
        volumes={starter_volume.name: {"bind": STARTER_DIR, "mode": "rw"}},
    )
    _put(container, LIB, {"edge.py": (stub.encode(), 0o644, 0)})
    for key in ("a", "b", "c"):
        team.network(key).connect(container)
    container.start()
    _wait_healthy(container)
    container.reload()
    port = int(container.attrs["NetworkSettings"]["Ports"]["3000/tcp"][0]["HostPort"])
    return Door(container, port)


# --------------------------------------------------------------------------- a person


@pytest.mark.parametrize("kind", ["missing", "empty", "symlink"])
def test_a_person_without_its_internal_password_refuses_to_start(team: Team, kind: str) -> None:
    container = team.person(f"nopw-{kind}", "x", password=b"")
    if kind == "empty":
        _put(container, "/run/opencode-cloud", {"internal.password": (b"", 0o600, 0)})
    elif kind == "symlink":
        links = {"internal.password": "/etc/hostname"}
        assert container.put_archive("/run/opencode-cloud", _tar({}, links))
    container.start()
    assert container.wait(timeout=60)["StatusCode"] == 78
    log = bytes(container.logs()).decode(errors="replace")
    assert "internal password" in log and "refusing to start" in log


def test_people_are_healthy_by_the_images_own_check(team: Team, people: dict[str, Any]) -> None:
    for container in people.values():
        # As the engine runs it: as root, with the container's environment.
        test = container.attrs["Config"]["Healthcheck"]["Test"]
        assert test[0] == "CMD" and "/run/opencode-cloud/edge/curlrc" in test
        assert _exec(container, test[1:], user="")[0] == 0


def test_the_internal_password_is_roots_alone(people: dict[str, Any]) -> None:
    alice = people["alice"]
    code, listing = _exec(alice, ["stat", "-c", "%u %a", INTERNAL_PASSWORD_PATH], user="")
    assert (code, listing.strip()) == (0, "0 600")
    code, listing = _exec(
        alice, ["stat", "-c", "%u %a", "/run/opencode-cloud/edge/curlrc"], user=""
    )
    assert (code, listing.strip()) == (0, f"{EDGE_UID} 600")
    for path in (INTERNAL_PASSWORD_PATH, "/run/opencode-cloud/edge/curlrc"):
        code, output = _exec(alice, ["cat", path])
        assert code != 0 and "Permission denied" in output


def test_no_process_of_a_person_runs_as_root(people: dict[str, Any]) -> None:
    for container in people.values():
        code, output = _python(container, PROCESS_SCAN)
        assert code == 0, output
        processes = json.loads(output)
        names = {p["name"] for p in processes}
        assert "opencode" in names and "python3" in names  # opencode and the supervisor
        assert not [p for p in processes if 0 in p["uids"]], processes
        for process in processes:
            if process["pid"] == 1:  # the supervisor: the edge's user, CAP_KILL alone
                assert process["uids"] == [EDGE_UID] * 4 and process["caps"] == 1 << 5
            else:
                assert process["caps"] == 0, process


def test_a_person_cannot_reach_another_persons_opencode(team: Team, people: dict[str, Any]) -> None:
    alice, bob = people["alice"], people["bob"]
    bob.reload()
    bob_ip = bob.attrs["NetworkSettings"]["Networks"][team.network("b").name]["IPAddress"]
    alice.reload()
    alice_ip = alice.attrs["NetworkSettings"]["Networks"][team.network("a").name]["IPAddress"]
    connect = (
        "import socket, sys\n"
        "try:\n"
        "    socket.create_connection((sys.argv[1], 4096), timeout=3).close()\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__, exc); sys.exit(1)\n"
        "print('connected')\n"
    )
    # The check itself works: alice reaches her own opencode at her network address.
    assert _python(alice, connect, alice_ip) == (0, "connected\n")
    for target in (bob.name, bob_ip):
        code, output = _python(alice, connect, target)
        assert code == 1, f"alice reached {target}: {output}"


def test_opencode_of_a_person_wants_its_internal_password(
    team: Team, people: dict[str, Any], door: Door
) -> None:
    """Asked from the door, as the edge (the only other member of alice's network)."""
    ask = (
        "import base64, http.client, sys\n"
        "headers = {}\n"
        "if sys.argv[2]:\n"
        "    token = base64.b64encode(sys.argv[2].encode()).decode()\n"
        "    headers['Authorization'] = 'Basic ' + token\n"
        "c = http.client.HTTPConnection(sys.argv[1], 4096, timeout=10)\n"
        "c.request('GET', '/global/health', headers=headers)\n"
        "print(c.getresponse().status)\n"
    )
    alice = people["alice"].name
    internal = team.internal["alice"]
    edge = f"{EDGE_UID}:{EDGE_UID}"
    assert _python(door.container, ask, alice, "", user=edge) == (0, "401\n")
    assert _python(door.container, ask, alice, "opencode:wrong", user=edge) == (0, "401\n")
    assert _python(door.container, ask, alice, f"opencode:{team.internal['bob']}", user=edge) == (
        0,
        "401\n",
    )
    assert _python(door.container, ask, alice, f"opencode:{internal}", user=edge) == (0, "200\n")


# --------------------------------------------------------------------------- the door


def test_the_door_is_healthy_runs_nothing_as_root_and_has_no_opencode(door: Door) -> None:
    test = door.container.attrs["Config"]["Healthcheck"]["Test"]
    assert _exec(door.container, test[1:], user="")[0] == 0
    code, output = _python(door.container, PROCESS_SCAN, user=f"{EDGE_UID}:{EDGE_UID}")
    assert code == 0, output
    processes = json.loads(output)
    assert {p["name"] for p in processes} == {"python3", "caddy"}
    assert all(p["uids"] == [EDGE_UID] * 4 for p in processes), processes
    code, output = _exec(door.container, ["ls", "/run/opencode-cloud"], user="")
    assert "password.bcrypt" not in output and "internal.password" not in output
    code, output = _exec(door.container, ["stat", "-c", "%U %a", "/var/lib/opencode-cloud-edge"])
    assert output.strip() == "occ-edge 700"
    # What root and the edge run stays root's.
    files = [LIB, *(f"{LIB}/{name}" for name in ("edge.py", "supervise.py", "starter.py"))]
    code, output = _exec(door.container, ["stat", "-c", "%U %a", *files])
    assert output.split("\n")[:4] == ["root 755", "root 644", "root 644", "root 644"]


def test_the_door_takes_people_to_their_own_opencode(door: Door) -> None:
    status, _, body = door.request("GET", "/global/health", user="alice:pw-alice")
    assert status == 200 and json.loads(body)["healthy"] is True
    status, _, body = door.request("GET", "/global/health", user="bob:pw-bob")
    assert status == 200
    assert door.request("GET", "/global/health")[0] == 401
    assert door.request("GET", "/global/health", user="alice:pw-bob")[0] == 401


def test_opencode_gets_its_internal_password_and_nothing_of_the_doors(
    team: Team, door: Door
) -> None:
    forged = {
        "X-Occ-Upstream": f"{team.prefix}-evil:1",
        "X-Occ-Person": "alice",
        "X-Occ-Upstream-Auth": "Basic Zm9yZ2Vk",
        "Cookie": "occ_session_3000=session-token",
    }
    answer = door.echoed("/some/page?x=1&y=%2F", user="carol:pw-carol", headers=forged)
    assert answer["name"] == f"{team.prefix}-user-carol"
    assert answer["path"] == "/some/page?x=1&y=%2F"
    headers = {key.lower(): value for key, value in answer["headers"]}
    internal = base64.b64encode(b"opencode:internal-carol").decode()
    # header_up set Authorization before the X-Occ-* headers were deleted.
    assert headers["authorization"] == f"Basic {internal}"
    assert not [key for key in headers if key.startswith("x-occ")], headers
    assert "cookie" not in headers
    assert "evil" not in json.dumps(answer["headers"])


def test_a_forged_upstream_is_never_used(team: Team, door: Door) -> None:
    evil = team.containers[f"{team.prefix}-evil"]
    forged = {"X-Occ-Upstream": f"{team.prefix}-evil:1", "X-Occ-Upstream-Auth": "Basic Zm9yZ2Vk"}
    for spelling in (forged, {key.lower(): value for key, value in forged.items()}):
        # A sign-in whose answer names nobody, or no password: no proxy at all.
        for user in ("blank:x", "nopass:x"):
            assert door.request("GET", "/", user=user, headers=spelling)[0] == 500
        # An answer naming a container that is no person's: refused as well.
        assert door.request("GET", "/", user="foreign:x", headers=spelling)[0] == 500
        # A person's sign-in goes to that person, whatever the client says.
        answer = door.echoed("/", user="carol:pw-carol", headers=spelling)
        assert answer["name"] == f"{team.prefix}-user-carol"
        # Without a sign-in the forged headers change nothing either.
        assert door.request("GET", "/", headers=spelling)[0] == 401
    assert "HIT" not in bytes(evil.logs()).decode(errors="replace")


def test_the_client_x_occ_headers_never_reach_the_login_service(door: Door) -> None:
    forged = {"X-Occ-Person": "alice", "X-Occ-Upstream": "x:1", "X-Occ-Upstream-Auth": "Basic eA=="}
    door.request("GET", "/anything", user="carol:pw-carol", headers=forged)
    echoed = door.echoed("/__occ/echo", headers=forged)
    assert not [key for key in echoed["headers"] if key.lower().startswith("x-occ")]
    status, _, body = door.request("GET", "/__occ/seen")
    assert status == 200
    for seen in json.loads(body):
        assert not [key for key in seen if key.lower().startswith("x-occ")], seen


def test_caddys_own_question_is_not_a_clients(door: Door) -> None:
    """The answer to /__occ/verify names an instance's password: never served to a client."""
    status, headers, _ = door.request("GET", "/__occ/verify", user="carol:pw-carol")
    assert status == 404 and not [key for key in headers if key.lower().startswith("x-occ")]


def test_an_instance_that_does_not_answer_gets_the_starting_page_or_503(
    team: Team, door: Door
) -> None:
    carol = team.containers[f"{team.prefix}-user-carol"]
    carol.stop(timeout=1)
    try:
        page = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        status, headers, _ = door.request(
            "GET", "/some/page?x=1", user="carol:pw-carol", headers=page
        )
        assert status == 302
        assert headers["Location"] == "/__occ/starting?next=/some/page?x=1"
        for method, accept in (("GET", "application/json"), ("POST", "text/html"), ("GET", "")):
            status, headers, _ = door.request(
                method, "/session", user="carol:pw-carol", headers={"Accept": accept}
            )
            assert (status, headers.get("Retry-After")) == (503, "2"), (method, accept)
        # The others are not held up.
        assert door.request("GET", "/global/health", user="alice:pw-alice")[0] == 200
    finally:
        carol.start()
    deadline = time.monotonic() + 20
    while door.request("GET", "/", user="carol:pw-carol")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)


# --------------------------------------------------------------------------- the starter


@pytest.fixture(scope="module")
def starter(team: Team, door: Door) -> Any:
    """The starter as the tool runs it (starter.py's docstring), on the door's volume."""
    container = team.sdk.containers.run(
        team.image,
        name=f"{team.prefix}-door-starter",
        entrypoint=["/usr/bin/python3", "-I", f"{LIB}/starter.py"],
        environment={"OCC_TEAM_PREFIX": team.prefix, "OCC_TEAM_INSTANCE": team.instance},
        labels=team.labels("starter"),
        user="0:0",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        network_mode="none",
        read_only=True,
        pids_limit=64,
        volumes={
            "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
            f"{team.prefix}-starter": {"bind": STARTER_DIR, "mode": "rw"},
        },
        detach=True,
    )
    team.containers[container.name] = container
    deadline = time.monotonic() + 20
    while "listening on" not in bytes(container.logs()).decode(errors="replace"):
        container.reload()
        assert container.status == "running", bytes(container.logs()).decode(errors="replace")
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return container


def _ask_starter(door: Door, op: str, name: str) -> dict[str, Any]:
    request = json.dumps({"op": op, "name": name})
    code, output = _python(door.container, STARTER_CLIENT, request, user=f"{EDGE_UID}:{EDGE_UID}")
    assert code == 0, output
    answer: dict[str, Any] = json.loads(output)
    return answer


def test_the_starter_starts_and_stops_people_for_the_door(
    team: Team, people: dict[str, Any], door: Door, starter: Any
) -> None:
    alice = people["alice"]
    assert _ask_starter(door, "state", "alice") == {"state": "running"}
    assert _ask_starter(door, "start", "alice") == {"state": "running"}
    assert _ask_starter(door, "stop", "alice") == {"state": "stopped"}
    alice.reload()
    assert alice.status == "exited"
    assert _ask_starter(door, "state", "alice") == {"state": "stopped"}
    assert (
        door.request("GET", "/", user="alice:pw-alice", headers={"Accept": "text/html"})[0] == 302
    )
    assert _ask_starter(door, "start", "alice") == {"state": "starting"}
    _wait_healthy(alice)
    assert door.request("GET", "/global/health", user="alice:pw-alice")[0] == 200
    # Nobody, and containers that are not a person's of this team, are missing.
    assert _ask_starter(door, "state", "nobody") == {"state": "missing"}
    evil = team.containers[f"{team.prefix}-evil"]
    evil.stop(timeout=1)
    with contextlib.suppress(Exception):
        evil.rename(f"{team.prefix}-user-evil")  # the right name, not a person's labels
    assert _ask_starter(door, "start", "evil") == {"state": "missing"}
    evil.reload()
    assert evil.status == "exited"
    assert "error" in _ask_starter(door, "start", "../door")
    log = bytes(starter.logs()).decode(errors="replace")
    assert f"'stop' 'alice' (uid {EDGE_UID})" in log


def test_the_starter_holds_no_capability_and_no_network(starter: Any) -> None:
    starter.reload()
    host = starter.attrs["HostConfig"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    code, output = _exec(starter, ["cat", "/proc/1/status"], user="")
    status = dict(line.split(":", 1) for line in output.splitlines() if ":" in line)
    assert int(status["CapEff"].strip(), 16) == 0 and int(status["CapBnd"].strip(), 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    code, output = _exec(starter, ["stat", "-c", "%a %U", f"{STARTER_DIR}/starter.sock"], user="")
    assert (code, output.strip()) == (0, "666 root")
