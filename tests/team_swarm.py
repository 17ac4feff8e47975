"""The in-memory swarm of a team's tests: a manager of three nodes, the team on it, and
the door's login service stood in for by a dict (`records`), as in test_team.py."""

from __future__ import annotations

from pathlib import Path

from fakes import FakeEngine
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.config.schema import Config
from opencode_cloud.config.store import save_config
from opencode_cloud.docker.swarm import SwarmMembership, SwarmNode
from opencode_cloud.service.service import Service
from opencode_cloud.team.team import Team
from service_helpers import INSTANCE

GIB = 2**30
PREFIX = INSTANCE.service_prefix
REGISTRY = "10.9.0.1:5000"


def _node(name: str, role: str = "worker") -> SwarmNode:
    return SwarmNode(
        id=f"id-{name}",
        hostname=name,
        role=role,
        state="ready",
        availability="active",
        address=f"10.9.0.{name[-1]}",
        memory_bytes=8 * GIB,
        cpus=2.0,
    )


def _team(fake: FakeEngine, tmp_path: Path, config: Config) -> Team:
    paths = InstancePaths(tmp_path / INSTANCE.name)
    save_config(paths.config_file, config)
    team = Team(Service(fake, config, INSTANCE, paths))
    team.door_answers = lambda: True
    team.person_answers = lambda _container: True
    return team


def _manager(fake: FakeEngine) -> FakeEngine:
    fake.membership = SwarmMembership("active", True, "id-n1", "10.9.0.1")
    fake.nodes = [_node("n1", "manager"), _node("n2"), _node("n3")]
    return fake
