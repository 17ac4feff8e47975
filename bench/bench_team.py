"""Team mode: what the front door adds, what each person costs, how fast a stopped
person's opencode comes back; each next to its floor, in the same run.

    .venv/bin/python bench/bench_team.py [--calls N] [--people N]
    .venv/bin/python bench/bench_team.py --smoke   (a few calls: the bench still works)

- Latency per API call (`GET /session`, one kept-alive connection each, a signed-in
  browser's cookie): through the front door (the engine's port proxy, Caddy, the login
  service, Caddy again), against the floor of calling the person's opencode directly at
  its container's address with its internal password, the two taking turns. p50, p99.
- Idle memory and CPU of one person's instance and of the door alone (`docker stats`,
  after the calls, with nobody using them).
- From a stopped person's sign-in to their sessions answering through the door, against
  the floor of `docker start` of the same container plus polling its health directly.
- How many idle people one 2-core, 24 GiB machine holds: 90% of 24 GiB over the idle
  memory of one person's instance (the door's own taken off first).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

from instances import remove_instance  # bench/, the script's own folder

BIN = Path(sys.executable).parent
OCC = str(BIN / "occ")
MACHINE_MEMORY = 24 << 30
# Calls of each kind before the measured ones: a new front door (its Caddy, its login
# service's connection and database) takes a few hundred calls to settle.
WARM_UP = 300
ROUNDS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def occ(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([OCC, *args], env=env, check=True, capture_output=True, text=True)
    return done.stdout


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def sign_in(port: int, name: str, password: str) -> str:
    """A browser's sign-in at the door; its cookies (the session's among them)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/__occ/login", headers={"Accept": "text/html"})
    page = conn.getresponse()
    html = page.read().decode()
    jar = [c.split(";", 1)[0] for c in page.headers.get_all("Set-Cookie") or []]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
    body = urlencode({**fields, "name": name, "password": password, "next": "/"})
    conn.request(
        "POST",
        "/__occ/login",
        body=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": f"http://127.0.0.1:{port}",
            "Cookie": "; ".join(jar),
        },
    )
    answer = conn.getresponse()
    answer.read()
    jar += [c.split(";", 1)[0] for c in answer.headers.get_all("Set-Cookie") or []]
    conn.close()
    session = [c for c in jar if c.startswith("occ_session_") and not c.endswith("=")]
    if answer.status not in (302, 303) or not session:
        raise SystemExit(f"sign-in failed: {answer.status}")
    return "; ".join(jar)


def answers(port: int, cookie: str) -> bool:
    """Whether one GET /session through the door answers 200 (a new connection)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/session", headers={"Cookie": cookie})
        answer = conn.getresponse()
        answer.read()
        return answer.status == 200
    except OSError:
        return False
    finally:
        conn.close()


def side_by_side(targets: list[tuple[str, int, dict[str, str]]], count: int) -> list[list[float]]:
    """Milliseconds of `count` GET /session to each target, each on a kept-alive
    connection of its own, taking turns (so that the machine's noise falls on all alike)."""
    connections = [http.client.HTTPConnection(h, p, timeout=30) for h, p, _ in targets]
    samples: list[list[float]] = [[] for _ in targets]
    for _ in range(count + WARM_UP):
        for index, (conn, (_h, _p, headers)) in enumerate(zip(connections, targets, strict=True)):
            began = time.perf_counter()
            conn.request("GET", "/session", headers=headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise SystemExit(f"GET /session answered {answer.status}")
            samples[index].append((time.perf_counter() - began) * 1000)
    for conn in connections:
        conn.close()
    return [s[WARM_UP:] for s in samples]


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def internal_password(container: str) -> str:
    """The person's opencode's own password (root reads it; the bench runs as root)."""
    return docker("exec", container, "cat", "/run/opencode-cloud/internal.password").strip()


def address(container: str) -> str:
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    return docker("inspect", "-f", fmt, container).split()[0]


def stats(container: str) -> tuple[int, float]:
    """(bytes of memory in use, CPU percent) of a container, from `docker stats`."""
    line = docker("stats", "--no-stream", "--format", "{{json .}}", container)
    data = json.loads(line)
    used = data["MemUsage"].split("/")[0].strip()
    units = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    number, unit = re.match(r"([\d.]+)\s*([KMG]?i?B)", used).groups()  # type: ignore[union-attr]
    return int(float(number) * units[unit]), float(data["CPUPerc"].rstrip("%"))


def healthy_direct(host: str, auth: str) -> bool:
    try:
        conn = http.client.HTTPConnection(host, 4096, timeout=1)
        conn.request("GET", "/global/health", headers={"Authorization": auth})
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="a few calls, one start")
    args = parser.parse_args()
    calls, starts = (50, 1) if args.smoke else (args.calls, args.starts)

    tag = uuid.uuid4().hex[:6]
    instance = f"bench-team-{tag}"
    config_dir = tempfile.mkdtemp(prefix="occ-bench-team-")
    env = {**os.environ, "OCC_CONFIG_DIR": config_dir, "OCC_INSTANCE": instance}
    port = free_port()
    occ(env, "config", "set", "port", str(port))
    occ(env, "config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
    prefix = f"opencode-cloud-{instance}"
    person = f"{prefix}-user-pat"
    try:
        occ(env, "team", "enable", "--name", "pat")
        password = json.loads(occ(env, "--json", "auth", "show"))["password"]
        cookie = sign_in(port, "pat", password)
        deadline = time.monotonic() + 120
        conn_headers = {"Cookie": cookie}
        while not answers(port, cookie):  # the first sign-in started pat's instance
            if time.monotonic() > deadline:
                raise SystemExit("pat's instance did not start")
            time.sleep(0.5)
        secret = internal_password(person)
        auth = "Basic " + base64.b64encode(f"opencode:{secret}".encode()).decode()
        host = address(person)
        # Rounds: this machine's noise moves a single round's p50 by most of a millisecond
        # either way; the round with the median added latency is the one reported.
        rounds = []
        for _ in range(1 if args.smoke else ROUNDS):
            direct, through = side_by_side(
                [(host, 4096, {"Authorization": auth}), ("127.0.0.1", port, conn_headers)], calls
            )
            rounds.append((percentile(through, 0.5) - percentile(direct, 0.5), direct, through))
        rounds.sort(key=lambda r: r[0])
        _, direct, through = rounds[len(rounds) // 2]
        all_added = ", ".join(f"+{r[0]:.2f}" for r in rounds)

        time.sleep(0 if args.smoke else 30)  # idle: nobody uses them
        person_memory, person_cpu = stats(person)
        door_memory, door_cpu = stats(f"{prefix}-door")
        starter_memory, _ = stats(f"{prefix}-door-starter")

        floor_starts, sign_in_starts = [], []
        for _ in range(starts):
            docker("stop", person)
            began = time.perf_counter()
            docker("start", person)
            while not healthy_direct(host, auth):
                time.sleep(0.05)
            floor_starts.append(time.perf_counter() - began)
            docker("stop", person)
            began = time.perf_counter()
            cookie = sign_in(port, "pat", password)
            while not answers(port, cookie):
                time.sleep(0.05)
            sign_in_starts.append(time.perf_counter() - began)
    finally:
        remove_instance(instance)
        shutil.rmtree(config_dir, ignore_errors=True)

    def ms(samples: list[float], fraction: float) -> str:
        return f"{percentile(samples, fraction):.2f} ms"

    added50 = percentile(through, 0.5) - percentile(direct, 0.5)
    added99 = percentile(through, 0.99) - percentile(direct, 0.99)
    fits = int((MACHINE_MEMORY * 0.9 - door_memory - starter_memory) // max(person_memory, 1))
    mib = 1 << 20
    f, s = statistics.median(floor_starts), statistics.median(sign_in_starts)
    print("| What | Floor | Measured | Added |")
    print("|---|---|---|---|")
    print(
        f"| `GET /session` p50 ({calls} calls; rounds {all_added} ms) | {ms(direct, 0.5)} direct | "
        f"{ms(through, 0.5)} through the door | +{added50:.2f} ms (target <= +2 ms) |"
    )
    print(
        f"| `GET /session` p99 | {ms(direct, 0.99)} direct | {ms(through, 0.99)} | "
        f"+{added99:.2f} ms |"
    )
    print(
        f"| stopped person: sign-in to sessions answering ({starts} runs) | "
        f"{f:.2f} s `docker start` + health | {s:.2f} s | {s / f:.2f}x |"
    )
    print(
        f"| idle memory, CPU: one person's instance | | {person_memory / mib:.0f} MiB, "
        f"{person_cpu:.2f}% | |"
    )
    print(
        f"| idle memory, CPU: the door alone (starter: {starter_memory / mib:.0f} MiB) | | "
        f"{door_memory / mib:.0f} MiB, {door_cpu:.2f}% | |"
    )
    print(f"| idle people a 2-core, 24 GiB machine holds (memory-bound) | | {fits} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
