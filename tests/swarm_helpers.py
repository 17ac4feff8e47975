"""The test swarm (`scripts/swarm.sh`): three engines in network namespaces of this
machine, n1 the manager, with a registry on the bridge between them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "swarm.sh"
STATE_DIR = Path(os.environ.get("OCC_SWARM_DIR", "/tmp/occsw"))
NODES = (1, 2, 3)
REGISTRY = "10.209.0.1:5000"


def node_address(node: int) -> str:
    """The node's address on the test network (this machine reaches it too)."""
    return f"10.209.0.1{node}"


@dataclass(frozen=True)
class Swarm:
    """The running test swarm."""

    state_dir: Path = STATE_DIR
    registry: str = REGISTRY

    def socket(self, node: int) -> Path:
        return self.state_dir / f"n{node}" / "docker.sock"

    @property
    def manager_host(self) -> str:
        """The DOCKER_HOST of the manager, the only engine `occ` talks to."""
        return f"unix://{self.socket(1)}"

    def docker(
        self, node: int, *args: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The docker CLI on one node's engine (for what a test checks around `occ`)."""
        raw = subprocess.run(
            ["docker", "-H", f"unix://{self.socket(node)}", *args],
            input=input,
            capture_output=True,
            timeout=300,
        )
        result = subprocess.CompletedProcess(
            raw.args, raw.returncode, raw.stdout.decode(errors="replace"),
            raw.stderr.decode(errors="replace"),
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} on n{node}: {result.stderr.strip()}")
        return result

    def in_node(self, node: int, command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run a command of this machine in the node's network namespace."""
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/occsw-n{node}", "--", *command],
            capture_output=True,
            text=True,
            timeout=60,
        )
