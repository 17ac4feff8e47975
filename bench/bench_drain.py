"""`occ node drain` on the test swarm: the time to move a person's instance with its data
to another node, per GB moved, against a raw copy of the same volume between the same
two nodes in the same run.

    .venv/bin/python bench/bench_drain.py [--mb N] [--out docs/benchmarks.md]
    .venv/bin/python bench/bench_drain.py --smoke   (16 MB: the bench still works)

Needs the test swarm up (`OCC_SWARM_ID=K scripts/swarm.sh up`, root) and this checkout's
image on its manager as `occsw-test/sandbox:swarmK` (what `pytest tests/swarm` leaves
there); exits 2 without them.

- The front door on the manager (the drain's deep check asks from inside it), and the
  person (`Cluster.add_person`, library calls through the manager only) runs on n2
  (n3 paused) with N MB of random data in their project volume.
- Raw copy: two one-shot services as the drain's copy has them, on the same nodes and
  overlay, the same volume, but with a bare `tar | socket | tar` (no key, no HMAC, no
  check): what moving the bytes costs at the least, service start-up included.
- The drain's own copy (`copy_volumes`) of the same volume, alone.
- Drain: `Drain.drain("occsw-n2")` whole (sessions listed, stop, authenticated copy,
  start on n1, deep check, old volumes deleted); "away" is the person's time without an
  instance.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from opencode_cloud.cli.progress import PlainProgress
from opencode_cloud.config.schema import ClusterSettings, Config
from opencode_cloud.docker.client import DockerClient
from opencode_cloud.docker.volume import PROJECTS
from opencode_cloud.instance import Instance
from opencode_cloud.team.cluster import Cluster
from opencode_cloud.team.drain import Drain
from opencode_cloud.team.oneshot import OneShot
from opencode_cloud.team.transfer import TRANSFER_PORT, copy_volumes

SWARM_ID = int(os.environ.get("OCC_SWARM_ID", "0"))
PREFIX = "occsw" if SWARM_ID == 0 else f"occsw{SWARM_ID}"
MANAGER = f"unix:///tmp/{PREFIX}/n1/docker.sock"
REGISTRY = f"10.209.{SWARM_ID}.1:5000"
IMAGE = f"occsw-test/sandbox:swarm{SWARM_ID}"
# The raw copy's two ends: `sh -c SCRIPT sh VOLUME` (a bare stream, nothing checked).
RAW_RECEIVE = f"""python3 -I -c '
import socket, subprocess, sys
server = socket.create_server(("", {TRANSFER_PORT}))
conn, _ = server.accept()
tar = subprocess.Popen(["tar", "-x", "--numeric-owner", "-C", "/volumes"],
                       stdin=conn.makefile("rb"))
sys.exit(tar.wait())
'"""
RAW_SEND = f"""python3 -I -c '
import socket, subprocess, sys, time
for _ in range(600):
    try:
        conn = socket.create_connection((sys.argv[1], {TRANSFER_PORT})); break
    except OSError:
        time.sleep(0.5)
tar = subprocess.Popen(["tar", "-c", "--numeric-owner", "-C", "/volumes", sys.argv[2]],
                       stdout=conn.makefile("wb"))
sys.exit(tar.wait())
' "$@"
"""


def docker(*args: str) -> str:
    done = subprocess.run(
        ["docker", "-H", MANAGER, *args], check=True, capture_output=True, text=True
    )
    return done.stdout


def node_ids() -> dict[str, str]:
    rows = docker("node", "ls", "--format", "{{.Hostname}} {{.ID}}").split("\n")
    return dict(row.split() for row in rows if row.strip())


def fill(cluster: Cluster, node_id: str, volume: str, mb: int) -> None:
    mounts = [{"Type": "volume", "Source": volume, "Target": "/data"}]
    command = ["sh", "-c", f"dd if=/dev/urandom of=/data/blob bs=1M count={mb} status=none"]
    failed = cluster.one_shots().run(
        OneShot("bench-fill", command, user="1000:1000", mounts=mounts), node_id, 600
    )
    assert failed is None, failed


def raw_copy(cluster: Cluster, source: str, target: str, volume: str) -> float:
    """Seconds for the bare copy of `volume` from `source` to `target` (as `raw-VOLUME`
    there), its two one-shot services' start included."""
    runner = cluster.one_shots()
    network = cluster.layout.cluster_network
    copy = f"raw-{volume}"
    began = time.monotonic()
    receiver = runner.start(
        OneShot(
            "bench-raw-receive",
            ["sh", "-c", RAW_RECEIVE],
            cap_add=["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"],
            mounts=[{"Type": "volume", "Source": copy, "Target": f"/volumes/{volume}"}],
            network=network,
            memory_bytes=256 << 20,
        ),
        target,
    )
    sender = runner.start(
        OneShot(
            "bench-raw-send",
            ["sh", "-c", RAW_SEND, "sh", receiver, volume],
            cap_add=["DAC_READ_SEARCH"],
            mounts=[{"Type": "volume", "Source": volume, "Target": f"/volumes/{volume}"}],
            network=network,
            memory_bytes=256 << 20,
        ),
        source,
    )
    try:
        for name in (receiver, sender):
            task = runner.wait(name, 900)
            assert task is not None and task.state == "complete", (name, task)
        return time.monotonic() - began
    finally:
        for name in (receiver, sender):
            cluster.client.remove_service(name)
        cluster.remove_volumes(target, [copy])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=int, default=1024, help="data in the person's volume")
    parser.add_argument("--out", type=Path, help="write the table into this markdown file")
    parser.add_argument("--smoke", action="store_true", help="16 MB: the bench still works")
    args = parser.parse_args()
    if args.smoke and args.out:
        parser.error("--smoke measures nothing worth keeping: it writes no table")
    mb = 16 if args.smoke else args.mb
    if not Path(MANAGER.removeprefix("unix://")).exists():
        print(f"no test swarm {SWARM_ID}: `OCC_SWARM_ID={SWARM_ID} scripts/swarm.sh up`")
        return 2
    if subprocess.run(["docker", "-H", MANAGER, "image", "inspect", IMAGE],
                      capture_output=True).returncode != 0:  # fmt: skip
        print(f"no {IMAGE} on the manager: run `pytest tests/swarm` once first")
        return 2
    ids = node_ids()
    n1, n2 = ids["occsw-n1"], ids["occsw-n2"]
    instance = Instance(f"bench-drain-{uuid.uuid4().hex[:6]}")
    # The door's port on the manager: one no swarm test uses.
    config = Config(image=IMAGE, port=8798, cluster=ClusterSettings(registry=REGISTRY))
    docker("node", "update", "--availability", "pause", "occsw-n3")
    with DockerClient(MANAGER) as client:
        cluster = Cluster(client, config, instance)
        try:
            cluster.init(PlainProgress(), lambda _m: None)
            # The drain's deep check asks pat's opencode from inside the door.
            cluster.start_door()
            placed = cluster.add_person("pat", password=uuid.uuid4().hex, memory_bytes=1 << 30)
            assert placed.node == "occsw-n2", placed
            service = cluster.layout.person("pat").container_name
            while "Running" not in docker(
                "service", "ps", service, "--format", "{{.CurrentState}}"
            ):
                time.sleep(1)
            volume = cluster.layout.person("pat").volume_name(PROJECTS.kind)
            fill(cluster, n2, volume, mb)
            raw = raw_copy(cluster, n2, n1, volume)
            began = time.monotonic()
            mounts = [{"Type": "volume", "Source": volume, "Target": PROJECTS.mount_point}]
            copy_volumes(cluster, mounts, n2, n1)
            copied = time.monotonic() - began
            cluster.remove_volumes(n1, [volume])
            began = time.monotonic()
            result = Drain(cluster).drain("occsw-n2")
            drained = time.monotonic() - began
            away = result.moved[0]["seconds_away"]
        finally:
            docker("node", "update", "--availability", "active", "occsw-n2")
            docker("node", "update", "--availability", "active", "occsw-n3")
            cluster.remove_person("pat", volumes=True)
            cluster.remove_door()
            door_volume = cluster.layout.door_state_volume
            subprocess.run(
                ["docker", "-H", MANAGER, "volume", "rm", door_volume], capture_output=True
            )
            network = cluster.layout.cluster_network
            subprocess.run(["docker", "-H", MANAGER, "network", "rm", network], capture_output=True)
    gb = mb / 1024
    rows = [
        "| What | Seconds | Seconds per GB | vs raw copy |",
        "|---|---|---|---|",
        f"| Raw copy n2 -> n1 (`tar` over a socket, 2 one-shot services) | {raw:.1f} "
        f"| {raw / gb:.1f} | 1.00 |",
        f"| The drain's copy alone (one-time key, HMAC per MiB, SHA-256) | {copied:.1f} "
        f"| {copied / gb:.1f} | {copied / raw:.2f} |",
        f"| `occ node drain` whole (list, stop, copy, start, check, delete) | {drained:.1f} "
        f"| {drained / gb:.1f} | {drained / raw:.2f} |",
        f"| The person away (stop to checked on n1) | {away:.1f} | {away / gb:.1f} "
        f"| {away / raw:.2f} |",
    ]
    table = "\n".join(rows)
    print(f"{mb} MB of random data in the person's project volume, test swarm {SWARM_ID}\n")
    print(table)
    if args.out:
        sys.path.insert(0, str(Path(__file__).parent))
        from report import replace_section

        replace_section(
            args.out,
            "bench-drain",
            f"`bench/bench_drain.py --mb {mb}` on the test swarm (three engines on one "
            "2-core machine)",
            table,
            "## Draining a node of the swarm",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
