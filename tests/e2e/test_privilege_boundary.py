"""The agent never reaches root, nor the edge's user, through the real image.

Everything the runtime user (the agent) can write is bait here: programs planted first on
its PATH, shell start-up files, a curl configuration, Python's user site. The container is
then restarted (its root phase runs again), the engine's health check is run as the engine
runs it, Caddy is reloaded, and an operator opens a root shell with `docker exec`: none of
the bait may run as root or as the edge. Then, with strace, every file root and the edge
open or execute from the first instruction of the entrypoint to a health check is listed
(tests/artifacts/root-and-edge-files.txt) and checked against what the agent can write.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser_helpers import ARTIFACTS
from opencode_cloud.access.credentials import container_files
from opencode_cloud.defaults import EDGE_UID, PASSWORD_PATH_IN_CONTAINER
from opencode_cloud.docker.container import put_file
from opencode_cloud.docker.health import health_url, wait_until_healthy

pytestmark = pytest.mark.e2e

Service = Any  # the e2e conftest's Service; not importable by name across conftests

# Programs the root phase, the supervisor, the edge and the health check could be tricked
# into running from the agent's ~/.local/bin, were PATH ever searched there.
PLANTED = [
    *("id", "sed", "find", "chown", "chmod", "awk", "setpriv", "curl", "python3", "caddy"),
    *("stat", "rm", "install", "base64", "od", "tr", "cat", "grep", "rmdir", "mkdir", "env"),
    *("bash", "sh", "printf", "tini", "opencode"),
]
MARKS = "/home/opencode/.planted-ran"
BAIT_SCRIPT = f"""
set -e
mkdir -p ~/.local/bin ~/.local/lib/python3.11/site-packages
: > {MARKS}; chmod 0666 {MARKS}
for name in {" ".join(PLANTED)}; do
  real=$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v "$name")
  printf '#!/bin/sh\\necho "$(/usr/bin/id -u) %s" >> {MARKS}\\nexec %s "$@"\\n' \\
    "$name" "$real" > ~/.local/bin/"$name"
  chmod 0755 ~/.local/bin/"$name"
done
for file in .bashrc .profile .bash_profile .bash_login; do
  echo 'echo "$(/usr/bin/id -u) '$file'" >> {MARKS}' >> ~/"$file"
done
printf 'import os\\nopen("{MARKS}", "a").write(f"{{os.getuid()}} usercustomize\\\\n")\\n' \
  > ~/.local/lib/python3.11/site-packages/usercustomize.py
for module in json readline; do
  printf 'import os\\nopen("{MARKS}", "a").write(f"{{os.getuid()}} projects/%s.py\\\\n")\\n' \
    "$module" > ~/projects/"$module".py
done
"""


def _exec(service: Service, command: list[str], user: str = "1000:1000") -> tuple[int, str]:
    container = service.sdk.containers.get(service.name)
    code, output = container.exec_run(command, user=user)
    return int(code), bytes(output).decode(errors="replace")


def _health_check(service: Service) -> tuple[int, str]:
    """The image's health check, run as the engine runs it: as the container's user (root),
    with the container's environment."""
    test = service.sdk.api.inspect_container(service.name)["Config"]["Healthcheck"]["Test"]
    assert test[0] == "CMD"
    return _exec(service, test[1:], user="")


def _marks(service: Service) -> list[tuple[str, str]]:
    code, text = _exec(service, ["cat", MARKS])
    assert code == 0, text
    return [tuple(line.split(" ", 1)) for line in text.splitlines()]  # type: ignore[misc]


def test_planted_programs_never_run_as_root_or_edge(service: Service) -> None:
    code, output = _exec(service, ["bash", "-c", BAIT_SCRIPT])
    assert code == 0, output
    # The bait works: the agent's own shell runs it.
    assert _exec(service, ["bash", "-c", "PATH=~/.local/bin:$PATH id -u"])[0] == 0
    assert ("1000", "id") in _marks(service)
    _exec(service, ["sh", "-c", "cd ~/projects && python3 -c 'import json'"])
    assert ("1000", "projects/json.py") in _marks(service)

    service.sdk.api.restart(service.name, timeout=10)  # the root phase runs again
    service.wait()
    assert _health_check(service)[0] == 0
    service.sdk.api.kill(service.name, signal="SIGHUP")  # the supervisor reloads Caddy
    time.sleep(2)
    # An operator's root shell in the container, interactive and login.
    for flags in ("-ic", "-lc"):
        _exec(service, ["bash", flags, "true"], user="root")
    # ... where `docker exec` starts: a root `python3` imports from its folder first.
    _exec(service, ["python3", "-c", "import json, readline"], user="root")
    assert service.request("GET", "/global/health")[0] == 200

    marks = _marks(service)
    privileged = [(uid, what) for uid, what in marks if uid in ("0", str(EDGE_UID))]
    assert privileged == [], f"agent-planted files ran as root or the edge: {privileged}"


def _listener(service: Service) -> tuple[int, str]:
    """A listener of the agent's on the container's loopback; returns its port and the
    file it writes what it receives to."""
    received = "/home/opencode/.listener-got"
    script = (
        "import socket,sys\n"
        "s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n"
        "open('/home/opencode/.listener-port','w').write(str(s.getsockname()[1]))\n"
        "while True:\n"
        "    c,_=s.accept(); c.settimeout(2)\n"
        "    try:\n"
        "        data=c.recv(65536)\n"
        f"    except OSError:\n        data=b''\n"
        f"    open('{received}','ab').write(data); c.close()\n"
    )
    container = service.sdk.containers.get(service.name)
    container.exec_run(["python3", "-c", script], user="1000:1000", detach=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        code, port = _exec(service, ["cat", "/home/opencode/.listener-port"])
        if code == 0 and port.strip():
            return int(port), received
        time.sleep(0.2)
    raise AssertionError("the listener did not start")


def test_health_check_reads_nothing_of_the_agents(service: Service) -> None:
    port, received = _listener(service)
    bait = (
        f'url = "http://127.0.0.1:{port}/"\n'
        f'upload-file = "{PASSWORD_PATH_IN_CONTAINER}"\n'
        'header = "X-Planted: yes"\n'
    )
    # The agent's own curl configuration, and the health check's credentials file: the
    # first is never read, the second cannot be written.
    test = service.sdk.api.inspect_container(service.name)["Config"]["Healthcheck"]["Test"]
    config = test[test.index("-K") + 1]
    _exec(service, ["sh", "-c", f"printf '%s' '{bait}' > ~/.curlrc"])
    code, output = _exec(service, ["sh", "-c", f"printf '%s' '{bait}' >> {config}"])
    assert code != 0 and "Permission denied" in output, output

    assert _health_check(service)[0] == 0  # still healthy
    code, got = _exec(service, ["sh", "-c", f"cat {received} 2>/dev/null; echo end"])
    assert got == "end\n", f"the health check sent the listener: {got!r}"
    # The bait (less the file the agent may not read) does reach a curl of the agent's own:
    # the check above could have failed.
    control = bait.replace(f'upload-file = "{PASSWORD_PATH_IN_CONTAINER}"\n', "")
    _exec(service, ["sh", "-c", f"printf '%s' '{control}' > ~/.curlrc"])
    _exec(service, ["curl", "-sS", "--max-time", "3"])
    code, got = _exec(service, ["sh", "-c", f"cat {received} 2>/dev/null; echo end"])
    assert "X-Planted: yes" in got


def test_agent_cannot_read_or_write_the_edges_files(service: Service) -> None:
    for path in (
        PASSWORD_PATH_IN_CONTAINER,
        "/run/opencode-cloud/edge/Caddyfile",
        "/run/opencode-cloud/edge/curlrc",
        "/var/lib/opencode-cloud-edge/sessions.json",
    ):
        code, output = _exec(service, ["sh", "-c", f"cat {path}"])
        assert code != 0 and "Permission denied" in output, (path, output)
    # Nor reach the login service, which would let it choose the address it is counted as.
    code, output = _exec(
        service,
        ["python3", "-c", "import socket; socket.socket(socket.AF_UNIX)"
         ".connect('/run/opencode-cloud/edge/login.sock')"],
    )  # fmt: skip
    assert code != 0 and "PermissionError" in output, output
    for folder in (
        "/run/opencode-cloud",
        "/run/opencode-cloud/tls",
        "/var/lib/opencode-cloud-edge",
    ):
        code, output = _exec(service, ["sh", "-c", f"touch {folder}/planted"])
        assert code != 0 and "Permission denied" in output, (folder, output)
    # Nor can it signal the edge: ending Caddy would restart the container, with its root
    # phase, whenever the agent liked.
    code, output = _exec(service, ["sh", "-c", "kill -TERM $(pgrep -x caddy)"])
    assert code != 0 and "not permitted" in output, output


# -- every file root and the edge open or run, traced -------------------------------------

STRACE_IMAGE = "opencode-cloud-sandbox-strace:test"
TRACED = "execve,openat,open,creat,setresuid,setreuid,setuid,clone,clone3,fork,vfork"


@pytest.fixture(scope="module")
def strace_image(docker_sdk: Any, sandbox_image: str) -> Iterator[str]:
    """The sandbox image with strace added (Debian's package); removed after the module,
    or each new sandbox image would leave the previous one behind, untagged."""
    import io

    dockerfile = (
        f"FROM {sandbox_image}\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends strace"
        " && rm -rf /var/lib/apt/lists/*\n"
    )
    docker_sdk.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=STRACE_IMAGE, rm=True)
    yield STRACE_IMAGE
    with contextlib.suppress(Exception):  # a container of it may still be going away
        docker_sdk.images.remove(STRACE_IMAGE, force=True)


@pytest.fixture
def traced(
    docker_client: Any, docker_sdk: Any, strace_image: str, instance: Any, free_port: int
) -> Iterator[Any]:
    """A service whose entrypoint runs under strace from its first instruction."""
    import secrets

    password = secrets.token_urlsafe(24)
    container = docker_sdk.containers.create(
        strace_image,
        entrypoint=["/usr/bin/strace", "-f", "-qq", "-y", "-o", "/run/trace",
                    "-e", f"trace={TRACED}", "--", "/usr/local/bin/occ-entrypoint"],
        name=instance.container_name,
        environment={"OCC_UID": "1000", "OCC_GID": "1000", "OPENCODE_DISABLE_MODELS_FETCH": "1"},
        labels=instance.labels("service"),
        ports={"3000/tcp": ("127.0.0.1", free_port)},
        volumes={
            instance.volume_name("home"): {"bind": "/home/opencode", "mode": "rw"},
            instance.volume_name("projects"): {"bind": "/home/opencode/projects", "mode": "rw"},
        },
        cap_drop=["ALL"],
        cap_add=["CHOWN", "DAC_OVERRIDE", "KILL", "SETGID", "SETUID", "SYS_PTRACE"],
        security_opt=["no-new-privileges:true"],
    )  # fmt: skip
    for path, content in container_files(password).items():
        put_file(docker_client, instance.container_name, path, content)
    container.start()
    wait_until_healthy(
        docker_client, instance.container_name, health_url(port=free_port), "opencode",
        password, timeout=60,
    )  # fmt: skip
    yield container
    container.remove(force=True, v=True)


def _events(trace: str) -> list[tuple[int, str, str, int]]:
    """(pid, call, first string argument, result) of each finished call, in order."""
    pending: dict[int, str] = {}
    events = []
    for line in trace.splitlines():
        numbered = re.match(r"(\d+)\s+(.*)", line)
        if not numbered:
            continue
        pid, rest = int(numbered.group(1)), numbered.group(2)
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest.removesuffix("<unfinished ...>")
            continue
        resumed = re.match(r"<\.\.\. \w+ resumed>(.*)", rest)
        if resumed:
            rest = pending.pop(pid, "") + resumed.group(1)
        call = re.match(r"(\w+)\((.*)\)\s+=\s+(-?\d+)", rest, re.S)
        if not call:
            continue
        name, args, result = call.group(1), call.group(2), int(call.group(3))
        string = re.search(r'"((?:[^"\\]|\\.)*)"', args)
        number = re.match(r"(\d+)", args)
        first = string.group(1) if string else (number.group(1) if number else "")
        # openat relative to a folder's descriptor (strace -y names its path).
        folder = re.match(r"(?:\d+|AT_FDCWD)<([^>]*)>,", args)
        if folder and string and not first.startswith("/"):
            first = f"{folder.group(1).rstrip('/')}/{first}"
        events.append((pid, name, first, result))
    return events


def _privileged_paths(events: list[tuple[int, str, str, int]], first_pid: int) -> set[str]:
    """Paths opened or executed while the process was root or the edge's user."""
    uid = {first_pid: 0}
    seen: set[str] = set()
    for pid, call, first, result in events:
        current = uid.setdefault(pid, -1)  # a process whose birth was not traced
        if call in ("clone", "clone3", "fork", "vfork") and result > 0:
            uid[result] = current
        elif call in ("setresuid", "setreuid", "setuid") and result == 0:
            uid[pid] = int(first)
        elif (
            call in ("execve", "openat", "open", "creat")
            and result >= 0
            and current
            in (
                0,
                EDGE_UID,
                -1,
            )
        ):
            seen.add(first)
    return seen


CHECK_WRITABLE = """
import os, stat, sys
for path in sys.stdin.read().split("\\0"):
    if not path:
        continue
    if not path.startswith("/"):
        print("relative", path); continue
    if path.startswith(("/proc/", "/sys/")) or path in ("/dev/null", "/dev/urandom", "/dev/tty"):
        continue
    parts = path.split("/")
    for depth in range(len(parts), 1, -1):
        here = "/".join(parts[:depth]) or "/"
        try:
            info = os.lstat(here)
        except OSError:
            continue
        if not os.access(here, os.W_OK):
            continue
        if depth < len(parts) and info.st_mode & stat.S_ISVTX:
            continue  # a sticky folder: others' names in it cannot be replaced
        print("writable", path, "at", here)
        break
"""


def test_root_and_edge_open_nothing_the_agent_can_write(traced: Any, docker_sdk: Any) -> None:
    # A health check as the engine runs it, traced too, and a reload of Caddy.
    test = docker_sdk.api.inspect_container(traced.name)["Config"]["Healthcheck"]["Test"][1:]
    code, output = traced.exec_run(
        ["/usr/bin/strace", "-f", "-qq", "-y", "-o", "/run/trace-check", "-e", f"trace={TRACED}",
         "--", *test], user="",
    )  # fmt: skip
    assert code == 0, output
    traced.kill(signal="SIGHUP")
    time.sleep(2)
    paths: set[str] = set()
    for trace_file in ("/run/trace", "/run/trace-check"):
        code, text = traced.exec_run(["cat", trace_file], user="")
        assert code == 0
        trace = bytes(text).decode(errors="replace")
        first_pid = int(trace.split(" ", 1)[0])
        paths |= _privileged_paths(_events(trace), first_pid)
    # The trace saw the root phase and the edge: it could have found something.
    for expected in (
        "/usr/bin/setpriv",
        "/usr/bin/caddy",
        "/usr/bin/curl",
        "/usr/local/lib/opencode-cloud/edge.py",
        PASSWORD_PATH_IN_CONTAINER,
    ):
        assert expected in paths, expected  # fmt: skip
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "root-and-edge-files.txt").write_text("\n".join(sorted(paths)) + "\n")

    checker = traced.client.api.exec_create(
        traced.id, ["python3", "-I", "-c", CHECK_WRITABLE], user="1000:1000", stdin=True
    )
    sock = traced.client.api.exec_start(checker["Id"], socket=True)
    raw: socket.socket = sock._sock
    raw.sendall("\0".join(sorted(paths)).encode())
    raw.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := raw.recv(65536):
        answer += chunk
    found = [
        line for line in _demux(answer).splitlines() if line.startswith(("writable", "relative"))
    ]
    assert found == [], "\n".join(found)


def _demux(raw: bytes) -> str:
    """The stdout of an attached exec's multiplexed stream."""
    out = b""
    while len(raw) >= 8:
        kind, size = raw[0], int.from_bytes(raw[4:8], "big")
        if kind == 1:
            out += raw[8 : 8 + size]
        raw = raw[8 + size :]
    return out.decode(errors="replace")


def test_root_can_still_prepare_a_new_owner(make_service: Any, tmp_path: Path) -> None:
    """The root phase still does its one job on agent data: hand the volumes to a new uid
    (a mounted folder of another owner), touching names and owners only."""
    service = make_service()
    service.start()
    code, _ = service.exec("sh", "-c", "echo x > /home/opencode/projects/mine.txt")
    assert code == 0
    spec = service.spec()
    from dataclasses import replace

    from opencode_cloud.docker.container import remove_container, setup_and_start

    remove_container(service.client, service.name, force=True)
    setup_and_start(
        service.client,
        replace(spec, runtime_uid=1234, runtime_gid=1234),
        service.instance,
        files=container_files(service.password),
    )
    service.wait()
    container = service.sdk.containers.get(service.name)
    code, output = container.exec_run(
        ["stat", "-c", "%u:%g", "/home/opencode/projects/mine.txt"], user="1234:1234"
    )
    assert bytes(output).decode().strip() == "1234:1234"
