"""Resource limits on the real engine: a process that outgrows the memory limit is killed,
and the tool reports it as such rather than as a bare exit."""

from __future__ import annotations

from dataclasses import replace

import pytest

from opencode_cloud.docker.client import DockerClient
from opencode_cloud.docker.container import create_container, start_container
from opencode_cloud.docker.spec import DefaultLimits
from opencode_cloud.instance import Instance
from opencode_cloud.service.status import describe_exit

pytestmark = pytest.mark.integration


@pytest.fixture
def memory_hog(import_busybox, instance: Instance) -> str:
    """An image whose process doubles a string until memory runs out."""
    return import_busybox(
        f"opencode-cloud-test/hog:{instance.name}",
        'a=0123456789abcdef; while true; do a="$a$a"; done',
    )


def test_hitting_the_memory_limit_reads_as_out_of_memory(
    docker_client: DockerClient, instance: Instance, make_spec, free_port: int, memory_hog: str
) -> None:
    spec = make_spec(free_port, image=memory_hog, limits=DefaultLimits(memory_bytes=64 << 20))
    # Not restarted, so the engine's record of this one run stays to be read.
    create_container(docker_client, replace(spec, restart_policy="no"), instance)
    start_container(docker_client, spec.name)
    assert docker_client.wait_container(spec.name, timeout=60) == 137  # SIGKILL
    info = docker_client.inspect_container(spec.name)
    assert info.memory_bytes == 64 << 20
    assert info.oom_killed is True
    assert describe_exit(info) == "killed: out of memory"
    assert docker_client.last_exit_code(spec.name, 0) == 137
    docker_client.remove_container(spec.name, force=True)
    docker_client.remove_image(memory_hog, force=True)
