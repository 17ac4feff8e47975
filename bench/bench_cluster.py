"""A team on the test swarm (`scripts/swarm.sh`, `OCC_SWARM_ID`): what the front door adds
to a call to a person on another node, against one on its own node; and how long a new
person waits from `occ user add` to a usable UI. Each next to its floor, in the same run.

    sudo scripts/swarm.sh up
    .venv/bin/python bench/bench_cluster.py [--calls N]
    .venv/bin/python bench/bench_cluster.py --smoke   (a few calls: the bench still works)

- Latency per API call (`GET /session`, one kept-alive connection each), from a client
  container on the manager attached to the team's overlay: through the door to ada (whose
  instance is on the manager, by the door) and to bob (on another node), against the
  floor of calling each instance directly over the overlay with its internal password
  (read from the door's records, whose volume the client mounts), the four taking turns.
- From `occ user add` to a usable UI (the door serves the person's page and `GET
  /session` answers), on a node that must first pull the image from the swarm's registry,
  and on one that has it; the floor: `docker service create` of the same image on the
  same node until its container runs (pulling it first, for a node that must).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

BIN = Path(sys.executable).parent
OCC = str(BIN / "occ")
REPO = Path(__file__).resolve().parents[1]
SWARM_ID = int(os.environ.get("OCC_SWARM_ID", "0"))
PREFIX = "occsw" if SWARM_ID == 0 else f"occsw{SWARM_ID}"
STATE = Path(f"/tmp/{PREFIX}")
REGISTRY = f"10.209.{SWARM_ID}.1:5000"
MANAGER_ADDRESS = f"10.209.{SWARM_ID}.11"
IMAGE = "opencode-cloud-sandbox:1.18.33"
PORT = 8794
EDGE_UID = 61000
# Run in the client container (the sandbox image, as the edge's user, the door's state
# volume at its place): `GET /session` to each person directly and through the door, in
# turns, on kept-alive connections; the milliseconds of each, as JSON.
CLIENT = r"""
import http.client, json, os, sys, time
sys.path.insert(0, "/usr/local/lib/opencode-cloud")
import edge
people = edge.People(edge.Path(edge.DEFAULT_TEAM_DB))
door, calls = sys.argv[1], int(sys.argv[2])
passwords = json.loads(os.environ["BENCH_PASSWORDS"])
import base64
targets = []
for name, password in passwords.items():
    person = people.get(name)
    host, port = person.upstream.rsplit(":", 1)
    basic = "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()
    direct = http.client.HTTPConnection(host, int(port))
    targets.append((name + " direct", direct, person.upstream_auth()))
    targets.append((name + " door", http.client.HTTPConnection(door, 3000), basic))
times = {name: [] for name, _, _ in targets}
for index in range(calls + 20):
    for name, conn, auth in targets:
        began = time.perf_counter()
        conn.request("GET", "/session", headers={"Authorization": auth})
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            sys.exit(f"{name}: {answer.status}")
        if index >= 20:  # the first calls open connections and warm caches
            times[name].append((time.perf_counter() - began) * 1000)
print(json.dumps(times))
"""


def docker(node: int, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["docker", "-H", f"unix://{STATE}/n{node}/docker.sock", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} on n{node}: {proc.stderr.strip()}")
    return proc.stdout


def occ(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [OCC, *args], env=env, input=stdin, capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        raise SystemExit(f"occ {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def usable(url: str, name: str, password: str) -> bool:
    """The door serves the person's UI page and their `GET /session` answers."""
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for path in ("/", "/session"):
        request = urllib.request.Request(url + path, headers={"Authorization": f"Basic {token}"})
        try:
            with opener.open(request, timeout=5) as answer:
                if answer.status != 200:
                    return False
                body = answer.read()
                if path == "/" and b"<html" not in body.lower():
                    return False
        except (urllib.error.URLError, OSError):
            return False
    return True


def add_until_usable(env: dict[str, str], url: str, name: str) -> tuple[float, str, str]:
    """Seconds from `occ user add` to a usable UI, the node it went to, and the
    person's password."""
    password = f"{name}-{uuid.uuid4().hex[:8]}"
    began = time.perf_counter()
    occ(env, "user", "add", name, "--memory", "1g", "--password-stdin", stdin=password + "\n")
    while not usable(url, name, password):
        if time.perf_counter() - began > 600:
            raise SystemExit(f"{name} not usable after 600 s")
        time.sleep(0.2)
    took = time.perf_counter() - began
    service = f"opencode-cloud-{env['OCC_INSTANCE']}-user-{name}"
    node = docker(1, "service", "ps", service, "--format", "{{.Node}}").split()[0]
    return took, node, password


def floor_start(node_id: str, image: str) -> float:
    """Seconds from `docker service create` of `image` on the node until it runs."""
    name = f"bench-floor-{uuid.uuid4().hex[:6]}"
    began = time.perf_counter()
    docker(
        1, "service", "create", "-d", "--name", name, "--restart-condition", "none",
        "--constraint", f"node.id=={node_id}", "--no-healthcheck",
        "--entrypoint", "sleep", image, "60",
    )  # fmt: skip
    try:
        while "Running" not in docker(1, "service", "ps", name, "--format", "{{.CurrentState}}"):
            time.sleep(0.2)
        return time.perf_counter() - began
    finally:
        docker(1, "service", "rm", name, check=False)


def forget_images(node: int) -> None:
    """Remove every image of the swarm's registry from the node (none is in use there),
    so that the next task of one pulls it whole."""
    deadline = time.monotonic() + 60
    while docker(node, "ps", "-aq").strip():  # a floor's container is still going
        if time.monotonic() > deadline:
            raise SystemExit(f"containers left on n{node}")
        time.sleep(0.5)
    listed = docker(node, "image", "ls", "--format", "{{.Repository}} {{.ID}}").splitlines()
    ours = {row.split()[1] for row in listed if row.startswith(f"{REGISTRY}/")}
    if ours:  # by ID: every tag of it, and the untagged ones an older pull left
        docker(node, "image", "rm", "-f", *sorted(ours))


def node_ids() -> dict[str, str]:
    rows = docker(1, "node", "ls", "--format", "{{.Hostname}} {{.ID}}").split("\n")
    return dict(row.split() for row in rows if row.strip())


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="a few calls, no pull measured")
    args = parser.parse_args()
    calls = 50 if args.smoke else args.calls
    if subprocess.run([str(REPO / "scripts" / "swarm.sh"), "status"]).returncode != 0:
        raise SystemExit(f"no test swarm {SWARM_ID}: sudo scripts/swarm.sh up")
    if not docker(1, "image", "ls", "-q", IMAGE).strip():
        # The image of this machine's engine, on the manager as if built there.
        save = subprocess.Popen(["docker", "save", IMAGE], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "-H", f"unix://{STATE}/n1/docker.sock", "load", "-q"],
            stdin=save.stdout,
            check=True,
            capture_output=True,
        )
        save.wait()
    pulled = f"{REGISTRY}/{IMAGE}"
    nodes = node_ids()
    instance = f"bench-{uuid.uuid4().hex[:6]}"
    config_dir = tempfile.mkdtemp()
    env = {
        **os.environ,
        "OCC_CONFIG_DIR": config_dir,
        "OCC_INSTANCE": instance,
        "DOCKER_HOST": f"unix://{STATE}/n1/docker.sock",
        "NO_COLOR": "1",
    }
    prefix = f"opencode-cloud-{instance}"
    url = f"http://{MANAGER_ADDRESS}:{PORT}"
    try:
        occ(env, "config", "set", "port", str(PORT))
        occ(env, "config", "set", "cluster", json.dumps({"registry": REGISTRY}))
        occ(env, "cluster", "init")
        pull_floors = {}
        if not args.smoke:  # n2 and n3 pull the image again: the floor first, then occ
            for node in (2, 3):
                forget_images(node)
                pull_floors[f"occsw-n{node}"] = floor_start(nodes[f"occsw-n{node}"], pulled)
                forget_images(node)
        occ(env, "team", "enable", "--name", "ada")
        ada = json.loads(occ(env, "--json", "auth", "show"))["password"]
        adds = [add_until_usable(env, url, "bob"), add_until_usable(env, url, "cat")]
        # dan goes to a node that has the image now.
        adds.append(add_until_usable(env, url, "dan"))
        passwords = {"ada": ada, "bob": adds[0][2]}
        floors = {node: floor_start(nodes[node], pulled) for _, node, _ in adds}
        out = docker(
            1, "run", "--rm", "--network", f"{prefix}-cluster", "--user", f"{EDGE_UID}:{EDGE_UID}",
            "-v", f"{prefix}-door-state:/var/lib/opencode-cloud-edge",
            "-e", f"BENCH_PASSWORDS={json.dumps(passwords)}",
            "--entrypoint", "/usr/bin/python3", pulled, "-I", "-c", CLIENT,
            f"{prefix}-door", str(calls),
        )  # fmt: skip
        times = json.loads(out.strip().splitlines()[-1])
        bob_node = docker(1, "service", "ps", f"{prefix}-user-bob", "--format", "{{.Node}}")
    finally:
        remove_team(instance)
        shutil.rmtree(config_dir, ignore_errors=True)

    def ms(name: str, fraction: float) -> str:
        return f"{percentile(times[name], fraction):.2f} ms"

    def added(name: str, fraction: float) -> float:
        return percentile(times[f"{name} door"], fraction) - percentile(
            times[f"{name} direct"], fraction
        )

    print("| What | Floor | Measured | Added |")
    print("|---|---|---|---|")
    for name, where in (("ada", "the door's node (n1)"), ("bob", bob_node.split()[0])):
        for fraction, label in ((0.5, "p50"), (0.95, "p95")):
            print(
                f"| `GET /session` {label}, person on {where} ({calls} calls) | "
                f"{ms(f'{name} direct', fraction)} direct over the overlay | "
                f"{ms(f'{name} door', fraction)} through the door | "
                f"+{added(name, fraction):.2f} ms |"
            )
    for (seconds, where, _), who in zip(adds, ("bob", "cat", "dan"), strict=True):
        pulls = who != "dan" and not args.smoke
        what = "pulls the image" if pulls else "has the image"
        floor = floors[where] if not pulls else pull_floors[where]
        how = "pulls it and runs it" if pulls else "to running"
        print(
            f"| `occ user add` to a usable UI, {who} on {where} ({what}) | "
            f"{floor:.1f} s a service of the image there, {how} | {seconds:.1f} s | "
            f"{seconds / max(floor, 0.01):.1f}x |"
        )
    print(f"(median of all direct calls: {statistics.median(times['ada direct']):.2f} ms)")
    return 0


def remove_team(instance: str) -> None:
    """Everything of the bench's team on every node: services, secrets, network, volumes."""
    label = f"label=io.opencode-cloud.instance={instance}"
    for service in docker(1, "service", "ls", "-q", "--filter", label).split():
        docker(1, "service", "rm", service, check=False)
    time.sleep(3)
    for secret in docker(1, "secret", "ls", "-q", "--filter", label).split():
        docker(1, "secret", "rm", secret, check=False)
    docker(1, "network", "rm", f"opencode-cloud-{instance}-cluster", check=False)
    for node in (1, 2, 3):
        found = docker(node, "volume", "ls", "-q", "--filter", f"name=opencode-cloud-{instance}-")
        for volume in found.split():
            docker(node, "volume", "rm", "-f", volume, check=False)


if __name__ == "__main__":
    raise SystemExit(main())
