"""What an idle service costs: host-wide CPU of bare opencode against the managed service.

    .venv/bin/python bench/bench_idle.py [--rounds 30] [--interval 8] [--out docs/benchmarks.md]
    .venv/bin/python bench/bench_idle.py --smoke   (one round of short windows, no warm-up)

Three containers run side by side for the whole run, from the same image:

- bare opencode: `opencode web` started with `docker run`, no health check, as a
  hand-written line would (Bun's defaults);
- the same with `BUN_GC_TIMER_DISABLE=1`, the one setting the service changes in
  opencode itself (docs/operations.md): the difference to it is what the service adds;
- the managed service (`occ start`).

Both bare containers are opened once as `occ start` opens the service (the health
endpoint, then the list of sessions, as the web UI does too): opencode's heap grows by
about 70 MB when a project is first opened, and every later collection walks it, so a
bare opencode never opened would be a baseline no user runs. The first minutes after a
start are left out (`--warmup`): until the engine's first full collection the heap still
holds what starting made.

The machine is shared, so instead of one long window each the run alternates many short
windows, the others paused (`docker pause`) during each: load from other work falls on
every side alike. One round is five windows, every other round in reverse order:

1. baseline: all paused;
2. bare opencode alone;
3. bare opencode with Bun's extra collections off, alone;
4. the managed service alone;
5. the managed service alone, with one run of its health check at the window's start.

Each window measures busy ticks of all CPUs (/proc/stat: the engine, containerd-shim and
runc count too; this is the headline) and of each process of both containers
(/proc/<pid>/stat). Host-wide figures are medians over the quiet rounds (no burst of
other work in any of its windows), minus the baseline of the same round, in percent of
one core.

Docker suspends a paused container's health check and, after `docker unpause`, starts
its interval afresh, so within short windows Docker itself never runs it. The bench runs
the image's own health check command through the engine's exec API (as Docker does) in
the fifth window; the difference to the fourth is its cost per check, counted in the
managed figure at the image's interval.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from instances import remove_instance  # bench/, the script's own folder
from report import replace_section

OCC = str(Path(sys.executable).parent / "occ")
IMAGE = "opencode-cloud-sandbox:1.18.33"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Everything this bench creates carries it, so a clean-up never touches anything else.
OWNER_LABEL = "io.opencode-cloud.bench=idle"
# cgroup v1 (cgroupfs driver) and v2 (systemd driver) layouts of a container's cgroup.
CGROUP_PATTERNS = (
    "/sys/fs/cgroup/cpuacct/docker/{id}",
    "/sys/fs/cgroup/system.slice/docker-{id}.scope",
    "/sys/fs/cgroup/docker/{id}",
)


def cpu_busy_ticks() -> int:
    """Busy clock ticks of all CPUs since boot (everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def open_once(url: str, password: str, container: str, timeout: float = 120) -> None:
    """Wait until opencode answers, then list its sessions: what `occ start` asks of the
    service, and what the web UI asks first. A container that stopped fails at once."""
    token = base64.b64encode(f"opencode:{password}".encode()).decode()

    def get(path: str) -> int:
        request = urllib.request.Request(url + path)
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
            return int(answer.status)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get("/global/health") == 200:
                get("/session")
                return
        except OSError:
            pass
        if docker("inspect", "-f", "{{.State.Running}}", container).strip() != "true":
            logs = subprocess.run(["docker", "logs", "--tail", "20", container],
                                  capture_output=True, text=True, check=False)  # fmt: skip
            raise SystemExit(f"{container} stopped:\n{logs.stdout}{logs.stderr}")
        time.sleep(0.2)
    raise SystemExit(f"{url} ({container}) did not answer within {timeout:g} s")


class Container:
    """One side's container: pause, unpause, and the CPU ticks of each of its processes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.id = docker("inspect", "-f", "{{.Id}}", name).strip()
        places = (Path(pattern.format(id=self.id)) for pattern in CGROUP_PATTERNS)
        self.cgroup = next((place for place in places if place.is_dir()), None)

    def pause(self) -> None:
        docker("pause", self.name)

    def unpause(self) -> None:
        docker("unpause", self.name)

    def process_ticks(self) -> dict[int, tuple[str, int]]:
        """pid -> (program name, user + system ticks so far) of every process it runs."""
        if self.cgroup is None:
            return {}
        found = {}
        for pid in (self.cgroup / "cgroup.procs").read_text().split():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue  # ended meanwhile
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            found[int(pid)] = (name, int(fields[11]) + int(fields[12]))
        return found


@contextmanager
def bare_opencode(image: str, *environment: str) -> Iterator[tuple[Container, Callable[[], None]]]:
    """opencode alone, as a hand-written `docker run` line starts it (plus `environment`,
    `NAME=value` each), and what opens it once: it boots meanwhile."""
    name, port, password = f"occ-bench-bare-{uuid.uuid4().hex[:6]}", free_port(), "bench"
    settings = [word for pair in environment for word in ("-e", pair)]
    docker(
        "run", "-d", "--name", name, "--label", OWNER_LABEL, "--no-healthcheck",
        "--user", "1000:1000", "-p", f"127.0.0.1:{port}:3000", "-w", "/home/opencode/projects",
        "-e", f"OPENCODE_SERVER_PASSWORD={password}", "-e", "OPENCODE_DISABLE_MODELS_FETCH=1",
        *settings,
        "--entrypoint", "opencode", image, "web", "--hostname", "0.0.0.0", "--port", "3000",
    )  # fmt: skip
    try:
        yield Container(name), partial(open_once, f"http://127.0.0.1:{port}", password, name)
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)


@contextmanager
def managed_service(image: str) -> Iterator[Container]:
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
        if image != IMAGE:
            occ("config", "set", "image", image)
        occ("start")
        yield Container(f"opencode-cloud-{instance}")
    finally:
        remove_instance(instance)
        shutil.rmtree(config_dir, ignore_errors=True)


def health_check(image: str) -> tuple[list[str], float]:
    """The image's health check command (exec form) and its interval in seconds."""
    import json

    check = json.loads(docker("image", "inspect", "-f", "{{json .Config.Healthcheck}}", image))
    test = check["Test"]
    command = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
    return command, check["Interval"] / 1e9


def run_health_check(engine: Any, container: Container, command: list[str]) -> None:
    """Run the check the way Docker's monitor does: an exec through the engine."""
    engine.containers.get(container.id).exec_run(command)


class Window:
    """Host-wide CPU and per-process ticks over one measured window."""

    def __init__(self, host_percent: float, per_process: dict[str, float]) -> None:
        self.host_percent = host_percent
        self.per_process = per_process  # program name -> percent of one core


def measure(
    seconds: float, containers: list[Container], first: Callable[[], None] | None = None
) -> Window:
    """Measure the next `seconds`; `first` runs inside the window, at its start."""
    start_procs = {c.name: c.process_ticks() for c in containers}
    start_busy, began = cpu_busy_ticks(), time.monotonic()
    if first is not None:
        first()
    time.sleep(max(0.0, seconds - (time.monotonic() - began)))
    busy, elapsed = cpu_busy_ticks() - start_busy, time.monotonic() - began
    per_process: dict[str, float] = {}
    for container in containers:
        before = start_procs[container.name]
        for pid, (name, ticks) in container.process_ticks().items():
            used = ticks - before[pid][1] if pid in before else 0
            per_process[name] = per_process.get(name, 0.0) + used
    scale = 100.0 / CLOCK_TICKS / elapsed
    return Window(busy * scale, {k: v * scale for k, v in per_process.items()})


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def process_summary(windows: list[Window]) -> str:
    names = sorted({n for w in windows for n in w.per_process})
    parts = [f"{n} {median([w.per_process.get(n, 0.0) for w in windows]):.2f}%" for n in names]
    return ", ".join(p for p in parts if not p.endswith(" 0.00%")) or "-"


SIDES = ("baseline", "bare", "bare-gc-off", "managed", "check")
# The one setting the service changes in opencode itself (sandbox/entrypoint.sh).
GC_OFF = "BUN_GC_TIMER_DISABLE=1"


def run_rounds(args: argparse.Namespace, command: list[str]) -> list[dict[str, Window]]:
    """Measure the rounds; each is one window of every side, in turn."""
    import docker as docker_sdk  # the engine's exec API, without a docker CLI process

    engine = docker_sdk.from_env()
    rounds: list[dict[str, Window]] = []
    with (
        bare_opencode(args.image) as (bare, open_bare),
        bare_opencode(args.image, GC_OFF) as (bare_gc_off, open_bare_gc_off),
        managed_service(args.image) as managed,
    ):
        # Both bare sides boot while the service starts; then each is opened once.
        open_bare()
        open_bare_gc_off()
        everyone = [bare, bare_gc_off, managed]
        time.sleep(args.warmup)
        for container in everyone:
            container.pause()
        running_in = {
            "baseline": None,
            "bare": bare,
            "bare-gc-off": bare_gc_off,
            "managed": managed,
            "check": managed,
        }
        for number in range(1, args.rounds + 1):
            # Every other round backwards, so a drift of the machine's load over a round
            # falls on no side in particular.
            order = SIDES if number % 2 else tuple(reversed(SIDES))
            measured: dict[str, Window] = {}
            for side in order:
                running = running_in[side]
                if running is not None:
                    running.unpause()
                time.sleep(args.settle)
                check = partial(run_health_check, engine, managed, command)
                first = check if side == "check" else None
                measured[side] = measure(args.interval, everyone, first)
                if running is not None:
                    running.pause()
            rounds.append(measured)
            line = ", ".join(f"{side} {measured[side].host_percent:.2f}%" for side in SIDES)
            print(f"round {number}/{args.rounds}: {line}", flush=True)
        for container in everyone:
            container.unpause()
    engine.close()
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=30, help="rounds of five windows")
    parser.add_argument("--interval", type=float, default=8.0, help="seconds of each window")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after a switch")
    parser.add_argument(
        "--warmup",
        type=float,
        default=600.0,
        help="seconds before round 1: the heap a start leaves waits for a full collection",
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=5.0,
        help="a round counts when its windows differ by at most this (percent of a core)",
    )
    parser.add_argument("--image", default=IMAGE, help="image of both sides")
    parser.add_argument("--out", type=Path, help="replace the idle table in this markdown file")
    parser.add_argument(
        "--smoke", action="store_true", help="one round of short windows, no warm-up, no table kept"
    )
    args = parser.parse_args()
    if args.smoke and args.out:
        parser.error("--smoke measures nothing worth keeping: it writes no table")
    if args.smoke:
        args.rounds, args.interval, args.settle, args.warmup = 1, 0.5, 0.2, 0.0

    # Stopped with `kill`, it still removes what it made (the `with` blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command, check_interval = health_check(args.image)
    rounds = run_rounds(args, command)
    # Other programs only ever add CPU, in bursts of seconds. A round with such a burst
    # shows windows far apart (more than anything of ours: opencode's busy mode is about
    # 3 % of a core, a health check in one window about 1 %); those rounds are left out.
    quiet = [
        r
        for r in rounds
        if max(w.host_percent for w in r.values()) - min(w.host_percent for w in r.values())
        <= args.quiet
    ]
    counted = quiet or rounds

    def net(side: str, minus: str = "baseline") -> float:
        return median([r[side].host_percent - r[minus].host_percent for r in counted])

    baseline = median([r["baseline"].host_percent for r in counted])
    bare_net, bare_gc_off_net = max(net("bare"), 0.01), max(net("bare-gc-off"), 0.01)
    managed_idle = net("managed")
    per_check_cpu_s = net("check", minus="managed") * args.interval / 100.0
    check_share = 100.0 * max(per_check_cpu_s, 0.0) / check_interval
    managed_net = managed_idle + check_share
    ratio, own_ratio = managed_net / bare_net, managed_net / bare_gc_off_net

    def processes(side: str) -> str:
        return process_summary([r[side] for r in rounds])

    def own(side: str) -> float:
        """The container's own processes, mean of all rounds: ticks of the processes
        themselves, which other work on the machine barely moves."""
        return max(statistics.mean(sum(r[side].per_process.values()) for r in rounds), 0.01)

    managed_own = own("managed") + check_share

    def verdict(value: float) -> str:
        return f"**{value:.2f}x** (target <= 1.10x: {'met' if value <= 1.10 else 'not met'})"

    table = "\n".join(
        [
            "| What | Host CPU, minus baseline | Its processes (mean) | Per process (median) |",
            "|---|---|---|---|",
            f"| baseline (all paused), host-wide | {baseline:.2f}% of a core | | |",
            f"| bare opencode (`docker run`, no health check) | {bare_net:.2f}% "
            f"| {own('bare'):.2f}% | {processes('bare')} |",
            f"| bare opencode, `{GC_OFF}` as in the service | {bare_gc_off_net:.2f}% "
            f"| {own('bare-gc-off'):.2f}% | {processes('bare-gc-off')} |",
            f"| managed service (`occ start`), between health checks | {managed_idle:.2f}% "
            f"| {own('managed'):.2f}% | {processes('managed')} |",
            f"| its health check: {per_check_cpu_s:.2f} s of CPU every {check_interval:g} s "
            f"| {check_share:.2f}% | {check_share:.2f}% | |",
            f"| managed service, health check included | {managed_net:.2f}% "
            f"| {managed_own:.2f}% | |",
            f"| managed / bare opencode | {verdict(ratio)} | {managed_own / own('bare'):.2f}x | |",
            f"| managed / bare opencode with the same Bun setting: what the service adds "
            f"| {verdict(own_ratio)} | {managed_own / own('bare-gc-off'):.2f}x | |",
        ]
    )
    summary = (
        f"{len(rounds)} rounds of {args.interval:g} s windows; host-wide figures from the "
        f"{len(quiet)} quiet ones"
        + ("" if quiet else " (none was quiet: all rounds counted)")
        + f"; percent of one core, medians; {os.cpu_count()} CPUs."
    )
    print(f"\n{table}\n\n{summary}")
    if args.out:
        how = (
            f"`.venv/bin/python bench/bench_idle.py --rounds {args.rounds} "
            f"--interval {args.interval:g}` on {os.cpu_count()} CPUs"
        )
        replace_section(args.out, "idle", how, f"{table}\n\n{summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
