"""The remote test host itself: SSH aliases, the remote engine, its own loopback."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from remote_helpers import RemoteHost

pytestmark = pytest.mark.remote


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self._path)
        self.sock = sock


def engine_get(socket_path: Path | str, path: str) -> tuple[int, bytes]:
    conn = _UnixHTTPConnection(str(socket_path))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A directory with a short path, for Unix sockets (108 bytes at most)."""
    path = Path(tempfile.mkdtemp(prefix="occ-t-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_engine_answers_through_an_ssh_socket_forward(
    remote_host: RemoteHost, sock_dir: Path
) -> None:
    local = sock_dir / "docker.sock"
    with remote_host.forward(remote_host.alias, "-L", f"{local}:{remote_host.docker_socket}"):
        assert engine_get(local, "/_ping") == (200, b"OK")
        status, body = engine_get(local, "/info")
    assert status == 200
    # The remote engine, not this machine's.
    assert json.loads(body)["DockerRootDir"] == remote_host.engine_data_root


def test_the_usual_socket_path_is_the_remote_engine_or_nothing(
    remote_host: RemoteHost, sock_dir: Path
) -> None:
    local = sock_dir / "docker.sock"
    with remote_host.forward(remote_host.alias, "-L", f"{local}:/var/run/docker.sock"):
        status, body = engine_get(local, "/info")
    assert status == 200
    assert json.loads(body)["DockerRootDir"] == remote_host.engine_data_root

    no_docker = remote_host.ssh(remote_host.alias_no_docker, "test -e /var/run/docker.sock")
    assert no_docker.returncode == 1, no_docker.stderr
    missing = remote_host.ssh(remote_host.alias, f"test -e {remote_host.missing_socket}")
    assert missing.returncode == 1, missing.stderr


def test_a_user_without_access_to_the_socket_gets_no_engine(
    remote_host: RemoteHost, sock_dir: Path
) -> None:
    local = sock_dir / "docker.sock"
    forward = remote_host.forward(
        remote_host.alias_nodock, "-L", f"{local}:{remote_host.docker_socket}"
    )
    with forward as master:
        # The client accepts, then the channel is refused: the connection is closed.
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            engine_get(local, "/_ping")
        time.sleep(0.2)
        assert "open failed" in master.log_text()
    writable = remote_host.ssh(remote_host.alias_nodock, f"test -w {remote_host.docker_socket}")
    assert writable.returncode == 1


def test_the_remote_loopback_is_not_this_machines(
    remote_host: RemoteHost, remote_busybox_image: str
) -> None:
    port = free_local_port()
    name = f"occ-remote-test-{uuid.uuid4().hex[:8]}"
    remote_host.remote_docker(
        "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8080",
        remote_busybox_image,
        "sh", "-c", "echo remote-hello > /www/index.html && exec httpd -f -p 8080 -h /www",
    )  # fmt: skip
    try:
        # On the remote host, its 127.0.0.1 answers ...
        for _ in range(50):
            inside = remote_host.run_on_host(
                "curl", "-sS", "--max-time", "2", f"http://127.0.0.1:{port}/"
            )
            if inside.stdout.strip() == "remote-hello":
                break
            time.sleep(0.1)
        assert inside.stdout.strip() == "remote-hello", inside.stderr
        # ... this machine's does not ...
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), timeout=3),
        ):
            pass
        # ... and an SSH forward brings it here.
        local_port = free_local_port()
        spec = f"127.0.0.1:{local_port}:127.0.0.1:{port}"
        url = f"http://127.0.0.1:{local_port}/"
        with (
            remote_host.forward(remote_host.alias, "-L", spec),
            urllib.request.urlopen(url, timeout=10) as reply,
        ):
            assert reply.read().decode().strip() == "remote-hello"
    finally:
        remote_host.remote_docker("rm", "-f", name, check=False)


# alias: (what `id -un` prints, or the line ssh prints when it fails)
ALIASES = {
    "occ-remote": ("root", ""),
    "occ-remote-nodock": ("occ-nodock", ""),
    "occ-remote2": ("root", ""),
    "occ-remote-badauth": ("", "root@10.203.0.2: Permission denied (publickey)."),
    "occ-remote-changedkey": ("", "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!"),
    "occ-remote-unknownkey": (
        "",
        "No ED25519 host key is known for [10.203.0.2]:2222 and you have requested "
        "strict checking.\nHost key verification failed.",
    ),
    "occ-remote-refused": ("", "ssh: connect to host 10.203.0.2 port 2223: Connection refused"),
    "occ-remote-down": ("", "ssh: connect to host 10.203.0.9 port 2222: Connection timed out"),
}


@pytest.mark.parametrize("alias", ALIASES)
def test_each_alias_behaves_as_named(remote_host: RemoteHost, alias: str) -> None:
    stdout, stderr = ALIASES[alias]
    result = remote_host.ssh(alias, "id -un")
    if stdout:
        assert (result.returncode, result.stdout.strip()) == (0, stdout), result.stderr
    else:
        assert result.returncode == 255
        assert stderr in result.stderr


def test_the_changed_key_is_reported_as_such(remote_host: RemoteHost) -> None:
    result = remote_host.ssh(remote_host.alias_changedkey, "true")
    assert (
        "Host key for [10.203.0.2]:2222 has changed and you have requested strict checking."
        in result.stderr
    )
    assert result.stderr.rstrip().endswith("Host key verification failed.")


def test_dropped_connections_end_the_command_and_the_host_takes_new_ones(
    remote_host: RemoteHost,
) -> None:
    command = subprocess.Popen(
        [*remote_host.ssh_command(remote_host.alias), "echo started; exec sleep 60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert command.stdout is not None
        started = threading.Event()

        def read_first_line() -> None:
            if command.stdout and command.stdout.readline():
                started.set()

        threading.Thread(target=read_first_line, daemon=True).start()
        assert started.wait(20), "the remote command did not start"
        remote_host.drop_connections()
        _, err = command.communicate(timeout=10)
    finally:
        command.kill()
    assert command.returncode == 255
    assert "Connection to 10.203.0.2 closed by remote host." in err
    assert remote_host.ssh(remote_host.alias, "true").returncode == 0
