"""Backup and restore throughput with 1 GB of project data, next to a raw `tar` of the same
volume folders read directly on the host.

    sudo .venv/bin/python bench/bench_backup.py [--gib 1] [--runs 3] [--out docs/benchmarks.md]

Needs root and a local engine: the raw `tar` reads and writes the volumes' folders under
`/var/lib/docker/volumes/<name>/_data` itself, which is the floor any copy must pay. In
one run, on one instance with a running service:

1. 1 GB of random data (and a thousand small files) is written into the projects volume
   by a throw-away container;
2. backup: `occ backup` against `tar -cf` of the five volume folders (each then fsynced);
   and the engine's archive endpoint alone (`GET /containers/{id}/archive` of a helper
   container, bytes discarded), the floor of any client of the Engine API;
3. restore: `occ restore` into a new instance against `tar -xf` of the raw archive into
   five empty volumes (then `sync`).

Throughput is the bytes of the volumes' files over the median wall time. Everything the
benchmark makes carries its label and is removed at the end, on errors too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from report import replace_section

ROOT = Path(__file__).resolve().parent.parent
OCC = str(Path(sys.executable).parent / "occ")
IMAGE = "opencode-cloud-sandbox:1.18.33"
VOLUMES_DIR = Path("/var/lib/docker/volumes")
KINDS = ("home", "session", "state", "projects", "config")
BENCH_LABEL = "io.opencode-cloud.bench"
TIME = "/usr/bin/time"


def docker(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=check)
    return proc.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bench:
    def __init__(self, gib: float, runs: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.gib = gib
        self.runs = runs
        self.source = f"bench-bk-{tag}"
        self.target = f"bench-rs-{tag}"
        self.tag = tag
        self.work = Path(tempfile.mkdtemp(prefix="occ-bench-backup-", dir="/var/tmp"))
        self.env = {
            **os.environ,
            "OCC_CONFIG_DIR": str(self.work / "config"),
            "OCC_INSTANCE": self.source,
            "NO_COLOR": "1",
        }

    # -- helpers ------------------------------------------------------------------------

    def occ(self, *args: str, instance: str | None = None) -> tuple[str, float, int]:
        """Run occ; returns its stdout, wall seconds and peak memory (KiB)."""
        env = {**self.env, "OCC_INSTANCE": instance or self.source}
        began = time.monotonic()
        proc = subprocess.run(
            [TIME, "-f", "%M", OCC, *args], env=env, capture_output=True, text=True
        )
        seconds = time.monotonic() - began
        if proc.returncode != 0:
            raise SystemExit(f"occ {' '.join(args)} failed:\n{proc.stderr}")
        rss = int(proc.stderr.strip().splitlines()[-1])
        return proc.stdout, seconds, rss

    def volume(self, instance: str, kind: str) -> str:
        return f"opencode-cloud-{instance}-{kind}"

    def cleanup(self) -> None:
        for label in (
            f"io.opencode-cloud.instance={self.source}",
            f"io.opencode-cloud.instance={self.target}",
            f"{BENCH_LABEL}={self.tag}",
        ):
            containers = docker("ps", "-aq", "--filter", f"label={label}", check=False).split()
            if containers:
                docker("rm", "-f", *containers, check=False)
            volumes = docker("volume", "ls", "-q", "--filter", f"label={label}", check=False)
            if volumes.split():
                docker("volume", "rm", "-f", *volumes.split(), check=False)
        shutil.rmtree(self.work, ignore_errors=True)

    # -- set-up -------------------------------------------------------------------------

    def prepare(self) -> int:
        """A running service whose projects volume holds `gib` GiB; the bytes of all its
        volumes' files."""
        self.occ("config", "set", "port", str(free_port()))
        self.occ("config", "env", "set", "OPENCODE_DISABLE_MODELS_FETCH=1")
        self.occ("start")
        big = max(1, round(self.gib * 1024 / 4))  # 4 MiB files
        script = (
            "cd /p && mkdir -p data small && "
            f"for i in $(seq 1 {big}); do head -c 4194304 /dev/urandom > data/f$i.bin; done && "
            "for d in $(seq 1 10); do mkdir -p small/$d; for i in $(seq 1 100); do "
            "head -c 16384 /dev/urandom > small/$d/s$i.txt; done; done"
        )
        docker(
            "run", "--rm", "--network", "none", "--user", "1000:1000",
            "--label", f"{BENCH_LABEL}={self.tag}",
            "-v", f"{self.volume(self.source, 'projects')}:/p",
            "--entrypoint", "sh", IMAGE, "-c", script,
        )  # fmt: skip
        return sum(self.data_bytes(self.source, kind) for kind in KINDS)

    def data_bytes(self, instance: str, kind: str) -> int:
        total = 0
        for folder, _dirs, files in os.walk(VOLUMES_DIR / self.volume(instance, kind) / "_data"):
            for name in files:
                path = Path(folder, name)
                if path.is_file() and not path.is_symlink():
                    total += path.stat().st_size
        return total

    # -- measurements -------------------------------------------------------------------

    def timed(self, action: Callable[[], float | None]) -> list[float]:
        """`action` `runs` times; each returns its own seconds or None to be timed here."""
        times = []
        for _ in range(self.runs):
            began = time.monotonic()
            own = action()
            times.append(own if own is not None else time.monotonic() - began)
        return times

    def raw_backup(self) -> None:
        out = self.work / "raw.tar"
        out.unlink(missing_ok=True)
        names = [f"{self.volume(self.source, kind)}/_data" for kind in KINDS]
        subprocess.run(["tar", "-cf", str(out), "-C", str(VOLUMES_DIR), *names], check=True)
        subprocess.run(["sync", str(out)], check=True)

    def occ_backup(self, results: dict[str, list[float]]) -> float:
        out = self.work / "occ.tar"
        out.unlink(missing_ok=True)
        stdout, seconds, rss = self.occ("--json", "backup", str(out))
        report = json.loads(stdout)
        results.setdefault("paused", []).append(report["paused_seconds"] or 0.0)
        results.setdefault("backup_rss", []).append(rss / 1024)
        results.setdefault("size", []).append(report["size_bytes"])
        return seconds

    def engine_floor(self) -> float:
        """GET archive of a helper container holding the five volumes, bytes discarded."""
        sys.path.insert(0, str(ROOT / "src"))
        from opencode_cloud.backup import HELPER_ROOT, helper_body
        from opencode_cloud.docker.client import DockerClient
        from opencode_cloud.instance import Instance

        client = DockerClient()
        instance = Instance(self.source, extra_labels={BENCH_LABEL: self.tag})
        name = f"bench-floor-{self.tag}"
        mounts = [(kind, self.volume(self.source, kind)) for kind in KINDS]
        client.create_container(name, helper_body(instance, IMAGE, mounts, read_only=True))
        try:
            began = time.monotonic()
            for _chunk in client.get_archive(name, HELPER_ROOT):
                pass
            return time.monotonic() - began
        finally:
            client.remove_container(name, force=True)

    def raw_restore(self) -> None:
        """`tar -xf` of the raw archive into five empty volumes, then sync."""
        for kind in KINDS:
            name = f"bench-raw-{self.tag}-{kind}"
            docker("volume", "rm", "-f", name, check=False)
            docker("volume", "create", "--label", f"{BENCH_LABEL}={self.tag}", name)
        script = [
            f"tar -xf {self.work / 'raw.tar'} -C {VOLUMES_DIR}/bench-raw-{self.tag}-{kind}/_data "
            f"--strip-components=2 {self.volume(self.source, kind)}/_data"
            for kind in KINDS
        ]
        subprocess.run(["sh", "-c", " && ".join(script) + " && sync"], check=True)

    def occ_restore(self, results: dict[str, list[float]]) -> float:
        for kind in KINDS:  # a new instance each time: nothing to back up first
            docker("volume", "rm", "-f", self.volume(self.target, kind), check=False)
        began = time.monotonic()
        _out, _seconds, rss = self.occ(
            "restore", str(self.work / "occ.tar"), "--instance", self.target, "--yes"
        )
        subprocess.run(["sync"], check=True)  # as for the raw `tar -xf`: timed
        results.setdefault("restore_rss", []).append(rss / 1024)
        return time.monotonic() - began

    def run(self) -> tuple[str, dict[str, float]]:
        data = self.prepare()
        extra: dict[str, list[float]] = {}
        raw_b = statistics.median(self.timed(lambda: self.raw_backup() or None))
        occ_b = statistics.median(self.timed(lambda: self.occ_backup(extra)))
        floor = statistics.median(self.timed(self.engine_floor))
        raw_r = statistics.median(self.timed(lambda: self.raw_restore() or None))
        occ_r = statistics.median(self.timed(lambda: self.occ_restore(extra)))
        mb = data / 1e6
        numbers = {
            "data_mb": mb,
            "gib": self.gib,
            "runs": self.runs,
            "raw_backup": mb / raw_b,
            "occ_backup": mb / occ_b,
            "floor": mb / floor,
            "raw_restore": mb / raw_r,
            "occ_restore": mb / occ_r,
            "paused": statistics.median(extra["paused"]),
            "paused_max": max(extra["paused"]),
            "backup_rss": max(extra["backup_rss"]),
            "restore_rss": max(extra["restore_rss"]),
        }
        return table(numbers, raw_b, occ_b, floor, raw_r, occ_r), numbers


def table(
    n: dict[str, float], raw_b: float, occ_b: float, floor: float, raw_r: float, occ_r: float
) -> str:
    def verdict(ratio: float) -> str:
        return "met" if ratio >= 0.8 else "not met"

    backup_ratio = n["occ_backup"] / n["raw_backup"]
    restore_ratio = n["occ_restore"] / n["raw_restore"]
    floor_ratio = n["floor"] / n["raw_backup"]
    return "\n".join(
        [
            f"{n['data_mb']:.0f} MB of files in the five volumes ({n['gib']:g} GiB of it in the "
            f"projects volume), median of {n['runs']:.0f} runs:",
            "",
            "| What | Time | Throughput | vs raw `tar` | Target |",
            "|---|---|---|---|---|",
            f"| raw `tar -cf` of the volume folders, on the host (root) | {raw_b:.2f} s | "
            f"{n['raw_backup']:.0f} MB/s | 1.00x | |",
            f"| Engine API alone: `GET /containers/{{id}}/archive`, bytes discarded | "
            f"{floor:.2f} s | {n['floor']:.0f} MB/s | {floor_ratio:.2f}x | (the floor) |",
            f"| `occ backup` (service paused, sha256 of every file, fsync) | {occ_b:.2f} s | "
            f"{n['occ_backup']:.0f} MB/s | **{backup_ratio:.2f}x** | >= 0.8x: "
            f"{verdict(backup_ratio)} |",
            f"| raw `tar -xf` into empty volume folders, on the host (root) | {raw_r:.2f} s | "
            f"{n['raw_restore']:.0f} MB/s | 1.00x | |",
            f"| `occ restore` (whole-file check first, then written through the engine, "
            f"checked again) | {occ_r:.2f} s | {n['occ_restore']:.0f} MB/s | "
            f"**{restore_ratio:.2f}x** | >= 0.8x: {verdict(restore_ratio)} |",
            f"| Service paused during `occ backup` | {n['paused']:.2f} s "
            f"(max {n['paused_max']:.2f} s) | | | |",
            f"| Peak memory (RSS) of `occ backup` / `occ restore` | {n['backup_rss']:.0f} MiB / "
            f"{n['restore_rss']:.0f} MiB | | | does not grow with the data |",
        ]
    )


def write_markdown(path: Path, body: str) -> None:
    how = f"`.venv/bin/python bench/bench_backup.py` on {os.cpu_count()} CPUs"
    replace_section(path, "backup", how, body, heading="## Backup and restore")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--gib", type=float, default=1.0, help="GiB of project data")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--out", type=Path, help="replace the backup table in this markdown file")
    args = parser.parse_args()
    if os.geteuid() != 0 or not VOLUMES_DIR.is_dir():
        raise SystemExit("run as root on the engine's host: the raw tar reads its volumes")
    bench = Bench(args.gib, args.runs)
    try:
        body, _numbers = bench.run()
    finally:
        bench.cleanup()
    print(body)
    if args.out:
        write_markdown(args.out, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
