"""Which runtime an instance's service runs on: the one place that chooses.

Today every instance is a container on the engine the command reached. A swarm runtime
would be chosen here (say, when that engine is a swarm manager, or when the
configuration asks for one), a Kubernetes one likewise; nothing above this function
would change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opencode_cloud.runtime.engine import EngineRuntime

if TYPE_CHECKING:
    from opencode_cloud.docker.engine import Engine
    from opencode_cloud.instance import Instance
    from opencode_cloud.runtime.base import Runtime


def runtime_for(engine: Engine, instance: Instance) -> Runtime:
    """Where `instance` runs: a container on `engine`."""
    return EngineRuntime(engine, instance)
