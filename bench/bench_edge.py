"""Start-to-healthy with the edge against the floor of bare opencode, in the same run.

    .venv/bin/python bench/bench_edge.py [--runs N]
    .venv/bin/python bench/bench_edge.py --smoke   (one run of each: the bench still works)

Floor: a container of the same image running only `opencode web` (no edge, published
directly), `docker start` plus polling its health endpoint every 50 ms. Measured:
`occ start` of a stopped loopback instance (the default: edge on plain HTTP) until it
returns, which is after the health check through the edge and the session check. Both
use throw-away names, removed at the end.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from instances import remove_instance  # bench/, the script's own folder

BIN = Path(sys.executable).parent
OCC = str(BIN / "occ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str, auth: str) -> bool:
    request = urllib.request.Request(url + "/global/health")
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until_healthy(url: str, auth: str, timeout: float = 120) -> None:
    """Poll every 50 ms until `url` answers healthy."""
    deadline = time.monotonic() + timeout
    while not healthy(url, auth):
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer healthy within {timeout:g} s")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="one run of each")
    args = parser.parse_args()
    count = 1 if args.smoke else args.runs
    from opencode_cloud.docker.image import DEFAULT_IMAGE

    tag = uuid.uuid4().hex[:6]
    bare, port_bare = f"occ-bench-bare-{tag}", free_port()
    config_dir = tempfile.mkdtemp(prefix="occ-bench-edge-")
    env = {**os.environ, "OCC_CONFIG_DIR": config_dir, "OCC_INSTANCE": f"bench-{tag}"}
    port = free_port()
    subprocess.run(
        [OCC, "config", "set", "port", str(port)], env=env, check=True, capture_output=True
    )
    subprocess.run(
        [OCC, "config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["docker", "create", "--name", bare, "-p", f"127.0.0.1:{port_bare}:3000",
         "-e", "OPENCODE_SERVER_PASSWORD=bench", "-e", "OPENCODE_DISABLE_MODELS_FETCH=1",
         "--user", "1000:1000", "--entrypoint", "/usr/bin/tini", DEFAULT_IMAGE,
         "--", "opencode", "web", "--hostname", "0.0.0.0", "--port", "3000"],
        check=True, capture_output=True,
    )  # fmt: skip
    floor, measured = [], []
    try:
        subprocess.run([OCC, "-q", "start"], env=env, check=True, capture_output=True)
        subprocess.run([OCC, "-q", "stop"], env=env, check=True, capture_output=True)
        for _ in range(count):
            began = time.perf_counter()
            subprocess.run(["docker", "start", bare], check=True, capture_output=True)
            wait_until_healthy(f"http://127.0.0.1:{port_bare}", "opencode:bench")
            floor.append(time.perf_counter() - began)
            subprocess.run(["docker", "stop", bare], check=True, capture_output=True)

            began = time.perf_counter()
            subprocess.run([OCC, "-q", "start"], env=env, check=True, capture_output=True)
            measured.append(time.perf_counter() - began)
            subprocess.run([OCC, "-q", "stop"], env=env, check=True, capture_output=True)
    finally:
        subprocess.run(["docker", "rm", "-f", bare], capture_output=True)
        remove_instance(env["OCC_INSTANCE"])
        shutil.rmtree(config_dir, ignore_errors=True)
    f, m = statistics.median(floor), statistics.median(measured)

    def runs(samples: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in samples)

    print("| What | Median | Runs |")
    print("|---|---|---|")
    print(f"| floor: bare opencode, `docker start` + 50 ms polling | {f:.2f} s | {runs(floor)} |")
    print(f"| `occ start` on loopback, edge included | {m:.2f} s | {runs(measured)} |")
    print(f"| ratio (target <= 1.10x) | {m / f:.2f}x | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
