"""Every benchmark in bench/ still runs: each once, small (`--smoke`), printing its table.

A benchmark that nothing runs rots unnoticed (one went on copying a password file out of
the container long after only its hash went in), and the figures in docs/benchmarks.md
must stay reproducible from a checkout. The smokes measure nothing worth keeping: they
write no table, and a loaded machine may miss every target.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
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
}
# The raw `tar` it compares with reads the engine's volume folders; the fresh machine is a
# second engine in network namespaces of its own.
NEEDS_ROOT = {"bench_backup.py", "bench_fresh.py"}
# It measures a team on the test swarm (`scripts/swarm.sh up`, `OCC_SWARM_ID`), if one is up.
NEEDS_SWARM = {"bench_cluster.py"}
SMOKE_TIMEOUT = 300


def test_every_benchmark_has_its_smoke() -> None:
    assert sorted(path.name for path in BENCH.glob("bench_*.py")) == sorted(TABLES)
    for name in TABLES:
        assert "--smoke" in (BENCH / name).read_text(), name


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(TABLES))
def test_the_benchmark_runs_and_prints_its_table(name: str, sandbox_image: str) -> None:
    if name in NEEDS_ROOT and os.geteuid() != 0:
        pytest.skip(f"{name} needs root")
    swarm = BENCH.parent / "scripts" / "swarm.sh"
    if (
        name in NEEDS_SWARM
        and subprocess.run([str(swarm), "status"], capture_output=True).returncode
    ):
        pytest.skip(f"{name} needs the test swarm up (scripts/swarm.sh up)")
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), "--smoke"],
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
    )
    took = time.monotonic() - began
    assert proc.returncode == 0, f"{name} --smoke failed after {took:.0f} s:\n{proc.stderr[-3000:]}"
    assert TABLES[name] in proc.stdout, proc.stdout
    table = proc.stdout[proc.stdout.index(TABLES[name]) :].splitlines()
    rows = [line for line in table if line.startswith("|")]
    assert len(rows) >= 4, proc.stdout  # the head, its rule and at least two figures
