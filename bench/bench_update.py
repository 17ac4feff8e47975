"""How long a version change leaves users without the service: `occ update` against its floor.

    .venv/bin/python bench/bench_update.py [--runs 3] [--out docs/benchmarks.md]

A poller asks the health endpoint every 20 ms; the downtime is the time from the old
version's last answer to the new version's first. The floor does the least any version
change must: `docker stop` of the old container, then `docker start` of a container of
the new image made beforehand, until it answers. `occ update` also snapshots opencode's
data and checks the sessions; the target is at most 1.2x the floor.

Needs the sandbox images of the default opencode version and of 1.18.32 (built when
missing, about a minute). Everything runs under throw-away instances, removed at the end.
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
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from report import replace_section

OCC = str(Path(sys.executable).parent / "occ")
VERSIONS = ("1.18.32", "1.18.33")


class Poller(threading.Thread):
    """Asks the health endpoint every 20 ms and remembers when it answered."""

    def __init__(self, url: str, password: str) -> None:
        super().__init__(daemon=True)
        self.url = url + "/global/health"
        self.token = base64.b64encode(f"opencode:{password}".encode()).decode()
        self.answers: list[float] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            request = urllib.request.Request(self.url)
            request.add_header("Authorization", f"Basic {self.token}")
            try:
                with urllib.request.urlopen(request, timeout=0.5) as answer:
                    if answer.status == 200:
                        self.answers.append(time.monotonic())
            except OSError:
                pass
            time.sleep(0.02)

    def longest_gap(self) -> float:
        return max(b - a for a, b in zip(self.answers, self.answers[1:], strict=False))


def measure(action: Callable[[], object], url: str, password: str) -> float:
    poller = Poller(url, password)
    poller.start()
    time.sleep(1)
    action()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        not poller.answers or time.monotonic() - poller.answers[-1] > 0.1
    ):
        time.sleep(0.05)
    time.sleep(0.5)
    poller.running = False
    poller.join()
    return poller.longest_gap()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="replace the update table in this markdown file")
    args = parser.parse_args()

    instance = f"bench-update-{uuid.uuid4().hex[:6]}"
    config_dir = tempfile.mkdtemp(prefix="occ-bench-update-")
    env = {**os.environ, "OCC_CONFIG_DIR": config_dir, "OCC_INSTANCE": instance}

    def occ(*argv: str) -> str:
        return subprocess.run(
            [OCC, *argv], env=env, capture_output=True, text=True, check=True
        ).stdout

    def docker(*argv: str) -> str:
        return subprocess.run(["docker", *argv], capture_output=True, text=True, check=True).stdout

    updates: list[float] = []
    floors: list[float] = []
    try:
        for version in VERSIONS:  # both images, built once when missing
            occ(
                "build",
                "--opencode-version",
                version,
                "--ca-file",
                "/etc/ssl/certs/ca-certificates.crt",
            )
        occ("config", "set", "port", "39871")
        occ("config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
        occ("config", "set", "opencode_version", VERSIONS[0])
        occ("start")
        password = json.loads(occ("--json", "auth", "show"))["password"]
        url = "http://127.0.0.1:39871"
        name = f"opencode-cloud-{instance}"
        for run in range(args.runs):
            target = VERSIONS[(run + 1) % 2]
            updates.append(
                measure(
                    lambda t=target: occ("update", "--opencode-version", t, "--yes"), url, password
                )
            )
            # The floor: the same container's twin on the other image, made beforehand.
            other = VERSIONS[run % 2]
            twin = f"{name}-twin"
            inspect = docker("inspect", "-f", "{{json .Config.Env}}", name)
            docker("create", "--name", twin, "-p", "127.0.0.1:39871:3000",
                   "--volumes-from", name, *[a for e in json.loads(inspect) for a in ("-e", e)],
                   f"opencode-cloud-sandbox:{other}")  # fmt: skip
            docker("cp", f"{name}:/run/opencode-cloud/password", f"{config_dir}/pw")
            docker("cp", f"{config_dir}/pw", f"{twin}:/run/opencode-cloud/password")

            def swap(old: str = name, new: str = twin) -> None:
                docker("stop", old)
                docker("start", new)

            floors.append(measure(swap, url, password))
            docker("rm", "-f", twin)
            docker("start", name)
            time.sleep(5)
    finally:
        label = f"label=io.opencode-cloud.instance={instance}"
        containers = subprocess.run(
            ["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True
        ).stdout.split()
        subprocess.run(
            ["docker", "rm", "-f", "-v", f"opencode-cloud-{instance}-twin", *containers],
            capture_output=True,
        )
        volumes = subprocess.run(
            ["docker", "volume", "ls", "-q", "--filter", label], capture_output=True, text=True
        ).stdout.split()
        if volumes:
            subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True)
        shutil.rmtree(config_dir, ignore_errors=True)

    update, floor = statistics.median(updates), statistics.median(floors)
    ratio = update / floor
    verdict = "met" if ratio <= 1.2 else "not met"
    table = "\n".join(
        [
            "| What | Unavailable (median) | Runs |",
            "|---|---|---|",
            f"| `occ update` (snapshot, switch, deep check) | {update:.2f} s | "
            + ", ".join(f"{v:.2f}" for v in updates)
            + " |",
            f"| floor: `docker stop` old + `docker start` new, until it answers | {floor:.2f} s | "
            + ", ".join(f"{v:.2f}" for v in floors)
            + " |",
            f"| update / floor | **{ratio:.2f}x** (target <= 1.2x: {verdict}) | |",
        ]
    )
    print(table)
    if args.out:
        how = (
            f"`.venv/bin/python bench/bench_update.py --runs {args.runs}` "
            f"({VERSIONS[0]} and {VERSIONS[1]} in turn)"
        )
        replace_section(args.out, "update", how, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
