"""opencode's HTTP API, as the unit tests meet it: a small local server answering the
health, session and message endpoints behind Basic auth, in a thread of the test."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import bcrypt

from fakes import FakeEngine
from opencode_cloud.defaults import (
    CONTAINER_PORT,
    DEFAULT_OPENCODE_VERSION,
    PASSWORD_PATH_IN_CONTAINER,
)
from opencode_cloud.opencode import USERNAME_ENV

SESSION = {"id": "ses_1", "title": "kept"}  # the one session opencode holds
# What opencode answers when its database does not fit the release reading it.
SESSIONS_FAIL = {"name": "UnknownError", "data": {"message": "no such column: x"}}


def holds(hashed: bytes, password: str) -> bool:
    """True when `hashed`, a file handed to the container, is the hash of `password`."""
    return bcrypt.checkpw(password.encode(), hashed.strip())


class FakeOpencode(ThreadingHTTPServer):
    """opencode on a host port, as Docker publishes it.

    With an `engine`, it answers only while a container of that engine that publishes
    this port runs, and checks Basic auth as the edge does: against that container's
    user name and the password hash the tool wrote into it. Without one, it checks the
    fixed `username` and `password`. When it does not answer (no such container, or
    `answering` is False) the connection closes unanswered, as while opencode boots
    behind Docker's port proxy.

    Scripting: `answering`; `ready_at` (a `time.monotonic()` before which health says
    503, starting); `version` (what health reports); `sessions_broken` (every session
    call fails as on a database the release cannot read) or `broken_images` (only for
    containers of these images). `requests` counts the requests served.
    """

    daemon_threads = True

    def __init__(
        self,
        engine: FakeEngine | None = None,
        *,
        username: str = "opencode",
        password: str | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.engine = engine
        self.username = username
        self.password = password
        self.answering = True
        self.ready_at = 0.0
        self.version = DEFAULT_OPENCODE_VERSION
        self.sessions_broken = False
        # As the edge with a second factor on: Basic credentials reach the health check only.
        self.second_factor = False
        self.broken_images: set[str] = set()
        self.requests = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/global/health"

    def start(self) -> FakeOpencode:
        """Serve in a background thread; `stop` ends it."""
        threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def serving(self) -> str | None:
        """The running container of the engine that publishes this port."""
        if self.engine is None:
            return None
        for name in list(self.engine.containers):
            info = self.engine.find_container(name)
            binding = info.published(CONTAINER_PORT) if info else None
            if info and info.running and binding and binding.host_port == self.port:
                return name
        return None


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpencode
    # Credentials once found right, as the edge remembers them: bcrypt is slow on purpose.
    proven: ClassVar[set[tuple[str, bytes]]] = set()

    def do_GET(self) -> None:
        opencode = self.server
        name = opencode.serving()
        if not opencode.answering or (opencode.engine is not None and name is None):
            return  # closed without an answer
        opencode.requests += 1
        image = opencode.engine.inspect_container(name).image if opencode.engine and name else ""
        if not self._authorized(name) or (opencode.second_factor and self.path != "/global/health"):
            self._send(401, b"Unauthorized")
        elif time.monotonic() < opencode.ready_at:
            self._send(503, b"starting")
        elif self.path.startswith("/session") and (
            opencode.sessions_broken or image in opencode.broken_images
        ):
            self._send(500, json.dumps(SESSIONS_FAIL).encode())
        elif self.path == "/session":
            self._send(200, json.dumps([SESSION]).encode())
        elif self.path == f"/session/{SESSION['id']}":
            self._send(200, json.dumps({"id": SESSION["id"]}).encode())
        elif self.path == f"/session/{SESSION['id']}/message":
            self._send(200, b"[]")
        elif self.path == "/global/health":
            self._send(200, json.dumps({"healthy": True, "version": opencode.version}).encode())
        else:
            self._send(404, b"Not Found")

    def _authorized(self, name: str | None) -> bool:
        header = self.headers.get("Authorization") or ""
        user, _, password = base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")
        opencode = self.server
        if opencode.engine is None or name is None:
            return (user, password) == (opencode.username, opencode.password)
        # The edge's view: the container holds the password's bcrypt hash only.
        info = opencode.engine.inspect_container(name)
        username = next(e.split("=", 1)[1] for e in info.env if e.startswith(USERNAME_ENV + "="))
        hashed = opencode.engine.files.get(name, {}).get(PASSWORD_PATH_IN_CONTAINER)
        if not header or not hashed or user != username:
            return False
        if (header, hashed) not in self.proven:
            if not holds(hashed, password):
                return False
            self.proven.add((header, hashed))
        return True

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None
