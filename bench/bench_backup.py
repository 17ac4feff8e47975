"""Backup and restore throughput with 1 GB of project data, next to a raw `tar` of the same
volume folders read directly on the host.

    sudo .venv/bin/python bench/bench_backup.py [--gib 1] [--runs 3] [--out docs/benchmarks.md]
    sudo .venv/bin/python bench/bench_backup.py --smoke   (4 MiB and 100 small files, once)

Needs root and a local engine: the raw `tar` reads and writes the volumes' folders under
`/var/lib/docker/volumes/<name>/_data` itself, which is the floor any copy must pay. In
one run, on one instance with a running service:

1. 1 GB of random data (and a thousand small files) is written into the projects volume
   by a throw-away container;
2. backup: `occ backup` (the local path: a helper container copies the volumes into the
   file) against `tar -cf` of the five volume folders (each then fsynced), and the same
   backup compressed (`.tar.zst`), in the same round; then what a
   remote engine gets, in this process with `DockerClient(local=False)`: the Engine API
   path, and the engine's archive endpoint alone (`GET /containers/{id}/archive` of a
   helper container, bytes discarded), the floor of any client of the API;
3. restore: `occ restore` into a new instance against `tar -xf` of the raw archive into
   five empty volumes, both followed by `sync` (timed), and the restore of the `.tar.zst`;
   and the Engine API path.

Each run measures the raw `tar` and `occ` one right after the other, so that the load of
a shared machine weighs on both alike. Throughput is the bytes of the volumes' files over
the median wall time. Everything the benchmark makes carries its label and is removed at
the end, on errors too.
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
from typing import TYPE_CHECKING

from report import replace_section

if TYPE_CHECKING:
    from opencode_cloud.docker.client import DockerClient
    from opencode_cloud.instance import Instance

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
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
    def __init__(self, gib: float, runs: int, small_dirs: int = 10) -> None:
        tag = uuid.uuid4().hex[:6]
        self.gib = gib
        self.runs = runs
        self.small_dirs = small_dirs  # of a hundred 16 KiB files each
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
            f"for d in $(seq 1 {self.small_dirs}); do mkdir -p small/$d; for i in $(seq 1 100); do "
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

    def raw_backup(self) -> None:
        out = self.work / "raw.tar"
        out.unlink(missing_ok=True)
        names = [f"{self.volume(self.source, kind)}/_data" for kind in KINDS]
        # GNU tar exits 1 when a file changed while it was read (a running service's
        # caches): the copy is still made, as the floor of a live backup should be.
        done = subprocess.run(["tar", "-cf", str(out), "-C", str(VOLUMES_DIR), *names])
        if done.returncode not in (0, 1):
            raise subprocess.CalledProcessError(done.returncode, done.args)
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

    def zst_backup(self, results: dict[str, list[float]]) -> float:
        """The same backup compressed (`.tar.zst`: the tar, then zstd over it)."""
        out = self.work / "occ.tar.zst"
        out.unlink(missing_ok=True)
        stdout, seconds, rss = self.occ("--json", "backup", str(out))
        report = json.loads(stdout)
        results.setdefault("zst_rss", []).append(rss / 1024)
        results.setdefault("zst_size", []).append(report["size_bytes"])
        results.setdefault("zst_plain", []).append(report["plain_bytes"])
        return seconds

    def engine_floor(self) -> float:
        """GET archive of a helper container holding the five volumes, bytes discarded."""
        from opencode_cloud.backup.helpers import HELPER_ROOT, helper_spec
        from opencode_cloud.docker.helper import helper_container

        client = self.client()
        instance = self.instance(self.source)
        mounts = [(kind, self.volume(self.source, kind)) for kind in KINDS]
        spec = helper_spec(instance, IMAGE, mounts, read_only=True)
        with helper_container(client, spec) as name:
            began = time.monotonic()
            for _chunk in client.get_archive(name, HELPER_ROOT):
                pass
            return time.monotonic() - began

    def client(self) -> DockerClient:
        """A client that streams backups through the Engine API, as for a remote engine."""
        from opencode_cloud.docker.client import DockerClient

        return DockerClient(local=False)

    def instance(self, name: str) -> Instance:
        from opencode_cloud.instance import Instance

        return Instance(name, extra_labels={BENCH_LABEL: self.tag})

    def api_backup(self, results: dict[str, list[float]]) -> float:
        """`create_backup` through the Engine API, in this process."""
        from opencode_cloud.backup.create import create_backup
        from opencode_cloud.config.paths import InstancePaths

        out = self.work / "api.tar"
        out.unlink(missing_ok=True)
        paths = InstancePaths(self.work / "config" / "instances" / self.source)
        began = time.monotonic()
        report = create_backup(self.client(), self.instance(self.source), paths, out,
                               helper_image=IMAGE)  # fmt: skip
        results.setdefault("api_paused", []).append(report.paused_seconds or 0.0)
        return time.monotonic() - began

    def api_restore(self) -> float:
        """`restore_backup` through the Engine API onto a new instance, as `occ restore`
        does it there (the layout checked first, the contents while streamed), then sync."""
        from opencode_cloud.backup.restore import restore_backup
        from opencode_cloud.backup.verify import verify_archive
        from opencode_cloud.config.paths import InstancePaths

        self.new_target()
        paths = InstancePaths(self.work / "config" / "instances" / self.target)
        began = time.monotonic()
        with verify_archive(self.work / "api.tar", contents=False) as verified:
            restore_backup(self.client(), self.instance(self.target), paths, verified,
                           helper_image=IMAGE, confirmed=True)  # fmt: skip
        subprocess.run(["sync"], check=True)
        return time.monotonic() - began

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

    def new_target(self) -> None:
        """The restore's target made new again: no volumes, no files."""
        for kind in KINDS:
            docker("volume", "rm", "-f", self.volume(self.target, kind), check=False)
        shutil.rmtree(self.work / "config" / "instances" / self.target, ignore_errors=True)

    def occ_restore(self, results: dict[str, list[float]], name: str = "occ.tar") -> float:
        self.new_target()  # each time: nothing to back up first
        began = time.monotonic()
        _out, _seconds, rss = self.occ(
            "restore", str(self.work / name), "--instance", self.target, "--yes"
        )
        subprocess.run(["sync"], check=True)  # as for the raw `tar -xf`: timed
        results.setdefault("restore_rss", []).append(rss / 1024)
        return time.monotonic() - began

    def run(self) -> tuple[str, dict[str, float]]:
        data = self.prepare()
        extra: dict[str, list[float]] = {}
        times: dict[str, list[float]] = {}

        def timed(key: str, action: Callable[[], float | None]) -> None:
            """`action` once; it returns its own seconds, or None to be timed here."""
            began = time.monotonic()
            own = action()
            times.setdefault(key, []).append(own if own is not None else time.monotonic() - began)

        for _ in range(self.runs):
            timed("raw_backup", self.raw_backup)
            timed("occ_backup", lambda: self.occ_backup(extra))
            timed("zst_backup", lambda: self.zst_backup(extra))
        for _ in range(self.runs):
            timed("raw_restore", self.raw_restore)
            timed("occ_restore", lambda: self.occ_restore(extra))
            timed("zst_restore", lambda: self.occ_restore(extra, "occ.tar.zst"))
        for _ in range(self.runs):
            timed("floor", self.engine_floor)
            timed("api_backup", lambda: self.api_backup(extra))
            timed("api_restore", self.api_restore)
        mb = data / 1e6
        seconds = {key: statistics.median(values) for key, values in times.items()}
        numbers = {
            "data_mb": mb,
            "gib": self.gib,
            "runs": self.runs,
            **{key: mb / value for key, value in seconds.items()},
            "paused": statistics.median(extra["paused"]),
            "paused_max": max(extra["paused"]),
            "api_paused": statistics.median(extra["api_paused"]),
            "backup_rss": max(extra["backup_rss"]),
            "restore_rss": max(extra["restore_rss"]),
            "zst_rss": max(extra["zst_rss"]),
            "zst_ratio": statistics.median(extra["zst_plain"])
            / statistics.median(extra["zst_size"]),
            "zst_time": seconds["zst_backup"] / seconds["occ_backup"],
            "zst_restore_time": seconds["zst_restore"] / seconds["occ_restore"],
        }
        return table(numbers, seconds), numbers


def table(n: dict[str, float], seconds: dict[str, float]) -> str:
    def verdict(ratio: float) -> str:
        return "met" if ratio >= 0.8 else "not met"

    def row(what: str, key: str, raw: str, target: str = "") -> str:
        ratio = n[key] / n[raw]
        shown = f"**{ratio:.2f}x**" if target else f"{ratio:.2f}x"
        verdict_text = f"{target}: {verdict(ratio)}" if target else ""
        return f"| {what} | {seconds[key]:.2f} s | {n[key]:.0f} MB/s | {shown} | {verdict_text} |"

    return "\n".join(
        [
            f"{n['data_mb']:.0f} MB of files in the five volumes ({n['gib']:g} GiB of it in the "
            f"projects volume), median of {n['runs']:.0f} runs:",
            "",
            "| What | Time | Throughput | vs raw `tar` | Target |",
            "|---|---|---|---|---|",
            row("raw `tar -cf` of the volume folders, on the host (root)", "raw_backup",
                "raw_backup"),
            row("`occ backup`, local engine (helper copies the volumes into the file; sha256 of "
                "every file; fsync)", "occ_backup", "raw_backup", ">= 0.8x"),
            row("`occ backup` into `.tar.zst` (the same, then zstd level 3)",
                "zst_backup", "raw_backup"),
            row("Engine API path (remote engines; in-process, service paused throughout)",
                "api_backup", "raw_backup"),
            row("Engine API alone: `GET /containers/{id}/archive`, bytes discarded", "floor",
                "raw_backup"),
            row("raw `tar -xf` into empty volume folders, on the host (root), then `sync`",
                "raw_restore", "raw_restore"),
            row("`occ restore` onto a new instance, local engine (layout checked first, every "
                "file's sha256 while GNU tar unpacks in a helper), then `sync`", "occ_restore",
                "raw_restore", ">= 0.8x"),
            row("`occ restore` of the `.tar.zst` (unpacked to a temporary tar first)",
                "zst_restore", "raw_restore"),
            row("Engine API path (remote engines; in-process), then `sync`", "api_restore",
                "raw_restore"),
            f"| Compression: time of `.tar.zst` / `.tar`, backup and restore | "
            f"{n['zst_time']:.2f}x / {n['zst_restore_time']:.2f}x | | | cost stated |",
            "| Compression: size of `.tar` / `.tar.zst` (random project data does not "
            f"compress: the worst case) | {n['zst_ratio']:.2f}x | | | |",
            f"| Service paused during `occ backup` (local: SQLite files only) | "
            f"{n['paused']:.2f} s (max {n['paused_max']:.2f} s) | | | |",
            f"| Service paused during a backup through the Engine API (whole copy) | "
            f"{n['api_paused']:.2f} s | | | |",
            f"| Peak memory (RSS) of `occ backup` / `occ restore` | {n['backup_rss']:.0f} MiB / "
            f"{n['restore_rss']:.0f} MiB | | | does not grow with the data |",
            f"| Peak memory (RSS) of `occ backup` into `.tar.zst` | {n['zst_rss']:.0f} MiB | | | |",
        ]
    )  # fmt: skip


def write_markdown(path: Path, body: str) -> None:
    how = f"`.venv/bin/python bench/bench_backup.py` on {os.cpu_count()} CPUs"
    replace_section(path, "backup", how, body, heading="## Backup and restore")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--gib", type=float, default=1.0, help="GiB of project data")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--out", type=Path, help="replace the backup table in this markdown file")
    parser.add_argument(
        "--smoke", action="store_true", help="4 MiB and 100 small files, each measurement once"
    )
    args = parser.parse_args()
    if args.smoke and args.out:
        parser.error("--smoke measures nothing worth keeping: it writes no table")
    if os.geteuid() != 0 or not VOLUMES_DIR.is_dir():
        raise SystemExit("run as root on the engine's host: the raw tar reads its volumes")
    bench = Bench(4 / 1024, 1, small_dirs=1) if args.smoke else Bench(args.gib, args.runs)
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
