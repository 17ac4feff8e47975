"""The image build's download of opencode (sandbox/fetch_opencode.py), against a registry
served for real over HTTP from a thread: package metadata with a sha512 integrity, and
tarballs holding `package/bin/opencode` (here a shell script that prints a version)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import importlib.util
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

FETCH_FILE = Path(__file__).resolve().parents[2] / "src/opencode_cloud/sandbox/fetch_opencode.py"
VERSION = "1.18.33"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("occ_fetch_opencode", FETCH_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fetch = _load()


def tarball(script: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = script.encode()
        info = tarfile.TarInfo("package/bin/opencode")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Registry:
    """Packages by name: (tarball, integrity it is published with); requests made."""

    def __init__(self) -> None:
        self.packages: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.requests.append(self.path)
                body = registry.answer(self.path, registry.url)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def publish(self, name: str, script: str, integrity: str | None = None) -> None:
        data = tarball(script)
        digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
        self.packages[name] = (data, integrity or f"sha512-{digest}")

    def answer(self, path: str, base: str) -> bytes | None:
        name, _, rest = path.strip("/").partition("/")
        if name not in self.packages:
            return None
        data, integrity = self.packages[name]
        if rest == VERSION:
            tarball_url = f"{base}/{name}/-/{name}-{VERSION}.tgz"
            return json.dumps({"dist": {"tarball": tarball_url, "integrity": integrity}}).encode()
        return data if rest == f"-/{name}-{VERSION}.tgz" else None


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    monkeypatch.setattr(fetch.platform, "machine", lambda: "x86_64")
    served = Registry()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


def test_installs_the_checked_binary(registry: Registry, tmp_path: Path) -> None:
    registry.publish("opencode-linux-x64", f"#!/bin/sh\necho {VERSION}\n")
    dest = tmp_path / "opencode"
    assert fetch.main(registry.url, VERSION, str(dest)) == 0
    assert dest.read_text() == f"#!/bin/sh\necho {VERSION}\n"
    assert dest.stat().st_mode & 0o777 == 0o755
    assert registry.requests == [
        f"/opencode-linux-x64/{VERSION}",
        f"/opencode-linux-x64/-/opencode-linux-x64-{VERSION}.tgz",
    ]


def test_a_tarball_that_does_not_match_its_integrity_is_refused(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = base64.b64encode(hashlib.sha512(b"something else").digest()).decode()
    registry.publish("opencode-linux-x64", f"#!/bin/sh\necho {VERSION}\n", f"sha512-{other}")
    dest = tmp_path / "opencode"
    assert fetch.main(registry.url, VERSION, str(dest)) == 1
    assert not dest.exists()
    assert "does not match its sha512" in capsys.readouterr().err


def test_the_baseline_build_when_the_first_does_not_run(registry: Registry, tmp_path: Path) -> None:
    registry.publish("opencode-linux-x64", "#!/bin/sh\nexit 132\n")  # no AVX2 on this CPU
    registry.publish("opencode-linux-x64-baseline", f"#!/bin/sh\necho {VERSION}\n")
    dest = tmp_path / "opencode"
    assert fetch.main(registry.url, VERSION, str(dest)) == 0
    assert "echo 1.18.33" in dest.read_text()


def test_a_binary_of_another_version_fails_the_build(registry: Registry, tmp_path: Path) -> None:
    registry.publish("opencode-linux-x64", "#!/bin/sh\necho 1.18.32\n")
    dest = tmp_path / "opencode"
    assert fetch.main(registry.url, VERSION, str(dest)) == 1
    assert not dest.exists()
