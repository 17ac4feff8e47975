"""What packages the agent needs (`extra_packages`) cost: `occ` with them against `occ`
without them, in the same run.

    .venv/bin/python bench/bench_packages.py [--runs 5] [--out docs/benchmarks.md]
    .venv/bin/python bench/bench_packages.py --smoke

Two throw-away instances on the default sandbox image: one plain, one with
`extra_packages = ["jq"]` (and an `ARG` line of its own, so that its image is the bench's
alone). Their first starts are timed once (the second builds the derived image: `apt-get
update` and the install from Debian's mirror, unless the engine's layer cache holds that
step from an earlier build of the same packages). Then, taking turns, `--runs` times:
`occ start` on the running service (the same path for both: the configuration file is the
container's), and the image check a start or restart makes after a configuration change
(`ensure_image`, in this process: the derived image adds the look-ups of it and its
base). Once built, the derived image must cost nothing a person notices: at most 0.05 s.

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
CHECK_TARGET = 0.05  # seconds a built derived image may add to a start's image check


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
        ca_file = os.environ.get("SSL_CERT_FILE")  # a missing base image is built through it
        if ca_file and Path(ca_file).is_file():
            self.occ("config", "set", "ca_certificates", ca_file)
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


def image_check(lines: list[str]) -> float:
    """Seconds `ensure_image` takes to find the image present (the plain sandbox image
    with no `lines`; else the derived image with jq and `lines`)."""
    from opencode_cloud.config.schema import Config
    from opencode_cloud.docker.client import DockerClient
    from opencode_cloud.service.image import ensure_image

    config = Config(extra_packages=PACKAGES if lines else [], extra_dockerfile=lines)
    client = DockerClient()
    began = time.perf_counter()
    action = ensure_image(client, config)
    took = time.perf_counter() - began
    if action != "present":
        raise SystemExit(f"the image check built or pulled ({action})")
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
        starts: tuple[list[float], list[float]] = ([], [])
        checks: tuple[list[float], list[float]] = ([], [])
        for _ in range(runs):
            starts[0].append(plain.occ("start"))
            starts[1].append(extra.occ("start"))
            checks[0].append(image_check([]))
            checks[1].append(image_check(lines))
    finally:
        remove_instance(plain.name)
        remove_instance(extra.name)
        subprocess.run(["docker", "rmi", derived], capture_output=True, check=False)

    def row(what: str, without: float, with_: float, target: str) -> str:
        return f"| {what} | {without:.3f} s | {with_:.3f} s | {with_ - without:+.3f} s | {target} |"

    median = statistics.median
    lines = [
        "| What | Without packages | With `jq` | Added | Target |",
        "|---|---|---|---|---|",
        row("first `occ start` (builds the image with jq)", *first, "once per set of packages"),
        row("`occ start`, service running", median(starts[0]), median(starts[1]), "same path"),
        row(
            "image check of a start after a configuration change",
            median(checks[0]),
            median(checks[1]),
            f"at most +{CHECK_TARGET:.2f} s",
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
