"""What packages the agent needs (`extra_packages`) cost: `occ` with them against `occ`
without them, in the same run.

    .venv/bin/python bench/bench_packages.py [--runs 5] [--out docs/benchmarks.md]
    .venv/bin/python bench/bench_packages.py --smoke

Two throw-away instances on the default sandbox image: one plain, one with
`extra_packages = ["jq"]` (and an `ARG` line of its own, so that its image is the bench's
alone). Their first starts are timed once (the second builds the derived image: `apt-get
update` and the install from Debian's mirror, unless the engine's layer cache holds that
step from an earlier build of the same packages); then `occ start`
on the running service and `occ restart` are timed on each, taking turns, `--runs` times.
Once built, the derived image must cost nothing a person notices: the target is at most
0.1 s added to a restart (which checks the image before it stops the old container) and
nothing to a start of a running service.

--smoke: one run of each, the table printed, nothing written. The test suite runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from instances import remove_instance
from opencode_cloud.docker.image import DEFAULT_IMAGE, derived_ref
from report import replace_section

OCC = str(Path(sys.executable).parent / "occ")
PACKAGES = ["jq"]
RESTART_TARGET = 0.1  # seconds a cached derived image may add to `occ restart`


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Instance:
    """One throw-away instance with its own configuration folder."""

    def __init__(self, name: str, packages: list[str], lines: list[str]) -> None:
        self.name = name
        self.env = {
            **os.environ,
            "OCC_CONFIG_DIR": tempfile.mkdtemp(prefix="bench-packages-"),
            "OCC_INSTANCE": name,
            "NO_COLOR": "1",
        }
        self.occ("config", "set", "port", str(free_port()))
        self.occ("config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
        if packages:
            self.occ("config", "set", "extra_packages", ",".join(packages))
        if lines:
            self.occ("config", "set", "extra_dockerfile", json.dumps(lines))

    def occ(self, *args: str) -> float:
        """Run `occ ARGS`; its wall time in seconds."""
        began = time.perf_counter()
        proc = subprocess.run(
            [OCC, "-q", *args], env=self.env, capture_output=True, text=True, timeout=600
        )
        took = time.perf_counter() - began
        if proc.returncode != 0:
            raise SystemExit(f"occ {' '.join(args)} ({self.name}) failed: {proc.stderr}")
        return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, help="markdown file to write the table into")
    parser.add_argument("--smoke", action="store_true", help="one run, nothing written")
    args = parser.parse_args()
    runs = 1 if args.smoke else args.runs
    tag = uuid.uuid4().hex[:6]
    plain = Instance(f"bench-pkg-plain-{tag}", [], [])
    lines = [f"ARG BENCH_RUN={tag}"]
    extra = Instance(f"bench-pkg-jq-{tag}", PACKAGES, lines)
    derived = derived_ref(DEFAULT_IMAGE, PACKAGES, lines)
    try:
        first = (plain.occ("start"), extra.occ("start"))
        times: dict[str, tuple[list[float], list[float]]] = {
            "start": ([], []),
            "restart": ([], []),
        }
        for _ in range(runs):
            for command, (without, with_) in times.items():
                without.append(plain.occ(command))
                with_.append(extra.occ(command))
    finally:
        remove_instance(plain.name)
        remove_instance(extra.name)
        subprocess.run(["docker", "rmi", derived], capture_output=True, check=False)

    def row(what: str, without: float, with_: float, target: str) -> str:
        return f"| {what} | {without:.2f} s | {with_:.2f} s | {with_ - without:+.2f} s | {target} |"

    median = statistics.median
    lines = [
        "| What | Without packages | With `jq` | Added | Target |",
        "|---|---|---|---|---|",
        row("first `occ start` (builds the image with jq)", *first, "once per set of packages"),
        row(
            "`occ start`, service running",
            median(times["start"][0]),
            median(times["start"][1]),
            "+0.00 s",
        ),
        row(
            "`occ restart`, packages unchanged",
            median(times["restart"][0]),
            median(times["restart"][1]),
            f"at most +{RESTART_TARGET:.1f} s",
        ),
    ]
    table = "\n".join(lines)
    print(table)
    if args.out and not args.smoke:
        replace_section(
            args.out,
            "bench-packages",
            f"`bench/bench_packages.py --runs {runs}` (medians)",
            table,
            heading="## Packages the agent needs",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
