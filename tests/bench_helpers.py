"""Running a benchmark of bench/ once, small (`--smoke`), and checking the table it prints:
for tests/e2e/test_bench_smoke.py, and for the swarm's benchmarks among the swarm tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
# Each benchmark and the head of the table it prints.
TABLES = {
    "bench_backup.py": "| What | Time | Throughput | vs raw `tar` | Target |",
    "bench_cluster.py": "| What | Floor | Measured | Added |",
    "bench_cli.py": "| What | Measured (median) | Floor, same run | Ratio | Target |",
    "bench_edge.py": "| What | Median | Runs |",
    "bench_edge_records.py": "| What | Floor, same run | Measured | Added | Target |",
    "bench_fresh.py": "| Step | Seconds | In scripts/up.sh |",
    "bench_idle.py": "| What | Host CPU, minus baseline | Its processes (mean) |",
    "bench_image.py": "| Measure | Value | Notes |",
    "bench_packages.py": "| What | Without packages | With `jq` | Added | Target |",
    "bench_tls.py": "| What | Wall time | CPU time |",
    "bench_update.py": "| What | Unavailable (median) | Runs |",
    "bench_team.py": "| What | Floor | Measured | Added |",
    "bench_drain.py": "| What | Seconds | Seconds per GB | vs raw copy |",
}
SMOKE_TIMEOUT = 300


def run_smoke(name: str, env: Mapping[str, str] | None = None) -> None:
    """Run bench/NAME with `--smoke` (with `env`, when given, as its environment) and
    check that it printed its table with at least two figures."""
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), "--smoke"],
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
        env=None if env is None else dict(env),
    )
    took = time.monotonic() - began
    assert proc.returncode == 0, f"{name} --smoke failed after {took:.0f} s:\n{proc.stderr[-3000:]}"
    assert TABLES[name] in proc.stdout, proc.stdout
    table = proc.stdout[proc.stdout.index(TABLES[name]) :].splitlines()
    rows = [line for line in table if line.startswith("|")]
    assert len(rows) >= 4, proc.stdout  # the head, its rule and at least two figures
