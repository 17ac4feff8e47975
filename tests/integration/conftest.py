"""Container specs for the integration tests: default settings, a test image, a test port."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from opencode_cloud.docker.client import DockerClient
from opencode_cloud.docker.spec import ContainerSpec, DefaultSettings
from opencode_cloud.instance import Instance

SpecFor = Callable[..., ContainerSpec]


@pytest.fixture
def make_spec(docker_client: DockerClient, instance: Instance, busybox_image: str) -> SpecFor:
    """`make_spec(port, image=..., env=..., **settings)`: the spec `occ start` would make
    for the test's instance from a default configuration with these changes; the busybox
    test image unless told otherwise."""

    def make(
        port: int, *, image: str | None = None, env: Mapping[str, str] | None = None, **kw: Any
    ) -> ContainerSpec:
        ref = image or busybox_image
        found = docker_client.inspect_image(ref)
        return ContainerSpec.from_config(
            DefaultSettings(port=port, env=dict(env or {}), **kw),
            instance,
            image=ref,
            image_id=found.id if found else None,
        )

    return make
