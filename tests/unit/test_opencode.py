"""The adapter's facts about opencode against the image that starts it: the names and
numbers `opencode.py` holds are the ones the entrypoint and the Dockerfile use, so the
two sides cannot drift apart unnoticed."""

from __future__ import annotations

from pathlib import Path

import opencode_cloud
from opencode_cloud import opencode
from opencode_cloud.defaults import RUNTIME_HOME
from opencode_cloud.docker.volume import VOLUME_SPECS

SANDBOX = Path(opencode_cloud.__file__).parent / "sandbox"
ENTRYPOINT = (SANDBOX / "entrypoint.sh").read_text(encoding="utf-8")
DOCKERFILE = (SANDBOX / "Dockerfile").read_text(encoding="utf-8")


def test_the_entrypoint_starts_the_server_the_adapter_names() -> None:
    assert f"OPENCODE_PORT={opencode.INTERNAL_PORT}\n" in ENTRYPOINT
    command = " ".join(opencode.SERVER_COMMAND).replace(
        str(opencode.INTERNAL_PORT), '"$OPENCODE_PORT"'
    )
    assert f"/usr/local/bin/{command}" in ENTRYPOINT


def test_every_variable_the_adapter_names_is_set_by_the_image() -> None:
    for name in opencode.SERVER_ENV:
        assert f"{name}=" in ENTRYPOINT + DOCKERFILE, name
    assert f"export {opencode.PASSWORD_ENV}=" in ENTRYPOINT.replace(
        'export OPENCODE_TEST_HOME="$PROJECTS_DIR" ', "export "
    )


def test_the_image_health_check_asks_the_adapter_health_path() -> None:
    assert f"127.0.0.1:{opencode.INTERNAL_PORT}{opencode.HEALTH_PATH}" in DOCKERFILE


def test_a_volume_is_mounted_where_opencode_keeps_each_kind_of_data() -> None:
    mounted = {spec.mount_point for spec in VOLUME_SPECS}
    assert set(opencode.MIGRATED) <= mounted
    assert all(folder.startswith(RUNTIME_HOME + "/") for folder in opencode.MIGRATED)
