"""The test swarm (`scripts/swarm.sh`): three engines in network namespaces of this
machine, n1 the manager, with a registry on the bridge between them."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opencode_cloud.instance import LABEL_INSTANCE

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "swarm.sh"
# Which of scripts/swarm.sh's independent swarms (0-9) the tests use.
SWARM_ID = int(os.environ.get("OCC_SWARM_ID", "0"))
PREFIX = "occsw" if SWARM_ID == 0 else f"occsw{SWARM_ID}"
STATE_DIR = Path(os.environ.get("OCC_SWARM_DIR", f"/tmp/{PREFIX}"))
NODES = (1, 2, 3)
REGISTRY = f"10.209.{SWARM_ID}.1:5000"
HOST_ADDRESS = f"10.209.{255 - SWARM_ID}.1"  # this machine, as the nodes could see it


def node_address(node: int) -> str:
    """The node's address on the test network (this machine reaches it too)."""
    return f"10.209.{SWARM_ID}.1{node}"


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
            ["nsenter", f"--net=/run/netns/{PREFIX}-n{node}", "--", *command],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def load_on_manager(self, ref: str) -> None:
        """Copy image `ref` from this machine's engine to the manager (`docker save |
        docker load`), as if built there: the swarm has no internet."""
        save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
        load = subprocess.run(
            ["docker", "-H", self.manager_host, "load", "-q"],
            stdin=save.stdout,
            capture_output=True,
            timeout=300,
        )
        assert save.wait() == 0 and load.returncode == 0, load.stderr

    def running_on(self, service: str, timeout: float = 180) -> str:
        """The node whose task of `service` runs, once it does."""
        deadline = time.monotonic() + timeout
        rows: list[str] = []
        while time.monotonic() < deadline:
            rows = self.docker(
                1, "service", "ps", service, "--format", "{{.Node}} {{.CurrentState}} {{.Error}}"
            ).stdout.splitlines()
            if rows and rows[0].split()[1:2] == ["Running"]:
                return rows[0].split()[0]
            time.sleep(1)
        raise AssertionError(f"{service} does not run: {rows}")

    def script(self, *args: str) -> None:
        """`scripts/swarm.sh ARGS...` on this swarm (`node-kill N`, `link-down N`, ...)."""
        done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"swarm.sh {' '.join(args)}: {done.stderr}"

    def container_of(self, node: int, service: str) -> str:
        """The running container of `service`'s task on `node` ("" when none)."""
        label = f"label=com.docker.swarm.service.name={service}"
        found = self.docker(node, "ps", "-q", "--filter", label, check=False).stdout.split()
        return found[0] if found else ""

    def remove_team(self, instance: str) -> None:
        """Everything of the team of `instance` on every node: services, secrets, its
        network and volumes."""
        label = f"{LABEL_INSTANCE}={instance}"
        for service in self.docker(
            1, "service", "ls", "-q", "--filter", f"label={label}"
        ).stdout.split():
            self.docker(1, "service", "rm", service, check=False)
        time.sleep(2)
        for secret in self.docker(
            1, "secret", "ls", "-q", "--filter", f"label={label}"
        ).stdout.split():
            self.docker(1, "secret", "rm", secret, check=False)
        self.docker(1, "network", "rm", f"opencode-cloud-{instance}-cluster", check=False)
        # (made by the engine at a task's first start: named, not labelled; in use until
        # the removed tasks' containers are gone, which takes a stopping instance seconds)
        prefix = f"name=opencode-cloud-{instance}-"
        deadline = time.monotonic() + 60
        for n in NODES:
            while True:
                volumes = self.docker(n, "volume", "ls", "-q", "--filter", prefix, check=False)
                for volume in volumes.stdout.split():
                    self.docker(n, "volume", "rm", "-f", volume, check=False)
                if volumes.returncode != 0 or not volumes.stdout.split():
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(1)


def door_request(
    url: str,
    path: str,
    who: tuple[str, str],
    body: object = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, object]:
    """A request to the front door at `url` as person `who` (name, password), with Basic
    authentication (over HTTPS trusting `context`); the status and the answer (JSON, or
    its text when refused)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method="POST" if data else "GET")
    token = base64.b64encode(f"{who[0]}:{who[1]}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    if data:
        request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
