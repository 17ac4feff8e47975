"""The real sandbox image, a running opencode service, and the environment of a user who
runs `occ` as a subprocess (`occ_env`), for end-to-end tests; and the session's order:
tests marked `last` run after all others.

The image is built once per session through the library (`build_image`), trusting the
host's CA bundle so npm works behind a TLS-inspecting proxy; the engine's cache makes
every later build take a fraction of a second.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from occ_helpers import OLDER_OPENCODE, remove_release, run
from opencode_cloud.access.credentials import container_files
from opencode_cloud.cli.progress import PlainProgress
from opencode_cloud.defaults import DEFAULT_USERNAME
from opencode_cloud.docker.container import setup_and_start
from opencode_cloud.docker.health import health_url, wait_until_healthy
from opencode_cloud.docker.image import DEFAULT_IMAGE, build_image, image_exists
from opencode_cloud.docker.spec import ContainerSpec, DefaultSettings
from opencode_cloud.instance import Instance
from run_last import run_last

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "debian:bookworm-slim"
HEALTH_TIMEOUT = 60.0
# Offline, opencode's model-list fetch only produces errors; it does not affect serving.
TEST_ENV = {"OPENCODE_DISABLE_MODELS_FETCH": "1"}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `last` (the Docker daemon's restart) run after every other test of
    the session, end-to-end or not."""
    items[:] = run_last(items)


def host_ca_files() -> list[Path]:
    """The host's CA bundle (which trusts a TLS-inspecting proxy, when there is one)."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return [Path(candidate)]
    return []


@pytest.fixture(scope="session")
def sandbox_image(docker_client: Any) -> str:
    """The real opencode sandbox image, built (or found in the cache) by the library."""
    if not image_exists(docker_client, BASE_IMAGE):
        subprocess.run(["bash", str(REPO / "scripts" / "base-image.sh"), BASE_IMAGE], check=True)
    build_image(
        docker_client,
        tag=DEFAULT_IMAGE,
        ca_files=host_ca_files(),
        reporter=PlainProgress(),
    )
    return DEFAULT_IMAGE


@dataclass
class Service:
    """A running opencode service of one test instance."""

    client: Any
    sdk: Any  # docker-py, for what the test does around the tool (exec, logs)
    instance: Instance
    port: int
    password: str
    username: str = DEFAULT_USERNAME

    @property
    def name(self) -> str:
        return self.instance.container_name

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return health_url(port=self.port)

    def spec(self) -> ContainerSpec:
        """The container of a default configuration on this port, with `TEST_ENV`."""
        image = self.client.inspect_image(DEFAULT_IMAGE)
        return ContainerSpec.from_config(
            DefaultSettings(port=self.port, username=self.username, env=TEST_ENV),
            self.instance,
            image=DEFAULT_IMAGE,
            image_id=image.id if image else None,
        )

    def start(self, *, files: bool = True) -> float:
        """Create if needed, start, and wait until healthy; returns the seconds waited."""
        setup_and_start(
            self.client,
            self.spec(),
            self.instance,
            files=container_files(self.password) if files else None,
        )
        return self.wait()

    def wait(self) -> float:
        return wait_until_healthy(
            self.client,
            self.name,
            self.health_url,
            self.username,
            self.password,
            timeout=HEALTH_TIMEOUT,
        )

    def request(
        self, method: str, path: str, body: Any = None, *, auth: bool = True
    ) -> tuple[int, Any]:
        """One API call; returns (status, decoded JSON or text)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=10) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def exec(self, *command: str) -> tuple[int, str]:
        """Run a command in the container as its runtime user."""
        container = self.sdk.containers.get(self.name)
        code, output = container.exec_run(list(command), user="1000:1000")
        return int(code), bytes(output).decode(errors="replace")

    def logs(self) -> str:
        return bytes(self.sdk.api.logs(self.name)).decode(errors="replace")


@pytest.fixture
def make_service(
    docker_client: Any, docker_sdk: Any, sandbox_image: str, instance: Instance, free_port: int
) -> Callable[[], Service]:
    """A not yet started service on a fresh instance and a free port."""

    def make() -> Service:
        return Service(docker_client, docker_sdk, instance, free_port, secrets.token_urlsafe(24))

    return make


@pytest.fixture
def service(make_service: Callable[[], Service]) -> Iterator[Service]:
    """A healthy opencode service; removed with its volumes after the test."""
    running = make_service()
    running.start()
    yield running


@pytest.fixture
def occ_env(
    tmp_path: Path, instance: Instance, free_port: int, sandbox_image: str
) -> dict[str, str]:
    """The environment of one user of one instance, for `occ` as a subprocess
    (`occ_helpers.run`): their own configuration folder and a free port."""
    env = {
        **os.environ,
        "OCC_CONFIG_DIR": str(tmp_path / "config"),
        "OCC_INSTANCE": instance.name,
        "NO_COLOR": "1",
    }
    run(env, "config", "set", "port", str(free_port))
    # Behind a TLS-inspecting proxy, as a user there would: a test whose `occ` builds the
    # image (one that another test's update or uninstall removed) then reaches npm.
    for ca_file in host_ca_files():
        run(env, "config", "set", "ca_certificates", str(ca_file))
    # Offline machine: don't let opencode spend start-up time on the model list.
    run(env, "config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
    return env


@pytest.fixture
def older_release(instance: Instance) -> Iterator[str]:
    """An older opencode release to upgrade from, built on first use. Its image and build
    stage are removed afterwards: a run keeps only the default image."""
    yield OLDER_OPENCODE
    remove_release(instance, OLDER_OPENCODE)  # a failed upgrade may leave it running


@pytest.fixture(scope="session")
def host_ca() -> list[Path]:
    """The CA files the session's image was built to trust."""
    return host_ca_files()


@pytest.fixture(scope="module")
def browser() -> Any:
    """Debian's Chromium, headless, driven by Playwright (its own download cannot work
    offline): one per test module."""
    from browser_helpers import CHROMIUM, CHROMIUM_ARGS

    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.fail("chromium is missing: apt-get install chromium")
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
        )
        yield instance
        instance.close()
