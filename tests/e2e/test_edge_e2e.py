"""The edge in front of opencode, end to end: `occ` as a subprocess, the real image (Caddy
and the login service in it), real opencode, Chromium and opencode's own client.

HTTPS with the tool's CA (and nothing without it, and no API over plain HTTP on the
port), the login page in a browser down to the terminal's websocket, `opencode run
--attach` with Basic credentials, the limit on guessing and its end, rotation signing
everyone out, sessions kept while TLS is switched off and on, and a certificate near its
end renewed by `occ start` (a running service taking it without a restart).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from browser_helpers import ARTIFACTS, run_in_terminal
from occ_helpers import instance_env, run
from raw_http import session_cookie, sign_in, statuses
from tls_helpers import shorten_certificate

pytestmark = pytest.mark.e2e


@pytest.fixture
def occ_env(tmp_path: Path, instance: Any, free_port: int, sandbox_image: str) -> dict[str, str]:
    return instance_env(tmp_path / "config", instance.name, free_port)


def creds(env: dict[str, str]) -> dict[str, Any]:
    return dict(json.loads(run(env, "--json", "auth", "show").stdout))


def request(
    url: str,
    method: str = "GET",
    path: str = "/global/health",
    *,
    auth: tuple[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request, with no proxy in the way; (status, decoded JSON or text)."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    connection: http.client.HTTPConnection
    if url.startswith("https://"):
        connection = http.client.HTTPSConnection(host, int(port), timeout=15, context=context)
    else:
        connection = http.client.HTTPConnection(host, int(port), timeout=15)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        all_headers["Authorization"] = f"Basic {token}"
    data = None if body is None else json.dumps(body)
    try:
        connection.request(method, path, body=data, headers=all_headers)
        answer = connection.getresponse()
        raw = answer.read()
    finally:
        connection.close()
    try:
        return answer.status, json.loads(raw)
    except ValueError:
        return answer.status, raw.decode(errors="replace")


def trusting(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def titles(info: dict[str, Any], context: ssl.SSLContext | None = None) -> set[str]:
    status, sessions = request(
        info["url"], path="/session", auth=(info["username"], info["password"]), context=context
    )
    assert status == 200, sessions
    return {s["title"] for s in sessions}


# --------------------------------------------------------------------------- HTTPS


def test_https_with_the_tools_ca_and_sessions_survive_switching_tls(
    occ_env: dict[str, str], free_port: int
) -> None:
    run(occ_env, "config", "set", "tls", "self-signed")
    started = json.loads(run(occ_env, "--json", "start").stdout)
    assert started["url"] == f"https://127.0.0.1:{free_port}" and started["healthy"] is True
    info = creds(occ_env)
    assert info["url"] == started["url"] and info["tls"] == "self-signed"
    ca = Path(info["ca_file"])
    assert b"BEGIN CERTIFICATE" in ca.read_bytes()
    user = (info["username"], info["password"])

    # With the CA trusted: healthy; a session to follow through the switches.
    status, body = request(info["url"], auth=user, context=trusting(str(ca)))
    assert (status, body["healthy"]) == (200, True)
    status, made = request(
        info["url"],
        "POST",
        "/session",
        auth=user,
        context=trusting(str(ca)),
        body={"title": "kept"},
    )
    assert status == 200, made
    # Without it the connection itself fails.
    with pytest.raises(ssl.SSLCertVerificationError):
        request(info["url"], auth=user, context=ssl.create_default_context())
    # Plain HTTP on the same port: no API, whatever the credentials.
    plain = info["url"].replace("https://", "http://")
    status, body = request(plain, auth=user)
    assert status == 400 and "healthy" not in str(body)
    # The tool's own probes go through the edge with the CA.
    state = json.loads(run(occ_env, "--json", "status").stdout)
    assert (state["http_health"], state["session_api"]) == ("healthy", "ok")
    assert state["url"].startswith("https://")

    # TLS off: plain HTTP, the same data.
    run(occ_env, "config", "set", "tls", "off")
    restarted = run(occ_env, "restart")
    assert "TLS" in restarted.stdout + restarted.stderr
    info_off = creds(occ_env)
    assert info_off["url"] == plain and info_off["ca_file"] is None
    assert "kept" in titles(info_off)
    # And on again: the same CA as before (clients that trust it keep trusting it).
    run(occ_env, "config", "set", "tls", "self-signed")
    run(occ_env, "restart")
    again = creds(occ_env)
    assert Path(again["ca_file"]).read_bytes() == ca.read_bytes()
    assert "kept" in titles(again, trusting(again["ca_file"]))


def test_the_edge_is_the_only_port_and_holds_no_plaintext_password(
    occ_env: dict[str, str], instance: Any, docker_sdk: Any
) -> None:
    run(occ_env, "start")
    info = creds(occ_env)
    container = docker_sdk.containers.get(instance.container_name)
    ports = container.attrs["NetworkSettings"]["Ports"]
    assert list(ports) == ["3000/tcp"]
    _code, listening = container.exec_run(["sh", "-c", "cat /proc/net/tcp"], user="1000:1000")
    # opencode (4096 = 0x1000) on 127.0.0.1 only; the login service on no TCP port at
    # all (a unix socket in the edge's own folder).
    lines = bytes(listening).decode().splitlines()[1:]
    local = {line.split()[1] for line in lines if line.split()[3] == "0A"}  # LISTEN
    assert "0100007F:1000" in local and not any(addr.endswith(":1001") for addr in local)
    assert not any(addr.endswith(":1000") and addr != "0100007F:1000" for addr in local)
    _code, found = container.exec_run(
        ["grep", "-rlsF", info["password"], "/run", "/home/opencode"],
        user="0:0",
    )
    assert bytes(found).strip() == b"", bytes(found)


# --------------------------------------------------------------------------- renewal

EDGE_LABEL = "io.opencode-cloud.edge"


def served_certificate(url: str, ca_file: str) -> dict[str, Any]:
    """The certificate the edge presents in a real handshake, verified against the
    instance's CA (its name constraints included) and the host name."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    context = trusting(ca_file)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as connection,
    ):
        found = connection.getpeercert()
    assert found
    return dict(found)


def served_days_left(url: str, ca_file: str) -> float:
    end = served_certificate(url, ca_file)["notAfter"]
    return (ssl.cert_time_to_seconds(str(end)) - time.time()) / 86400


def serve_a_certificate_near_its_end(
    env: dict[str, str], instance: Any, docker_sdk: Any, days: int = 5
) -> None:
    """The stopped instance as it is long after its certificate was made: the container
    holds one that ends in `days` days, and so does the tool's copy of what it serves."""
    tls_dir = Path(creds(env)["ca_file"]).parent
    chain = shorten_certificate(tls_dir, days)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        member = tarfile.TarInfo("cert.pem")
        member.size, member.mode, member.uid, member.gid = len(chain), 0o644, 61000, 61000
        tar.addfile(member, io.BytesIO(chain))
    container = docker_sdk.containers.get(instance.container_name)
    assert container.put_archive("/run/opencode-cloud/tls", buffer.getvalue())
    (tls_dir / "served.pem").write_bytes(chain)


def wait_answering(info: dict[str, Any]) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            if request(info["url"], context=trusting(info["ca_file"]))[0] in (200, 401):
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the service did not answer within 90 s"
        time.sleep(0.5)


def test_a_certificate_made_to_expire_in_5_days_is_renewed_at_start_of_a_stopped_service(
    occ_env: dict[str, str], instance: Any, docker_sdk: Any
) -> None:
    run(occ_env, "config", "set", "tls", "self-signed")
    run(occ_env, "start")
    info = creds(occ_env)
    cid = docker_sdk.containers.get(instance.container_name).id
    run(occ_env, "stop")
    serve_a_certificate_near_its_end(occ_env, instance, docker_sdk)

    started = json.loads(run(occ_env, "--json", "start").stdout)

    assert started["healthy"] is True
    assert served_days_left(info["url"], info["ca_file"]) > 365
    assert docker_sdk.containers.get(instance.container_name).id == cid  # not re-created
    assert started.get("certificate_renewed") == "written"


def test_a_certificate_made_to_expire_in_5_days_is_renewed_at_start_of_a_running_service(
    occ_env: dict[str, str], instance: Any, docker_sdk: Any, sandbox_image: str
) -> None:
    """Without a restart: the same container, started at the same moment, and a browser
    signed in before is still signed in after."""
    edge = docker_sdk.images.get(sandbox_image).labels.get(EDGE_LABEL, "")
    assert edge.isdigit() and int(edge) >= 2, (
        f"{sandbox_image} has {EDGE_LABEL}={edge!r}: renewing the certificate of a running "
        "service needs an image whose edge reloads it on SIGHUP (label 2 or more); with "
        "this one the tool re-creates the container instead"
    )
    run(occ_env, "config", "set", "tls", "self-signed")
    run(occ_env, "start")
    info = creds(occ_env)
    run(occ_env, "stop")
    serve_a_certificate_near_its_end(occ_env, instance, docker_sdk)
    container = docker_sdk.containers.get(instance.container_name)
    container.start()  # as it was: running, serving the old certificate
    wait_answering(info)
    assert served_days_left(info["url"], info["ca_file"]) < 6
    cookie = browser_cookie(info)
    container.reload()
    cid, began = container.id, container.attrs["State"]["StartedAt"]

    started = json.loads(run(occ_env, "--json", "start").stdout)

    assert started["already_running"] is True
    deadline = time.monotonic() + 15
    while served_days_left(info["url"], info["ca_file"]) < 365:
        assert time.monotonic() < deadline, "the running edge still serves the old certificate"
        time.sleep(0.5)
    assert started.get("certificate_renewed") == "reloaded"
    container = docker_sdk.containers.get(instance.container_name)
    assert (container.id, container.attrs["State"]["StartedAt"]) == (cid, began)
    assert container.attrs["RestartCount"] == 0 and container.status == "running"
    status, _sessions = request(
        info["url"], path="/session", context=trusting(info["ca_file"]), headers={"Cookie": cookie}
    )
    assert status == 200, "the browser was signed out"


def browser_cookie(info: dict[str, Any]) -> str:
    """A browser's sign-in over HTTPS; its session cookie (name=value)."""
    port = int(info["url"].rsplit(":", 1)[1])
    answer = sign_in(port, info["username"], info["password"], context=trusting(info["ca_file"]))
    assert statuses(answer) == [303], answer[:400]
    return f"occ_session_{port}={session_cookie(answer)}"


# --------------------------------------------------------------------------- browser


def test_login_page_ui_terminal_and_logout_in_chromium(
    browser: Any, occ_env: dict[str, str]
) -> None:
    run(occ_env, "config", "set", "tls", "self-signed")
    run(occ_env, "start")
    info = creds(occ_env)
    # The certificate itself is checked above; this browser has no way to trust a CA.
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(info["url"] + "/", wait_until="load", timeout=30_000)
        assert "/__occ/login" in page.url
        page.fill("#username", info["username"])
        page.fill("#password", info["password"])
        page.click("button[type=submit]")
        page.get_by_text("Projects", exact=True).wait_for(timeout=30_000)
        assert page.title() == "OpenCode"
        (cookie,) = [c for c in context.cookies() if c["name"].startswith("occ_session_")]
        assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Lax")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "edge-after-login.png"))
        # The event stream (SSE) through the edge, with the cookie.
        events = page.evaluate(
            """async () => new Promise((resolve) => {
                 const source = new EventSource('/event');
                 source.onmessage = (e) => { source.close(); resolve(e.data); };
                 setTimeout(() => resolve('timeout'), 15000);
               })"""
        )
        assert "server.connected" in events
        # The terminal: a pty and its websocket through the edge.
        run_in_terminal(page, "echo edge", "edge")
        # Log out (a form posted from the edge's own page): the cookie is gone, and the
        # same cookie copied elsewhere is refused.
        page.goto(info["url"] + "/__occ/logout", wait_until="load")
        assert "/__occ/login" not in page.url  # a page that asks first: no GET signs out
        page.click("button[type=submit]")
        page.wait_for_url("**/__occ/login**")
        assert "/__occ/login" in page.url
        page.goto(info["url"] + "/", wait_until="load")
        assert "/__occ/login" in page.url
        status, _ = request(
            info["url"],
            path="/session",
            context=trusting(info["ca_file"]),
            headers={"Cookie": f"{cookie['name']}={cookie['value']}"},
        )
        assert status == 401
    finally:
        context.close()


# --------------------------------------------------------------------------- API clients


def opencode_client() -> str:
    found = os.environ.get("OCC_TEST_OPENCODE") or shutil.which("opencode")
    if not found:
        pytest.fail("opencode's client is missing: scripts/test.sh installs it (from npm)")
    return found


def test_opencode_run_attach_with_basic_credentials(occ_env: dict[str, str]) -> None:
    run(occ_env, "start")
    info = creds(occ_env)
    before = titles(info)
    home = Path(occ_env["OCC_CONFIG_DIR"]).parent / "client-home"
    home.mkdir()
    client_env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_STATE_HOME": str(home / "state"),
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
    }
    # It makes a session, then waits for a model that this offline machine lacks.
    process = subprocess.Popen(
        [
            opencode_client(), "run", "--attach", info["url"],
            "-u", info["username"], "-p", info["password"], "hello from the edge test",
        ],
        env=client_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        new: set[str] = set()
        while time.monotonic() < deadline and not new:
            time.sleep(0.5)
            new = titles(info) - before
            if process.poll() is not None:
                break
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate(timeout=10)[0].decode(errors="replace")
    assert new, f"no session appeared; opencode said: {output[-2000:]}"


# --------------------------------------------------------------------------- guessing


def test_thirty_wrong_passwords_get_429s_and_the_right_one_works_within_a_minute(
    occ_env: dict[str, str],
) -> None:
    run(occ_env, "start")
    info = creds(occ_env)
    answers = [request(info["url"], auth=(info["username"], f"guess-{n}"))[0] for n in range(30)]
    assert answers[:10] == [401] * 10 and set(answers[10:]) == {429}, answers
    assert request(info["url"], auth=(info["username"], info["password"]))[0] == 429
    # The tool's own check says what is going on, rather than "unhealthy".
    state = json.loads(run(occ_env, "--json", "status").stdout)
    assert state["http_health"] == "unauthorized"
    started = time.monotonic()
    while request(info["url"], auth=(info["username"], info["password"]))[0] != 200:
        assert time.monotonic() - started < 65, "still locked out after a minute"
        time.sleep(2)


# --------------------------------------------------------------------------- rotation


def test_rotation_signs_everyone_out_at_once(occ_env: dict[str, str]) -> None:
    run(occ_env, "start")
    info = creds(occ_env)
    port = int(info["url"].rsplit(":", 1)[1])
    # A browser's sign-in: the login page, then its form (with the page's token).
    answer = sign_in(port, info["username"], info["password"])
    assert statuses(answer) == [303]
    cookie = f"occ_session_{port}={session_cookie(answer)}"
    assert request(info["url"], path="/session", headers={"Cookie": cookie})[0] == 200

    rotated = json.loads(run(occ_env, "--json", "auth", "rotate").stdout)
    assert rotated["password"] != info["password"]
    assert request(info["url"], path="/session", headers={"Cookie": cookie})[0] == 401
    assert request(info["url"], auth=(info["username"], info["password"]))[0] == 401
    assert request(info["url"], auth=(info["username"], rotated["password"]))[0] == 200
    state = json.loads(run(occ_env, "--json", "status").stdout)
    assert state["http_health"] == "healthy"
