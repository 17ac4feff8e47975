"""What an idle service costs: host-wide CPU of bare opencode against the managed service.

    .venv/bin/python bench/bench_idle.py [--seconds 60] [--warmup 20] [--out docs/benchmarks.md]

Three windows of `--seconds` each, one after the other, measured from /proc/stat (all
CPUs of the host, so the engine, containerd-shim and runc count too):

1. baseline: nothing of ours runs;
2. bare opencode: `opencode web` in the sandbox image, started with `docker run` and no
   health check, as a hand-written `docker run` line would;
3. the managed service: `occ start`, with its health check.

Each service gets `--warmup` seconds after it answers before its window opens (opencode
does its start-up work then). Figures are percent of one core, minus the baseline; the
ratio managed / bare is the one the target is set on (at most 1.1x).
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from report import replace_section

ROOT = Path(__file__).resolve().parent.parent
OCC = str(Path(sys.executable).parent / "occ")
IMAGE = "opencode-cloud-sandbox:1.18.33"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_busy_ticks() -> int:
    """Busy clock ticks of all CPUs since boot (everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle


def percent_of_a_core(seconds: float) -> float:
    """Host-wide CPU used over the next `seconds`, in percent of one core."""
    before, began = cpu_busy_ticks(), time.monotonic()
    time.sleep(seconds)
    used = (cpu_busy_ticks() - before) / CLOCK_TICKS
    return 100.0 * used / (time.monotonic() - began)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_answering(url: str, password: str, timeout: float = 120) -> None:
    token = base64.b64encode(f"opencode:{password}".encode()).decode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = urllib.request.Request(url + "/global/health")
        request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:g} s")


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def measure_bare(seconds: float, warmup: float) -> float:
    name, port, password = f"occ-bench-bare-{uuid.uuid4().hex[:6]}", free_port(), "bench"
    docker(
        "run", "-d", "--name", name, "--no-healthcheck", "--user", "1000:1000",
        "-p", f"127.0.0.1:{port}:3000", "-w", "/home/opencode/projects",
        "-e", f"OPENCODE_SERVER_PASSWORD={password}", "-e", "OPENCODE_DISABLE_MODELS_FETCH=1",
        "--entrypoint", "opencode", IMAGE, "web", "--hostname", "0.0.0.0", "--port", "3000",
    )  # fmt: skip
    try:
        wait_until_answering(f"http://127.0.0.1:{port}", password)
        time.sleep(warmup)
        return percent_of_a_core(seconds)
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)


def measure_managed(seconds: float, warmup: float) -> float:
    instance = f"bench-idle-{uuid.uuid4().hex[:6]}"
    config_dir = tempfile.mkdtemp(prefix="occ-bench-idle-")
    env = {**os.environ, "OCC_CONFIG_DIR": config_dir, "OCC_INSTANCE": instance}

    def occ(*args: str) -> str:
        return subprocess.run(
            [OCC, *args], env=env, capture_output=True, text=True, check=True
        ).stdout

    try:
        occ("config", "set", "port", str(free_port()))
        occ("config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
        occ("start")
        time.sleep(warmup)
        return percent_of_a_core(seconds)
    finally:
        label = f"label=io.opencode-cloud.instance={instance}"
        containers = docker("ps", "-aq", "--filter", label).split()
        if containers:
            docker("rm", "-f", "-v", *containers)
        volumes = docker("volume", "ls", "-q", "--filter", label).split()
        if volumes:
            docker("volume", "rm", *volumes)
        shutil.rmtree(config_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each window")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before a window")
    parser.add_argument("--out", type=Path, help="replace the idle table in this markdown file")
    args = parser.parse_args()

    baseline = percent_of_a_core(args.seconds)
    bare = measure_bare(args.seconds, args.warmup)
    managed = measure_managed(args.seconds, args.warmup)
    net_bare, net_managed = max(bare - baseline, 0.01), max(managed - baseline, 0.0)
    ratio = net_managed / net_bare
    table = "\n".join(
        [
            "| Window | Host CPU | Minus baseline |",
            "|---|---|---|",
            f"| baseline (nothing of ours) | {baseline:.2f}% of a core | |",
            f"| bare opencode (`docker run`, no health check) | {bare:.2f}% | {net_bare:.2f}% |",
            f"| managed service (`occ start`) | {managed:.2f}% | {net_managed:.2f}% |",
            f"| managed / bare | | **{ratio:.2f}x** (target <= 1.10x: "
            f"{'met' if ratio <= 1.10 else 'not met'}) |",
        ]
    )
    print(table)
    print(f"\n{args.seconds:g} s windows, {args.warmup:g} s warm-up, {os.cpu_count()} CPUs.")
    if args.out:
        how = (
            f"`.venv/bin/python bench/bench_idle.py --seconds {args.seconds:g}` "
            f"on {os.cpu_count()} CPUs"
        )
        replace_section(args.out, "idle", how, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
