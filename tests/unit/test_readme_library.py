"""README's "Using it as a library" keeps working: its example runs (on the in-memory
engine in place of the real one), and every name its prose offers is where it says."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from fakes import SANDBOX_ENV, FakeEngine

README = Path(__file__).parents[2] / "README.md"
SECTION = README.read_text(encoding="utf-8").split("## Using it as a library", 1)[1]
SECTION = SECTION.split("\n## ", 1)[0]
EXAMPLE = re.search(r"```python\n(.*?)```", SECTION, re.DOTALL)


def test_the_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EXAMPLE is not None
    engine = FakeEngine()
    engine.add_image("opencode-cloud-sandbox:1.18.33", env=SANDBOX_ENV)
    monkeypatch.setattr("opencode_cloud.docker.client.DockerClient", lambda: engine)
    namespace: dict[str, object] = {}
    exec(compile(EXAMPLE.group(1), str(README), "exec"), namespace)
    info = engine.inspect_container("opencode-cloud")
    assert namespace["container_id"] == info.id and not info.running


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "opencode_cloud.docker.volume",
            "ensure_volumes_exist volume_exists remove_volume remove_all_volumes VOLUME_NAMES",
        ),
        (
            "opencode_cloud.docker.container",
            "create_container start_container stop_container remove_container container_exists "
            "container_is_running container_state setup_and_start CONTAINER_NAME DEFAULT_PORT",
        ),
        ("opencode_cloud.docker.models", "ContainerInfo ImageInfo VolumeInfo"),
    ],
)
def test_the_names_it_offers_are_there(module: str, names: str) -> None:
    loaded = importlib.import_module(module)
    assert [name for name in names.split() if not hasattr(loaded, name)] == []
    assert module in SECTION
