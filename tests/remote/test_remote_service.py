"""The service on a remote host, through `occ --host`: a real sshd and a real second Docker
engine in network namespaces (tests/remote/conftest.py), and the real opencode.

The remote host's loopback is not this machine's: the service there listens on its own
127.0.0.1, and everything the tool asks of it goes over SSH.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from remote_helpers import RemoteHost

pytestmark = pytest.mark.remote

OCC = str(Path(sys.executable).parent / "occ")
HOST = "far"
INSTANCE = "remote-e2e"
PORT = 3187  # on the remote host; any other service there keeps its own


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def env(remote_host: RemoteHost, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    config = tmp_path_factory.mktemp("occ-remote-config")
    environ = {
        **os.environ,
        "OCC_CONFIG_DIR": str(config),
        "OCC_SSH_CONFIG": str(remote_host.ssh_config),
        "OCC_INSTANCE": INSTANCE,
    }
    environ.pop("DOCKER_HOST", None)
    environ.pop("OCC_HOST", None)
    return environ


def occ(env: dict[str, str], *args: str, timeout: float = 600) -> Run:
    proc = subprocess.run(
        [OCC, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def _one_line_error(run: Run) -> str:
    lines = run.err.strip().splitlines()
    assert lines and lines[-1].startswith("Hint: "), run.err
    assert lines[-2].startswith("Error: "), run.err
    assert "Traceback" not in run.err
    return lines[-2]


def _ca_file() -> list[str]:
    """This machine's CA bundle, for a build behind a TLS-inspecting proxy (as
    scripts/sandbox-image.sh does for the local engine)."""
    for bundle in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if bundle and Path(bundle).is_file():
            return ["--ca-file", bundle]
    return []


def _give_base_image(remote_host: RemoteHost) -> None:
    """The build's base image, which the remote engine would pull from a registry: these
    machines reach none, so it comes from this machine's engine (scripts/base-image.sh)."""
    base = "debian:bookworm-slim"
    if remote_host.remote_docker("image", "inspect", base, check=False).returncode == 0:
        return
    saved = subprocess.run(["docker", "save", base], capture_output=True, check=True)
    remote_host.remote_docker("load", input=saved.stdout)


@pytest.fixture(scope="module")
def far(env: dict[str, str], remote_host: RemoteHost) -> Iterator[str]:
    """The remote host saved as `far` (the default host of these tests)."""
    _give_base_image(remote_host)
    added = occ(env, "host", "add", HOST, f"ssh://{remote_host.alias}", "--default")
    assert added.code == 0, added.err
    if _ca_file():  # every build of this instance (and of its restored copies) trusts it
        assert occ(env, "config", "set", "ca_certificates", _ca_file()[1]).code == 0
    yield HOST
    occ(env, "--host", HOST, "uninstall", "--volumes", "--no-backup", "--yes", timeout=300)


def test_the_image_is_built_on_the_remote_engine(
    env: dict[str, str], far: str, remote_host: RemoteHost
) -> None:
    from opencode_cloud.defaults import DEFAULT_OPENCODE_VERSION

    image = f"opencode-cloud-sandbox:{DEFAULT_OPENCODE_VERSION}"
    built = occ(env, "--host", far, "--json", "build", *_ca_file(), timeout=1800)
    assert built.code == 0, built.err[-3000:]
    assert json.loads(built.out)["image"] == image
    there = remote_host.remote_docker("image", "inspect", image, check=False)
    assert there.returncode == 0, "the image is not in the remote engine"


@pytest.fixture(scope="module")
def started(env: dict[str, str], far: str) -> dict:
    # (after the build test, which makes the image there)
    run = occ(env, "--json", "start", "--port", str(PORT), timeout=900)
    assert run.code == 0, run.err[-3000:]
    return json.loads(run.out)


def test_start_status_and_a_session_through_the_tunnel_survive_stop_start(
    env: dict[str, str], started: dict, remote_host: RemoteHost
) -> None:
    assert started["host"] == f"ssh://{remote_host.alias}"
    assert started["needs_tunnel"] is True
    assert started["url"].startswith("http://127.0.0.1:")
    # Published on the remote host's loopback: nothing answers on this machine's.
    port = int(started["url"].rsplit(":", 1)[1])
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/global/health", timeout=2)

    status = occ(env, "--json", "status")
    assert status.code == 0, status.err
    data = json.loads(status.out)
    assert (data["http_health"], data["session_api"]) == ("healthy", "ok")

    password = occ(env, "--json", "auth", "show")
    creds = json.loads(password.out)
    with _tunnel(env) as url:
        session = _api(url, "POST", "/session", creds, {"title": "made through the tunnel"})
    assert occ(env, "stop").code == 0
    assert occ(env, "start").code == 0
    with _tunnel(env) as url:
        listed = _api(url, "GET", "/session", creds)
    assert session["id"] in [s["id"] for s in listed]


def test_list_and_open_reach_the_instance_there(
    env: dict[str, str], started: dict, tmp_path: Path
) -> None:
    listed = occ(env, "--json", "list")
    assert listed.code == 0, listed.err
    hosts = {h["name"]: h for h in json.loads(listed.out)["hosts"]}
    assert hosts[HOST]["reachable"] is True
    [item] = [i for i in hosts[HOST]["instances"] if i["instance"] == INSTANCE]
    assert (item["state"], item["health"], item["url"], item["needs_tunnel"]) == (
        "running",
        "healthy",
        f"http://127.0.0.1:{PORT}",
        True,
    )
    assert item["opencode_version"] == started["image"].rsplit(":", 1)[1]
    assert INSTANCE not in [i["instance"] for i in hosts["local"]["instances"]]

    asked = tmp_path / "asked"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" > {asked}.tmp && mv {asked}.tmp {asked}\n')
    browser.chmod(0o755)
    opened = subprocess.Popen(
        [OCC, "open"],
        env={**env, "BROWSER": str(browser)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not asked.exists() and opened.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        url = asked.read_text().strip()
        # The browser got this machine's end of a tunnel to the service there (which
        # nothing here answers for without it: see the test above).
        assert url.startswith("http://127.0.0.1:")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "/global/health", timeout=10)
        assert refused.value.code == 401  # the service's edge, asking for a password
    finally:
        opened.send_signal(signal.SIGINT)
        out, err = opened.communicate(timeout=15)
    assert opened.returncode == 0, err
    assert err.strip().endswith("Tunnel closed."), err
    with pytest.raises(OSError):  # the tunnel closed with it
        urllib.request.urlopen(url + "/global/health", timeout=2)
    assert json.loads(occ(env, "--json", "auth", "show").out)["password"] not in out + err


class _tunnel:
    """`occ tunnel` in the background, for as long as the block runs; gives its URL."""

    def __init__(self, env: dict[str, str], stop: signal.Signals = signal.SIGINT) -> None:
        self.env = env
        self.stop = stop  # Ctrl-C, or `kill`

    def __enter__(self) -> str:
        self.process = subprocess.Popen(
            [OCC, "--json", "tunnel", "--port", str(_free_port())],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        lines: list[str] = []
        while not lines or lines[-1] != "}":  # one indented JSON object
            line = self.process.stdout.readline()
            assert line, self.process.stderr.read() if self.process.stderr else ""
            lines.append(line.rstrip("\n"))
        data = json.loads("\n".join(lines))
        assert data.get("tunnel") is True and data.get("service") == "healthy", data
        # One local port, the one printed: the port the health probe used is given up.
        port = int(str(data["url"]).rsplit(":", 1)[1])
        assert _ports_listened_on_by_children_of(self.process.pid) == {port}
        self.port = port
        return str(data["url"])

    def __exit__(self, *exc: object) -> None:
        self.process.send_signal(self.stop)
        _, err = self.process.communicate(timeout=15)
        assert self.process.returncode == 0, err
        assert err.strip().endswith("Tunnel closed."), err
        with socket.socket() as probe:  # its ssh has gone with it
            assert probe.connect_ex(("127.0.0.1", self.port)) != 0


def _ports_listened_on_by_children_of(pid: int) -> set[int]:
    """The TCP ports that child processes of `pid` (its ssh) listen on."""
    children = {
        entry.name
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _parent_of(entry) == pid
    }
    listening = subprocess.run(
        ["ss", "-Hltnp"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return {
        int(line.split()[3].rsplit(":", 1)[1])
        for line in listening
        if any(f"pid={child}," in line for child in children)
    }


def _parent_of(process: Path) -> int:
    try:
        stat = (process / "stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _api(url: str, method: str, path: str, creds: dict, body: dict | None = None) -> Any:
    import base64

    token = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
    request = urllib.request.Request(
        url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def test_a_backup_made_there_restores_here(
    env: dict[str, str], started: dict, tmp_path: Path
) -> None:
    archive = tmp_path / "far.tar"
    made = occ(env, "backup", str(archive), timeout=600)
    assert made.code == 0, made.err
    assert archive.exists() and (archive.stat().st_mode & 0o777) == 0o600
    local = {**env, "OCC_HOST": "local", "OCC_INSTANCE": "from-remote"}
    try:
        restored = occ(local, "--json", "restore", str(archive), timeout=600)
        assert restored.code == 0, restored.err
        status = json.loads(occ(local, "--json", "status", "--sizes").out)
        sizes = {v["name"].rsplit("-", 1)[1]: v["size_bytes"] for v in status["volumes"]}
        # Compared with the archive, not with the remote volume: the service there keeps
        # running and writing (its logs live in that volume) after the backup.
        assert sizes["session"] == _bytes_archived(archive, "session") > 0
    finally:
        occ(local, "uninstall", "--volumes", "--no-backup", "--yes", timeout=300)


def _bytes_archived(archive: Path, kind: str) -> int:
    """The bytes the engine counts for one volume of `archive`: each file's size once
    (hard links are not counted again) and each symbolic link's target length."""
    total = 0
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.name.startswith(f"volumes/{kind}/"):
                continue
            if member.isreg():
                total += member.size
            elif member.issym():
                total += len(member.linkname.encode())
    return total


def test_a_backup_restores_onto_the_remote_host_too(
    env: dict[str, str], started: dict, tmp_path: Path
) -> None:
    archive = tmp_path / "far.tar"
    creds = json.loads(occ(env, "--json", "auth", "show").out)
    with _tunnel(env) as url:
        _api(url, "POST", "/session", creds, {"title": "copied on the same host"})
    assert occ(env, "backup", str(archive), timeout=600).code == 0
    copy = {**env, "OCC_INSTANCE": "remote-copy"}
    try:
        restored = occ(copy, "--json", "restore", str(archive), timeout=600)
        assert restored.code == 0, restored.err
        original = json.loads(occ(env, "--json", "status").out)
        # The copy's configuration has the original's port, which the original holds
        # there: the engine of that host says so.
        taken = occ(copy, "start")
        assert taken.code == 7 and f"Port {PORT} is already in use" in _one_line_error(taken)
        assert occ(copy, "config", "set", "port", str(PORT + 1)).code == 0
        status = json.loads(occ(copy, "--json", "start").out)
        assert status["host"] == original["host"]
        assert _session_ids(copy) == _session_ids(env) != set()
    finally:
        occ(copy, "uninstall", "--volumes", "--no-backup", "--yes", timeout=300)


def _session_ids(env: dict[str, str]) -> set[str]:
    """The sessions opencode lists, asked through a tunnel."""
    creds = json.loads(occ(env, "--json", "auth", "show").out)
    with _tunnel(env) as url:
        listed = _api(url, "GET", "/session", creds)
    assert isinstance(listed, list)
    return {s["id"] for s in listed}


def test_update_and_rollback_there_keep_the_sessions(
    env: dict[str, str], started: dict, remote_host: RemoteHost
) -> None:
    """`occ update` and `occ rollback` on the remote host: the snapshot is taken by that
    engine and the deep check of the new version goes through the tunnel. The new version
    is an image of the user's own, made there from the running one (no second build)."""
    from opencode_cloud.defaults import DEFAULT_OPENCODE_VERSION

    default = f"opencode-cloud-sandbox:{DEFAULT_OPENCODE_VERSION}"
    variant = "occ-remote-variant:1"
    made = remote_host.remote_docker(
        "build", "-q", "-t", variant, "-",
        input=f"FROM {default}\nLABEL io.opencode-cloud.test-variant=1\n".encode(),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    creds = json.loads(occ(env, "--json", "auth", "show").out)
    with _tunnel(env) as url:
        kept = _api(url, "POST", "/session", creds, {"title": "made before the update"})
    try:
        assert occ(env, "config", "set", "image", variant).code == 0
        updated = occ(env, "--json", "update", timeout=600)
        assert updated.code == 0, updated.err
        result = json.loads(updated.out)
        assert result["changed"] is True and result["snapshot"], result
        status = json.loads(occ(env, "--json", "status").out)
        assert (status["image"], status["session_api"]) == (variant, "ok")
        assert [s["id"] for s in status["snapshots"]] == [result["snapshot"]]
        with _tunnel(env, stop=signal.SIGTERM) as url:
            _api(url, "POST", "/session", creds, {"title": "made after the update"})

        rolled = occ(env, "--json", "rollback", "--yes", timeout=600)
        assert rolled.code == 0, rolled.err
        status = json.loads(occ(env, "--json", "status").out)
        assert (status["image"], status["session_api"]) == (default, "ok")
        assert status["snapshots"] == []
        with _tunnel(env) as url:
            titles = {s["title"] for s in _api(url, "GET", "/session", creds)}
        assert kept["title"] in titles and "made after the update" not in titles
        assert occ(env, "config", "get", "image").out.strip() == "null"  # the default again
    finally:
        occ(env, "config", "unset", "image")
        if json.loads(occ(env, "--json", "status").out)["image"] != default:
            occ(env, "rollback", "--yes", timeout=600)
        remote_host.remote_docker("rmi", variant, check=False)


def test_shell_and_doctor_work_there(env: dict[str, str], started: dict) -> None:
    shell = occ(env, "shell", "--", "sh", "-c", "hostname; exit 3")
    assert shell.code == 3, shell.err
    assert shell.out.strip() == "opencode-cloud"
    doctor = occ(env, "--json", "doctor", timeout=120)
    findings = {f["name"]: f for f in json.loads(doctor.out)["findings"]}
    assert findings["HTTP API"]["status"] == "ok", findings["HTTP API"]
    assert findings["session API"]["status"] == "ok", findings["session API"]
    assert findings["disk space"]["status"] == "skip"
    assert doctor.code == 0, doctor.out


def test_logs_follow_ends_cleanly_when_the_connection_drops(
    env: dict[str, str], started: dict, remote_host: RemoteHost
) -> None:
    follow = subprocess.Popen(
        [OCC, "logs", "-f"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(3)
    assert follow.poll() is None, follow.stderr.read() if follow.stderr else ""
    remote_host.drop_connections()
    code = follow.wait(timeout=30)
    err = follow.stderr.read() if follow.stderr else ""
    assert code == 4, err
    assert "The SSH connection to" in _one_line_error(Run(code, "", err))


@pytest.mark.parametrize(
    ("alias", "words"),
    [
        ("alias_down", "Cannot reach"),
        ("alias_refused", "Cannot reach"),
        ("alias_badauth", "refused the SSH login"),
        ("alias_changedkey", "has changed"),
        ("alias_unknownkey", "is not known yet"),
        ("alias_no_docker", "No Docker engine answers"),
        ("alias_nodock", "Permission denied on the Docker socket"),
    ],
)
def test_each_connection_problem_is_one_line_with_a_hint(
    env: dict[str, str], remote_host: RemoteHost, alias: str, words: str
) -> None:
    name = getattr(remote_host, alias)
    started = time.monotonic()
    run = occ(env, "--host", "local", "host", "add", f"x-{name}", f"ssh://{name}")
    assert run.code == 4, run.err
    assert words in _one_line_error(run)
    assert time.monotonic() - started < 20
    listed = json.loads(occ(env, "--json", "host", "list").out)
    assert f"x-{name}" not in [h["name"] for h in listed["hosts"]]


def test_an_engine_socket_that_gives_no_answer_is_not_called_missing(
    env: dict[str, str], remote_host: RemoteHost
) -> None:
    """Something listens at the socket (the remote host shares this machine's /tmp) but
    hangs up without an answer, as a stuck or restarting engine may: that is not "no
    engine there", and the error says what happened."""
    folder = Path(tempfile.mkdtemp(prefix="occ-silent-", dir="/tmp"))
    folder.chmod(0o755)
    path = folder / "docker.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    path.chmod(0o777)
    listener.listen()

    def hang_up() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        add = ["host", "add", "x-silent", f"ssh://{remote_host.alias}", "--socket", str(path)]
        run = occ(env, "--host", "local", *add, timeout=60)
    finally:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)
    assert run.code == 4, run.err
    line = _one_line_error(run)
    assert "did not answer: the engine closed the connection without an answer" in line, line
    assert "x-silent" not in occ(env, "--json", "host", "list").out
