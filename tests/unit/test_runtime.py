"""The runtime seam: an instance's service through `Runtime`, on the in-memory engine.

`EngineRuntime` over `FakeEngine` is what the unit tests of the service run on; these
tests hold it to the protocol (mypy checks the assignments) and walk one container
through its lifecycle the way JupyterHub walks a Spawner: create, start, poll, stop,
remove, with files handed in, a command run and the output read on the way.
"""

from __future__ import annotations

import pytest

from fake_opencode import FakeOpencode
from fakes import SANDBOX_ENV, FakeEngine
from opencode_cloud.access.credentials import container_files
from opencode_cloud.docker.errors import ContainerExited, ContainerNotFound
from opencode_cloud.docker.models import ContainerFile
from opencode_cloud.docker.spec import ContainerSpec, DefaultSettings
from opencode_cloud.instance import Instance
from opencode_cloud.opencode import Server
from opencode_cloud.runtime.base import Runtime
from opencode_cloud.runtime.choice import runtime_for
from opencode_cloud.runtime.engine import EngineRuntime
from service_helpers import REF

INSTANCE = Instance("seam")
NAME = INSTANCE.container_name


@pytest.fixture
def engine() -> FakeEngine:
    engine = FakeEngine()
    engine.add_image(REF, env=SANDBOX_ENV)
    return engine


@pytest.fixture
def runtime(engine: FakeEngine) -> Runtime:
    chosen: Runtime = runtime_for(engine, INSTANCE)
    assert isinstance(chosen, EngineRuntime) and chosen.engine is engine
    return chosen


def _spec(engine: FakeEngine, port: int = 3000) -> ContainerSpec:
    image = engine.inspect_image(REF)
    assert image is not None
    return ContainerSpec.from_config(
        DefaultSettings(port=port), INSTANCE, image=REF, image_id=image.id
    )


def test_a_container_goes_through_its_lifecycle(runtime: Runtime, engine: FakeEngine) -> None:
    assert runtime.instance == INSTANCE
    assert runtime.state() is None
    cid = runtime.create(_spec(engine), {"/run/opencode-cloud/password.bcrypt": b"hash\n"})
    # The files go in before the first start; the volumes are made with it.
    assert engine.files[NAME]["/run/opencode-cloud/password.bcrypt"] == b"hash\n"
    assert len(engine.volumes) == 5
    state = runtime.state()
    assert state is not None and state.id == cid and not state.running
    assert runtime.poll() == 0  # made, never run
    runtime.start()
    assert runtime.poll() is None  # runs
    assert runtime.stop() is True
    assert runtime.stop() is False  # stopped already: nothing to do
    assert runtime.poll() is not None
    runtime.remove()
    assert runtime.state() is None
    with pytest.raises(ContainerNotFound):
        runtime.poll()
    assert len(engine.volumes) == 5  # the data stays


def test_files_signals_commands_and_output(runtime: Runtime, engine: FakeEngine) -> None:
    runtime.create(_spec(engine))
    runtime.start()
    runtime.put_files({"/run/opencode-cloud/tls/cert.pem": ContainerFile(b"pem", 0o600, 61000)})
    assert engine.file_modes[NAME]["/run/opencode-cloud/tls/cert.pem"] == (0o600, 61000)
    runtime.signal("HUP")
    assert engine.signals == [(NAME, "HUP")]
    engine.exec_result = (b"hello\n", 0)
    output, exit_code = runtime.exec(["echo", "hello"], user="opencode", workdir="/w")
    assert b"".join(output) == b"hello\n" and exit_code() == 0
    assert engine.execs[-1] == (NAME, ("echo", "hello"), "opencode", "/w")
    engine.logs[NAME] = ["one", "two", "three"]
    assert b"".join(runtime.logs(tail=2)) == b"two\nthree\n"
    assert runtime.log_tail(1) == ["three"]


def test_where_it_listens_on_this_machine(runtime: Runtime) -> None:
    assert runtime.remote is None
    assert runtime.reach("0.0.0.0", 3000) == ("127.0.0.1", 3000)
    runtime.hold()  # nothing to hold: returns at once


def test_a_terminal_is_the_docker_cli_when_there_is_one(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    terminal = runtime.terminal(["ls"], user="opencode", workdir="/w", env=["A=1"], tty=True)
    assert terminal is not None and not terminal.needs_this_process
    assert terminal.program == "/usr/bin/docker"
    assert terminal.argv == (
        "docker", "exec", "-it", "-u", "opencode", "-w", "/w", "-e", "A=1", NAME, "ls",
    )  # fmt: skip
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert runtime.terminal(["ls"], user="opencode", workdir="/w", tty=False) is None


def test_waiting_until_ready(runtime: Runtime, engine: FakeEngine) -> None:
    server = FakeOpencode(engine).start()
    try:
        runtime.create(_spec(engine, server.port), container_files("pw"))
        runtime.start()
        ready = Server(f"http://127.0.0.1:{server.port}", "opencode", "pw")
        assert runtime.wait_ready(ready, timeout=5) >= 0
    finally:
        server.stop()


def test_waiting_ends_when_the_service_dies(runtime: Runtime, engine: FakeEngine) -> None:
    runtime.create(_spec(engine))
    engine.crash_on_start(NAME, exit_code=3, logs=["boom"])
    runtime.start()
    with pytest.raises(ContainerExited) as raised:
        runtime.wait_ready(Server("http://127.0.0.1:9", "opencode", "pw"), timeout=5)
    assert raised.value.exit_code == 3
