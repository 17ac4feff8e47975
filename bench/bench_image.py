"""Benchmark of the sandbox image: build times, size, and start-to-healthy against the floor.

    .venv/bin/python bench/bench_image.py [--runs 7] [--skip-cold] [--no-write] [--tag T]
    .venv/bin/python bench/bench_image.py --smoke   (no cold build, one run of each, no write)

Measures, on the local engine:
- cold build (`no_cache=True`: every layer, npm download included) and cached rebuild;
- image size next to the base image and the opencode binary it carries (the baseline:
  the image should stay within twice their sum), and the size of each layer;
- unnamed images the builds left behind (the engine's dangling images of this version);
- start-to-healthy through the library (`start_container` + `wait_until_healthy`) against
  the floor for the same container: the `docker` CLI's `start` plus a bare urllib poll of
  the health endpoint every 50 ms. Runs alternate between the two; medians are compared.

Prints a markdown table and writes it to docs/benchmarks.md under "## Sandbox image"
(replacing that section only, so other sections of the file stay as they are).
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from opencode_cloud.access.credentials import container_files
from opencode_cloud.defaults import DEFAULT_USERNAME
from opencode_cloud.docker.client import DockerClient
from opencode_cloud.docker.container import setup_and_start, start_container, stop_container
from opencode_cloud.docker.health import health_url, wait_until_healthy
from opencode_cloud.docker.image import DEFAULT_IMAGE, build_image
from opencode_cloud.docker.progress import NullProgress
from opencode_cloud.docker.spec import ContainerSpec, DefaultSettings
from opencode_cloud.instance import Instance

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks.md"
HEADING = "## Sandbox image"
BASE_IMAGE = "debian:bookworm-slim"
POLL_INTERVAL = 0.05
TARGET_CACHED_BUILD = 5.0
TARGET_RATIO = 1.10


def host_ca_files() -> list[str]:
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return [candidate]
    return []


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def floor_start(name: str, url: str, password: str, timeout: float = 60.0) -> float:
    """`docker start` and a bare urllib poll every 50 ms: the least any tool can do."""
    token = base64.b64encode(f"{DEFAULT_USERNAME}:{password}".encode()).decode()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started = time.perf_counter()
    subprocess.run(["docker", "start", name], check=True, capture_output=True)
    while time.perf_counter() - started < timeout:
        request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
        try:
            with opener.open(request, timeout=1) as answer:
                if answer.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(POLL_INTERVAL)
    raise TimeoutError(f"{name} did not become healthy in {timeout} s")


def library_start(client: DockerClient, name: str, url: str, password: str) -> float:
    started = time.perf_counter()
    start_container(client, name)
    wait_until_healthy(client, name, url, DEFAULT_USERNAME, password, timeout=60)
    return time.perf_counter() - started


def image_size(client: DockerClient, ref: str) -> int:
    info = client.inspect_image(ref)
    if info is None:
        raise SystemExit(f"{ref} is not in the engine (scripts/sandbox-image.sh builds it)")
    return info.size_bytes


def unnamed_images() -> list[str]:
    """Ids of the engine's dangling images that carry an opencode version label."""
    return subprocess.run(
        [
            *("docker", "images", "-q", "--no-trunc", "-f", "dangling=true"),
            *("-f", "label=io.opencode-cloud.opencode-version"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def layers(ref: str, least: int = 1_000_000) -> list[tuple[int, str]]:
    """(bytes, what made it) of each layer of `ref` of at least `least` bytes, bottom up."""
    history = subprocess.run(
        [
            *("docker", "history", "--no-trunc", "--human=false"),
            *("--format", "{{.Size}}\t{{.CreatedBy}}", ref),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    found = []
    for line in reversed(history):
        size, _, step = line.partition("\t")
        if int(size) >= least:
            found.append((int(size), describe_step(step)))
    return found


# Words of the Dockerfile's big steps, and what to call them in the table.
STEPS = (
    ("apt-get install", "Debian packages: toolchain and edge (one `apt-get install`)"),
    ("fetch_opencode", "opencode (`fetch_opencode.py`)"),
    ("useradd", "users and mount points"),
    ("update-ca-certificates", "CA certificates"),
)


def describe_step(step: str, width: int = 60) -> str:
    for words, name in STEPS:
        if words in step:
            return name
    if not step:
        return "base image"
    step = " ".join(step.replace("/bin/sh -c ", "").replace("#(nop) ", "").split())
    step = step.replace("|", "/")  # a table cell
    return step if len(step) <= width else step[: width - 3] + "..."


def stop(name: str) -> None:
    subprocess.run(["docker", "stop", name], check=True, capture_output=True)


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def write_section(table: str) -> None:
    DOCS.parent.mkdir(exist_ok=True)
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    section = f"{HEADING}\n\n{table.rstrip()}\n"
    if HEADING in text:
        before, _, rest = text.partition(HEADING)
        # The section ends where the next second-level heading begins.
        index = rest.find("\n## ")
        after = rest[index + 1 :] if index >= 0 else ""
        text = before + section + ("\n" + after if after else "")
    else:
        text = text.rstrip() + "\n\n" + section
    DOCS.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="start-to-healthy runs per method")
    parser.add_argument("--skip-cold", action="store_true", help="skip the no-cache build")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    parser.add_argument("--tag", default=DEFAULT_IMAGE, help="build and measure this name")
    parser.add_argument(
        "--smoke", action="store_true", help="no cold build, one run of each, nothing written"
    )
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.skip_cold, args.no_write = 1, True, True
    rebuilds = 1 if args.smoke else 5

    client = DockerClient(timeout=120)
    ca = host_ca_files()
    rows: list[tuple[str, str, str]] = []

    tag = args.tag
    dangling_before = set(unnamed_images())
    print("building (warm-up, fills the cache) ...", file=sys.stderr)
    build_image(client, tag=tag, ca_files=ca, reporter=NullProgress())
    if not args.skip_cold:
        print("cold build (no cache) ...", file=sys.stderr)
        cold = timed(
            lambda: build_image(
                client, tag=tag, ca_files=ca, no_cache=True, reporter=NullProgress()
            )
        )
        rows.append(("Cold build (`no_cache`, opencode download included)", f"{cold:.1f} s", ""))
    cached = statistics.median(
        timed(lambda: build_image(client, tag=tag, ca_files=ca, reporter=NullProgress()))
        for _ in range(rebuilds)
    )
    rows.append(
        (
            f"Cached rebuild (median of {rebuilds})",
            f"{cached:.2f} s",
            f"target < {TARGET_CACHED_BUILD:g} s: {verdict(cached < TARGET_CACHED_BUILD)}",
        )
    )

    left = sorted(set(unnamed_images()) - dangling_before)
    verdict_left = f"target 0: {verdict(not left)}"
    rows.append(("Unnamed images the builds left", str(len(left)), verdict_left))

    sandbox_size = image_size(client, tag)
    base_size = image_size(client, BASE_IMAGE)
    binary = subprocess.run(
        [
            *("docker", "run", "--rm", "--entrypoint", "/bin/sh", tag),
            *("-c", "stat -c %s /usr/local/bin/opencode"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    binary_size = int(binary.stdout.strip())
    rows.append(("Image size", mb(sandbox_size), ""))
    rows.append((f"Base image (`{BASE_IMAGE}`)", mb(base_size), ""))
    rows.append(("opencode binary in the image", mb(binary_size), ""))
    rows.append(
        (
            "Toolchain and user set-up",
            mb(sandbox_size - base_size - binary_size),
            "git, gh, python3 with pip and venv, caddy, ripgrep, curl, ssh, make, tini",
        )
    )
    baseline = base_size + binary_size
    rows.append(
        (
            "Image / (base + opencode)",
            f"{sandbox_size / baseline:.2f}x",
            f"target <= 2x: {verdict(sandbox_size <= 2 * baseline)}",
        )
    )
    for size, step in layers(tag):
        rows.append((f"Layer: {step}", mb(size), ""))

    instance = Instance(name=f"bench-{secrets.token_hex(3)}")
    password = secrets.token_urlsafe(24)
    port = free_port()
    url = health_url(port=port)
    library: list[float] = []
    floor: list[float] = []
    image = client.inspect_image(tag)
    spec = ContainerSpec.from_config(
        DefaultSettings(port=port, env={"OPENCODE_DISABLE_MODELS_FETCH": "1"}),
        instance,
        image=tag,
        image_id=image.id if image else None,
    )
    try:
        setup_and_start(client, spec, instance, files=container_files(password))
        wait_until_healthy(client, instance.container_name, url, DEFAULT_USERNAME, password)
        stop(instance.container_name)
        for run in range(args.runs):
            # Alternate which goes first so neither always meets a warmer page cache.
            order = ("library", "floor") if run % 2 == 0 else ("floor", "library")
            for method in order:
                if method == "library":
                    library.append(library_start(client, instance.container_name, url, password))
                else:
                    floor.append(floor_start(instance.container_name, url, password))
                stop_container(client, instance.container_name)
    finally:
        subprocess.run(
            ["docker", "rm", "-f", "-v", instance.container_name], capture_output=True, check=False
        )
        volumes = subprocess.run(
            [
                "docker",
                "volume",
                "ls",
                "-q",
                "-f",
                f"label=io.opencode-cloud.instance={instance.name}",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if volumes:
            subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True, check=False)

    lib_median, floor_median = statistics.median(library), statistics.median(floor)
    ratio = lib_median / floor_median
    rows.append(
        (
            f"Start-to-healthy, library (median of {len(library)})",
            f"{lib_median:.2f} s",
            f"min {min(library):.2f} s, max {max(library):.2f} s",
        )
    )
    rows.append(
        (
            f"Start-to-healthy, floor: `docker start` + 50 ms poll (median of {len(floor)})",
            f"{floor_median:.2f} s",
            f"min {min(floor):.2f} s, max {max(floor):.2f} s",
        )
    )
    rows.append(
        (
            "Library / floor",
            f"{ratio:.3f}x",
            f"target <= {TARGET_RATIO:.2f}x: {verdict(ratio <= TARGET_RATIO)}",
        )
    )

    engine = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    machine = (
        f"Measured on {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Docker Engine {engine or 'unknown'} (API {client.api_version}), "
        f"{time.strftime('%Y-%m-%d')}. Reproduce: `.venv/bin/python bench/bench_image.py`."
    )
    lines = ["| Measure | Value | Notes |", "| --- | --- | --- |"]
    lines += [f"| {name} | {value} | {note} |" for name, value, note in rows]
    table = "\n".join(lines) + "\n\n" + machine + "\n"
    print(table)
    if not args.no_write:
        write_section(table)
        print(f"written to {DOCS.relative_to(REPO)}", file=sys.stderr)
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
