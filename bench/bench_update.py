"""How long a version change leaves users without the service: `occ update` against its floor.

    .venv/bin/python bench/bench_update.py [--runs 3] [--out docs/benchmarks.md]
    .venv/bin/python bench/bench_update.py --smoke

A poller asks the health endpoint every 20 ms; the downtime is the time from the old
version's last answer to the new version's first. The floor does the least any version
change must: `docker stop` of the old container, then `docker start` of a container of
the new image made beforehand, until it answers. `occ update` also snapshots opencode's
data and checks the sessions; the target is at most 1.2x the floor.

Needs the sandbox images of the default opencode version and of 1.18.32 (built when
missing, about a minute). Everything runs under throw-away instances, removed at the end.

--smoke: one update and one floor, between the default image and a copy of it made here
(`FROM` it with one more label: another image, the same opencode), so that it needs no
build from npm; the table is printed and nothing is written. The test suite runs it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
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

from instances import remove_instance  # bench/, the script's own folder
from opencode_cloud.access.credentials import container_files
from opencode_cloud.docker.client import DockerClient
from opencode_cloud.docker.container import put_file
from opencode_cloud.docker.image import DEFAULT_IMAGE, image_ref
from report import replace_section

OCC = str(Path(sys.executable).parent / "occ")
VERSIONS = ("1.18.32", "1.18.33")
# Everything the bench makes besides the instance (the copy of the image) carries it.
BENCH_LABEL = "io.opencode-cloud.bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Poller(threading.Thread):
    """Asks the health endpoint every 20 ms and remembers when it answered."""

    def __init__(self, url: str, password: str) -> None:
        super().__init__(daemon=True)
        self.url = url + "/global/health"
        self.token = base64.b64encode(f"opencode:{password}".encode()).decode()
        self.answers: list[float] = []
        self.running = True

    def run(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while self.running:
            request = urllib.request.Request(self.url)
            request.add_header("Authorization", f"Basic {self.token}")
            try:
                with opener.open(request, timeout=0.5) as answer:
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
    parser.add_argument(
        "--smoke", action="store_true", help="one quick run between two copies of one image"
    )
    args = parser.parse_args()
    if args.smoke and args.out:
        parser.error("--smoke measures nothing worth keeping: it writes no table")
    runs = 1 if args.smoke else args.runs

    tag = uuid.uuid4().hex[:6]
    instance = f"bench-update-{tag}"
    config_dir = tempfile.mkdtemp(prefix="occ-bench-update-")
    env = {**os.environ, "OCC_CONFIG_DIR": config_dir, "OCC_INSTANCE": instance}
    port = free_port()
    copy = f"opencode-cloud-bench/update:{tag}"  # --smoke's second image

    def occ(*argv: str) -> str:
        return subprocess.run(
            [OCC, *argv], env=env, capture_output=True, text=True, check=True
        ).stdout

    def docker(*argv: str, stdin: str | None = None) -> str:
        return subprocess.run(
            ["docker", *argv], input=stdin, capture_output=True, text=True, check=True
        ).stdout

    if args.smoke:
        images = [DEFAULT_IMAGE, copy]

        def switch_to(index: int) -> Callable[[], object]:
            if index == 0:
                occ("config", "unset", "image")
            else:
                occ("config", "set", "image", images[index])
            return lambda: occ("update")

    else:
        images = [image_ref(version) for version in VERSIONS]

        def switch_to(index: int) -> Callable[[], object]:
            return lambda: occ("update", "--opencode-version", VERSIONS[index], "--yes")

    client = DockerClient()
    updates: list[float] = []
    floors: list[float] = []
    try:
        if args.smoke:
            dockerfile = f"FROM {DEFAULT_IMAGE}\nLABEL {BENCH_LABEL}={tag}\n"
            docker("build", "-q", "-t", copy, "-", stdin=dockerfile)
        else:
            for version in VERSIONS:  # both images, built once when missing
                occ(
                    "build",
                    "--opencode-version",
                    version,
                    "--ca-file",
                    "/etc/ssl/certs/ca-certificates.crt",
                )
            occ("config", "set", "opencode_version", VERSIONS[0])
        occ("config", "set", "port", str(port))
        occ("config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
        occ("start")
        password = json.loads(occ("--json", "auth", "show"))["password"]
        url = f"http://127.0.0.1:{port}"
        name = f"opencode-cloud-{instance}"
        for run in range(runs):
            updates.append(measure(switch_to((run + 1) % 2), url, password))
            # The floor: the same container's twin on the image it came from, made
            # beforehand, holding the password's hash as the tool hands it over.
            other = images[run % 2]
            twin = f"{name}-twin"
            inspect = docker("inspect", "-f", "{{json .Config.Env}}", name)
            docker("create", "--name", twin, "-p", f"127.0.0.1:{port}:3000",
                   "--volumes-from", name, *[a for e in json.loads(inspect) for a in ("-e", e)],
                   other)  # fmt: skip
            for path, content in container_files(password).items():
                put_file(client, twin, path, content)

            def swap(old: str = name, new: str = twin) -> None:
                docker("stop", old)
                docker("start", new)

            floors.append(measure(swap, url, password))
            docker("rm", "-f", twin)
            if run + 1 < runs:
                docker("start", name)
                time.sleep(5)
    finally:
        subprocess.run(
            ["docker", "rm", "-f", f"opencode-cloud-{instance}-twin"], capture_output=True
        )
        remove_instance(instance)
        if args.smoke:
            subprocess.run(["docker", "rmi", copy], capture_output=True)
        shutil.rmtree(config_dir, ignore_errors=True)
        client.close()

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
            f"`.venv/bin/python bench/bench_update.py --runs {runs}` "
            f"({VERSIONS[0]} and {VERSIONS[1]} in turn)"
        )
        replace_section(args.out, "update", how, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
