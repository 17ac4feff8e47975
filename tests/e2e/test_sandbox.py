"""The real opencode sandbox: authentication, persistence, isolation, and its contents."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opencode_cloud.defaults import DEFAULT_OPENCODE_VERSION, EDGE_UID
from opencode_cloud.docker.container import remove_container, stop_container
from opencode_cloud.docker.errors import ContainerExited
from opencode_cloud.docker.health import wait_until_healthy
from opencode_cloud.docker.image import (
    DEFAULT_IMAGE,
    image_opencode_version,
    split_certificates,
)

pytestmark = pytest.mark.e2e

SERVICE = Any  # the e2e conftest's Service; not importable by name across conftests


def run_image(docker_sdk: Any, script: str) -> str:
    """Run a shell script in a throwaway container of the sandbox image."""
    output = docker_sdk.containers.run(
        DEFAULT_IMAGE, ["-c", script], entrypoint="/bin/sh", remove=True
    )
    return bytes(output).decode(errors="replace")


CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def read_image_file(docker_sdk: Any, path: str) -> bytes:
    """A file of the sandbox image, copied out of a created (never started) container.

    Reading it through a container's output instead can lose the end of a large file
    when the container exits before its log is complete.
    """
    import io
    import tarfile

    container = docker_sdk.containers.create(DEFAULT_IMAGE, entrypoint="/bin/true")
    try:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.getmembers()[0]
            if member.issym():  # /etc/ssl/certs entries may be links; follow within the image
                return read_image_file(docker_sdk, member.linkname)
            extracted = tar.extractfile(member)
            assert extracted is not None
            return extracted.read()
    finally:
        container.remove(force=True)


def test_health_needs_credentials(service: SERVICE) -> None:
    status, body = service.request("GET", "/global/health")
    assert status == 200
    assert body == {"healthy": True, "version": DEFAULT_OPENCODE_VERSION}
    assert service.request("GET", "/global/health", auth=False)[0] == 401
    assert service.request("GET", "/session", auth=False)[0] == 401
    service.password = "not-the-password"
    assert service.request("GET", "/global/health")[0] == 401


def test_image_labels(docker_client: Any, docker_sdk: Any, sandbox_image: str) -> None:
    assert image_opencode_version(docker_client, sandbox_image) == DEFAULT_OPENCODE_VERSION
    labels = docker_sdk.api.inspect_image(sandbox_image)["Config"]["Labels"]
    image = docker_client.inspect_image(sandbox_image)
    assert image is not None and image.labels == labels
    from opencode_cloud import __version__

    assert labels["io.opencode-cloud.version"] == __version__
    assert labels["org.opencontainers.image.version"] == DEFAULT_OPENCODE_VERSION
    assert labels["org.opencontainers.image.title"] == "opencode-cloud-sandbox"


def _titles(service: SERVICE) -> list[str]:
    status, sessions = service.request("GET", "/session")
    assert status == 200, sessions
    return [s.get("title") for s in sessions]


def test_sessions_and_files_survive_restart_and_recreation(service: SERVICE) -> None:
    title = f"persisted {uuid.uuid4().hex[:8]}"
    status, created = service.request("POST", "/session", {"title": title})
    assert status == 200, created
    assert title in _titles(service)
    assert service.exec("sh", "-c", "echo project > /workspace/keep.txt")[0] == 0
    assert (
        service.exec(
            "sh", "-c", "mkdir -p ~/.config/opencode && echo '{}' > ~/.config/opencode/keep.json"
        )[0]
        == 0
    )

    def assert_kept() -> None:
        assert title in _titles(service)
        assert service.exec("cat", "/workspace/keep.txt") == (0, "project\n")
        assert service.exec("cat", "/home/opencode/.config/opencode/keep.json") == (0, "{}\n")

    stop_container(service.client, service.name)
    service.start()
    assert_kept()

    remove_container(service.client, service.name, force=True)
    service.start()  # a new container on the same volumes
    assert_kept()


def test_runs_unprivileged(service: SERVICE) -> None:
    attrs = service.sdk.api.inspect_container(service.name)
    host = attrs["HostConfig"]
    # The entrypoint starts as root only to pick the runtime uid and prepare the edge, then
    # drops to its three users before anything else runs: no process keeps root.
    assert attrs["Config"]["User"] in ("", "1000:1000", "1000", "opencode")
    assert {"OCC_UID=1000", "OCC_GID=1000"} <= set(attrs["Config"]["Env"])
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"]
    assert any(opt.startswith("no-new-privileges") for opt in host["SecurityOpt"] or [])
    assert all("docker.sock" not in (m.get("Source") or "") for m in attrs["Mounts"])
    assert service.exec("id", "-u") == (0, "1000\n")
    code, _ = service.exec("sh", "-c", "test -e /var/run/docker.sock || test -e /run/docker.sock")
    assert code != 0
    # PID 1 is the supervisor, as the edge's user; opencode runs as uid 1000, Caddy and the
    # login service as the edge's user.
    top = service.sdk.api.top(service.name, ps_args="-eo uid,pid,args")
    rows = [dict(zip(top["Titles"], process, strict=True)) for process in top["Processes"]]
    by_program = {row["COMMAND"].split()[0]: row["UID"] for row in rows}
    assert any("supervise.py" in row["COMMAND"] for row in rows)
    assert any("opencode web" in row["COMMAND"] for row in rows)
    assert by_program["/usr/local/bin/opencode"] == "1000"
    assert by_program["/usr/bin/caddy"] == str(EDGE_UID)
    assert {row["UID"] for row in rows} == {"1000", str(EDGE_UID)}
    # None holds a capability, or could gain one; the supervisor keeps CAP_KILL alone (to
    # pass a stop on to opencode).
    code, status = service.exec(
        "sh",
        "-c",
        'for p in /proc/[0-9]*; do [ "$p" = /proc/$$ ] || '
        "grep -h -e ^Pid -e ^CapEff -e ^CapPrm -e ^CapAmb -e ^NoNewPrivs $p/status; done",
    )
    assert code == 0, status
    processes: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in status.splitlines():
        key, value = (part.strip() for part in line.split(":", 1))
        if key == "Pid":
            current = processes.setdefault(value, {})
        current[key] = value
    kill_only = f"{1 << 5:016x}"
    for pid, fields in processes.items():
        allowed = {"0000000000000000", kill_only} if pid == "1" else {"0000000000000000"}
        assert {fields["CapEff"], fields["CapPrm"], fields["CapAmb"]} <= allowed, (pid, fields)
        assert fields["NoNewPrivs"] == "1", (pid, fields)


def test_opencode_runs_without_buns_extra_garbage_collections(service: SERVICE) -> None:
    # Bun's extra collections can keep an idle opencode at about four times its CPU for
    # minutes (docs/operations.md, "What it costs while idle").
    code, environ = service.exec("sh", "-c", "tr '\\0' '\\n' < /proc/$(pgrep -xo opencode)/environ")
    assert code == 0, environ
    assert "BUN_GC_TIMER_DISABLE=1" in environ.splitlines()


def test_password_is_nowhere_visible(service: SERVICE) -> None:
    password = service.password
    attrs = service.sdk.api.inspect_container(service.name)
    assert password not in json.dumps(attrs)
    assert not any("OPENCODE_SERVER_PASSWORD" in entry for entry in attrs["Config"]["Env"])
    # The engine's own health check authenticates too: it runs (every 2 minutes) the
    # image's command, whose arguments name a credentials file, never a password. Run it
    # now as the engine would, and watch every process while it does.
    check = attrs["Config"]["Healthcheck"]["Test"]
    assert check[0] == "CMD" and password not in " ".join(check) and "-K" in check
    exec_id = service.sdk.api.exec_create(service.name, check[1:], user="root")["Id"]
    service.sdk.api.exec_start(exec_id, detach=True)
    seen: list[str] = []
    deadline = time.monotonic() + 10
    while service.sdk.api.exec_inspect(exec_id)["Running"] and time.monotonic() < deadline:
        top = service.sdk.api.top(service.name, ps_args="-eo pid,args")
        seen.extend(" ".join(map(str, process)) for process in top["Processes"])
    assert service.sdk.api.exec_inspect(exec_id)["ExitCode"] == 0  # healthy
    top = service.sdk.api.top(service.name, ps_args="-eo pid,args")
    seen.extend(" ".join(map(str, process)) for process in top["Processes"])
    assert not any(password in line for line in seen)
    _, cmdlines = service.exec("sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert password not in cmdlines
    assert password not in service.logs()
    # Requests with the password must not make opencode log it either.
    service.request("GET", "/session")
    assert password not in service.logs()


def test_refuses_to_start_without_a_password(make_service: Callable[[], SERVICE]) -> None:
    service = make_service()
    began = int(time.time()) - 1
    with pytest.raises(ContainerExited) as info:
        service.start(files=False)
    # The container's last lines travel with the error (the CLI prints them as its hint).
    assert any("no password file" in line for line in info.value.log_tail), info.value.log_tail
    assert (info.value.exit_code, info.value.name) == (78, service.name)
    assert "opencode-cloud: refusing to start opencode" in service.logs()
    # Docker restarts it (the restart policy), so its state shows the latest run: the
    # engine's events show how every run ended.
    deaths = service.sdk.api.events(
        since=began,
        until=int(time.time()) + 1,
        filters={"container": service.name, "event": "die"},
        decode=True,
    )
    codes = {event["Actor"]["Attributes"]["exitCode"] for event in deaths}
    assert codes == {"78"}


def test_empty_password_file_is_refused(make_service: Callable[[], SERVICE]) -> None:
    from opencode_cloud.defaults import PASSWORD_PATH_IN_CONTAINER
    from opencode_cloud.docker.container import setup_and_start

    service = make_service()
    setup_and_start(
        service.client, service.spec(), service.instance, files={PASSWORD_PATH_IN_CONTAINER: b""}
    )
    with pytest.raises(ContainerExited) as info:
        service.wait()
    assert any("is empty" in line for line in info.value.log_tail), info.value.log_tail


def test_wait_reports_time_to_healthy(make_service: Callable[[], SERVICE]) -> None:
    service = make_service()
    took = service.start()
    assert 0 < took < 30
    # Already healthy: the next wait returns at once.
    assert (
        wait_until_healthy(
            service.client, service.name, service.health_url, "opencode", service.password,
            timeout=5,
        )
        < 1
    )  # fmt: skip


def test_trusts_the_build_ca_certificates(docker_sdk: Any, host_ca: list[Path]) -> None:
    if not host_ca:
        pytest.skip("no host CA bundle to compare with")
    wanted = {c.strip() for path in host_ca for c in split_certificates(path.read_bytes())}
    present = {c.strip() for c in split_certificates(read_image_file(docker_sdk, CA_BUNDLE))}
    assert wanted <= present
    count = run_image(docker_sdk, "ls /usr/local/share/ca-certificates/opencode-cloud | wc -l")
    assert int(count) == len(wanted)


def test_sandbox_contents(docker_sdk: Any) -> None:
    script = (
        "set -e; opencode --version; git --version; rg --version | head -n1; python3 --version;"
        " python3 -m pip --version; python3 -m venv --help | head -n1; gh --version | head -n1;"
        " make --version | head -n1; curl --version | head -n1; ssh -V 2>&1; tini --version;"
        " less --version | head -n1; ps --version;"
        # What extra_packages adds back when a project needs it (docs/sandbox-image.md).
        " for tool in node npm gcc g++; do command -v $tool || echo no-$tool; done;"
        " test ! -e /usr/share/man/man1/git.1.gz && echo no-manuals;"
        " getent passwd opencode | cut -d: -f1,3,4,6; echo HOME=${HOME:-unset};"
        " getent passwd occ-edge | cut -d: -f1,3,4,7;"
        " test ! -e /usr/local/lib/node_modules/opencode-ai && echo no-npm-tree;"
        " echo workspace=$(readlink /workspace);"
        " stat -c '%U %a %n' /run/opencode-cloud /run/opencode-cloud/tls"
        " /var/lib/opencode-cloud-edge /home/opencode /home/opencode/projects"
        " /home/opencode/.config /home/opencode/.local/share/opencode"
        " /home/opencode/.local/state/opencode"
    )
    output = run_image(docker_sdk, script)
    assert output.splitlines()[0] == DEFAULT_OPENCODE_VERSION
    for expected in (
        "git version", "ripgrep", "Python 3", "pip ", "usage: venv", "gh version", "GNU Make",
        "curl", "OpenSSH", "tini",
    ):  # fmt: skip
        assert expected in output
    assert "no-node\nno-npm\nno-gcc\nno-g++\nno-manuals\n" in output
    # The runtime user (uid 1000 unless the tool asks the entrypoint for another), and the
    # edge's own user. The image's environment gives root no home of the agent's.
    assert "opencode:1000:1000:/home/opencode\nHOME=/root\n" in output
    assert f"occ-edge:{EDGE_UID}:{EDGE_UID}:/usr/sbin/nologin\nno-npm-tree\n" in output
    assert "workspace=/home/opencode/projects\n" in output  # the old path still leads there
    # The tool's files in the container: root's folder, the edge's own inside it.
    assert "root 755 /run/opencode-cloud\n" in output
    assert "occ-edge 700 /run/opencode-cloud/tls\n" in output
    assert "occ-edge 700 /var/lib/opencode-cloud-edge\n" in output
    for mount in (
        "/home/opencode",
        "/home/opencode/projects",
        "/home/opencode/.config",
        "/home/opencode/.local/share/opencode",
        "/home/opencode/.local/state/opencode",
    ):
        assert f"opencode 755 {mount}" in output


def test_recovers_from_a_crash(service: SERVICE) -> None:
    """opencode killed inside the container: Docker restarts it, and the data is still there."""
    import time

    status, created = service.request("POST", "/session", {"title": "before the crash"})
    assert status == 200, created
    restarts_before = service.sdk.api.inspect_container(service.name)["RestartCount"]
    code, _ = service.exec("sh", "-c", "kill -9 $(pgrep -x opencode)")
    assert code == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = service.sdk.api.inspect_container(service.name)
        if info["RestartCount"] > restarts_before and info["State"]["Running"]:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the container was not restarted after opencode crashed")
    service.wait()
    status, sessions = service.request("GET", "/session")
    assert status == 200
    assert "before the crash" in {s["title"] for s in sessions}
